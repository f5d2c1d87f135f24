"""Errors in the formats other senders already speak (Sentry SDKs, OpenTelemetry exporters),
read into Remedy's ErrorEvent so that they take the path of POST /v1/errors: the same budget,
redaction, fingerprint, coalescing and counts. Pure: the HTTP routers live in starter/.
"""
