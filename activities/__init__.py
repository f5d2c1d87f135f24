"""Temporal activities: all I/O, one module per external system."""
