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

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
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
