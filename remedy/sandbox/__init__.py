"""The verification sandbox: bubblewrap around the service's tests.

- `limits`: what a run may use (CPU, memory, file size, processes, wall clock, tmpfs).
- `bwrap`: the command lines, pure: what the sandbox shows, read-only or writable.
- `runner`: the one sandbox runner (probe, staging, wall clock, killing); stdlib only, so an
  unprivileged driver with the system Python can use it too.
- `results`: reading pytest and unittest output, and the before/after verdict.
- `cache`: finished runs by a hash of their inputs, so no run is repeated.
"""
