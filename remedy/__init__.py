"""Remedy's domain: models, configuration, fingerprinting, policy and the codec.

Nothing in this package imports a Temporal worker, FastAPI or an external client library,
so workflows, activities and the starter can all depend on it.
"""
