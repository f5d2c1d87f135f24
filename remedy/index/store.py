"""The vector store behind the code index: one small interface and the factory that picks
one of its two Qdrant implementations.

`EdgeStore` (remedy.index.edge_store, the default) runs Qdrant's own engine in-process
through `qdrant-edge-py`, persistent under `<home>/<qdrant.path>`: measured here it upserts
tens of thousands of points a second and answers a hybrid query in about a millisecond,
where `qdrant-client`'s local mode managed 67 upserts a second. `ServerStore`
(remedy.index.server_store) talks to a Qdrant server through `qdrant-client` once
`qdrant.url` is set; its tests run against `QdrantClient(":memory:")`, which speaks the
same API.

Both implementations live here in the domain, not in activities/, because they are the
index's storage rather than a system the workflow talks to: `remedy index` and
`remedy search` drive the index from the command line without a worker, exactly as the
activities do. They import their Qdrant library inside the implementation, so importing
remedy.index loads neither.

Every collection holds a dense vector (`dense`, cosine) and a sparse lexical vector
(`lexical`, with the IDF modifier) per point; a hybrid query fuses the two rankings with
reciprocal-rank fusion inside Qdrant.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remedy.config import RemedyConfig, secret
from remedy.index.embed import LexicalVector

DENSE = "dense"
LEXICAL = "lexical"
RRF_K = 60
KEYWORD_FIELDS = ("repo", "kind", "commits", "path", "service")
# How long a process waits for another one to close the embedded store (a CLI `remedy index`
# waits out the worker's index run).
EDGE_LOCK_TIMEOUT_S = 120.0


class StoreError(Exception):
    """The store cannot serve this request; `permanent` when retrying will not help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class StoreBusy(StoreError):
    """Another process held the embedded store past the wait: `holder` says who and why."""

    def __init__(self, message: str, *, holder: str) -> None:
        super().__init__(message, permanent=False)
        self.holder = holder


# Called about once a second while a process waits for the embedded store, with who holds it.
OnWait = Callable[[str], None]


@dataclass(frozen=True)
class Where:
    """A conjunction of keyword conditions: field == value, field in any, field in none."""

    equals: Mapping[str, str] = field(default_factory=dict)
    any_of: Mapping[str, Sequence[str]] = field(default_factory=dict)
    none_of: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass
class PointData:
    id: str
    payload: dict[str, Any]
    dense: Sequence[float] | None = None
    lexical: LexicalVector | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


def point_id(*parts: str) -> str:
    """A stable point id (UUID, as Qdrant wants) from the parts that define the point."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "\x1f".join(parts)))


class VectorStore(ABC):
    kind: str

    @abstractmethod
    def ensure_collection(self, collection: str, dimension: int) -> None: ...

    @abstractmethod
    def upsert(self, collection: str, points: Sequence[PointData]) -> None: ...

    @abstractmethod
    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Set (merge) these payload keys on every listed point."""

    @abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def delete_where(self, collection: str, where: Where) -> None: ...

    @abstractmethod
    def count(self, collection: str, where: Where) -> int: ...

    @abstractmethod
    def scroll(
        self, collection: str, where: Where, fields: Sequence[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every matching point's id and the requested payload keys (no vectors)."""

    @abstractmethod
    def hybrid(
        self,
        collection: str,
        dense: Sequence[float],
        lexical: LexicalVector,
        where: Where,
        limit: int,
        candidates: int,
    ) -> list[Hit]:
        """The best `limit` points by RRF over the dense and lexical top `candidates`."""

    def hold_for(self, holder: str) -> None:
        """Say what the store is now held for, to whoever waits for it next."""
        return None

    def flush(self) -> None:
        """Make every write so far durable."""
        return None

    def close(self) -> None:
        return None


def open_vector_store(
    config: RemedyConfig,
    *,
    lock_timeout_s: float = EDGE_LOCK_TIMEOUT_S,
    holder: str = "",
    on_wait: OnWait | None = None,
) -> VectorStore:
    """The configured store: a Qdrant server when `qdrant.url` is set, else embedded (waiting
    up to `lock_timeout_s` for another process to close it; `holder` says what this process
    holds it for, to whoever waits next)."""
    if config.qdrant.url:
        from qdrant_client import QdrantClient

        from remedy.index.server_store import ServerStore

        client = QdrantClient(
            url=config.qdrant.url,
            api_key=secret(config.qdrant.api_key_env),
            timeout=int(config.qdrant.timeout_s),
        )
        return ServerStore(client, config.qdrant.collection_prefix)
    from remedy.index.edge_store import EdgeStore

    return EdgeStore(
        config.home_dir / config.qdrant.path,
        lock_timeout_s=lock_timeout_s,
        holder=holder,
        on_wait=on_wait,
    )


class StoreKeeper:
    """The store a process's activities take turns with, kept open between them.

    Opening the embedded store loads every shard, which costs more than a warm index run or a
    search does (about 0.19 s of a 0.24 s `index_repo` with nothing to embed, measured here):
    so a worker keeps it open while incidents keep coming, lends it to one activity at a
    time (as the store's own lock made them take turns), flushes what each one wrote when it
    gives the store back (a kill -9 with the store open loses nothing either way: the engine
    logs every update before it applies it), and closes it `idle_s` after the last one, which
    gives `remedy index --local` or another worker on the same home its turn. `idle_s = 0`
    closes it after every activity.
    """

    def __init__(self, config: RemedyConfig, idle_s: float = 0.0) -> None:
        self._config = config
        self._idle_s = idle_s
        self._turn = threading.Lock()
        self._store: VectorStore | None = None
        self._holder = "a remedy activity"
        self._closer: threading.Timer | None = None

    @contextlib.contextmanager
    def lend(
        self, *, lock_timeout_s: float, holder: str, on_wait: OnWait | None = None
    ) -> Iterator[VectorStore]:
        """The store, this caller's alone until the block ends (StoreBusy, naming the holder,
        after `lock_timeout_s` of waiting for this process's turn or another process's)."""
        self._take_turn(lock_timeout_s, on_wait)
        try:
            if self._closer is not None:
                self._closer.cancel()
                self._closer = None
            if self._store is None:
                self._store = open_vector_store(
                    self._config, lock_timeout_s=lock_timeout_s, holder=holder, on_wait=on_wait
                )
            else:
                self._store.hold_for(holder)
            self._holder = holder
            try:
                yield self._store
                self._store.flush()
            except BaseException:
                self._close()  # a use that failed may leave the store in doubt: reopen it
                raise
            if self._idle_s > 0:
                self._closer = threading.Timer(self._idle_s, self._close_when_idle)
                self._closer.daemon = True
                self._closer.start()
            else:
                self._close()
        finally:
            self._turn.release()

    def close(self) -> None:
        """Close the store now (a worker shutting down); a later `lend` opens it again."""
        with self._turn:
            self._close()

    def _take_turn(self, timeout_s: float, on_wait: OnWait | None) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._turn.acquire(timeout=min(1.0, max(deadline - time.monotonic(), 0.0))):
            if time.monotonic() >= deadline:
                raise StoreBusy(
                    f"the code index stayed in use by {self._holder} in this process for "
                    f"{timeout_s:.0f}s",
                    holder=self._holder,
                )
            if on_wait is not None:
                on_wait(self._holder)

    def _close_when_idle(self) -> None:
        if not self._turn.acquire(blocking=False):
            return  # lent again: the borrower schedules the next close
        try:
            if self._closer is threading.current_thread():
                self._close()
        finally:
            self._turn.release()

    def _close(self) -> None:
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        store, self._store = self._store, None
        if store is not None:
            store.close()
