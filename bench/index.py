"""Code index benchmark on a real code base: Pygments, as installed here from PyPI.

    .venv/bin/python bench/index.py [--package pygments] [--sample 400] [--queries 60]

Prints, in one run: raw model throughput on the chunks, cold index throughput (and its
ratio to raw), re-index after a one-file change (seconds, ratio to cold), query latency
p50/p99, and the chosen embedding backend's speed-up over float32 torch with a retrieval
quality check. Figures also go to bench/out/index.json. bench/README.md keeps the numbers.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from remedy.config import EmbeddingsConfig
from remedy.index.chunking import Chunk, chunk_file, decode_source
from remedy.index.core import CodeIndex
from remedy.index.edge_store import EdgeStore
from remedy.index.embed import Embedder, get_embedder, model_location
from remedy.index.files import list_repo_files, read_blobs


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def make_repo(package: str, root: Path) -> Path:
    source = Path(importlib.import_module(package).__file__ or "").parent
    repo = root / "repo"
    shutil.copytree(source, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    git(repo.parent, "init", "--quiet", "--initial-branch=main", str(repo))
    git(repo, "add", "--all")
    commit(repo, "import")
    return repo


def commit(repo: Path, message: str) -> str:
    git(repo, "-c", "user.name=bench", "-c", "user.email=bench@example.com",
        "commit", "--quiet", "-m", message)  # fmt: skip
    return git(repo, "rev-parse", "HEAD")


def all_chunks(repo: Path, sha: str) -> tuple[list[Chunk], int]:
    files, _ = list_repo_files(repo, sha, 512 * 1024)
    blobs = read_blobs(repo, [f.blob for f in files])
    chunks: list[Chunk] = []
    python_files = 0
    for f in files:
        text, _ = decode_source(blobs[f.blob])
        if text is not None:
            chunks += chunk_file(f.path, text)
            python_files += f.path.endswith(".py")
    return chunks, python_files


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def docstring_queries(chunks: list[Chunk], limit: int, rng: random.Random) -> list[tuple[str, int]]:
    """(first docstring line, index of its chunk) for functions that have one."""
    found = []
    for i, chunk in enumerate(chunks):
        if chunk.kind not in {"function", "method"} or chunk.context:
            continue
        try:
            node = ast.parse(chunk.text.strip()).body[0]
        except (SyntaxError, IndexError):
            continue
        doc = ast.get_docstring(node) if isinstance(node, ast.FunctionDef) else None
        first = doc.strip().splitlines()[0] if doc else ""
        if len(first.split()) >= 4:
            found.append((first, i))
    rng.shuffle(found)
    return found[:limit]


def retrieval(
    embedder: Embedder, corpus: np.ndarray, queries: list[tuple[str, int]]
) -> tuple[float, float, np.ndarray]:
    """(recall@1, recall@5) of each docstring line finding its own function, and rankings.

    The query's own docstring is inside the chunk, so the task is easy; it is here to show
    that the faster backend ranks like float32 does, not to grade the model."""
    vectors = embedder.embed([q for q, _ in queries])
    scores = vectors @ corpus.T
    ranks = np.argsort(-scores, axis=1)
    hits1 = np.mean([ranks[i, 0] == target for i, (_, target) in enumerate(queries)])
    hits5 = np.mean([target in ranks[i, :5] for i, (_, target) in enumerate(queries)])
    return float(hits1), float(hits5), ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="pygments")
    parser.add_argument("--sample", type=int, default=400, help="chunks for the backend check")
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    rng = random.Random(7)
    out: dict[str, object] = {"package": args.package}

    with tempfile.TemporaryDirectory(prefix="remedy-bench-index-") as tmp:
        root = Path(tmp)
        repo = make_repo(args.package, root)
        head = git(repo, "rev-parse", "HEAD")
        chunks, python_files = all_chunks(repo, head)
        out.update(python_files=python_files, chunks=len(chunks))
        print(f"{args.package}: {python_files} Python files, {len(chunks)} chunks")

        started = time.perf_counter()
        embedder = get_embedder(EmbeddingsConfig())
        out["model_load_s"] = round(time.perf_counter() - started, 2)
        out["backend"] = embedder.backend
        print(f"backend: {embedder.backend} (loaded in {out['model_load_s']}s)")
        embedder.embed([c.embed_text for c in chunks[:32]])  # warm-up

        # 1. Raw model throughput: every chunk in one call, nothing else.
        started = time.perf_counter()
        embedder.embed([c.embed_text for c in chunks])
        raw_s = time.perf_counter() - started
        raw = len(chunks) / raw_s
        out.update(raw_seconds=round(raw_s, 1), raw_chunks_per_s=round(raw, 1))
        print(f"raw model throughput: {raw:.1f} chunks/s ({raw_s:.1f}s)")

        # 2. Cold index: git listing, reading, chunking, embedding, storing.
        index = CodeIndex(EdgeStore(root / "index"), embedder)
        cold = index.index(args.package, repo, head)
        cold_rate = cold.chunks / cold.seconds
        out.update(cold=cold.model_dump(), cold_chunks_per_s=round(cold_rate, 1),
                   cold_ratio_to_raw=round(cold_rate / raw, 3))  # fmt: skip
        print(
            f"cold index: {cold.chunks} chunks in {cold.seconds:.1f}s = {cold_rate:.1f} chunks/s, "
            f"{cold_rate / raw:.2f} of raw (target >= 0.9)"
        )

        # 3. Re-index after a one-file change: one function gains a line.
        target = next(c for c in chunks if c.kind == "function" and c.end_line - c.start_line > 3)
        path = repo / target.path
        lines = path.read_text().split("\n")
        last = lines[target.end_line - 1]
        indent = last[: len(last) - len(last.lstrip())]
        lines.insert(target.end_line - 1, f"{indent}# reviewed")
        path.write_text("\n".join(lines))
        git(repo, "add", "--all")
        changed = commit(repo, "touch one function")
        warm = index.index(args.package, repo, changed)
        out.update(
            reindex=warm.model_dump(), reindex_ratio_to_cold=round(warm.seconds / cold.seconds, 4)
        )
        print(
            f"re-index after a one-file change ({target.path}): {warm.seconds:.2f}s, "
            f"{warm.embedded} embedded, {warm.reused} reused, "
            f"{100 * warm.seconds / cold.seconds:.2f}% of cold (target <= 2%)"
        )

        # 4. Query latency: the whole search (query embedding + hybrid query) and the store.
        queries = docstring_queries(chunks, args.queries, rng)
        total_ms, store_ms = [], []
        for text, _ in queries:
            started = time.perf_counter()
            index.search(args.package, changed, [text], 8)
            total_ms.append(1000 * (time.perf_counter() - started))
        from remedy.index.embed import lexical_query
        from remedy.index.store import Where

        vectors = embedder.embed([q for q, _ in queries])
        where = Where({"repo": args.package, "kind": "chunk", "commits": changed})
        for (text, _), vector in zip(queries, vectors, strict=True):
            started = time.perf_counter()
            index.store.hybrid(index.code, vector.tolist(), lexical_query(text), where, 8, 50)
            store_ms.append(1000 * (time.perf_counter() - started))
        index.store.close()
        latency = {
            "search_p50": round(statistics.median(total_ms), 2),
            "search_p99": round(percentile(total_ms, 0.99), 2),
            "store_p50": round(statistics.median(store_ms), 2),
            "store_p99": round(percentile(store_ms, 0.99), 2),
        }
        out["query_ms"] = latency
        print(
            f"query latency over {len(queries)} queries: search p50 {latency['search_p50']} ms, "
            f"p99 {latency['search_p99']} ms (store alone p50 {latency['store_p50']} ms, "
            f"p99 {latency['store_p99']} ms)"
        )

        # 5. The chosen backend against float32 torch, on a sample: speed and quality.
        sample = rng.sample(chunks, min(args.sample, len(chunks)))
        texts = [c.embed_text for c in sample]
        location, identity = model_location(EmbeddingsConfig())
        fp32 = Embedder(location, identity, "float32", embedder.batch_size)
        fp32.embed(texts[:32])
        started = time.perf_counter()
        reference = fp32.embed(texts)
        fp32_rate = len(texts) / (time.perf_counter() - started)
        started = time.perf_counter()
        chosen = embedder.embed(texts)
        chosen_rate = len(texts) / (time.perf_counter() - started)
        cosines = np.sum(reference * chosen, axis=1)
        sample_queries = docstring_queries(sample, args.queries, rng)
        r1_ref, r5_ref, ranks_ref = retrieval(fp32, reference, sample_queries)
        r1, r5, ranks = retrieval(embedder, chosen, sample_queries)
        overlap = float(
            np.mean(
                [len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(ranks_ref, ranks, strict=True)]
            )
        )
        out["backend_check"] = {
            "sample_chunks": len(texts),
            "fp32_chunks_per_s": round(fp32_rate, 1),
            "chosen_chunks_per_s": round(chosen_rate, 1),
            "speedup": round(chosen_rate / fp32_rate, 2),
            "cosine_mean": round(float(cosines.mean()), 4),
            "cosine_min": round(float(cosines.min()), 4),
            "queries": len(sample_queries),
            "recall_at_1": {"fp32": r1_ref, "chosen": r1},
            "recall_at_5": {"fp32": r5_ref, "chosen": r5},
            "top10_overlap": round(overlap, 3),
        }
        print(
            f"backend {embedder.backend} vs float32 torch on {len(texts)} chunks: "
            f"{chosen_rate:.1f} vs {fp32_rate:.1f} chunks/s = {chosen_rate / fp32_rate:.2f}x; "
            f"cosine mean {cosines.mean():.4f} (min {cosines.min():.4f}); "
            f"recall@1 {r1:.3f} vs {r1_ref:.3f}, recall@5 {r5:.3f} vs {r5_ref:.3f}, "
            f"top-10 overlap {overlap:.3f} over {len(sample_queries)} queries"
        )

    target_dir = Path(__file__).resolve().parent / "out"
    target_dir.mkdir(exist_ok=True)
    (target_dir / "index.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
