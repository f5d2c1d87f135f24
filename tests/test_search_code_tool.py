"""The model's search_code tool as the worker wires it: answered by the code index.

`diagnose` comes from worker.build_activities, the model is a loopback Ollama that calls the
tool, and the repository is indexed by the real index_repo activity, so the tool result the
model gets back is what the index found at the incident's commit, or grep when the index has
no answer (that commit is not indexed, or another index run holds the embedded store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.index import IndexActivities
from remedy.artifacts import ArtifactStore
from remedy.config import LLMConfig, RemedyConfig
from remedy.index.edge_store import EdgeStore
from remedy.models import DiagnoseRequest, ErrorInfo, Evidence, Frame, IndexRequest, Worktree
from remedy.service_policy import Severity
from tests.fakes.ollama_server import OllamaServer, answer, tool_call
from tests.repos import ServiceRepo, make_service_repo
from worker import build_activities

CART = '''def line_total(line):
    """Price of one cart line: unit price times quantity."""
    return line["price"] * line["qty"]


def apply_coupon(total, coupon):
    """Take a coupon's percentage off the total."""
    return total * (1 - coupon["percent"] / 100)
'''
MAILER = '''def send_welcome_email(user):
    """Email a new user their welcome message."""
    return f"Welcome {user['name']}"
'''
NO_FIX = {
    "summary": "coupon maths",
    "root_cause": "unknown",
    "confidence": 0.3,
    "evidence": [],
    "edits": [],
}
QUERY = "take the coupon percentage off the total"


@pytest.fixture(scope="module")
def ollama_server() -> Iterator[OllamaServer]:
    with OllamaServer() as server:
        yield server


@pytest.fixture
def ollama(ollama_server: OllamaServer) -> OllamaServer:
    ollama_server.clear()
    return ollama_server


@pytest.fixture
def shop(tmp_path: Path) -> ServiceRepo:
    repo = make_service_repo(tmp_path)
    repo.commit({"app/cart.py": CART, "app/mailer.py": MAILER}, "Add cart and mailer")
    return repo


@pytest.fixture
def indexed(
    shop: ServiceRepo, ollama: OllamaServer, tmp_path: Path
) -> tuple[RemedyConfig, Worktree]:
    """The service's config (the model: the loopback Ollama) and its head, indexed."""
    config = shop.config(tmp_path / "home", llm="local")
    config.llm = LLMConfig(ollama_host=ollama.url)
    worktree = Worktree(
        service=shop.service,
        path=str(shop.work),
        commit=shop.head(),
        branch=shop.branch,
        commit_source="release",
    )
    indexer = IndexActivities(config, ArtifactStore(config.artifacts_dir))
    ActivityEnvironment().run(indexer.index_repo, IndexRequest(worktree=worktree))
    return config, worktree


async def search_tool_reply(config: RemedyConfig, worktree: Worktree, ollama: OllamaServer) -> str:
    """What the model is told after it calls search_code once in a diagnosis."""
    store = ArtifactStore(config.artifacts_dir)
    diagnose: Callable[..., Any] = next(
        a for a in build_activities(config, store) if a.__name__ == "diagnose"
    )
    ollama.script(tool_call("search_code", query=QUERY), answer(NO_FIX))
    request = DiagnoseRequest(
        incident_id="checkout-0123456789abcdef-a1b2c3d4",
        severity=Severity.HIGH,
        worktree=worktree,
        error=ErrorInfo(type="KeyError", message="'percent'"),
        frames=[Frame(file="app/cart.py", line=8, function="apply_coupon")],
        evidence=Evidence(summary="KeyError: 'percent' in apply_coupon"),
    )
    result = await ActivityEnvironment().run(diagnose, request)
    assert result.diagnosis is not None and [c.name for c in result.tool_calls] == ["search_code"]
    reply: str = ollama.chats[1]["messages"][-1]["content"]
    return reply


async def test_the_tool_answers_from_the_index_at_the_incident_commit(
    indexed: tuple[RemedyConfig, Worktree], ollama: OllamaServer
) -> None:
    config, worktree = indexed
    reply = await search_tool_reply(config, worktree, ollama)

    lines = [line for line in reply.splitlines() if "(score " in line]
    assert lines[0].startswith("app/cart.py:6-8 apply_coupon (score "), reply
    assert "grep" not in reply


async def test_a_commit_the_index_lacks_falls_back_to_grep(
    indexed: tuple[RemedyConfig, Worktree], shop: ServiceRepo, ollama: OllamaServer
) -> None:
    config, worktree = indexed
    later = worktree.model_copy(
        update={"commit": shop.commit({"app/cart.py": CART + "\n# v2\n"}, "Note v2")}
    )

    reply = await search_tool_reply(config, later, ollama)

    assert "(the code index had no answer; grep for percentage, coupon" in reply
    assert "app/cart.py:6:def apply_coupon(total, coupon):" in reply
    assert "(score " not in reply


async def test_a_busy_embedded_store_falls_back_to_grep_within_seconds(
    indexed: tuple[RemedyConfig, Worktree], ollama: OllamaServer
) -> None:
    config, worktree = indexed
    held = EdgeStore(config.home_dir / config.qdrant.path)  # another index run holds it
    try:
        started = time.monotonic()
        reply = await search_tool_reply(config, worktree, ollama)
        waited = time.monotonic() - started
    finally:
        held.close()

    assert "(the code index had no answer; grep for" in reply
    assert waited < 30, "the tool must not wait out the indexer's two-minute lock timeout"
