"""How far a fix was checked: the confidence shown to approvers and used for routing.

A model's own number says how sure it sounds, not whether it is right (a 1.5B model said 0.90
for every answer, right or wrong). What can be checked decides instead, and can only lower
what the model claimed:

- verified: the service's tests pass after the patch and the model's regression test fails
  before it and passes after (the error was reproduced and is gone);
- tested: the tests pass after the patch, but nothing reproduced the error;
- unverified: the tests did not run, or did not pass.

Each level caps the confidence; an edit that leaves the innermost project frame's file
untouched lowers the cap further, since the fix then lies somewhere the stack never went.
"""

from __future__ import annotations

from collections.abc import Sequence

from remedy.models import Assurance, Check, Diagnosis, FrameEvidence, VerificationResult

FIX_FAILURE_TEXT = {
    "not_applied": "did not apply to the code at this commit",
    "verification_failed": "applied, but the service's tests fail with it",
}
CONFIDENCE_CAP = {"verified": 0.95, "tested": 0.7, "unverified": 0.4}
OFF_STACK_PENALTY = 0.2


def innermost_frame_check(diagnosis: Diagnosis, frames: Sequence[FrameEvidence]) -> Check:
    """Whether the edits touch the file of the innermost project frame that was found."""
    innermost = next((frame for frame in frames if frame.found), None)
    if innermost is None:
        return Check(
            name="innermost_frame_edited", passed=None, detail="no project frame was located"
        )
    where = f"{innermost.path}:{innermost.line}" if innermost.line else innermost.path
    edited = {edit.path for edit in diagnosis.edits}
    if innermost.path in edited:
        return Check(name="innermost_frame_edited", passed=True, detail=f"edits {where}")
    return Check(
        name="innermost_frame_edited",
        passed=False,
        detail=f"the innermost project frame {where} is not edited",
    )


def assess(
    diagnosis: Diagnosis,
    frames: Sequence[FrameEvidence],
    verification: VerificationResult | None,
    *,
    attempt: int = 1,
    max_attempts: int = 1,
) -> Assurance:
    """The fix's assurance from its checks; `frames` are the evidence's, innermost first."""
    status = verification.status if verification else None
    suite = Check(
        name="suite_passes",
        passed={"passed": True, "failed": False}.get(status or ""),
        detail=verification.summary if verification else "verification did not run",
    )
    reproduced_flag = verification.reproduced if verification else None
    reproduced = Check(
        name="reproduced",
        passed=reproduced_flag,
        detail=(
            "the regression test fails before the fix and passes after it"
            if reproduced_flag
            else "no regression test reproduced the error"
            if reproduced_flag is None
            else "the regression test did not fail before the fix and pass after it"
        ),
    )
    located = innermost_frame_check(diagnosis, frames)
    level = ("verified" if reproduced.passed else "tested") if suite.passed else "unverified"
    cap = CONFIDENCE_CAP[level] - (OFF_STACK_PENALTY if located.passed is False else 0.0)
    return Assurance(
        level=level,
        confidence=round(max(0.0, min(diagnosis.confidence, cap)), 2),
        model_confidence=diagnosis.confidence,
        checks=[located, reproduced, suite],
        attempt=attempt,
        max_attempts=max_attempts,
    )


def unverified_reason(assurance: Assurance) -> str:
    """What a reviewer must know first about an unverified fix."""
    suite = next(check for check in assurance.checks if check.name == "suite_passes")
    return suite.detail or "the service's tests did not run"


def headline(assurance: Assurance) -> str:
    """The line that opens the Slack message and the pull request (plain text, unescaped)."""
    if assurance.level == "unverified":
        first = f"UNVERIFIED: {unverified_reason(assurance)}"
    elif assurance.level == "tested":
        first = "Tested: the service's tests pass with the fix, but no test reproduced the error"
    else:
        first = (
            "Verified: the regression test fails before the fix and passes after it, and the "
            "service's tests pass"
        )
    parts = [
        first,
        f"confidence {assurance.confidence:.0%} from these checks "
        f"(the model said {assurance.model_confidence:.0%})",
    ]
    if assurance.attempt > 1:
        parts.append(f"fixed on attempt {assurance.attempt} of {assurance.max_attempts}")
    return "; ".join(parts)
