"""The confidence approvers see comes from checks and only ever lowers the model's number."""

from __future__ import annotations

import json

import pytest

from remedy.assurance import assess, headline
from remedy.models import Diagnosis, Edit, FrameEvidence, VerificationResult
from remedy.render.pull_request import pull_request_body
from remedy.render.slack import render_message
from tests.fakes.incident_factory import make_incident

FRAMES = [
    FrameEvidence(path="lib/helpers.py", line=3, found=False),
    FrameEvidence(path="app/cart.py", line=2, function="total"),
    FrameEvidence(path="app/main.py", line=9, function="checkout"),
]


def proposal(path: str = "app/cart.py", confidence: float = 0.9) -> Diagnosis:
    return Diagnosis(
        summary="s",
        root_cause="r",
        confidence=confidence,
        edits=[Edit(path=path, search="a", replace="b")],
    )


@pytest.mark.parametrize(
    ("verification", "level", "confidence"),
    [
        (VerificationResult(status="passed", reproduced=True), "verified", 0.9),
        (VerificationResult(status="passed", reproduced=None), "tested", 0.7),
        (VerificationResult(status="skipped", summary="no test_command"), "unverified", 0.4),
        (VerificationResult(status="failed", reproduced=True), "unverified", 0.4),
        (None, "unverified", 0.4),
    ],
)
def test_the_level_and_its_cap_come_from_the_checks(
    verification: VerificationResult | None, level: str, confidence: float
) -> None:
    checked = assess(proposal(), FRAMES, verification)
    assert (checked.level, checked.confidence, checked.model_confidence) == (
        level,
        confidence,
        0.9,
    )


def test_a_modest_model_is_never_raised_by_the_checks() -> None:
    verified = VerificationResult(status="passed", reproduced=True)
    assert assess(proposal(confidence=0.3), FRAMES, verified).confidence == 0.3


def test_an_edit_away_from_the_innermost_located_frame_lowers_the_cap() -> None:
    verified = VerificationResult(status="passed", reproduced=True)
    checked = assess(proposal("app/main.py"), FRAMES, verified)
    located = checked.checks[0]
    assert (located.name, located.passed) == ("innermost_frame_edited", False)
    assert "app/cart.py:2" in located.detail  # the first frame found, not the library one
    assert checked.confidence == 0.75


def test_without_a_located_frame_the_check_cannot_run() -> None:
    checked = assess(proposal(), [], VerificationResult(status="passed", reproduced=True))
    assert checked.checks[0].passed is None and checked.confidence == 0.9


def test_the_headline_says_unverified_first_and_names_the_try() -> None:
    skipped = VerificationResult(status="skipped", summary="service shop has no test_command")
    line = headline(assess(proposal(), FRAMES, skipped, attempt=2, max_attempts=3))
    assert line.startswith("UNVERIFIED: service shop has no test_command")
    assert "confidence 40% from these checks (the model said 90%)" in line
    assert line.endswith("fixed on attempt 2 of 3")


def test_an_unverified_fix_says_so_first_in_slack_and_in_the_pull_request() -> None:
    incident = make_incident()
    assert incident.diagnosis is not None and incident.diagnosis.diagnosis is not None
    skipped = VerificationResult(status="skipped", summary="service checkout has no test_command")
    incident.verification = skipped
    incident.assurance = assess(
        incident.diagnosis.diagnosis, incident.evidence.frames if incident.evidence else [], skipped
    )
    _, blocks = render_message(incident)
    # Right under the header, before the error and the model's account of it.
    assert "UNVERIFIED" in blocks[1]["text"]["text"]
    assert "from checks" in json.dumps(blocks)
    body = pull_request_body(incident, "")
    assert body.splitlines()[2].startswith(r"**UNVERIFIED: service checkout has no test\_command")
