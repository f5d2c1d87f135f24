"""The client: a bounded queue in front of one background sender thread.

The application's thread only snapshots the exception and puts it on the queue
(`put_nowait`); when the queue is full the report is dropped and counted. Everything
slow (formatting, redaction, JSON, HTTP, retries) happens on the sender thread, so an
intake that is down or slow costs the application nothing but those drops.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import queue
import re
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from remedy_client.events import EventBuilder, InApp, Snapshot, encode
from remedy_client.transport import REJECTED, SENT, Transport, backoff_seconds

log = logging.getLogger("remedy_client")

SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RELEASE = re.compile(r"^[A-Za-z0-9._/+-]{1,128}$")
_CAPTURED_MARK = "__remedy_captured__"
_WARN_INTERVAL_S = 60.0

BeforeSend = Callable[[dict[str, Any]], Optional[dict[str, Any]]]


def _errors_url(endpoint: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(
            f"remedy_client: endpoint {endpoint!r} must be an http:// or https:// URL "
            "(the intake's base URL, e.g. http://remedy:8080)"
        )
    return endpoint if endpoint.endswith("/v1/errors") else endpoint + "/v1/errors"


class _Stop:
    """Queue sentinel: the sender stops when it takes this."""


class Client:
    """Reports exceptions to one Remedy intake for one service.

    Arguments are checked here, once, and a bad one raises ValueError naming it; after
    that nothing the client does raises into the application.
    """

    def __init__(
        self,
        endpoint: str,
        token: str | None,
        service: str,
        *,
        release: str | None = None,
        environment: str | None = None,
        tags: Mapping[str, object] | None = None,
        root: str | None = None,
        in_app_include: Sequence[str] = (),
        in_app_exclude: Sequence[str] = (),
        queue_size: int = 100,
        timeout: float = 5.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        shutdown_timeout: float = 2.0,
        before_send: BeforeSend | None = None,
    ) -> None:
        if not SERVICE_NAME.match(service):
            raise ValueError(
                f"remedy_client: service {service!r} must be lower-case letters, digits, "
                "'-' or '_' (the name of its [services.<name>] section in remedy.toml)"
            )
        release = release if release is not None else os.environ.get("REMEDY_RELEASE") or None
        if release is not None and not RELEASE.match(release):
            raise ValueError(
                f"remedy_client: release {release!r} must be up to 128 letters, digits or "
                "'._/+-' (use the git commit sha the service runs)"
            )
        if environment is not None and len(environment) > 64:
            raise ValueError("remedy_client: environment must be at most 64 characters")
        if queue_size < 1:
            raise ValueError("remedy_client: queue_size must be at least 1")
        self.url = _errors_url(endpoint)
        self.service = service
        self.release = release
        self.enabled = bool(token)
        if not self.enabled:
            log.warning(
                "remedy_client: no intake token for service %r; errors will not be reported "
                "(pass the service's token, e.g. from its REMEDY_*_TOKEN variable)",
                service,
            )
        self._transport = Transport(self.url, token or "")
        self._builder = EventBuilder(
            service,
            release,
            environment,
            dict(tags or {}),
            InApp(root or os.getcwd(), in_app_include, in_app_exclude),
        )
        self._before_send = before_send
        self._queue_size = queue_size
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self.shutdown_timeout = shutdown_timeout
        self._counts = dict.fromkeys(
            ("captured", "sent", "dropped", "failed", "rejected", "retries"), 0
        )
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._last_warning = 0.0
        self._reset()
        if self.enabled:
            self._start()
            atexit.register(self._close_at_exit)
            if hasattr(os, "register_at_fork"):
                # A fork leaves the child without the sender thread and possibly with a
                # queue lock held by it: the child starts afresh on its first report.
                reset = functools.partial(_reset_in_child, weakref.ref(self))
                os.register_at_fork(after_in_child=reset)

    # -- the application's side -----------------------------------------------------

    def capture_exception(
        self,
        exc: BaseException | None = None,
        *,
        tags: Mapping[str, object] | None = None,
        code: str | None = None,
    ) -> bool:
        """Queue a report of `exc` (default: the exception being handled).

        Returns whether it was queued. Never raises; never blocks.
        """
        try:
            if exc is None:
                exc = sys.exc_info()[1]
                if exc is None:
                    return False
            if not self.enabled or getattr(exc, _CAPTURED_MARK, False):
                return False
            if self._closing.is_set() or self._queue.full():
                self._count("dropped")
                return False
            if self._thread is None:
                self._start()
            self._queue.put_nowait(Snapshot.take(exc, tags, code))
            self._count("captured")
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, _CAPTURED_MARK, True)
            return True
        except queue.Full:
            self._count("dropped")
        except Exception:  # a reporter must not turn one error into two
            self._count("failed")
        return False

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait up to `timeout` seconds until every queued report is sent or given up."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop taking reports; give queued ones until `timeout` (default shutdown_timeout)."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        if self._closing.is_set():
            return
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        # A full queue means the sender is busy: it sees _closing after its current report.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_Stop())
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(timeout, 0))
        atexit.unregister(self._close_at_exit)

    def stats(self) -> dict[str, int]:
        """Counters since start: captured, sent, dropped, failed, rejected, retries, queued."""
        with self._lock:
            counts = dict(self._counts)
        counts["queued"] = self._queue.qsize()
        return counts

    # -- the sender's side ----------------------------------------------------------

    def _reset(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self._queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._run, name="remedy-client-sender", daemon=True
                )
                thread.start()
                self._thread = thread

    def _close_at_exit(self) -> None:
        self.close()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait() if self._closing.is_set() else self._queue.get()
            except queue.Empty:
                return
            try:
                if isinstance(item, _Stop):
                    continue
                if self._closing.is_set() and time.monotonic() >= self._deadline:
                    self._count("dropped")
                    continue
                self._deliver(item)
            except Exception:
                self._count("failed")
            finally:
                self._queue.task_done()

    def _deliver(self, snapshot: Snapshot) -> None:
        event: dict[str, Any] | None = self._builder.build(snapshot)
        if self._before_send is not None:
            event = self._before_send(event) if event is not None else None
            if event is None:
                return
        body = encode(event) if event is not None else None
        if body is None:
            self._count("failed")
            self._warn("an error report could not be made smaller than the intake's limit")
            return
        attempt = 0
        while True:
            timeout = self._timeout
            if self._closing.is_set():
                timeout = min(timeout, self._deadline - time.monotonic())
                if timeout <= 0:
                    self._count("dropped")
                    return
            outcome, status, retry_after = self._transport.post(body, max(timeout, 0.05))
            if outcome == SENT:
                self._count("sent")
                return
            if outcome == REJECTED:
                self._count("rejected")
                self._warn(
                    f"the intake refused an error report with HTTP {status} (check the "
                    "service's token and name against remedy.toml); it will not be retried"
                )
                return
            attempt += 1
            if attempt > self._max_retries:
                self._count("failed")
                self._warn(
                    f"gave up on an error report after {attempt} attempts "
                    f"({'HTTP ' + str(status) if status else 'intake unreachable'} at {self.url})"
                )
                return
            self._count("retries")
            pause = backoff_seconds(attempt, self._backoff_base, self._backoff_max)
            if retry_after is not None:
                pause = max(pause, retry_after)
            if self._closing.is_set():
                if time.monotonic() + pause >= self._deadline:
                    self._count("dropped")
                    return
                time.sleep(pause)
            elif self._closing.wait(pause) and time.monotonic() + 0.05 >= self._deadline:
                self._count("dropped")
                return

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL_S:
            self._last_warning = now
            log.warning("remedy_client: %s", message)


def _reset_in_child(ref: weakref.ReferenceType[Client]) -> None:
    client = ref()
    if client is not None:
        client._reset()
