"""The pull request's text (activities.forge): what a reviewer reads before merging."""

from __future__ import annotations

from activities.forge import pull_request_body
from remedy.models import Phase
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
