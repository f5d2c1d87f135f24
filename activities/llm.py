"""The LLM activities: diagnose an incident, write its regression test; Temporal's side only.

`diagnose` routes an incident to Ollama or Claude (remedy.llm.routing), lets the model read the
repository at the incident's commit through read-only tools (remedy.llm.repo_tools), and checks
the answer in code (remedy.llm.answers). A rejected answer goes back to the model with the
reasons (remedy.llm.agent); after `[llm].max_attempts` answers the incident escalates (auto) or
the activity abstains with the reason. A missing backend is an abstention, never a failure:
the workflow then ends in `triaged` with its evidence.

Every prompt, model turn, tool call and verdict is written to the incident's artifacts
(`<incident>/diagnosis/`); history gets only the answer, the usage and short summaries.
What stays here is what only an activity can do: heartbeats, Temporal's retry classes and
the per-service hourly admission count.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.claude import ClaudeBackend
from activities.ollama import OllamaBackend
from activities.progress import heartbeat
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.assurance import innermost_frame_check
from remedy.config import RemedyConfig
from remedy.llm.agent import Rejected, converse
from remedy.llm.answers import (
    SUBMIT_DIAGNOSIS,
    SUBMIT_REGRESSION_TEST,
    RegressionTestAnswer,
    parse_diagnosis,
    parse_regression_test,
    referenced_paths,
    validate_diagnosis,
    validate_regression_test,
)
from remedy.llm.conversation import (
    BackendName,
    BackendRateLimited,
    BackendUnavailable,
    ChatBackend,
)
from remedy.llm.prompts import (
    DIAGNOSIS_SYSTEM_PROMPT,
    REGRESSION_SYSTEM_PROMPT,
    diagnosis_prompt,
    regression_test_prompt,
)
from remedy.llm.repair import failed_attempts_section
from remedy.llm.repo_tools import RepoTools, SearchCode
from remedy.llm.routing import RoutePlan, in_app_files, plan_route
from remedy.llm.session import Session, TokenCapReached
from remedy.models import (
    AttemptOutcome,
    DiagnoseRequest,
    Diagnosis,
    DiagnosisAttempt,
    DiagnosisResult,
    RegressionTest,
    RegressionTestRequest,
    RegressionTestResult,
    Worktree,
)
from remedy.patching import repo_path
from remedy.review import regression_test_key
from remedy.service_policy import Severity

DEFAULT_RETRY_AFTER_S = 30.0


def _incident_key(incident_id: str) -> str:
    try:
        return names.safe_id(incident_id, "incident id")
    except ValueError as exc:
        raise ApplicationError(str(exc), type="BadRequest", non_retryable=True) from None


class DiagnosisActivities:
    """The LLM activities. Built once per worker; `search_code` plugs in the code index."""

    def __init__(
        self,
        config: RemedyConfig,
        store: ArtifactStore,
        *,
        search_code: SearchCode | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._search_code = search_code
        self._backends: dict[BackendName, ChatBackend] = {
            "ollama": OllamaBackend(config.llm),
            "claude": ClaudeBackend(config.llm),
        }

    def _plan(self, service: str, severity: Severity, evidence_files: int) -> RoutePlan:
        return plan_route(
            self._config.llm_mode(service),
            severity=severity,
            in_app_files=evidence_files,
            llm=self._config.llm,
        )

    def _tools(self, worktree: Worktree) -> RepoTools:
        return RepoTools(
            worktree,
            search_code=self._search_code,
            max_result_chars=self._config.llm.max_tool_result_chars,
            on_wait=heartbeat,
        )

    def _admit(self, service: str, incident_id: str) -> str | None:
        """Count this incident against the service's diagnoses this hour; the reason if over."""
        now = datetime.now(UTC)
        folder = f"llm-usage/{service}/{now:%Y%m%d%H}"
        marker = f"{folder}/{incident_id}"
        if self._store.exists(marker):
            return None  # a retry of a diagnosis already counted
        path = self._store.path_of(folder)
        used = sum(1 for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else 0
        cap = self._config.limits.max_diagnoses_per_hour
        if used >= cap:
            return (
                f"service {service}: {used} diagnoses this hour reached "
                f"limits.max_diagnoses_per_hour = {cap} (raise it in remedy.toml to diagnose more)"
            )
        self._store.put_text(marker, now.isoformat())
        return None

    def _tokens_spent(self) -> str:
        cap = self._config.limits.max_tokens_per_incident
        return f"the incident's LLM tokens are spent (limits.max_tokens_per_incident = {cap})"

    @activity.defn(name=names.ACTIVITY_DIAGNOSE)
    async def diagnose(self, request: DiagnoseRequest) -> DiagnosisResult:
        incident = _incident_key(request.incident_id)
        folder = names.attempt_folder(incident, request.attempt)
        plan = self._plan(
            request.worktree.service, request.severity, in_app_files(request.evidence)
        )
        if not plan.backends:
            return DiagnosisResult(abstained_reason=plan.reason, route=plan.reason)
        budget = self._config.limits.max_tokens_per_incident - request.tokens_used
        if budget <= 0:
            return DiagnosisResult(rate_limited=True, abstained_reason=self._tokens_spent())
        tools = self._tools(request.worktree)
        session = Session(self._config, self._store, tools, token_budget=budget, progress=heartbeat)
        try:
            result = await self._diagnose(request, plan, session)
        except BackendRateLimited as exc:
            session.note("rate_limited", backend=exc.backend, reason=exc.reason)
            session.save(f"{folder}/diagnosis/transcript.json", route=plan.reason)
            delay = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
            raise ApplicationError(
                f"diagnosing {incident}: {exc.reason}; retrying in {delay:.0f}s",
                type="LLMRateLimited",
                next_retry_delay=timedelta(seconds=delay),
            ) from None
        artifact = session.save(
            f"{folder}/diagnosis/transcript.json",
            route=plan.reason,
            result=result.model_dump(mode="json"),
        )
        return result.model_copy(
            update={
                "artifact": artifact,
                "route": plan.reason,
                "tokens": session.tokens,
                "cost_usd": session.cost_usd,
                "usage": session.usage,
                "tool_calls": session.summaries,
            }
        )

    async def _diagnose(
        self, request: DiagnoseRequest, plan: RoutePlan, session: Session
    ) -> DiagnosisResult:
        incident, llm = request.incident_id, self._config.llm
        folder = names.attempt_folder(incident, request.attempt)
        windows = await session.tools.code_windows(request.evidence)
        # Earlier tries come last, so the prompt's head stays what a local server has cached.
        repair = failed_attempts_section(request.failed_attempts)
        prompt = diagnosis_prompt(
            request, windows, max_chars=llm.prompt_chars(plan.backends) - len(repair)
        )
        if repair:
            prompt = f"{prompt}\n{repair}\n"
        self._store.put_text(
            f"{folder}/diagnosis/prompt.md", f"{DIAGNOSIS_SYSTEM_PROMPT}\n---\n{prompt}"
        )

        async def validate(diagnosis: Diagnosis) -> list[str]:
            files = {p: await session.tools.text_at_commit(p) for p in referenced_paths(diagnosis)}
            return validate_diagnosis(
                diagnosis, files, request.policy, request.worktree.commit, request.worktree.service
            )

        attempts: list[DiagnosisAttempt] = []
        unavailable: list[str] = []
        rejected: list[str] = []
        best: tuple[Diagnosis, BackendName] | None = None
        admitted = False
        for index, name in enumerate(plan.backends):
            backend = self._backends[name]

            def record(
                outcome: AttemptOutcome, detail: str, backend: ChatBackend = backend
            ) -> None:
                attempts.append(
                    DiagnosisAttempt(
                        backend=backend.name, model=backend.model, outcome=outcome, detail=detail
                    )
                )

            if (reason := await backend.unavailable_reason()) is not None:
                unavailable.append(reason)
                record("unavailable", reason)
                continue
            if not admitted:
                if over := self._admit(request.worktree.service, incident):
                    return DiagnosisResult(
                        rate_limited=True, abstained_reason=over, attempts=attempts
                    )
                admitted = True
            try:
                outcome = await converse(
                    session,
                    backend,
                    system=DIAGNOSIS_SYSTEM_PROMPT,
                    prompt=prompt,
                    answer=SUBMIT_DIAGNOSIS,
                    parse=parse_diagnosis,
                    validate=validate,
                    max_attempts=llm.max_attempts,
                    max_iterations=llm.max_tool_iterations,
                )
            except BackendUnavailable as exc:
                unavailable.append(exc.reason)
                record("unavailable", exc.reason)
                continue
            except BackendRateLimited as exc:
                record("rate_limited", exc.reason)
                if best is None:
                    raise
                break  # keep the answer in hand rather than wait for the escalation
            except TokenCapReached as exc:
                record("token_cap", str(exc))
                return DiagnosisResult(
                    rate_limited=True, abstained_reason=str(exc), attempts=attempts
                )
            if isinstance(outcome, Rejected):
                record("abstained" if outcome.abstained else outcome.outcome, outcome.detail)
                rejected.append(f"{name} {backend.model}: {outcome.detail}")
                if not plan.escalate:
                    break
                continue
            # The model's number can only be lowered: a fix away from the innermost project
            # frame counts as unsure whatever the model says (remedy.assurance).
            off_stack = innermost_frame_check(outcome, request.evidence.frames).passed is False
            unsure = off_stack or outcome.confidence < llm.escalate_below_confidence
            escalate = plan.escalate and unsure and index + 1 < len(plan.backends)
            detail = f"confidence {outcome.confidence:.2f}"
            if off_stack:
                detail += "; the edits leave the innermost project frame's file alone"
            record("low_confidence" if escalate else "accepted", detail)
            if best is None or outcome.confidence > best[0].confidence:
                best = (outcome, name)
            if not escalate:
                break
        if best is not None:
            return DiagnosisResult(diagnosis=best[0], backend=best[1], attempts=attempts)
        if rejected:
            reason = "no acceptable diagnosis: " + "; ".join(rejected + unavailable)
        else:
            reason = "no LLM backend: " + " and ".join(unavailable)
        return DiagnosisResult(abstained_reason=reason, attempts=attempts)

    @activity.defn(name=names.ACTIVITY_WRITE_REGRESSION_TEST)
    async def write_regression_test(self, request: RegressionTestRequest) -> RegressionTestResult:
        """Ask a model for a new test file that fails before the fix and passes after it.

        Optional evidence: a model that is unavailable, rate-limited or keeps writing unusable
        files yields an abstention with the reason, never a retry or a failure.
        """
        incident = _incident_key(request.incident_id)
        folder = names.attempt_folder(incident, request.attempt)
        service = self._config.services.get(request.worktree.service)
        if service is None or not service.test_command:
            # Verification will be skipped: a test nobody runs is not worth a model turn.
            return RegressionTestResult(
                abstained_reason=f"service {request.worktree.service} has no test_command "
                "in remedy.toml, so no test would run"
            )
        plan = self._plan(
            request.worktree.service, request.severity, in_app_files(request.evidence)
        )
        order = list(plan.backends)
        if request.backend in order:
            order.remove(request.backend)
            order.insert(0, request.backend)
        if not order:
            return RegressionTestResult(abstained_reason=plan.reason)
        budget = self._config.limits.max_tokens_per_incident - request.tokens_used
        if budget <= 0:
            return RegressionTestResult(rate_limited=True, abstained_reason=self._tokens_spent())
        tools = self._tools(request.worktree)
        session = Session(self._config, self._store, tools, token_budget=budget, progress=heartbeat)
        llm = self._config.llm
        windows = await tools.code_windows(request.evidence)
        prompt = regression_test_prompt(request, windows, max_chars=llm.prompt_chars(tuple(order)))
        self._store.put_text(
            f"{folder}/regression/prompt.md", f"{REGRESSION_SYSTEM_PROMPT}\n---\n{prompt}"
        )

        async def validate(answer: RegressionTestAnswer) -> list[str]:
            path = repo_path(answer.path)
            exists = path is not None and await tools.blob(path) is not None
            return validate_regression_test(
                answer, exists=exists, policy=request.policy, service=request.worktree.service
            )

        reasons: list[str] = []
        result = RegressionTestResult()
        for name in order:
            backend = self._backends[name]
            if (reason := await backend.unavailable_reason()) is not None:
                reasons.append(reason)
                continue
            try:
                outcome = await converse(
                    session,
                    backend,
                    system=REGRESSION_SYSTEM_PROMPT,
                    prompt=prompt,
                    answer=SUBMIT_REGRESSION_TEST,
                    parse=parse_regression_test,
                    validate=validate,
                    max_attempts=llm.max_attempts,
                    max_iterations=llm.max_tool_iterations,
                )
            except (BackendUnavailable, BackendRateLimited) as exc:
                reasons.append(exc.reason)
                continue
            except TokenCapReached as exc:
                result = RegressionTestResult(rate_limited=True, abstained_reason=str(exc))
                break
            if isinstance(outcome, Rejected):
                reasons.append(f"{name} {backend.model}: {outcome.detail}")
                break
            path = repo_path(outcome.path)
            assert path is not None  # validated above
            content = self._store.put_text(
                regression_test_key(incident, request.attempt), outcome.content
            )
            result = RegressionTestResult(
                test=RegressionTest(path=path, content=content), backend=name
            )
            break
        if result.test is None and result.abstained_reason is None:
            result.abstained_reason = "no regression test: " + "; ".join(reasons)
        artifact = session.save(
            f"{folder}/regression/transcript.json", result=result.model_dump(mode="json")
        )
        return result.model_copy(
            update={
                "artifact": artifact,
                "tokens": session.tokens,
                "cost_usd": session.cost_usd,
                "usage": session.usage,
            }
        )
