"""Temporal workflows: orchestration and state only (deterministic)."""
