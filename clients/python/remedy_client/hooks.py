"""Opt-in hooks for exceptions nobody caught: the main thread's and other threads'."""

from __future__ import annotations

import sys
import threading
from typing import Any

from remedy_client.client import Client

_INSTALLED = "__remedy_hook__"


def _client(explicit: Client | None) -> Client | None:
    if explicit is not None:
        return explicit
    from remedy_client import get_client

    return get_client()


def install_excepthooks(
    client: Client | None = None, *, sys_hook: bool = True, thread_hook: bool = True
) -> None:
    """Report uncaught exceptions, then hand them to the hooks that were there before.

    Idempotent. The report of an exception that ends the program is sent by the flush at
    exit (within the client's shutdown_timeout).
    """
    if sys_hook and not getattr(sys.excepthook, _INSTALLED, False):
        previous_sys = sys.excepthook

        def sys_excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
            target = _client(client)
            if target is not None and exc is not None and not isinstance(exc, KeyboardInterrupt):
                target.capture_exception(exc, tags={"mechanism": "excepthook"})
            previous_sys(exc_type, exc, tb)

        setattr(sys_excepthook, _INSTALLED, True)
        sys.excepthook = sys_excepthook

    if thread_hook and not getattr(threading.excepthook, _INSTALLED, False):
        previous_thread = threading.excepthook

        def thread_excepthook(args: Any) -> None:
            target = _client(client)
            exc = args.exc_value
            if target is not None and exc is not None and not isinstance(exc, SystemExit):
                thread = args.thread.name if args.thread is not None else ""
                target.capture_exception(
                    exc, tags={"mechanism": "threading.excepthook", "thread": thread}
                )
            previous_thread(args)

        setattr(thread_excepthook, _INSTALLED, True)
        threading.excepthook = thread_excepthook
