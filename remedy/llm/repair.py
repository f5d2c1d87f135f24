"""What the next try at a fix is shown of the earlier ones: their edits and how each failed.

The failure text is the apply error or the tail of the failing tests' output, and the edits
are the model's own earlier answer: both came from untrusted text, so both are fenced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from remedy.assurance import FIX_FAILURE_TEXT
from remedy.llm.prompts import clip, fence
from remedy.models import FixAttempt

MAX_DETAIL_CHARS = 3_000
MAX_EDITS_CHARS = 4_000


def failed_attempts_section(attempts: Sequence[FixAttempt]) -> str:
    """The prompt section about earlier tries; empty for the first try."""
    if not attempts:
        return ""
    parts = [
        "## Earlier tries at this fix failed\n"
        "Read the failure, look at the code again, and propose a different fix that avoids it "
        "(or an empty edits list when no safe fix remains)."
    ]
    for attempt in attempts:
        edits = json.dumps([edit.model_dump() for edit in attempt.edits], indent=1)
        parts.append(
            f"### Try {attempt.attempt}: the patch {FIX_FAILURE_TEXT[attempt.failure]}\n"
            + fence("EDITS", clip(edits, MAX_EDITS_CHARS))
            + "\n"
            + fence("FAILURE", clip(attempt.detail, MAX_DETAIL_CHARS))
        )
    return "\n\n".join(parts)
