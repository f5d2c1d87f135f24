"""The scaffolding of a loopback fake: an aiohttp server on its own event loop in a thread.

Running on its own loop lets sync tests, async tests (whose loop may be busy awaiting the
very client under test) and subprocesses all talk to it. Subclasses add routes and state and
consult `take_fault` to inject the failures a real service produces.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web


@dataclass
class Fault:
    """What happens to the next `times` matching requests.

    drop: apply the request, then close the connection without answering (the write
          happened, the caller never learns it: a crash between the call and its bookkeeping).
    hold: apply the request, then answer only after `release()` (a worker killed mid-call).
    respond: change nothing and answer `status` with `body` and `headers`.
    hide: for lookups, answer as if the object did not exist (a stale read).
    """

    mode: str
    times: int = 1
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


STOP_GRACE_S = 2.0


class LoopbackServer:
    def __init__(self) -> None:
        self.port = 0
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.RLock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._held = threading.Event()

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        self.routes(app)
        # A test's server stops in seconds: a client still sending at teardown (a background
        # sender thread) must not hold aiohttp's graceful shutdown for its default 60 s.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=STOP_GRACE_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        assert self._release is not None and self._runner is not None
        self._release.set()
        await self._runner.cleanup()

    def run_on_loop(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # ------------------------------------------------------------------ faults

    def fail(self, key: str, mode: str, *, times: int = 1, **options: Any) -> None:
        """Inject a fault into the next `times` requests matching `key` (see subclasses)."""
        with self._lock:
            self._faults.setdefault(key, []).append(Fault(mode=mode, times=times, **options))

    def take_fault(self, key: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(key) or []
            if not queue:
                return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.pop(0)
            return fault

    async def after_write(self, request: web.Request, fault: Fault | None) -> None:
        """Carry out a drop or hold fault once the request's effect is in place."""
        if fault is None:
            return
        if fault.mode == "drop":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if fault.mode == "hold":
            assert self._release is not None
            self._held.set()
            await self._release.wait()

    def wait_held(self, timeout: float = 10.0) -> bool:
        """Block until a request with a `hold` fault has been applied and is being held."""
        return self._held.wait(timeout)

    def release(self) -> None:
        """Let held requests answer."""
        assert self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    # ------------------------------------------------------------------ polling

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
            time.sleep(0.02)
        return value

    async def wait_for_async(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
            await asyncio.sleep(0.02)
        return value


ReplyT = TypeVar("ReplyT")


class ScriptedServer(LoopbackServer, Generic[ReplyT]):
    """A model fake: each request takes the next scripted reply, or asks `responder` when the
    queue is empty, or gets `exhausted(body)` (a loud error) when there is neither."""

    def __init__(self, responder: Callable[[dict[str, Any]], ReplyT] | None) -> None:
        super().__init__()
        self.responder = responder
        self._replies: deque[ReplyT] = deque()
        self._replies_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: ReplyT) -> None:
        with self._replies_lock:
            self._replies.extend(replies)

    def clear(self) -> None:
        """Forget scripted replies, recorded requests and faults (between tests)."""
        with self._replies_lock:
            self._replies.clear()
        with self._lock:
            self._faults.clear()
        self.forget_requests()

    def forget_requests(self) -> None:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        with self._replies_lock:
            return len(self._replies)

    def exhausted(self, body: dict[str, Any]) -> ReplyT:
        raise NotImplementedError

    def next_reply(self, body: dict[str, Any]) -> ReplyT:
        with self._replies_lock:
            if self._replies:
                return self._replies.popleft()
        if self.responder is not None:
            return self.responder(body)
        return self.exhausted(body)
