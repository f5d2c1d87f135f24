"""One fingerprint per bug: the same failure keeps its fingerprint across deploys.

The algorithm, and why each part counts or does not, is in docs/fingerprinting.md.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Sequence

from remedy.models import Frame
from remedy.stacktrace import mark_in_app

# Bump when the algorithm changes: every open incident gets a new fingerprint then.
ALGORITHM = "remedy-fingerprint-v1"

# ---------------------------------------------------------------------------- message

_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://[^\s'\"<>]++")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]++@[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)++")
_UUID = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"(?![0-9A-Fa-f])"
)
_TIMESTAMP = re.compile(
    r"(?<!\d)\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?!\d)"
)
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f:]{3,39}(?![\w:])")
_HEX_ADDRESS = re.compile(r"(?<![\w])0[xX][0-9A-Fa-f]++")
# Eight or more hex digits mixing letters and decimal digits: words ("deadbeef") and plain
# numbers are left to the other patterns.
_HEX_STRING = re.compile(r"(?<![\w])(?=[A-Fa-f]*+[0-9])(?=[0-9]*+[A-Fa-f])[0-9A-Fa-f]{8,}+(?![\w])")
_QUOTED = re.compile(r"""(?<![\w])(?:'[^'\n]*+'|"[^"\n]*+")(?![\w])""")
_NUMBER = re.compile(r"(?<![A-Za-z_\d])\d++(?:\.\d++)*+")


def _ipv6(match: re.Match[str]) -> str:
    candidate = match[0]
    if candidate.count(":") < 2 or not any(char not in ":" for char in candidate):
        return candidate
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return candidate
    return "<ip>"


def _ipv4(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv4Address(match[0].split(":", 1)[0])
    except ValueError:
        return match[0]
    return "<ip>"


def normalize_message(message: str) -> str:
    """Replace the parts of an error message that vary between occurrences of one bug.

    URLs, emails, UUIDs, ISO timestamps, IP addresses, hex addresses (0x7f...) and long hex
    strings, quoted values ('sku', "x") and numbers become <url>, <email>, <uuid>, <ts>,
    <ip>, <hex>, <str> and <num>; whitespace runs become one space.
    """
    text = _URL.sub("<url>", message)
    text = _EMAIL.sub("<email>", text)
    text = _UUID.sub("<uuid>", text)
    text = _TIMESTAMP.sub("<ts>", text)
    text = _IPV4.sub(_ipv4, text)
    text = _IPV6.sub(_ipv6, text)
    text = _HEX_ADDRESS.sub("<hex>", text)
    text = _HEX_STRING.sub("<hex>", text)
    text = _QUOTED.sub("<str>", text)
    text = _NUMBER.sub("<num>", text)
    return " ".join(text.split())


# ---------------------------------------------------------------------------- frames

# Everything up to and including the last of these is where a dependency or the standard
# library happens to be installed; what follows names the code itself.
_INSTALL_ROOT = re.compile(
    r"^.*(?:^|/)(?:site-packages|dist-packages|node_modules|pkg/mod|go/src)/"
    r"|^.*/lib(?:64)?/python\d+(?:\.\d+)?/"
)
_DOTTED_VERSION = re.compile(r"\d+\.\d+")
_BUILD_ID = re.compile(r"^(?:\d+|v\d+|(?=[0-9a-f]*[0-9])[0-9a-f]{7,})$")
_MODULE_VERSION = re.compile(r"@v\d[^/]*")
_SEGMENT_PARTS = re.compile(r"[-_@]")
# Directories a deploy puts code under; as the directory of the kept tail they say nothing.
_DEPLOY_ROOTS = frozenset(
    {
        "app",
        "apps",
        "build",
        "builds",
        "code",
        "current",
        "deploy",
        "dist",
        "home",
        "opt",
        "project",
        "releases",
        "service",
        "src",
        "srv",
        "tmp",
        "usr",
        "var",
        "workspace",
        "www",
    }
)
_GENERATED_SUFFIX = re.compile(r"\$\d+")  # Java lambda$run$0, access$000
_GO_CLOSURE = re.compile(r"(?<=\.)(func|gowrap|deferwrap)\d+(?:\.\d+)*")


def _is_version_segment(segment: str) -> bool:
    """`app-1.2.3`, `20240101120000`, `release-42`, `3f2a9c1`: names a deploy, not code."""
    if _DOTTED_VERSION.search(segment):
        return True
    parts = _SEGMENT_PARTS.split(segment)
    if len(parts) == 1:
        # A bare "v2" is an API version package, not a deploy.
        return bool(_BUILD_ID.match(segment)) and not segment.startswith("v")
    return bool(_BUILD_ID.match(parts[-1]))


def stable_path(file: str) -> str:
    """The part of a frame's file path that survives a redeploy.

    Dependencies and the standard library keep their path inside the install root
    (`requests/sessions.py`). The service's own files keep their last two segments after
    version-looking directories are dropped, and the directory too when it is a common
    deploy root: `/srv/app-1.2.3/app/cart.py`, `/opt/app/app/cart.py` and `app/cart.py` are
    all `cart.py`; `/srv/shop/orders/views.py` is `orders/views.py`.
    """
    path = file.replace("\\", "/").removeprefix("file://")
    if path.startswith(("<", "node:")):
        return path
    path = re.sub(r"^[A-Za-z]:/", "/", path)
    installed = _INSTALL_ROOT.match(path)
    if installed:
        inner = _MODULE_VERSION.sub("", path[installed.end() :])
        return "/".join(segment for segment in inner.split("/") if segment not in ("", "."))
    segments = [segment for segment in path.split("/") if segment not in ("", ".", "..")]
    if not segments:
        return path
    *directories, name = segments
    directories = [segment for segment in directories if not _is_version_segment(segment)]
    if directories and directories[-1] not in _DEPLOY_ROOTS:
        return f"{directories[-1]}/{name}"
    return name


def _stable_function(function: str | None) -> str:
    if not function:
        return ""
    return _GO_CLOSURE.sub(r"\1", _GENERATED_SUFFIX.sub("", function.strip()))


def call_path(frames: Sequence[Frame]) -> list[tuple[str, str]]:
    """The (stable path, function) pairs a fingerprint hashes, outermost first.

    In-app frames only (all frames when none is in-app); a pair already on the path is not
    repeated, so the depth of a recursion does not change the fingerprint.
    """
    marked = mark_in_app(frames)
    chosen = [frame for frame in marked if frame.in_app] or marked
    path: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for frame in chosen:
        pair = (stable_path(frame.file), _stable_function(frame.function))
        if pair not in seen:
            seen.add(pair)
            path.append(pair)
    return path


def fingerprint(error_type: str, message: str, frames: Sequence[Frame]) -> str:
    """16 lower-case hex characters naming the bug: error type, normalized message, call path.

    Frames whose `in_app` is None are classified with `mark_in_app` (no include prefixes);
    mark them first to apply a service's `in_app_include`.
    """
    canonical = json.dumps(
        [
            ALGORITHM,
            error_type.strip().removeprefix("builtins."),
            normalize_message(message),
            call_path(frames),
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
