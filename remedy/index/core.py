"""The code index itself, free of Temporal: the activities and the CLI both drive it.

What is stored (one `code-<model>` collection; three kinds of point, told apart by `kind`):
- `chunk`: one chunk (remedy.index.chunking) with its dense and lexical vectors. Its id hashes
  repo, path, symbol and the embedded text, so an unchanged chunk keeps its id (and vector)
  at every commit. Payload: repo, path, symbol, unit, language, start_line, end_line, text
  and `commits`, the indexed commits it is present in.
- `file`: one version of one file (path + git blob sha), listing its chunks and their lines.
  A file whose blob is already recorded is never read or chunked again, which is what keeps
  a re-index as cheap as the diff.
- `repo`: the commits this repository is indexed at, oldest first (at most
  `qdrant.keep_commits`). Points left with no retained commit are purged.

Queries filter on `commits` containing the commit asked about, so code removed at that
commit stops matching at once, while an incident still investigating an older release keeps
seeing the code it runs. Everything lives in the store, so the index survives restarts and
is shared by every worker of a Qdrant server; the work is idempotent, so a retried index run
resumes by skipping every chunk a previous attempt already stored.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remedy.config import RemedyConfig
from remedy.git.runner import redact_location
from remedy.index.chunking import Chunk, chunk_file, decode_source
from remedy.index.embed import Embedder, get_embedder, lexical_document, lexical_query
from remedy.index.files import RepoFile, list_repo_files, read_blobs
from remedy.index.store import (
    RRF_K,
    Hit,
    PointData,
    VectorStore,
    Where,
    open_vector_store,
    point_id,
)
from remedy.models import IndexResult

# At most this many chunks per model call and store write. The step is the model's batch
# size below it: the chunks are sorted longest first, so slicing them gives the very batches
# sentence-transformers would form in one big call, and each batch stored is one step of
# progress (a retry then resumes from exactly what its heartbeat says was stored).
EMBED_GROUP = 256

# (stage, done, total), stages in order: "scanning", "chunking" (total: the files to read and
# chunk), "embedding" (total: the chunks to embed), "recording". `done` always counts the
# chunks embedded and stored by this run (and by `embedded_before`), so a heartbeat can
# carry it as resume state whatever the stage.
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class CodeHit:
    id: str
    score: float
    path: str
    symbol: str | None
    start_line: int
    end_line: int
    language: str
    text: str
    queries: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "symbol": self.symbol,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "language": self.language,
            "score": round(self.score, 4),
            "text": self.text,
        }


# ---------------------------------------------------------------------------- the index


def collection_slug(identity: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", identity.lower()).strip("-")[:48] or "model"


class CodeIndex:
    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        *,
        keep_commits: int = 8,
        max_file_bytes: int = 512 * 1024,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.keep_commits = keep_commits
        self.max_file_bytes = max_file_bytes
        slug = collection_slug(embedder.identity)
        self.code = f"code-{slug}"
        self.incidents = f"incidents-{slug}"
        store.ensure_collection(self.code, embedder.dimension)
        store.ensure_collection(self.incidents, embedder.dimension)

    # -- state ----------------------------------------------------------------

    def indexed_commits(self, repo: str) -> list[str]:
        """Commits `repo` is indexed at, oldest first (partly indexed ones included)."""
        return list(self._repo_record(repo).get("commits", []))

    def partial_commits(self, repo: str) -> list[str]:
        """Indexed commits that hold only an incident's focus files so far (remedy.index.focus)."""
        return list(self._repo_record(repo).get("partial", []))

    def _repo_record(self, repo: str) -> dict[str, Any]:
        found = self.store.scroll(
            self.code, Where({"kind": "repo", "repo": repo}), ["commits", "partial"]
        )
        return found[0][1] if found else {}

    def head(self, repo: str) -> str | None:
        commits = self.indexed_commits(repo)
        return commits[-1] if commits else None

    # -- indexing -------------------------------------------------------------

    def index(
        self,
        repo: str,
        checkout: Path,
        commit: str,
        *,
        progress: Progress = _no_progress,
        embedded_before: int = 0,
        only_paths: Collection[str] | None = None,
    ) -> IndexResult:
        """Bring `repo` up to `commit`, read from the git repository at `checkout`.

        `embedded_before` is what an earlier attempt of the same run already embedded (from
        its heartbeat): those chunks are in the store now and count as embedded, not reused.
        With `only_paths`, only those files are indexed and the commit is recorded as partly
        indexed until a run without it completes it.
        """
        started = time.perf_counter()
        progress("scanning", embedded_before, 0)
        files, skipped = list_repo_files(checkout, commit, self.max_file_bytes)
        if only_paths is not None:
            wanted = set(only_paths)
            files = [f for f in files if f.path in wanted]
        base = {"repo": repo}
        records = {
            (p["path"], p["blob"]): (pid, p)
            for pid, p in self.store.scroll(
                self.code, Where({**base, "kind": "file"}), ["path", "blob", "chunks", "commits"]
            )
        }
        existing = dict(
            self.store.scroll(
                self.code, Where({**base, "kind": "chunk"}), ["commits", "start_line", "end_line"]
            )
        )
        repo_record = self._repo_record(repo)
        retained_before = list(repo_record.get("commits", []))
        previous_head = retained_before[-1] if retained_before else None
        retained = [c for c in retained_before if c != commit] + [commit]
        retained = retained[-self.keep_commits :]
        partial = [c for c in repo_record.get("partial", []) if c in retained and c != commit]
        if only_paths is not None:
            partial.append(commit)

        # 1. Which file versions are new (or lost chunks, which re-chunking repairs)?
        desired: dict[str, tuple[int, int]] = {}
        known_records: list[tuple[str, dict[str, Any]]] = []
        new_files: list[RepoFile] = []
        for f in files:
            record = records.get((f.path, f.blob))
            if record and all(c[0] in existing for c in record[1].get("chunks", [])):
                known_records.append(record)
                for cid, start, end in record[1].get("chunks", []):
                    desired.setdefault(cid, (start, end))
            else:
                new_files.append(f)

        # 2. Chunk the new versions; embed only chunks the store has never seen.
        progress("chunking", embedded_before, len(new_files))
        new_records: list[PointData] = []
        pending: dict[str, Chunk] = {}
        contents = read_blobs(checkout, [f.blob for f in new_files])
        for f in new_files:
            text, reason = decode_source(contents.get(f.blob, b""))
            chunks = chunk_file(f.path, text) if text is not None else []
            entries = []
            for chunk in chunks:
                cid = point_id(repo, chunk.path, chunk.symbol or "", chunk.content_hash)
                entries.append([cid, chunk.start_line, chunk.end_line])
                desired.setdefault(cid, (chunk.start_line, chunk.end_line))
                if cid not in existing:
                    pending.setdefault(cid, chunk)
            record_payload = {"kind": "file", "repo": repo, "path": f.path, "blob": f.blob,
                       "chunks": entries, "commits": [commit], "skipped": reason}  # fmt: skip
            new_records.append(PointData(point_id(repo, "file", f.path, f.blob), record_payload))
            if reason:
                skipped += 1
        embedded = self._embed_and_store(repo, commit, pending, progress, embedded_before)
        total_embedded = embedded_before + embedded
        progress("recording", total_embedded, total_embedded)

        # 3. Record the new file versions, then mark every present chunk with this commit.
        self.store.upsert(self.code, new_records)
        keep = set(retained)
        regroup: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for cid, (start, end) in desired.items():
            if cid in pending:
                continue
            payload = existing[cid]
            _regroup(regroup, cid, list(payload.get("commits") or []), keep, commit)
            if (payload.get("start_line"), payload.get("end_line")) != (start, end):
                self.store.set_payload(self.code, [cid], {"start_line": start, "end_line": end})
        for pid, payload in known_records:
            _regroup(regroup, pid, list(payload.get("commits") or []), keep, commit)
        for commits_key, ids in regroup.items():
            self.store.set_payload(self.code, ids, {"commits": list(commits_key)})
        repo_point = PointData(
            point_id(repo, "repo"),
            {"kind": "repo", "repo": repo, "commits": retained, "partial": partial},
        )
        self.store.upsert(self.code, [repo_point])

        # 4. Forget what no retained commit holds any more.
        stale = Where(base, none_of={"commits": retained})
        purged = self.store.count(self.code, stale)
        if purged:
            self.store.delete_where(self.code, stale)
        deleted = 0
        if previous_head and previous_head != commit:
            deleted = sum(
                1
                for cid, p in existing.items()
                if previous_head in p.get("commits", []) and cid not in desired
            )
        return IndexResult(
            repo=repo,
            commit=commit,
            files=len(files) - sum(1 for r in new_records if r.payload["skipped"]),
            skipped_files=skipped,
            chunks=len(desired),
            embedded=total_embedded,
            reused=max(0, len(desired) - total_embedded),
            deleted=deleted,
            purged=purged,
            seconds=round(time.perf_counter() - started, 3),
            backend=f"{self.embedder.backend} + {self.store.kind}",
            complete=only_paths is None,
        )

    def _embed_and_store(
        self,
        repo: str,
        commit: str,
        pending: dict[str, Chunk],
        progress: Progress,
        embedded_before: int,
    ) -> int:
        # Longest first, grouped: every model batch holds texts of similar length.
        order = sorted(pending.items(), key=lambda item: -len(item[1].embed_text))
        done = 0
        progress("embedding", embedded_before, embedded_before + len(order))
        step = max(1, min(EMBED_GROUP, self.embedder.batch_size))
        for start in range(0, len(order), step):
            group = order[start : start + step]
            vectors = self.embedder.embed([chunk.embed_text for _, chunk in group])
            points = [
                PointData(
                    cid,
                    {
                        "kind": "chunk",
                        "repo": repo,
                        "path": chunk.path,
                        "symbol": chunk.symbol,
                        "unit": chunk.kind,
                        "language": chunk.language,
                        "start_line": chunk.start_line,
                        "end_line": chunk.end_line,
                        "text": chunk.text,
                        "commits": [commit],
                    },
                    vector.tolist(),
                    lexical_document(chunk.embed_text),
                )
                for (cid, chunk), vector in zip(group, vectors, strict=True)
            ]
            self.store.upsert(self.code, points)
            done += len(group)
            progress("embedding", embedded_before + done, embedded_before + len(order))
        return done

    # -- searching ------------------------------------------------------------

    def search(self, repo: str, commit: str, queries: Sequence[str], limit: int) -> list[CodeHit]:
        """Hybrid search for each query at `commit`, merged: a chunk keeps its best score."""
        texts = [q for q in queries if q.strip()]
        if not texts:
            return []
        vectors = self.embedder.embed(texts)
        where = Where({"repo": repo, "kind": "chunk", "commits": commit})
        merged: dict[str, CodeHit] = {}
        for text, vector in zip(texts, vectors, strict=True):
            hits = self.store.hybrid(
                self.code, vector.tolist(), lexical_query(text), where, limit, max(50, 4 * limit)
            )
            for hit in hits:
                found = merged.get(hit.id)
                if found is None:
                    found = merged[hit.id] = _code_hit(hit)
                found.score = max(found.score, _normalised(hit.score))
                found.queries.append(text)
        ranked = sorted(merged.values(), key=lambda h: (-h.score, -len(h.queries), h.path))
        return ranked

    # -- past incidents -------------------------------------------------------

    def record_incident(self, incident_id: str, payload: dict[str, Any], text: str) -> str:
        pid = point_id("incident", incident_id)
        vector = self.embedder.embed([text])[0]
        point = PointData(pid, payload, vector.tolist(), lexical_document(text))
        self.store.upsert(self.incidents, [point])
        return pid

    def similar_incidents(
        self, service: str, text: str, limit: int, exclude: str | None = None
    ) -> list[Hit]:
        where = Where({"service": service})
        if not self.store.count(self.incidents, where):
            return []  # a service's first incidents: nothing to embed the question for
        vector = self.embedder.embed([text])[0]
        hits = self.store.hybrid(
            self.incidents, vector.tolist(), lexical_query(text),
            where, limit + 1, max(50, 4 * limit),
        )  # fmt: skip
        return [
            Hit(h.id, _normalised(h.score), h.payload)
            for h in hits
            if h.payload.get("incident_id") != exclude
        ][:limit]


def repo_key(config: RemedyConfig, service: str | None, checkout: str) -> str:
    """How the index names a repository: the service's configured location (credentials
    redacted), so every worktree and mirror of it shares one index; else the checkout."""
    if service and service in config.services:
        return redact_location(config.repo_location(service))
    return str(Path(checkout).resolve())


@contextlib.contextmanager
def code_index(
    config: RemedyConfig,
    lend: Callable[[], contextlib.AbstractContextManager[VectorStore]] | None = None,
) -> Iterator[CodeIndex]:
    """The configured index over the store `lend` lends for the block (a worker's
    `StoreKeeper`); else over one `open_vector_store` opens, closed after."""
    with (lend or (lambda: contextlib.closing(open_vector_store(config))))() as store:
        yield CodeIndex(
            store,
            get_embedder(config.embeddings),
            keep_commits=config.qdrant.keep_commits,
            max_file_bytes=config.qdrant.max_file_bytes,
        )


def _regroup(
    groups: dict[tuple[str, ...], list[str]],
    pid: str,
    old: Sequence[str],
    keep: set[str],
    commit: str,
) -> None:
    """File `pid` under its new commit list (retained ones, then `commit`) if that changes it;
    points sharing a list are then updated in one call."""
    new = (*(c for c in old if c in keep and c != commit), commit)
    if list(new) != list(old):
        groups[new].append(pid)


def _normalised(rrf: float) -> float:
    """RRF scores as a fraction of the best possible: first in both rankings, which Qdrant
    scores 2/k (ranks count from 0)."""
    return min(1.0, rrf * RRF_K / 2)


def _code_hit(hit: Hit) -> CodeHit:
    p = hit.payload
    return CodeHit(
        id=hit.id,
        score=_normalised(hit.score),
        path=str(p.get("path", "")),
        symbol=p.get("symbol"),
        start_line=int(p.get("start_line", 1)),
        end_line=int(p.get("end_line", 1)),
        language=str(p.get("language", "")),
        text=str(p.get("text", "")),
    )
