"""What a reviewer reads before approving: the change itself, gathered from the artifact store.

The `status` query carries only references (history stays small); the diff, the regression
test, the end of the verification output and the code around the failing frame live in the
artifact store. `incident_json` adds them as `review` to the status, once, for both
`remedy incidents show --json` and GET /v1/incidents/{id}, which return the same JSON.

A piece that cannot be shown says why (`missing`), so a reviewer never mistakes an absent
diff for an empty one. The text is as stored (redacted at the store, otherwise untrusted):
renderers escape it (remedy.render.terminal).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.models import ArtifactRef, IncidentStatus
from remedy.sandbox.results import read_tail

VERIFICATION_TAIL_LINES = 40
_TAIL_BYTES = 16 * 1024


class Excerpt(BaseModel):
    """One artifact's text; `text` is None when it cannot be shown, and `missing` says why."""

    artifact: str | None = Field(default=None, description="Its key in the artifact store")
    text: str | None = None
    missing: str | None = None


class RegressionTestExcerpt(Excerpt):
    path: str | None = Field(default=None, description="Where the test goes in the repository")


class VerificationOutput(Excerpt):
    label: str = Field(description="The run: before, after, regression-before, regression-after")
    exit_code: int | None = None


class SourceLine(BaseModel):
    line: int
    text: str


class SourceWindow(BaseModel):
    """The lines around the innermost located frame, at the incident's commit."""

    path: str | None = None
    line: int | None = None
    function: str | None = None
    lines: list[SourceLine] = Field(default_factory=list)
    missing: str | None = None


class IncidentReview(BaseModel):
    diff: Excerpt
    regression_test: RegressionTestExcerpt
    verification_output: list[VerificationOutput] = Field(default_factory=list)
    source: SourceWindow


class _RecordedWindow(BaseModel):
    lines: list[SourceLine]


class _RecordedFrame(BaseModel):
    path: str
    line: int | None = None
    function: str | None = None
    window: _RecordedWindow | None = None


class _EvidenceRecord(BaseModel):
    """The part of `evidence.json` (remedy.git.history.evidence_record) a review shows."""

    frames: list[_RecordedFrame] = Field(default_factory=list)


def regression_test_key(incident_id: str, attempt: int = 1) -> str:
    """Where the diagnosis activity stores the model's regression test of a try at a fix."""
    return f"{names.attempt_folder(incident_id, attempt)}/regression/test_file.py"


def _read(store: ArtifactStore, ref: ArtifactRef | str) -> tuple[str | None, str | None]:
    """(text, None), or (None, why not): absent, unreadable, or changed since it was stored."""
    key = ref if isinstance(ref, str) else ref.key
    try:
        data = store.get_bytes(ref)
    except FileNotFoundError:
        return None, f"artifact {key} is not in the artifact store at {store.root}"
    except (OSError, ValueError) as exc:
        return None, f"artifact {key} cannot be read: {exc}"
    if isinstance(ref, ArtifactRef) and hashlib.sha256(data).hexdigest() != ref.sha256:
        return None, f"artifact {key} changed after the incident stored it; not shown"
    return data.decode("utf-8", errors="replace"), None


def _diff(status: IncidentStatus, store: ArtifactStore) -> Excerpt:
    patch = status.patch
    if patch is None:
        return Excerpt(missing=f"no patch (phase {status.phase})")
    if not patch.applied or patch.diff is None:
        return Excerpt(missing=f"no patch: {patch.reason or 'none was applied'}")
    text, missing = _read(store, patch.diff)
    return Excerpt(artifact=patch.diff.key, text=text, missing=missing)


def _regression_test(status: IncidentStatus, store: ArtifactStore) -> RegressionTestExcerpt:
    verification = status.verification
    if verification is None:
        return RegressionTestExcerpt(missing="not verified yet")
    if not verification.regression_test:
        return RegressionTestExcerpt(missing="no regression test ran with the verification")
    attempt = status.assurance.attempt if status.assurance else 1
    key = regression_test_key(status.incident_id, attempt)
    text, missing = _read(store, key)
    return RegressionTestExcerpt(
        path=verification.regression_test, artifact=key, text=text, missing=missing
    )


def _tail(store: ArtifactStore, ref: ArtifactRef) -> tuple[str | None, str | None]:
    try:
        data = read_tail(store.path_of(ref), _TAIL_BYTES)
    except FileNotFoundError:
        return None, f"artifact {ref.key} is not in the artifact store at {store.root}"
    except (OSError, ValueError) as exc:
        return None, f"artifact {ref.key} cannot be read: {exc}"
    lines = data.decode("utf-8", errors="replace").rstrip("\n").split("\n")
    return "\n".join(lines[-VERIFICATION_TAIL_LINES:]), None


def _verification_output(status: IncidentStatus, store: ArtifactStore) -> list[VerificationOutput]:
    """The runs on the patched tree (the suite, then the regression test unless it ran inside
    the suite's run, whose log it shares), else the last run."""
    runs = status.verification.runs if status.verification else []
    after = [run for run in runs if run.label.endswith("after") and not run.ran_with]
    shown = after or runs[-1:]
    outputs = []
    for run in shown:
        text, missing = _tail(store, run.log) if run.log else (None, "the run kept no log")
        outputs.append(
            VerificationOutput(
                label=run.label,
                exit_code=run.exit_code,
                artifact=run.log.key if run.log else None,
                text=text,
                missing=missing,
            )
        )
    return outputs


def _source(status: IncidentStatus, store: ArtifactStore) -> SourceWindow:
    evidence = status.evidence
    if evidence is None or evidence.artifact is None:
        return SourceWindow(missing="no evidence yet")
    text, missing = _read(store, evidence.artifact)
    if text is None:
        return SourceWindow(missing=missing)
    try:
        record = _EvidenceRecord.model_validate_json(text)
    except ValidationError:
        return SourceWindow(missing=f"artifact {evidence.artifact.key} is not an evidence record")
    for frame in record.frames:
        if frame.window and frame.window.lines:
            return SourceWindow(
                path=frame.path, line=frame.line, function=frame.function, lines=frame.window.lines
            )
    return SourceWindow(missing="no frame of the error was found in the repository")


def review_of(status: IncidentStatus, store: ArtifactStore) -> IncidentReview:
    return IncidentReview(
        diff=_diff(status, store),
        regression_test=_regression_test(status, store),
        verification_output=_verification_output(status, store),
        source=_source(status, store),
    )


def incident_json(status: IncidentStatus, store: ArtifactStore) -> dict[str, Any]:
    """The status and its `review`: `show --json` prints it, GET /v1/incidents/{id} returns it."""
    return {
        **status.model_dump(mode="json"),
        "review": review_of(status, store).model_dump(mode="json"),
    }
