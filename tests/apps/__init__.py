"""Small services on real SDKs (Sentry, OpenTelemetry) and the harness that serves the
intake they report to."""
