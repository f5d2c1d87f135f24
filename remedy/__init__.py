"""Remedy's domain: models, configuration, fingerprinting, policy, and the payload codec
(`remedy.codec`: AES-256-GCM over every history payload when [codec] is enabled).

Nothing in this package imports a Temporal worker, FastAPI or an external client library,
so workflows, activities and the starter can all depend on it.
"""
