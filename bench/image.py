"""Build Remedy's image with podman and run it: `remedy --version`, the user it runs as, the
embedding model loading offline, then `remedy serve` and its /healthz, as the Dockerfile
ships it.

    sudo python bench/image.py            # installs podman from Debian's packages if missing

Where Docker Hub is out of reach (these build machines reach PyPI and Debian's mirrors only)
the base image is made here: a Debian bookworm root filesystem from Debian's packages
(mmdebstrap: python3, venv, ca-certificates), imported into podman and given to the
Dockerfile as PYTHON_IMAGE. The machine's pip configuration and local wheels are mounted into
the build, so pip inside finds what pip outside finds (torch's CPU build among them). Builds
use chroot isolation and `buildah run` runs the image's commands: this machine is a
container itself, whose limits the OCI runtime may not set (crun refuses RLIMIT_NPROC).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/remedy:bench"
LOCAL_BASE = "localhost/remedy-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The machine's pip setup, mounted read-only into every RUN of the build where it exists:
# configuration (site and root's own), local wheels and indexes, and the CA bundle that
# holds the certificate of the machine's HTTPS proxy.
PIP_PATHS = (
    "/etc/pip.conf",
    "/etc/xdg/pip",
    str(Path.home() / ".config" / "pip"),
    "/opt/wheels",
    "/opt/pypi",
    "/opt/pypi-more",
    "/etc/ssl/certs/ca-certificates.crt",
)
HEALTH_DEADLINE_S = 180.0
LOAD_MODEL = (
    "from remedy.config import EmbeddingsConfig; from remedy.index.embed import warm_embedder; "
    "print(warm_embedder(EmbeddingsConfig()).identity)"
)


def run(
    *argv: str, log: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(argv), flush=True)
    if log is None:
        return subprocess.run(argv, check=check, text=True, capture_output=True)
    with log.open("w") as sink:
        done = subprocess.run(argv, check=False, text=True, stdout=sink, stderr=subprocess.STDOUT)
    if check and done.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(
            f"{argv[0]} {argv[1]} failed ({done.returncode}); the end of {log}:\n{tail}"
        )
    return done


def ensure_tools() -> None:
    missing = [tool for tool in ("podman", "buildah", "mmdebstrap") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"install {' '.join(missing)} (apt-get install podman buildah mmdebstrap)")
    run("apt-get", "install", "-y", "-qq", "podman", "buildah", "mmdebstrap", check=False)
    if any(shutil.which(tool) is None for tool in missing):
        run("apt-get", "update", "-qq")
        run("apt-get", "install", "-y", "-qq", "podman", "buildah", "mmdebstrap")


def local_base(work: Path) -> str:
    """A bookworm base image made from Debian's packages, unless podman has it already."""
    if run("podman", "image", "exists", LOCAL_BASE, check=False).returncode == 0:
        return LOCAL_BASE
    rootfs = work / "base.tar"
    run(
        "mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm",
        str(rootfs), DEBIAN_MIRROR, log=work / "mmdebstrap.log",
    )  # fmt: skip
    run("podman", "import", str(rootfs), LOCAL_BASE, log=work / "import.log")
    return LOCAL_BASE


def base_image(work: Path, wanted: str | None) -> str:
    if wanted:
        return wanted
    shipped = _dockerfile_default("PYTHON_IMAGE")
    if run("podman", "pull", "-q", shipped, check=False).returncode == 0:
        return shipped
    print(f"{shipped} cannot be pulled here; making a base from Debian's packages", flush=True)
    return local_base(work)


def _dockerfile_default(arg: str) -> str:
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith(f"ARG {arg}="):
            return line.split("=", 1)[1]
    raise SystemExit(f"Dockerfile has no ARG {arg}")


def build(work: Path, base: str, torch_index: str | None) -> float:
    mounts = [f"--volume={path}:{path}:ro" for path in PIP_PATHS if Path(path).exists()]
    args = [f"--build-arg=PYTHON_IMAGE={base}"]
    if torch_index:
        args.append(f"--build-arg=TORCH_INDEX_URL={torch_index}")
    started = time.monotonic()
    run(
        "podman", "build", "--isolation=chroot", "--network=host", *mounts, *args,
        f"--tag={IMAGE}", str(REPO_ROOT), log=work / "build.log",
    )  # fmt: skip
    return time.monotonic() - started


def in_image(container: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return run("buildah", "run", "--isolation=chroot", "--network=host", container, "--", *argv)


def healthz(container: str, work: Path, port: int) -> tuple[int, float]:
    """`remedy serve` in the image (no Temporal: /healthz answers, /readyz says starting)."""
    config = work / "remedy.toml"
    config.write_text(
        f'[intake]\nhost = "127.0.0.1"\nport = {port}\n[temporal]\naddress = "127.0.0.1:9"\n'
    )
    mount = f"--volume={config}:/etc/remedy/remedy.toml:ro"
    argv = ["buildah", "run", "--isolation=chroot", "--network=host", mount, container, "--"]
    serve = [*argv, "remedy", "serve", "--config", "/etc/remedy/remedy.toml"]
    print("+", " ".join(serve), flush=True)
    with (work / "serve.log").open("w") as sink:
        process = subprocess.Popen(serve, stdout=sink, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        while time.monotonic() - started < HEALTH_DEADLINE_S:
            if process.poll() is not None:
                raise SystemExit(f"remedy serve exited {process.returncode}: {work / 'serve.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
                    return reply.status, time.monotonic() - started
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        raise SystemExit(f"/healthz did not answer within {HEALTH_DEADLINE_S:.0f} s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", help="base image (default: the Dockerfile's, else one made here)")
    parser.add_argument(
        "--torch-index",
        default="https://pypi.org/simple",
        help="TORCH_INDEX_URL for the build (default: PyPI, which holds the CPU build here)",
    )
    parser.add_argument("--port", type=int, default=18080)
    options = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="remedy-image-"))
    base = base_image(work, options.base)
    build_s = build(work, base, options.torch_index)
    size = run("podman", "image", "inspect", "--format={{.Size}}", IMAGE).stdout.strip()
    container = run("buildah", "from", IMAGE).stdout.strip()
    try:
        version = in_image(container, "remedy", "--version").stdout.strip()
        user = in_image(container, "id", "-u").stdout.strip()
        # The index worker's model is in the image and loads with the hub out of reach.
        model = in_image(container, "python", "-c", LOAD_MODEL).stdout.strip()
        status, health_s = healthz(container, work, options.port)
    finally:
        run("buildah", "rm", container, check=False)
    print(
        json.dumps(
            {
                "base": base,
                "build_s": round(build_s, 1),
                "image_bytes": int(size),
                "version": version,
                "uid": user,
                "model": model,
                "healthz": status,
                "healthz_after_s": round(health_s, 1),
                "logs": str(work),
            },
            indent=2,
        )
    )
    if not (version.startswith("remedy ") and status == 200 and user != "0" and model):
        sys.exit(1)


if __name__ == "__main__":
    main()
