"""`EdgeStore`: the code index's default store, Qdrant's engine embedded in the process.

Qdrant Edge (`qdrant-edge-py`) keeps one shard per collection under one folder; see
remedy.index.store for why it beats `qdrant-client`'s local mode and why it lives here.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from remedy.index.embed import LexicalVector
from remedy.index.store import (
    DENSE,
    EDGE_LOCK_TIMEOUT_S,
    KEYWORD_FIELDS,
    LEXICAL,
    RRF_K,
    Hit,
    OnWait,
    PointData,
    StoreBusy,
    StoreError,
    VectorStore,
    Where,
)


class EdgeStore(VectorStore):
    """Qdrant Edge shards under one folder, one shard per collection.

    A shard belongs to one process at a time, so the store holds an exclusive lock on the
    folder while open: a CLI `remedy index` waits for the worker's activity to finish. The
    holder writes what it holds the store for into the lock file, so a waiter can say who it
    waits for (`on_wait`) and a timeout names the holder, not just "busy".
    """

    kind = "qdrant-edge"

    def __init__(
        self,
        root: Path,
        *,
        lock_timeout_s: float = EDGE_LOCK_TIMEOUT_S,
        holder: str = "",
        on_wait: OnWait | None = None,
    ) -> None:
        import qdrant_edge

        self._qe = qdrant_edge
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = _acquire(root / ".lock", lock_timeout_s, on_wait)
        self.hold_for(holder)
        self._shards: dict[str, Any] = {}
        self._unflushed: set[str] = set()

    def hold_for(self, holder: str) -> None:
        if self._lock_file is not None:
            self._lock_file.seek(0)
            self._lock_file.truncate(0)
            self._lock_file.write(_holder_line(holder))
            self._lock_file.flush()

    def _config(self, dimension: int) -> Any:
        qe = self._qe
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    def ensure_collection(self, collection: str, dimension: int) -> None:
        if collection in self._shards:
            return
        qe = self._qe
        path = self.root / collection
        config = self._config(dimension)
        if path.is_dir() and any(path.iterdir()):
            try:
                shard = qe.EdgeShard.load(str(path), config)
            except Exception as exc:
                raise StoreError(
                    f"the index collection at {path} does not fit {dimension}-dimensional "
                    f"vectors ({exc}); delete that folder to rebuild it, or point "
                    f"[qdrant] path elsewhere",
                    permanent=True,
                ) from None
        else:
            shard = qe.EdgeShard.create(str(path), config)
            for name in KEYWORD_FIELDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword)
                )
            self._unflushed.add(collection)
        self._shards[collection] = shard

    def _shard(self, collection: str) -> Any:
        try:
            return self._shards[collection]
        except KeyError:
            raise StoreError(f"collection {collection!r} is not open", permanent=True) from None

    def _filter(self, where: Where) -> Any:
        qe = self._qe
        must: list[Any] = [
            qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in where.equals.items()
        ]
        must += [
            qe.FieldCondition(key=k, match=qe.MatchAny(list(v))) for k, v in where.any_of.items()
        ]
        must_not = [
            qe.FieldCondition(key=k, match=qe.MatchAny(list(v)))
            for k, v in where.none_of.items()
            if v
        ]
        return qe.Filter(must=must or None, must_not=must_not or None)

    def _vector(self, point: PointData) -> dict[str, Any]:
        vector: dict[str, Any] = {}
        if point.dense is not None:
            vector[DENSE] = [float(x) for x in point.dense]
        if point.lexical is not None and point.lexical.indices:
            vector[LEXICAL] = self._qe.SparseVector(point.lexical.indices, point.lexical.values)
        return vector

    def _update(self, collection: str, operation: Any) -> None:
        self._shard(collection).update(operation)
        self._unflushed.add(collection)

    def upsert(self, collection: str, points: Sequence[PointData]) -> None:
        if points:
            ops = [self._qe.Point(p.id, self._vector(p), p.payload) for p in points]
            self._update(collection, self._qe.UpdateOperation.upsert_points(ops))

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self._update(collection, self._qe.UpdateOperation.set_payload(list(ids), payload))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._update(collection, self._qe.UpdateOperation.delete_points(list(ids)))

    def delete_where(self, collection: str, where: Where) -> None:
        op = self._qe.UpdateOperation.delete_points_by_filter(self._filter(where))
        self._update(collection, op)

    def count(self, collection: str, where: Where) -> int:
        request = self._qe.CountRequest(filter=self._filter(where), exact=True)
        return int(self._shard(collection).count(request))

    def scroll(
        self, collection: str, where: Where, fields: Sequence[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        shard = self._shard(collection)
        found: list[tuple[str, dict[str, Any]]] = []
        offset: Any = None
        while True:
            request = self._qe.ScrollRequest(
                offset=offset, limit=4096, filter=self._filter(where), with_payload=list(fields)
            )
            records, offset = shard.scroll(request)
            found += [(str(r.id), dict(r.payload or {})) for r in records]
            if offset is None:
                return found

    def hybrid(
        self,
        collection: str,
        dense: Sequence[float],
        lexical: LexicalVector,
        where: Where,
        limit: int,
        candidates: int,
    ) -> list[Hit]:
        qe = self._qe
        flt = self._filter(where)
        prefetches = [
            qe.Prefetch(
                limit=candidates, query=qe.Query.Nearest([float(x) for x in dense], using=DENSE),
                filter=flt,
            )
        ]  # fmt: skip
        if lexical.indices:
            sparse = qe.SparseVector(lexical.indices, lexical.values)
            prefetches.append(
                qe.Prefetch(limit=candidates, query=qe.Query.Nearest(sparse, using=LEXICAL),
                            filter=flt)
            )  # fmt: skip
        request = qe.QueryRequest(
            limit=limit, prefetches=prefetches, query=qe.Fusion.Rrf(k=RRF_K), with_payload=True
        )
        points = self._shard(collection).query(request)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def flush(self) -> None:
        for collection in self._unflushed:
            self._shards[collection].flush()
        self._unflushed.clear()

    def close(self) -> None:
        self.flush()
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()
        if self._lock_file is not None:
            self._lock_file.truncate(0)
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _holder_line(holder: str) -> str:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return json.dumps({"pid": os.getpid(), "holder": holder or "a remedy process",
                       "since": started})  # fmt: skip


def describe_holder(lock_path: Path) -> str:
    """Who holds the store, from its lock file: "remedy index shop (pid 42, for 3m05s)"."""
    try:
        record = json.loads(lock_path.read_text() or "{}")
        since = datetime.fromisoformat(record["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    held = int((datetime.now(UTC) - since).total_seconds())
    minutes, seconds = divmod(max(held, 0), 60)
    who = record.get("holder", "a remedy process")
    return f"{who} (pid {record.get('pid', '?')}, for {minutes}m{seconds:02d}s)"


def _acquire(lock_path: Path, timeout_s: float, on_wait: OnWait | None) -> IO[str]:
    """The lock file, exclusively locked; StoreBusy naming the holder after `timeout_s`."""
    lock_file: IO[str] = open(lock_path, "a")  # noqa: SIM115
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic()
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock_file
        except BlockingIOError:
            now = time.monotonic()
            if now > deadline:
                lock_file.close()
                holder = describe_holder(lock_path)
                raise StoreBusy(
                    f"the embedded index at {lock_path.parent} stayed in use by {holder} for "
                    f"{timeout_s:.0f}s (wait for it, or set [qdrant] url to share a Qdrant "
                    f"server between processes)",
                    holder=holder,
                ) from None
            if on_wait is not None and now >= next_report:
                on_wait(describe_holder(lock_path))
                next_report = now + 1.0
            time.sleep(0.05)
