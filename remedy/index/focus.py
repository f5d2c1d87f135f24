"""Which files an incident's evidence needs first, when its repository was never indexed.

A cold index of a big repository takes minutes to tens of minutes on a CPU; the incident's
evidence needs the code in and around its frames, not the whole tree. The focus is: the
files of the in-app frames, the project files they import (Python `import` and `from`
statements, resolved against the repository's own files, one hop), and the other source
files of the frames' packages. The rest of the index fills in afterwards, off the incident's
path (workflows/index.py).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath

from remedy.index.related import Located

# Beyond the frames' own files, at most this much source: about 200 chunks, embedded in
# seconds on a CPU, a few per cent of a large repository (tornado: 5,600 chunks).
FOCUS_BUDGET_BYTES = 96 * 1024
_SOURCE_SUFFIXES = (".py", ".js", ".ts", ".go", ".java", ".rb", ".rs")


def focus_paths(
    located: Sequence[Located],
    repo_files: Mapping[str, int],
    read: Callable[[str], str],
    budget_bytes: int = FOCUS_BUDGET_BYTES,
) -> list[str]:
    """Repository paths to index first, most useful first: the frames' files always, then
    their imports and their packages' files while they fit `budget_bytes`. `repo_files`
    maps each indexable path to its size; `read` gives a file's text at the incident's
    commit ("" when it cannot)."""
    modules = _module_index(list(repo_files))
    frame_files = list(dict.fromkeys(item.path for item in located))
    candidates: dict[str, None] = {}
    for path in frame_files:
        if path.endswith(".py"):
            candidates.update(dict.fromkeys(_imported_files(path, read(path), modules)))
    packages = {str(PurePosixPath(path).parent) for path in frame_files}
    candidates.update(
        dict.fromkeys(
            path
            for path in repo_files
            if str(PurePosixPath(path).parent) in packages and path.endswith(_SOURCE_SUFFIXES)
        )
    )
    chosen, used = list(frame_files), 0
    for path in candidates:
        size = repo_files.get(path, 0)
        if path not in chosen and used + size <= budget_bytes:
            chosen.append(path)
            used += size
    return chosen


def _module_index(repo_files: Sequence[str]) -> dict[str, str]:
    """Dotted module name -> path, for every Python file, under each possible source root
    (`src/shop/cart.py` is both `src.shop.cart` and `shop.cart`)."""
    index: dict[str, str] = {}
    for path in repo_files:
        if not path.endswith(".py"):
            continue
        parts = list(PurePosixPath(path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        for start in range(len(parts)):
            index.setdefault(".".join(parts[start:]), path)
    return index


def _imported_files(path: str, source: str, modules: dict[str, str]) -> list[str]:
    """The project files `path` imports (absolute and relative imports; names a `from`
    import brings in may be submodules)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    package = list(PurePosixPath(path).parent.parts)
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join([*anchor, *([base] if base else [])])
            names = [
                base,
                *(f"{base}.{alias.name}" if base else alias.name for alias in node.names),
            ]
        for name in names:
            target = modules.get(name)
            if target is not None and target != path:
                found.append(target)
    return found
