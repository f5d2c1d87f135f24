"""What the intake hears of a fix after its pull request opened: POST /github/webhook
(GitHub says the change was merged or closed) and POST /v1/deploys (a release now runs).

The webhook is GitHub's: signed with the webhook's secret (X-Hub-Signature-256, HMAC-SHA256
of the raw body), checked before the body is parsed. GitHub does not retry a delivery by
itself and shows the answer in the webhook's Recent Deliveries, so whatever is not for
Remedy is a 202 that says why (`ignored`), and only a Temporal Remedy cannot reach is a 5xx.
A pull request moves an incident only when its branch is `remedy/<incident>` in the
repository the incident's service names as `github_repo`: a fork, or another repository
whose webhook shares the secret, moves nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from temporalio.service import RPCError, RPCStatusCode

from remedy import names
from remedy.config import RemedyConfig, secret
from remedy.models import ChangeSignal, DeployRequest, DeployResponse
from starter.app import (
    ConfigDep,
    HTTPProblem,
    capped_body,
    foreign,
    get_client,
    invalid_token,
    parse_json_object,
    presented_token,
    service_of,
    services_without_token,
    token_service,
    validation_problem,
)
from starter.deploys import announce_release
from starter.incidents import IncidentNotFound, find_incident
from workflows.incident import IncidentWorkflow

log = logging.getLogger(__name__)
router = APIRouter(tags=["fix"])

SIGNATURE_HEADER = "X-Hub-Signature-256"
# Text from a payload reaches the log quoted and clipped to this many characters.
_LOGGED_CHARS = 120


def _shown(value: object) -> str:
    """A payload's value as the log shows it: repr-escaped (no line breaks, no control
    characters) and clipped."""
    text = value if isinstance(value, str) else repr(value)
    clipped = text[:_LOGGED_CHARS]
    return repr(clipped) + ("..." if len(text) > _LOGGED_CHARS else "")


def signature_of(webhook_secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for `body`."""
    digest = hmac.new(webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _signed(webhook_secret: str, body: bytes, presented: str) -> bool:
    return hmac.compare_digest(signature_of(webhook_secret, body).encode(), presented.encode())


def _ignored(why: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"ignored": why, **extra}, status_code=202)


def _temporal_away(exc: RPCError) -> HTTPProblem:
    return HTTPProblem(
        503,
        f"Temporal refused the call ({exc.message}); nothing was recorded, redeliver",
        headers={"Retry-After": "2"},
    )


# ---------------------------------------------------------------------------- GitHub


@router.post(
    "/github/webhook",
    summary="GitHub webhook (pull request events): a remedy/<incident> change merged or closed",
    responses={202: {"description": "Not for Remedy; `ignored` says why"}},
)
async def github_webhook(request: Request, config: ConfigDep) -> JSONResponse:
    key = config.github.webhook_secret_env
    webhook_secret = secret(key)
    if webhook_secret is None:
        raise HTTPProblem(
            503,
            f"the GitHub webhook is off: set {key} (named by [github] webhook_secret_env) to "
            "the webhook's secret where `remedy serve` runs",
        )
    presented = request.headers.get(SIGNATURE_HEADER, "")
    if not presented.startswith("sha256="):
        raise HTTPProblem(
            401,
            f"missing {SIGNATURE_HEADER}: give the webhook a secret in GitHub (the value of {key})",
        )
    body = await capped_body(request, config.github.webhook_max_bytes)
    if not _signed(webhook_secret, body, presented):
        raise HTTPProblem(
            401,
            f"{SIGNATURE_HEADER} does not match the body: the webhook's secret in GitHub is not "
            f"the value of {key}",
        )
    event = request.headers.get("X-GitHub-Event", "")
    delivery = _shown(request.headers.get("X-GitHub-Delivery", ""))
    if event == "ping":
        return JSONResponse({"pong": True})
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise HTTPProblem(415, "set the webhook's Content type to application/json in GitHub")
    if event != "pull_request":
        return _ignored(f"event {event[:40]!r}: Remedy follows pull_request events only")
    data = parse_json_object(body, config.intake.max_json_depth)
    return await _pull_request(request, config, data, delivery)


def _field(data: dict[str, Any], path: str, kind: type) -> Any:
    """The value at a dotted path of the payload; 400 naming the path when it is absent or
    of another type."""
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, kind):
        raise HTTPProblem(400, f"{path}: expected {kind.__name__}, got {type(value).__name__}")
    return value


async def _pull_request(
    request: Request, config: RemedyConfig, data: dict[str, Any], delivery: str
) -> JSONResponse:
    action = _field(data, "action", str)
    if action != "closed":
        return _ignored(f"pull request {action[:40]!r}: only a closed one moves an incident")
    head = _field(data, "pull_request.head.ref", str)
    incident_id = names.incident_of_branch(head)
    if incident_id is None:
        return _ignored(f"branch {head[:100]!r} is not a remedy/<incident> branch")
    service = service_of(config, names.parse_incident_id(incident_id)[0])
    if service is None:
        return _ignored(f"incident {incident_id}: no such service in remedy.toml")
    github_repo = config.services[service].github_repo
    repository = _field(data, "repository.full_name", str)
    if github_repo is None or repository.lower() != github_repo.lower():
        log.warning(
            "GitHub delivery %s: ignored a pull request of %s for incident %s (services.%s."
            "github_repo is %r)",
            delivery,
            _shown(repository),
            incident_id,
            service,
            github_repo,
        )
        return _ignored(
            f"repository {repository[:100]!r} is not services.{service}.github_repo",
            incident_id=incident_id,
        )
    head_repo = data["pull_request"]["head"].get("repo")
    if not isinstance(head_repo, dict) or head_repo.get("full_name") != repository:
        return _ignored(
            f"the branch of this pull request is not in {repository}", incident_id=incident_id
        )
    change = _change(data, incident_id, delivery)
    client = get_client(request)
    try:
        handle = await find_incident(client, incident_id)
        await handle.signal(IncidentWorkflow.change, change)
    except IncidentNotFound:
        return _ignored(f"no incident {incident_id}", incident_id=incident_id)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return _ignored(f"incident {incident_id} has ended", incident_id=incident_id)
        raise _temporal_away(exc) from None
    log.info(
        "GitHub delivery %s: incident %s told its change was %s",
        delivery,
        incident_id,
        change.state,
    )
    return JSONResponse(
        {
            "incident_id": incident_id,
            "signal": "change",
            "state": change.state,
            "merge_commit": change.merge_commit,
        }
    )


def _change(data: dict[str, Any], incident_id: str, delivery: str) -> ChangeSignal:
    pull_request = data["pull_request"]
    if pull_request.get("merged") is not True:
        return ChangeSignal(state="closed", source="webhook")
    # Only a merged pull request's merge_commit_sha is on the branch (before the merge it is
    # GitHub's test merge). One the signal cannot carry leaves the incident to find it.
    commit = pull_request.get("merge_commit_sha")
    try:
        return ChangeSignal(state="merged", merge_commit=commit, source="webhook")
    except ValidationError:
        log.warning(
            "GitHub delivery %s: merge_commit_sha %s of incident %s is no commit id",
            delivery,
            _shown(commit),
            incident_id,
        )
        return ChangeSignal(state="merged", source="webhook")


# ---------------------------------------------------------------------------- deploys


@router.post(
    "/v1/deploys",
    status_code=202,
    response_model=DeployResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DeployRequest.model_json_schema()}},
        }
    },
    summary="A release of the service now runs: tell its incidents that follow a change",
)
async def report_deploy(request: Request, config: ConfigDep) -> JSONResponse:
    # The checks of POST /v1/errors, in its order: token, size, JSON, schema, service.
    service = token_service(config, presented_token(request))
    if service is None and not services_without_token(config):
        raise invalid_token(config, None)
    body = await capped_body(request, config.intake.max_body_bytes)
    data = parse_json_object(body, config.intake.max_json_depth)
    if service is None:
        claimed = data.get("service")
        raise invalid_token(config, claimed if isinstance(claimed, str) else None)
    try:
        deploy = DeployRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, "deploy") from None
    if deploy.service != service:
        raise foreign(f"announce a deploy of {deploy.service!r}")
    client = get_client(request)
    try:
        told = await announce_release(client, service, deploy.release, "deploy")
    except RPCError as exc:
        raise _temporal_away(exc) from None
    log.info("release %s of %s runs: told %d incidents", deploy.release, service, len(told))
    answer = DeployResponse(service=service, release=deploy.release, incidents=told)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202)
