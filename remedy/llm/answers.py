"""The answers a model must give: their JSON schemas, parsing, and the checks they must pass.

A diagnosis is used only when every check passes: evidence lines exist, edits apply exactly
once each, stay in the service's scope, keep files parsable and the diff small. The checks
run on file texts read at the incident's commit and handed in, so they are tested without a
model or a repository; whatever the prompt said, they can only narrow what was proposed.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import posixpath
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from remedy.llm.conversation import ToolSpec
from remedy.llm.prompts import UNTRUSTED_MARKERS
from remedy.models import Diagnosis, Edit
from remedy.patching import EditedFile, repo_path, try_edits
from remedy.policy import diff_size_violation, regression_test_violation, scope_violations
from remedy.service_policy import ServicePolicy


class RegressionTestAnswer(BaseModel):
    path: str = Field(min_length=1)
    content: str = Field(min_length=1)
    explanation: str = ""


PATH_DESCRIPTION = "Path relative to the repository root"
_DESCRIPTIONS = {
    "summary": "One sentence a reviewer reads first",
    "root_cause": "Why the error happens, citing the code",
    "confidence": "0..1: how sure you are that the root cause and the edits are right",
    "evidence": "path/line pairs in the repository at this commit that support the root cause",
    "edits": "Exact replacements; empty when there is no safe fix",
    "search": "Exact text of the file at this commit, occurring exactly once, indentation included",
    "replace": "The text that replaces it",
    "path": PATH_DESCRIPTION,
    "line": "1-based line number in that file",
    "content": "The whole test file",
    "explanation": "Why the test fails before the fix and passes after it",
}


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        out = {k: _inline(v, defs) for k, v in node.items() if k not in {"title", "$defs"}}
        if out.get("type") == "object" and "properties" in out:
            # Structured output and forced tools then always carry every field.
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
            for name, prop in out["properties"].items():
                if name in _DESCRIPTIONS and isinstance(prop, dict):
                    prop.setdefault("description", _DESCRIPTIONS[name])
        return out
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def answer_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A self-contained JSON schema (no $ref) of `model`, every field required."""
    schema = model.model_json_schema()
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    inlined.pop("description", None)
    return inlined


DIAGNOSIS_SCHEMA = answer_schema(Diagnosis)
REGRESSION_TEST_SCHEMA = answer_schema(RegressionTestAnswer)

SUBMIT_DIAGNOSIS = ToolSpec(
    name="submit_diagnosis",
    description="Submit the final diagnosis. Call it once, when you have read enough code.",
    parameters=DIAGNOSIS_SCHEMA,
)
SUBMIT_REGRESSION_TEST = ToolSpec(
    name="submit_regression_test",
    description="Submit the regression test file.",
    parameters=REGRESSION_TEST_SCHEMA,
)


class MalformedAnswer(ValueError):
    """The model's answer is not the required shape; the message is fed back to it."""


_DECODER = json.JSONDecoder()
MAX_OBJECT_STARTS = 64  # a reply of nested braces must not cost a decode per character


def _objects_in(text: str) -> tuple[list[tuple[int, dict[str, Any]]], json.JSONDecodeError | None]:
    """Every JSON object in a reply, with its length, and the first decode error met.

    Every `{` is tried as the start of a JSON value (json's own raw_decode, so braces in
    strings and fences around the object need no pattern); an object found is skipped whole.
    """
    found: list[tuple[int, dict[str, Any]]] = []
    first_error: json.JSONDecodeError | None = None
    position, starts = text.find("{"), 0
    while position >= 0 and starts < MAX_OBJECT_STARTS:
        starts += 1
        try:
            value, end = _DECODER.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            first_error = first_error or exc
            position = text.find("{", position + 1)
            continue
        except RecursionError:
            break
        if isinstance(value, dict):
            found.append((end - position, value))
        position = text.find("{", end)
    return found, first_error


def parse_json_object(raw: str | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object in a reply: the reply itself, inside a ``` fence, or between prose.

    Among the objects found the longest is the answer, since prose around it holds at most
    small ones.
    """
    if isinstance(raw, Mapping):
        return dict(raw)
    text = raw.strip()
    if not text:
        raise MalformedAnswer("the answer is empty; expected one JSON object")
    found, first_error = _objects_in(text)
    if not found:
        if first_error is None:
            raise MalformedAnswer("the answer holds no JSON object; expected exactly one")
        raise MalformedAnswer(
            f"the answer is not valid JSON: {first_error.msg} at character {first_error.pos}"
        )
    return max(found, key=lambda item: item[0])[1]


_EDIT_KEYS = frozenset(Edit.model_fields)


def written_edits(raw: str | Mapping[str, Any]) -> list[Edit]:
    """The well-formed edits anywhere in a reply that is not a whole answer.

    A small model may write its fix in prose or in a partial object, then, asked for the
    whole shape, answer with an empty edit list: what it wrote is kept to remind it.
    """
    nodes: list[Any] = (
        [dict(raw)] if isinstance(raw, Mapping) else [o for _, o in _objects_in(raw)[0]]
    )
    edits: list[Edit] = []
    while nodes:
        node = nodes.pop(0)
        if isinstance(node, dict):
            if node.keys() >= _EDIT_KEYS:
                with contextlib.suppress(ValidationError):
                    edit = Edit.model_validate({key: node[key] for key in _EDIT_KEYS})
                    if edit not in edits:
                        edits.append(edit)
                continue
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return edits


def _describe(error: ValidationError) -> str:
    rows = []
    for item in error.errors()[:8]:
        where = ".".join(str(p) for p in item["loc"]) or "(answer)"
        rows.append(f"{where}: {item['msg']}")
    return "; ".join(rows)


def _decode_nested(data: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    # Tool arguments sometimes arrive with a list encoded as a JSON string.
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip().startswith("["):
            with contextlib.suppress(json.JSONDecodeError):
                data[key] = json.loads(value)
    return data


def parse_diagnosis(raw: str | Mapping[str, Any]) -> Diagnosis:
    data = _decode_nested(parse_json_object(raw), ("evidence", "edits"))
    try:
        return Diagnosis.model_validate(data)
    except ValidationError as exc:
        raise MalformedAnswer(
            f"the answer does not have the required shape: {_describe(exc)}"
        ) from None


def parse_regression_test(raw: str | Mapping[str, Any]) -> RegressionTestAnswer:
    try:
        return RegressionTestAnswer.model_validate(parse_json_object(raw))
    except ValidationError as exc:
        raise MalformedAnswer(
            f"the answer does not have the required shape: {_describe(exc)}"
        ) from None


def cited_paths(answer: object) -> set[str]:
    """The repository files an answer rests on (a diagnosis's evidence and edits), which the
    model must have seen in its conversation; none for other answers."""
    return referenced_paths(answer) if isinstance(answer, Diagnosis) else set()


def proposes_nothing(answer: object) -> bool:
    """A diagnosis without edits: an honest "no safe fix", or a retreat after a rejection."""
    return isinstance(answer, Diagnosis) and not answer.edits


def _echoes_markers(text: str) -> bool:
    return any(marker in text for marker in UNTRUSTED_MARKERS)


_MARKER_PROBLEM = (
    "contains Remedy's untrusted-text markers (<<<BEGIN/END UNTRUSTED): they fence data in the "
    "prompt and never belong in a file"
)


def referenced_paths(diagnosis: Diagnosis) -> set[str]:
    """Every valid repository path the diagnosis names: the files validation must read."""
    paths = {repo_path(e.path) for e in diagnosis.evidence} | {
        repo_path(e.path) for e in diagnosis.edits
    }
    return {p for p in paths if p}


class _TextAtCommit:
    """The files a diagnosis names, as read at the commit, seen as remedy.patching's base:
    a text is a regular file, None an absent one."""

    def __init__(self, files: Mapping[str, str | None]) -> None:
        self._files = files

    def mode(self, path: str) -> str | None:
        return None if self._files.get(path) is None else "100644"

    def read(self, path: str) -> bytes:
        return (self._files.get(path) or "").encode("utf-8")


def check_edits(
    edits: Sequence[Edit], files: Mapping[str, str | None], commit: str
) -> tuple[dict[str, EditedFile], list[str]]:
    """The edits applied by prepare_patch's rules (remedy.patching), and every problem at once.

    A model's edit must also change something: a replacement equal to its search text is a
    mistake worth telling it about, even where other edits make the whole change non-empty.
    """
    patched, refusals = try_edits(edits, _TextAtCommit(files), f"commit {commit[:12]}")
    refused = {refusal.edit: str(refusal) for refusal in refusals}
    problems: list[str] = []
    for number, edit in enumerate(edits, start=1):
        if _echoes_markers(edit.replace):
            problems.append(f"edit {number} ({edit.path}): the replacement {_MARKER_PROBLEM}")
        if number in refused:
            problems.append(refused[number])
        elif edit.search == edit.replace:
            problems.append(f"edit {number} ({edit.path}): the replacement equals the search text")
    return patched, problems


def syntax_problem(path: str, text: str) -> str | None:
    """Why the patched file no longer parses (Python, JSON, TOML), or None."""
    suffix = posixpath.splitext(path)[1].lower()
    try:
        if suffix in {".py", ".pyi"}:
            compile(text, path, "exec", dont_inherit=True)
        elif suffix == ".json":
            json.loads(text)
        elif suffix == ".toml":
            tomllib.loads(text)
    except SyntaxError as exc:
        return f"{path}: the patched file no longer parses: {exc.msg} (line {exc.lineno})"
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        return f"{path}: the patched file no longer parses: {exc}"
    return None


def diff_stats(original: str, text: str) -> tuple[int, int]:
    """(lines added, lines removed) between two versions of a file."""
    added = removed = 0
    matcher = difflib.SequenceMatcher(
        None, original.splitlines(keepends=True), text.splitlines(keepends=True), autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            removed += i2 - i1
            added += j2 - j1
    return added, removed


def validate_diagnosis(
    diagnosis: Diagnosis,
    files: Mapping[str, str | None],
    policy: ServicePolicy,
    commit: str,
    service: str = "<name>",
) -> list[str]:
    """Every reason the diagnosis cannot be used as it is; empty when it can.

    `files` maps each of `referenced_paths(diagnosis)` to its text at `commit` (None: absent);
    `service` names the remedy.toml section a scope refusal points to.
    """
    short = commit[:12]
    problems: list[str] = []
    for number, line in enumerate(diagnosis.evidence, start=1):
        path = repo_path(line.path)
        text = files.get(path) if path else None
        if text is None:
            problems.append(f"evidence {number}: {line.path} does not exist at commit {short}")
        elif line.line > max(len(text.splitlines()), 1):
            problems.append(
                f"evidence {number}: {line.path} has {len(text.splitlines())} lines at commit "
                f"{short}, not {line.line}"
            )
    in_repo = [
        e.model_copy(update={"path": p}) for e in diagnosis.edits if (p := repo_path(e.path))
    ]
    problems.extend(scope_violations(in_repo, policy, service))
    patched, edit_problems = check_edits(diagnosis.edits, files, commit)
    problems.extend(edit_problems)
    added = removed = 0
    for path, file in patched.items():
        if file.text == file.original:
            continue
        if problem := syntax_problem(path, file.text):
            problems.append(problem)
        plus, minus = diff_stats(file.original, file.text)
        added, removed = added + plus, removed + minus
    if too_big := diff_size_violation(added, removed, policy.max_diff_lines):
        problems.append(too_big)
    return problems


_TEST_NAME = re.compile(r"^(test_.+|.+_test)\.py$")


def validate_regression_test(
    answer: RegressionTestAnswer,
    *,
    exists: bool,
    policy: ServicePolicy | None = None,
    service: str = "<name>",
) -> list[str]:
    """Why the proposed test file cannot be run as a new test; empty when it can.

    The path goes through the scope policy into the service's test directories
    (remedy.policy.regression_test_violation; the default policy when none is given).
    """
    path = repo_path(answer.path)
    if path is None:
        return [f"{answer.path}: the path must be relative and stay inside the repository"]
    problems = []
    if out_of_scope := regression_test_violation(path, policy or ServicePolicy(), service):
        problems.append(out_of_scope)
    if exists:
        problems.append(f"{path}: the file already exists; choose a new file name")
    if not _TEST_NAME.match(posixpath.basename(path)):
        problems.append(f"{path}: name the file test_*.py or *_test.py so the test runner finds it")
    if _echoes_markers(answer.content):
        problems.append(f"{path}: the test {_MARKER_PROBLEM}")
    if problem := syntax_problem(path if path.endswith(".py") else f"{path}.py", answer.content):
        problems.append(problem)
    return problems
