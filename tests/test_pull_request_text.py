"""Forge text (remedy.render.pull_request): what a reviewer reads before merging."""

from __future__ import annotations

from datetime import UTC, datetime

from remedy.models import Phase
from remedy.render.pull_request import (
    issue_body,
    issue_marker,
    issue_title,
    pull_request_body,
)
from tests.fakes.incident_factory import make_incident


def test_the_body_shows_the_backend_tokens_and_estimated_cost_of_the_diagnosis() -> None:
    incident = make_incident(Phase.OPENING_PR, decision="approve")
    assert incident.diagnosis is not None
    incident.diagnosis.tokens = 48_213

    body = pull_request_body(incident, diff="")

    assert "Confidence: 82% (claude). Diagnosis: 48,213 tokens, estimated cost $0.0123." in body


def test_a_diagnosis_without_a_backend_claims_no_cost() -> None:
    incident = make_incident(Phase.OPENING_PR, decision="approve")
    assert incident.diagnosis is not None
    incident.diagnosis.backend = None

    body = pull_request_body(incident, diff="")

    assert "Confidence: 82%." in body
    assert "tokens" not in body and "cost" not in body


def test_the_body_adds_the_incidents_total_when_other_model_calls_spent_more() -> None:
    incident = make_incident(Phase.OPENING_PR, decision="approve")
    incident.llm_tokens, incident.llm_cost_usd = 1234, 0.0123
    assert "All model calls" not in pull_request_body(incident, diff="")

    incident.llm_tokens, incident.llm_cost_usd = 2900, 0.0301
    body = pull_request_body(incident, diff="")

    assert "Diagnosis: 1,234 tokens, estimated cost $0.0123." in body
    assert "All model calls of this incident: 2,900 tokens, estimated cost $0.0301." in body


def test_untrusted_text_cannot_close_the_fences_of_the_pr_or_the_issue() -> None:
    incident = make_incident(Phase.OPENING_PR, decision="approve")
    incident.error_message = "see ```` here"
    raw = "Traceback (most recent call last):\n  boom ``` `````\nKeyError: 'sku'"

    assert "\n``````\n" + raw + "\n``````\n" in issue_body(incident, raw)
    assert "`````\nKeyError: see ```` here\n`````" in pull_request_body(incident, diff="")


def test_the_issue_shows_the_raw_error_the_evidence_the_link_and_its_marker() -> None:
    incident = make_incident(Phase.INVESTIGATING)
    incident.first_seen = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

    body = issue_body(incident, "")

    assert body == (
        "Remedy saw this high error in `checkout` (3 occurrence(s), first "
        "2026-11-21T09:00:00+00:00, release `abc123`).\n"
        "\n"
        "```\nKeyError: 'sku'\n```\n"
        "\n"
        "## Evidence\n"
        "\n"
        "```\ntotal() reads item['price'] without a default\n```\n"
        "\n"
        f"[Incident {incident.incident_id} in the Temporal UI]({incident.ui_url})\n"
        "\n"
        f"<!-- remedy-fingerprint: checkout/{incident.fingerprint} -->\n"
    )
    assert body.endswith(issue_marker(incident) + "\n")
    assert issue_title(incident) == "[high] KeyError in checkout: 'sku'"
    incident.error_message = "x" * 300
    assert len(issue_title(incident)) == 120 and issue_title(incident).endswith("…")


def test_the_body_names_execution_sensitive_files_the_opt_in_let_through() -> None:
    incident = make_incident(Phase.OPENING_PR, decision="approve")
    assert incident.patch is not None
    assert "execution-sensitive" not in pull_request_body(incident, diff="")
    incident.patch.execution_sensitive = ["pyproject.toml"]

    body = pull_request_body(incident, diff="")

    assert (
        "**Edits execution-sensitive files**, allowed by "
        "`services.checkout.allow_execution_sensitive_paths`: `pyproject.toml`"
    ) in body
