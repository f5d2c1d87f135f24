"""Which way imports point (docs/architecture.md), checked on every module's import lines.

starter -> worker -> workflows -> activities -> remedy: a layer imports only the layers
below it. `remedy/` is the domain every side imports, so it stays free of Temporal's worker
and client, web frameworks and the clients of other systems; `starter/` reaches activities
only through workflows.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["starter", "worker", "workflows", "activities", "remedy"]
# remedy/ must not import these (a prefix matches its submodules).
NOT_IN_DOMAIN = (
    "temporalio.worker",
    "temporalio.activity",
    "temporalio.client",
    "temporalio.testing",
    "fastapi",
    "starlette",
    "uvicorn",
    "slack_sdk",
    "slack_bolt",
    "github",
    "anthropic",
    "ollama",
    "httpx",
    "aiohttp",
)


def _modules(layer: str) -> list[Path]:
    single = ROOT / f"{layer}.py"
    return [single] if single.exists() else sorted((ROOT / layer).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    above = LAYERS[: LAYERS.index(layer)]
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _modules(layer)
        for line, module in _imports(path)
        if any(_matches(module, upper) for upper in above)
    ]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_domain_imports_no_worker_web_framework_or_service_client() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _modules("remedy")
        for line, module in _imports(path)
        if any(_matches(module, banned) for banned in NOT_IN_DOMAIN)
    ]
    assert not wrong, "remedy/ must stay importable by every side:\n" + "\n".join(wrong)


def test_the_starter_reaches_activities_only_through_workflows() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _modules("starter")
        for line, module in _imports(path)
        if _matches(module, "activities")
    ]
    assert not wrong, "starter/ imports activity code:\n" + "\n".join(wrong)
