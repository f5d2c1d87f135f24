"""Which frames are the service's own code and which are libraries or the runtime."""

from __future__ import annotations

import re
from collections.abc import Sequence

from remedy.models import Frame

_LIBRARY_PATH = re.compile(
    r"(?:^|/)(?:site-packages|dist-packages|node_modules)/"
    r"|/lib(?:64)?/python\d+(?:\.\d+)?/"
    r"|^/usr/lib/"
    r"|^/usr/local/go/src/"
    r"|/pkg/mod/"
    r"|^node:"
    r"|^internal/"  # Node.js < 16 printed its own modules without the "node:" scheme
    r"|^<"  # <frozen importlib._bootstrap>, <string>, <anonymous>, <native>
)
_LIBRARY_MODULES = (
    "java.",
    "javax.",
    "jdk.",
    "sun.",
    "com.sun.",
    "jakarta.",
    "kotlin.",
    "kotlinx.",
    "scala.",
    "org.springframework.",
    "org.apache.",
)
_PACKAGE_ROOT = re.compile(r"^.*(?:^|/)(?:site-packages|dist-packages|node_modules)/")


def _is_in_app(frame: Frame, include: Sequence[str]) -> bool:
    file = frame.file.replace("\\", "/")
    module = frame.module or ""
    # An included prefix may name a package the team owns but installs as a dependency.
    package_path = _PACKAGE_ROOT.sub("", file)
    for prefix in include:
        if file.startswith(prefix) or package_path.startswith(prefix) or module.startswith(prefix):
            return True
    if _LIBRARY_PATH.search(file):
        return False
    if module == "runtime" or module.startswith("runtime/"):  # Go's runtime package
        return False
    return not module.startswith(_LIBRARY_MODULES)


def mark_in_app(frames: Sequence[Frame], include: Sequence[str] = ()) -> list[Frame]:
    """Decide `in_app` for frames that leave it None; frames that already say keep it.

    A frame is the service's own code unless it lies in installed packages (site-packages,
    dist-packages, node_modules, Go's module cache), a language's standard library, or is
    synthetic (`<frozen ...>`, `<string>`, `node:internal`); JVM frames of java., javax.,
    jdk., sun., kotlin., org.springframework., org.apache. (and a few more) classes are
    libraries. A frame whose file, module, or path inside an installed package starts with
    one of `include` is always in-app.
    """
    return [
        frame
        if frame.in_app is not None
        else frame.model_copy(update={"in_app": _is_in_app(frame, include)})
        for frame in frames
    ]
