"""IncidentStatus values at a chosen phase, as the workflow's `status` query would return them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from remedy.models import (
    ApprovalRequest,
    Decision,
    Diagnosis,
    DiagnosisResult,
    Edit,
    Evidence,
    EvidenceLine,
    FrameEvidence,
    IncidentStatus,
    PatchResult,
    Phase,
    PhaseChange,
    Proposal,
    SuspectCommit,
    VerificationResult,
)
from remedy.service_policy import Severity

FINGERPRINT = "0123456789abcdef"
INCIDENT_ID = f"checkout-{FINGERPRINT}-a1b2c3d4"
APPROVER = "UAPPROVER1"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "app/cart.py", line 3, in total\n'
    "    return sum(item['price'] for item in items) + item['sku']\n"
    "KeyError: 'sku'"
)
CART_BEFORE = "def total(items):\n    return sum(item['price'] for item in items)\n"
CART_AFTER = "def total(items):\n    return sum(item.get('price', 0) for item in items)\n"


def make_incident(
    phase: Phase = Phase.AWAITING_APPROVAL,
    *,
    fingerprint: str = FINGERPRINT,
    approvers: tuple[str, ...] = (APPROVER,),
    decision: Literal["approve", "reject"] | None = None,
    reason: str | None = None,
    edits: list[Edit] | None = None,
    severity: Severity = Severity.HIGH,
    pr_url: str | None = None,
) -> IncidentStatus:
    now = datetime.now(UTC)
    incident_id = f"checkout-{fingerprint}-a1b2c3d4"
    approval = ApprovalRequest(
        request_id="req-1",
        approvers=list(approvers),
        requested_at=now,
        expires_at=now + timedelta(hours=24),
        decision=Decision(decision=decision, approver=APPROVER, reason=reason, at=now)
        if decision
        else None,
    )
    edits = (
        edits
        if edits is not None
        else [Edit(path="app/cart.py", search="item['price']", replace="item.get('price', 0)")]
    )
    status = IncidentStatus(
        incident_id=incident_id,
        workflow_id=f"incident-checkout-{fingerprint}",
        service="checkout",
        fingerprint=fingerprint,
        phase=phase,
        severity=severity,
        error_type="KeyError",
        error_message="'sku'",
        occurrences=3,
        first_seen=now - timedelta(minutes=5),
        last_seen=now,
        release="abc123",
        evidence=Evidence(
            summary="total() reads item['price'] without a default",
            frames=[FrameEvidence(path="app/cart.py", line=2, function="total")],
            suspect_commits=[
                SuspectCommit(
                    sha="d" * 40,
                    author="Dana <dana@example.com>",
                    date="2026-11-20",
                    subject="cart: sum prices",
                    reason="last change to app/cart.py",
                )
            ],
        ),
        diagnosis=DiagnosisResult(
            diagnosis=Diagnosis(
                summary="Items without a price crash the cart total",
                root_cause="total() indexes item['price'] but legacy items have no price",
                confidence=0.82,
                evidence=[EvidenceLine(path="app/cart.py", line=2)],
                edits=edits,
            ),
            backend="claude",
            tokens=1234,
            cost_usd=0.0123,
        ),
        patch=PatchResult(applied=True, files=["app/cart.py"], lines_added=1, lines_removed=1),
        verification=VerificationResult(status="passed", summary="12 passed", tests_run=12),
        approval=approval if phase not in (Phase.RECEIVED, Phase.INVESTIGATING) else None,
        ui_url=f"http://127.0.0.1:8233/namespaces/default/workflows/incident-checkout-{fingerprint}",
        history=[PhaseChange(phase=phase, at=now)],
    )
    if pr_url:
        status.proposal = Proposal(
            branch=f"remedy/{incident_id}", commit="e" * 40, title="fix", pr_url=pr_url
        )
    return status
