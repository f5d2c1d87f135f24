"""The repair loop end to end: a fix that fails verification goes back to the model.

The real worker (every activity the product runs: git, the code index, the diagnosis through
the real `ollama` client, the bubblewrap sandbox) against a loopback Ollama. The model's first
fix applies but breaks the service's own test; the second try is shown that failure and
fixes the bug; its regression test fails before and passes after. The incident waits for
approval with attempt 2 of 3 recorded, the first try kept, and the fix marked verified.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.intake import build_incident_start
from remedy.models import ErrorEvent, ErrorInfo, IncidentStatus, Phase
from remedy.render.pull_request import pull_request_body
from remedy.render.slack import render_message
from tests.fakes.ollama_server import OllamaReply, OllamaServer, answer
from tests.repos import ALICE, ServiceRepo, make_service_repo
from tests.test_sandbox import needs_sandbox
from tests.test_spine_e2e import crash
from tests.workflow_harness import APPROVER, until_phase
from worker import build_worker
from workflows.incident import IncidentWorkflow

pytestmark = needs_sandbox

CART = (
    "def total(order):\n"
    "    discount = order['discount']\n"
    "    return order['price'] * order['qty'] - discount\n"
)
CART_TEST = (
    "from app.cart import total\n\n\n"
    "def test_discount_is_subtracted():\n"
    "    assert total({'price': 2, 'qty': 3, 'discount': 1}) == 5\n"
)
BUGGY_LINE = "    discount = order['discount']\n"
# Applies and parses, but subtracts a hundred times the discount: the service's test fails.
WRONG_FIX = "    discount = order.get('discount', 0) * 100\n"
RIGHT_FIX = "    discount = order.get('discount', 0)\n"
REGRESSION_TEST = {
    "path": "tests/test_no_discount.py",
    "content": (
        "from app.cart import total\n\n\n"
        "def test_an_order_without_discount_costs_price_times_qty():\n"
        "    assert total({'price': 2, 'qty': 3}) == 6\n"
    ),
    "explanation": "an order without a discount must not crash total()",
}
FAILURE_SECTION = "Earlier tries at this fix failed"


def diagnosis(replace: str) -> dict[str, Any]:
    return {
        "summary": "orders without a discount crash total()",
        "root_cause": "total() indexes order['discount'], absent from orders without one",
        "confidence": 0.9,
        "evidence": [{"path": "app/cart.py", "line": 2}],
        "edits": [{"path": "app/cart.py", "search": BUGGY_LINE, "replace": replace}],
    }


class Model:
    """Answers as a model would: the wrong fix first, the right one once shown the failure."""

    def __init__(self) -> None:
        self.shown_failure = ""

    def __call__(self, body: dict[str, Any]) -> OllamaReply:
        text = json.dumps(body["messages"])
        if "regression" in body["messages"][0]["content"] or "test writer" in text:
            return answer(REGRESSION_TEST)
        if FAILURE_SECTION in text:
            self.shown_failure = text
            return answer(diagnosis(RIGHT_FIX))
        return answer(diagnosis(WRONG_FIX))


@pytest.fixture
def service_repo(tmp_path: Path) -> ServiceRepo:
    repo = make_service_repo(tmp_path, service="shop")
    repo.commit(
        {
            "app/__init__.py": "",
            "app/cart.py": CART,
            "tests/__init__.py": "",
            "tests/test_cart.py": CART_TEST,
        },
        "Apply discounts",
        author=ALICE,
    )
    return repo


@pytest.fixture
def ollama() -> AsyncIterator[OllamaServer]:
    model = Model()
    with OllamaServer(responder=model) as server:
        server.model = model  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def config(service_repo: ServiceRepo, tmp_path: Path, ollama: OllamaServer) -> RemedyConfig:
    config = service_repo.config(
        tmp_path / "home",
        approvers=[APPROVER],
        allowed_paths=["app/**"],
        test_command=f"{sys.executable} -m pytest -q -p no:cacheprovider",
    )
    config.temporal.task_queue = f"repair-{uuid.uuid4()}"
    config.llm.mode = "local"
    config.llm.ollama_host = ollama.url
    config.limits.quiet_window_s = 0
    return config


async def test_a_fix_that_fails_verification_is_repaired_on_the_second_try(
    client: Client, config: RemedyConfig, service_repo: ServiceRepo, ollama: OllamaServer
) -> None:
    event = ErrorEvent(
        service="shop",
        release=service_repo.head(),
        error=ErrorInfo(type="KeyError", message="'discount'"),
        traceback=crash(service_repo),
    )
    start = build_incident_start(event, config)
    async with build_worker(client, config):
        handle = await client.start_workflow(
            IncidentWorkflow.run,
            start,
            id=names.workflow_id_for(start.service, start.fingerprint),
            task_queue=config.temporal.task_queue,
        )

        async def current() -> IncidentStatus:
            return await handle.query(IncidentWorkflow.status)

        status = await until_phase(current, Phase.AWAITING_APPROVAL, handle=handle, stall_s=120)
        await handle.terminate("test done")

    first = status.fix_attempts[0]
    assert [a.attempt for a in status.fix_attempts] == [1]
    assert first.failure == "verification_failed"
    assert "test_discount_is_subtracted" in first.detail
    assert first.edits[0].replace == WRONG_FIX
    # The second try was shown the first one's edits and the failing test's output.
    shown = ollama.model.shown_failure  # type: ignore[attr-defined]
    assert "test_discount_is_subtracted" in shown and "* 100" in shown

    assert status.verification is not None and status.verification.status == "passed"
    assert status.verification.reproduced is True
    assert status.assurance is not None
    assert (status.assurance.level, status.assurance.attempt, status.assurance.max_attempts) == (
        "verified",
        2,
        3,
    )
    # Each try kept its own artifacts: the first try's diff is not overwritten.
    store = ArtifactStore(config.artifacts_dir)
    assert status.patch is not None and status.patch.diff is not None
    assert "attempt-2" in status.patch.diff.key
    assert "* 100" in store.get_text(f"{status.incident_id}/patch.diff")
    assert RIGHT_FIX.strip() in store.get_text(status.patch.diff)

    _, blocks = render_message(status)
    message = json.dumps(blocks)
    assert "fixed on attempt 2 of 3" in message and "Earlier tries" in message
    body = pull_request_body(status, "")
    assert "fixed on attempt 2 of 3" in body and "## Earlier tries" in body
