"""bench/diagnose.py's scoring: what counts as naming a fix file, editing a fix function,
respecting the scope and abstaining, and the fixed rule that picks the default cases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.diagnose import default_cases, edit_lines, score
from remedy.models import (
    Diagnosis,
    DiagnosisResult,
    Edit,
    Evidence,
    EvidenceLine,
    IncidentStatus,
    PatchResult,
    Phase,
)
from remedy.service_policy import ServicePolicy, Severity

SOURCE = '''"""A meter."""


class Meter:
    def format(self, total, scale):
        if scale:
            total *= scale
        return str(total)

    def reset(self):
        return 0


def helper(value):
    return value + 1
'''

CASE: dict[str, Any] = {
    "id": "meter-1",
    "project": "meter",
    "kind": "exception",
    "fix_files": ["meter/core.py"],
    "fix_functions": ["meter/core.py::Meter.format"],
    "fix_hunks": [{"file": "meter/core.py", "old_start": 7, "old_lines": 1}],
}


def repo_with_source(tmp_path: Path) -> Path:
    (tmp_path / "meter").mkdir()
    (tmp_path / "meter" / "core.py").write_text(SOURCE)
    return tmp_path


def status_with(diagnosis: Diagnosis | None, *, applied: bool = True) -> IncidentStatus:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    return IncidentStatus(
        incident_id="meter-incident",
        workflow_id="incident-meter",
        service="meter",
        fingerprint="f" * 16,
        phase=Phase.AWAITING_APPROVAL,
        severity=Severity.HIGH,
        error_type="TypeError",
        error_message="unsupported operand",
        occurrences=1,
        first_seen=now,
        last_seen=now,
        evidence=Evidence(summary="TypeError in Meter.format"),
        diagnosis=DiagnosisResult(diagnosis=diagnosis),
        patch=PatchResult(applied=applied),
    )


def diagnosis_editing(path: str, search: str, *, cited: str | None = None) -> Diagnosis:
    return Diagnosis(
        summary="total is None",
        root_cause="format multiplies a missing total",
        confidence=0.5,
        evidence=[EvidenceLine(path=cited, line=7)] if cited else [],
        edits=[Edit(path=path, search=search, replace="x = 1")],
    )


def test_an_edit_inside_the_fix_function_counts_as_both_named_and_edited(tmp_path: Path) -> None:
    repo = repo_with_source(tmp_path)
    edit = diagnosis_editing("meter/core.py", "        return str(total)\n")

    scored = score(CASE, repo, status_with(edit), ServicePolicy())

    assert scored["fix_file_named"] and scored["named_fix_files"] == ["meter/core.py"]
    assert scored["fix_function_edited"]  # line 8 lies in Meter.format, not in the hunk
    assert scored["patch_applied"] and scored["scope_respected"] and not scored["abstained"]


def test_an_edit_elsewhere_in_the_fix_file_names_it_but_edits_no_fix_function(
    tmp_path: Path,
) -> None:
    repo = repo_with_source(tmp_path)
    edit = diagnosis_editing("meter/core.py", "    return value + 1\n")

    scored = score(CASE, repo, status_with(edit), ServicePolicy())

    assert scored["fix_file_named"] and not scored["fix_function_edited"]


def test_citing_the_fix_file_names_it_even_when_the_edit_is_elsewhere(tmp_path: Path) -> None:
    repo = repo_with_source(tmp_path)
    (repo / "meter" / "cli.py").write_text("print(1)\n")
    edit = diagnosis_editing("meter/cli.py", "print(1)\n", cited="meter/core.py")

    scored = score(CASE, repo, status_with(edit, applied=False), ServicePolicy())

    assert scored["fix_file_named"] and not scored["fix_function_edited"]
    assert not scored["patch_applied"]


def test_no_diagnosis_or_no_edits_is_an_abstention_that_names_nothing(tmp_path: Path) -> None:
    repo = repo_with_source(tmp_path)
    empty = Diagnosis(summary="?", root_cause="?", confidence=0.1)

    for diagnosis in (None, empty):
        scored = score(CASE, repo, status_with(diagnosis, applied=False), ServicePolicy())
        assert scored["abstained"] and not scored["fix_file_named"]
        assert not scored["fix_function_edited"] and scored["scope_respected"]


def test_an_edit_outside_the_allowed_paths_breaks_the_scope(tmp_path: Path) -> None:
    repo = repo_with_source(tmp_path)
    edit = diagnosis_editing("meter/core.py", "        return str(total)\n")

    scored = score(CASE, repo, status_with(edit), ServicePolicy(allowed_paths=["docs/**"]))

    assert not scored["scope_respected"]


def test_edit_lines_are_where_the_search_text_stands_and_none_when_it_is_not_there(
    tmp_path: Path,
) -> None:
    repo = repo_with_source(tmp_path)

    assert edit_lines(repo, Edit(path="meter/core.py", search="if scale:\n  ", replace="")) == (
        6,
        7,
    )
    assert edit_lines(repo, Edit(path="meter/core.py", search="absent", replace="")) is None
    assert edit_lines(repo, Edit(path="meter/missing.py", search="x", replace="")) is None


def test_default_cases_take_each_projects_first_exception_case_then_the_second() -> None:
    cases = [
        {"id": "a-1", "project": "a", "kind": "exception"},
        {"id": "a-2", "project": "a", "kind": "exception"},
        {"id": "a-3", "project": "a", "kind": "assertion"},
        {"id": "b-1", "project": "b", "kind": "assertion"},
        {"id": "c-1", "project": "c", "kind": "exception"},
        {"id": "c-2", "project": "c", "kind": "exception"},
        {"id": "c-3", "project": "c", "kind": "exception"},
    ]

    assert [c["id"] for c in default_cases(cases, 4)] == ["a-1", "c-1", "a-2", "c-2"]
    assert [c["id"] for c in default_cases(cases, 10)] == ["a-1", "c-1", "a-2", "c-2", "c-3"]
