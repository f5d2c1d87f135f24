"""Names shared by the worker, the starter and the tests: task queue, search attributes, ids."""

from __future__ import annotations

import re

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "remedy"
WORKFLOW_ID_PREFIX = "incident-"
BRANCH_PREFIX = "remedy/"

# Activities are addressed by these fixed names; implementations and test doubles register
# under them (`@activity.defn(name=...)`).
ACTIVITY_SYNC_REPO = "sync_repo"
ACTIVITY_INDEX_REPO = "index_repo"
ACTIVITY_INVESTIGATE = "investigate"
ACTIVITY_FIND_RELATED = "find_related"
ACTIVITY_DIAGNOSE = "diagnose"
ACTIVITY_PREPARE_PATCH = "prepare_patch"
ACTIVITY_WRITE_REGRESSION_TEST = "write_regression_test"
ACTIVITY_VERIFY_PATCH = "verify_patch"
ACTIVITY_RUN_SUITE_BEFORE = "run_suite_before"
ACTIVITY_NOTIFY = "notify"
ACTIVITY_OPEN_ISSUE = "open_issue"
ACTIVITY_PROPOSE_CHANGE = "propose_change"
ACTIVITY_OPEN_PULL_REQUEST = "open_pull_request"
ACTIVITY_RECORD_INCIDENT = "record_incident"
# Following a change after pr_opened (issue 13).
ACTIVITY_WATCH_BRANCH = "watch_branch"
ACTIVITY_WATCH_PULL_REQUEST = "watch_pull_request"
ACTIVITY_RELEASE_CONTAINS = "release_contains"
ACTIVITY_NOTE_ON_CHANGE = "note_on_change"
ACTIVITY_COMMENT_ON_PULL_REQUEST = "comment_on_pull_request"
# Standalone activities the CLI starts on the index task queue (`remedy search`, `remedy index`).
ACTIVITY_SEARCH_INDEX = "search_index"
ACTIVITY_INDEX_ON_REQUEST = "index_on_request"

SA_SERVICE = SearchAttributeKey.for_keyword("RemedyService")
SA_PHASE = SearchAttributeKey.for_keyword("RemedyPhase")
SA_SEVERITY = SearchAttributeKey.for_keyword("RemedySeverity")
SA_ERROR_TYPE = SearchAttributeKey.for_keyword("RemedyErrorType")
SA_FINGERPRINT = SearchAttributeKey.for_keyword("RemedyFingerprint")
SA_OCCURRENCES = SearchAttributeKey.for_int("RemedyOccurrences")
# When the incident's change was opened: `remedy stats` measures time to a PR from it.
SA_PR_OPENED_AT = SearchAttributeKey.for_datetime("RemedyPrOpenedAt")
SEARCH_ATTRIBUTES = (
    SA_SERVICE,
    SA_PHASE,
    SA_SEVERITY,
    SA_ERROR_TYPE,
    SA_FINGERPRINT,
    SA_OCCURRENCES,
    SA_PR_OPENED_AT,
)

# Memo keys of an incident run. A recurrence run (it only counts reports of an incident that
# had closed, starter/reporter.py) names that incident; a run continued as new while it follows
# its change names the incident it continues (workflows/incident.py).
MEMO_RECURRENCE_OF = "recurrence_of"
MEMO_INCIDENT_ID = "incident_id"

SERVICE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_INCIDENT_ID = re.compile(
    r"^(?P<service>[a-z0-9][a-z0-9_-]*)-(?P<fingerprint>[0-9a-f]{16})(?:-(?P<run>[0-9a-f]{8}))?$"
)


def workflow_id_for(service: str, fingerprint: str) -> str:
    """One open incident per (service, fingerprint): the workflow id is that pair."""
    return f"{WORKFLOW_ID_PREFIX}{service}-{fingerprint}"


def incident_id_for(service: str, fingerprint: str, run_id: str) -> str:
    """An incident is one run of the workflow id; a run suffix tells reopened incidents apart.

    The suffix, not the prefix: Temporal's run ids are UUIDv7, whose leading bits are a clock.
    """
    return f"{service}-{fingerprint}-{run_tag(run_id)}"


def run_tag(run_id: str) -> str:
    return run_id.replace("-", "")[-8:]


def branch_for(incident_id: str) -> str:
    return f"{BRANCH_PREFIX}{incident_id}"


def query_literal(value: str) -> str:
    """`value` as a string literal of a Temporal visibility query (`RemedyService = '...'`)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def incident_of_branch(branch: str) -> str | None:
    """The incident id a `remedy/<incident>` branch was opened for; None for other branches."""
    if not branch.startswith(BRANCH_PREFIX):
        return None
    incident_id = branch.removeprefix(BRANCH_PREFIX)
    return incident_id if _INCIDENT_ID.match(incident_id) else None


def parse_incident_id(incident_id: str) -> tuple[str, str | None]:
    """Return (workflow id, run tag or None) for an incident id or a bare workflow id.

    Raises ValueError naming the expected shape.
    """
    text = incident_id.removeprefix(WORKFLOW_ID_PREFIX)
    match = _INCIDENT_ID.match(text)
    if not match:
        raise ValueError(
            f"incident id {incident_id!r} is not of the form "
            "<service>-<16 hex fingerprint>[-<8 hex run tag>]"
        )
    return workflow_id_for(match["service"], match["fingerprint"]), match["run"]


# One path component: incident ids and artifact key parts become folder and file names.
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def is_safe_id(value: str) -> bool:
    """Whether `value` is safe as one path component (and so as a file or folder name)."""
    return SAFE_ID.match(value) is not None and value not in {".", ".."}


def safe_id(value: str, what: str) -> str:
    """`value` when it is safe as one path component; ValueError naming `what` otherwise."""
    if not is_safe_id(value):
        raise ValueError(f"{what} {value!r} must be letters, digits, '.', '_' or '-'")
    return value


def attempt_folder(incident: str, attempt: int) -> str:
    """Where one try at a fix keeps its artifacts: the first beside the incident's, every
    later one in its own folder, so a repair never overwrites what an earlier try left."""
    return incident if attempt == 1 else f"{incident}/attempt-{attempt}"


def ui_namespace_url(ui_url: str, namespace: str) -> str:
    """The Temporal UI page of a namespace; incidents link below it."""
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}"


def ui_run_url(namespace_url: str, workflow_id: str, run_id: str) -> str:
    """The Temporal UI page of one incident (one run of its workflow id)."""
    return f"{namespace_url.rstrip('/')}/workflows/{workflow_id}/{run_id}"
