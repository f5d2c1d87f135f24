"""Loopback fakes of the external systems Remedy talks to."""
