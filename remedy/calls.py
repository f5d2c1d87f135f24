"""What the failing code calls: the project code a stack frame hands its work to.

A traceback names the code it passed through, not always the code at fault: a test fails on
an assertion about what the code under test returned, a lookup fails inside a library the
project called, a helper module does its damage and returns before the error surfaces. The
frame's own source says where its work went: the calls on the failing statement (the whole
test function, for a test frame), resolved through the module's imports to files of the
repository. Those definitions are evidence the stack alone never shows.

Pure functions over source texts: `read` hands in a file's text at the incident's commit,
so they are tested without a repository. Python only; other languages yield nothing.
"""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from remedy.evidence import is_test_path

MAX_CALLEES = 6
# A same-module helper (a test's `fs = partial(black.format_str)`, a `def check(...)`) is
# followed this many steps to the project code it wraps.
MAX_LOCAL_HOPS = 2

ReadText = Callable[[str], str | None]


@dataclass(frozen=True)
class Callee:
    path: str
    symbol: str
    start_line: int
    end_line: int
    caller: str


def module_name(path: str) -> str:
    """The dotted module a repository path imports as (`src/` layouts included)."""
    stem = path[:-3] if path.endswith(".py") else path
    parts = stem.split("/")
    if parts[0] == "src" and len(parts) > 1:
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def module_path(module: str, files: Collection[str]) -> str | None:
    relative = module.replace(".", "/")
    for candidate in (f"{relative}.py", f"{relative}/__init__.py"):
        for root in ("", "src/"):
            if root + candidate in files:
                return root + candidate
    return None


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _imports(tree: ast.Module, path: str) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from the module's import statements."""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - node.level + 1]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            for alias in node.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{base}.{alias.name}".strip(".")
    return names


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _called(node: ast.AST) -> Iterator[str]:
    """Dotted names called (or, in a helper's definition, referenced) under `node`, in order."""
    found: list[tuple[int, int, str]] = []
    for child in ast.walk(node):
        target = child.func if isinstance(child, ast.Call) else None
        if target is None and isinstance(child, ast.Attribute | ast.Name):
            target = child if isinstance(getattr(child, "ctx", None), ast.Load) else None
            if target is not None and not isinstance(node, ast.Assign):
                continue  # outside a helper's assignment, only calls count
        if target is None:
            continue
        name = _dotted(target)
        if name and name.split(".")[0] not in {"self", "cls", "super"}:
            found.append((target.lineno, target.col_offset, name))
    return (name for _, _, name in sorted(found))


def _innermost(tree: ast.AST, line: int, kinds: tuple[type, ...]) -> ast.AST | None:
    best: ast.AST | None = None
    for node in ast.walk(tree):
        if isinstance(node, kinds):
            start, end = node.lineno, node.end_lineno or node.lineno  # type: ignore[attr-defined]
            if start <= line <= end:
                inner = best is None or start >= best.lineno  # type: ignore[attr-defined]
                best = node if inner else best
    return best


def _defines(node: ast.stmt, name: str) -> bool:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(target, ast.Name) and target.id == name for target in node.targets)
    return False


def _definition(tree: ast.Module, symbol: str) -> ast.AST | None:
    """The top-level def, class or assignment `symbol` names (`Cls.method` too)."""
    scope: list[ast.stmt] = tree.body
    found: ast.AST | None = None
    for part in symbol.split("."):
        found = None
        for node in scope:
            if _defines(node, part):
                found = node
        if found is None:
            return None
        scope = found.body if isinstance(found, ast.ClassDef) else []
    return found


class _Resolver:
    def __init__(self, files: Collection[str], read: ReadText) -> None:
        self.files = files
        self.read = read
        self._trees: dict[str, ast.Module | None] = {}

    def tree(self, path: str) -> ast.Module | None:
        if path not in self._trees:
            text = self.read(path)
            self._trees[path] = _parse(text) if text is not None else None
        return self._trees[path]

    def resolve(self, dotted: str, path: str, depth: int = 0) -> tuple[str, str, ast.AST] | None:
        """(path, symbol, definition) of the project code `dotted` names in module `path`."""
        tree = self.tree(path)
        if tree is None:
            return None
        head, _, rest = dotted.partition(".")
        imported = _imports(tree, path).get(head)
        if imported is None:
            local = _definition(tree, dotted)
            return (path, dotted, local) if local is not None else None
        parts = f"{imported}.{rest}".strip(".").split(".")
        for cut in range(len(parts), 0, -1):
            target = module_path(".".join(parts[:cut]), self.files)
            if target is None:
                continue
            symbol = ".".join(parts[cut:])
            if not symbol:
                return None  # a module called or referenced as a whole
            target_tree = self.tree(target)
            if target_tree is None:
                return None
            if (definition := _definition(target_tree, symbol)) is not None:
                return target, symbol, definition
            if depth < 2:  # a package re-exporting the name (`from .core import f`)
                return self.resolve(symbol, target, depth + 1)
            return None
        return None


def _named_function(tree: ast.AST, name: str, line: int) -> ast.AST | None:
    """The def called `name` nearest `line`: a traceback's line can be off by a few when the
    file changed since (a test file taken from the fix, a reformatted module)."""
    named = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    ]
    return min(named, key=lambda node: abs(node.lineno - line), default=None)


def callees(
    path: str,
    line: int,
    files: Collection[str],
    read: ReadText,
    *,
    function: str | None = None,
    limit: int = MAX_CALLEES,
) -> list[Callee]:
    """The project definitions a frame at `path:line` (in `function`) calls, in call order.

    For a test frame, every call of the test function (the assertion is rarely the line
    that computed the wrong value); otherwise the calls of the failing statement. Same-module
    helpers are followed to the project code they wrap.
    """
    resolver = _Resolver(files, read)
    tree = resolver.tree(path)
    if tree is None or not path.endswith(".py"):
        return []
    scope: ast.AST | None
    if is_test_path(path):
        scope = _named_function(tree, function, line) if function else None
        scope = scope or _innermost(tree, line, (ast.FunctionDef, ast.AsyncFunctionDef))
    else:
        scope = _innermost(tree, line, (ast.stmt,))
    if scope is None:
        return []
    found: dict[tuple[str, str], Callee] = {}
    pending = [(name, path, 0) for name in _called(scope)]
    caller = f"{posixpath.normpath(path)}:{line}"
    while pending and len(found) < limit:
        name, where, hops = pending.pop(0)
        resolved = resolver.resolve(name, where)
        if resolved is None or resolved[:2] in found:
            continue
        target, symbol, definition = resolved
        local_helper = target == path and hops < MAX_LOCAL_HOPS
        if local_helper:
            # The frame's own module: what the helper wraps is the code under suspicion.
            pending[:0] = [(inner, target, hops + 1) for inner in _called(definition)]
            continue
        start = definition.lineno  # type: ignore[attr-defined]
        end = definition.end_lineno or start  # type: ignore[attr-defined]
        found[target, symbol] = Callee(target, symbol, start, end, caller)
    return list(found.values())
