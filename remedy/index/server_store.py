"""`ServerStore`: the code index on a Qdrant server, through `qdrant-client`.

Used once `qdrant.url` is set, so every worker and the CLI share one index; see
remedy.index.store for why it lives here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from remedy.index.embed import LexicalVector
from remedy.index.store import (
    DENSE,
    KEYWORD_FIELDS,
    LEXICAL,
    RRF_K,
    Hit,
    PointData,
    StoreError,
    VectorStore,
    Where,
)

SERVER_BATCH = 256


class ServerStore(VectorStore):
    """Collections `<prefix>_<collection>` on a Qdrant server, through `qdrant-client`."""

    kind = "qdrant-server"

    def __init__(self, client: Any, prefix: str, *, owns_client: bool = True) -> None:
        from qdrant_client import models

        self.client = client
        self.prefix = prefix
        self.owns_client = owns_client
        self._m = models

    def _name(self, collection: str) -> str:
        return f"{self.prefix}_{collection}"

    def ensure_collection(self, collection: str, dimension: int) -> None:
        m = self._m
        name = self._name(collection)
        if self.client.collection_exists(name):
            params = self.client.get_collection(name).config.params.vectors
            size = params[DENSE].size if isinstance(params, dict) and DENSE in params else None
            if size != dimension:
                raise StoreError(
                    f"Qdrant collection {name!r} holds vectors of size {size}, the embedding "
                    f"model gives {dimension} (set [qdrant] collection_prefix to a new name, or "
                    f"delete the collection)",
                    permanent=True,
                )
            return
        self.client.create_collection(
            name,
            vectors_config={DENSE: m.VectorParams(size=dimension, distance=m.Distance.COSINE)},
            sparse_vectors_config={LEXICAL: m.SparseVectorParams(modifier=m.Modifier.IDF)},
        )
        for key in KEYWORD_FIELDS:
            self.client.create_payload_index(name, key, m.PayloadSchemaType.KEYWORD)

    def _filter(self, where: Where) -> Any:
        m = self._m
        must: list[Any] = [
            m.FieldCondition(key=k, match=m.MatchValue(value=v)) for k, v in where.equals.items()
        ]
        must += [
            m.FieldCondition(key=k, match=m.MatchAny(any=list(v))) for k, v in where.any_of.items()
        ]
        must_not: list[Any] = [
            m.FieldCondition(key=k, match=m.MatchAny(any=list(v)))
            for k, v in where.none_of.items()
            if v
        ]
        return m.Filter(must=must or None, must_not=must_not or None)

    def _vector(self, point: PointData) -> dict[str, Any]:
        vector: dict[str, Any] = {}
        if point.dense is not None:
            vector[DENSE] = [float(x) for x in point.dense]
        if point.lexical is not None and point.lexical.indices:
            vector[LEXICAL] = self._m.SparseVector(
                indices=point.lexical.indices, values=point.lexical.values
            )
        return vector

    def upsert(self, collection: str, points: Sequence[PointData]) -> None:
        for start in range(0, len(points), SERVER_BATCH):
            batch = [
                self._m.PointStruct(id=p.id, vector=self._vector(p), payload=p.payload)
                for p in points[start : start + SERVER_BATCH]
            ]
            self.client.upsert(self._name(collection), points=batch, wait=True)

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        for start in range(0, len(ids), SERVER_BATCH * 16):
            chunk = list(ids[start : start + SERVER_BATCH * 16])
            self.client.set_payload(self._name(collection), payload, points=chunk, wait=True)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            selector = self._m.PointIdsList(points=list(ids))
            self.client.delete(self._name(collection), points_selector=selector, wait=True)

    def delete_where(self, collection: str, where: Where) -> None:
        selector = self._m.FilterSelector(filter=self._filter(where))
        self.client.delete(self._name(collection), points_selector=selector, wait=True)

    def count(self, collection: str, where: Where) -> int:
        result = self.client.count(
            self._name(collection), count_filter=self._filter(where), exact=True
        )
        return int(result.count)

    def scroll(
        self, collection: str, where: Where, fields: Sequence[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self._name(collection),
                scroll_filter=self._filter(where),
                limit=1024,
                offset=offset,
                with_payload=list(fields),
                with_vectors=False,
            )
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
        m = self._m
        flt = self._filter(where)
        prefetch = [
            m.Prefetch(query=[float(x) for x in dense], using=DENSE, limit=candidates, filter=flt)
        ]
        if lexical.indices:
            sparse = m.SparseVector(indices=lexical.indices, values=lexical.values)
            prefetch.append(m.Prefetch(query=sparse, using=LEXICAL, limit=candidates, filter=flt))
        response = self.client.query_points(
            self._name(collection),
            prefetch=prefetch,
            query=m.RrfQuery(rrf=m.Rrf(k=RRF_K)),
            limit=limit,
            with_payload=True,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def close(self) -> None:
        if self.owns_client:
            with contextlib.suppress(Exception):
                self.client.close()
