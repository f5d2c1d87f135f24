"""What the test runs said: counts and failing tests from pytest or unittest output, and the
verdict on a patch from the runs before and after it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from remedy.models import CommandRun, VerificationResult

_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?)\b")
_PYTEST_SUMMARY = re.compile(r"^=*\s*\d+ \w+.* in [\d.]+s", re.MULTILINE)
_PYTEST_FAILURE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in", re.MULTILINE)
_UNITTEST_FAILED = re.compile(r"^FAILED \(([^)]*)\)", re.MULTILINE)
_UNITTEST_FAILURE = re.compile(r"^(?:FAIL|ERROR): (\S+) \(([^)]+)\)", re.MULTILINE)


@dataclass(frozen=True)
class SuiteCounts:
    passed: int | None
    failed: int | None
    failures: list[str]


def parse_test_output(output: str) -> SuiteCounts:
    """Counts and failing test ids from pytest's or unittest's summary; None when neither."""
    summaries = _PYTEST_SUMMARY.findall(output)
    if summaries:
        counts: dict[str, int] = {}
        for number, word in _PYTEST_COUNT.findall(summaries[-1]):
            key = "failed" if word.startswith("error") else word
            counts[key] = counts.get(key, 0) + int(number)
        failures = list(dict.fromkeys(_PYTEST_FAILURE.findall(output)))
        return SuiteCounts(counts.get("passed", 0), counts.get("failed", 0), failures)
    ran = _UNITTEST_RAN.findall(output)
    if ran:
        total = int(ran[-1])
        failed = 0
        if bad := _UNITTEST_FAILED.findall(output):
            failed = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", bad[-1]))
        failures = [f"{where}.{name}" for name, where in _UNITTEST_FAILURE.findall(output)]
        return SuiteCounts(total - failed, failed, list(dict.fromkeys(failures)))
    return SuiteCounts(None, None, [])


OUTPUT_TAIL_LINES = 40
OUTPUT_TAIL_CHARS = 3_000


def output_tail(log: bytes) -> str:
    """The end of a run's output, where a test runner prints what failed."""
    lines = log.decode("utf-8", errors="replace").rstrip("\n").split("\n")
    return "\n".join(lines[-OUTPUT_TAIL_LINES:])[-OUTPUT_TAIL_CHARS:]


def read_tail(path: Path, size: int) -> bytes:
    """The last `size` bytes of a log, saying how much was left out before them."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        length = handle.tell()
        handle.seek(max(length - size, 0))
        data = handle.read()
    if length > size:
        return f"[first {length - size} bytes of the log omitted]\n".encode() + data
    return data


def describe(run: CommandRun) -> str:
    if run.timed_out:
        return "timed out"
    if run.signal:
        return f"killed by {run.signal}"
    counts = f"{run.passed} passed, {run.failed} failed" if run.passed is not None else ""
    state = "passed" if run.exit_code == 0 else f"failed (exit {run.exit_code})"
    reused = f" (cached from {run.cached_from[:12]})" if run.cached_from else ""
    shared = f" (counted in the {run.ran_with} run)" if run.ran_with else ""
    return f"{state}{f': {counts}' if counts else ''}{reused}{shared}"


def _counts(run: CommandRun) -> tuple[int, int] | None:
    """(passed, failed) of a run that ended within its limits and printed a summary."""
    if run.timed_out or run.signal or run.passed is None or run.failed is None:
        return None
    return run.passed, run.failed


def split_regression_test(
    combined: CommandRun, suite_before: CommandRun, test_before: CommandRun, test_path: str
) -> tuple[CommandRun, CommandRun] | None:
    """The suite's part and the regression test's part of one run after the patch of the suite
    with the test in its tree: (after, regression-after), both keeping the run's log. None when
    the output cannot tell them apart (no counts, a limit hit, totals that do not add up to the
    suite's before plus the test's own, as when the patch changes the tests or the suite does
    not collect the test, or failures that cannot be told apart), and when the suite's part
    fails where it did not before, which in one process may be the test's doing: then each
    runs on its own.

    The test's failures are the ones named after its file, as pytest names it (the file part
    of the ids its own run printed before the patch, or `test_path`) or as unittest names its
    module."""
    counts, suite_counts = _counts(combined), _counts(suite_before)
    test_counts = _counts(test_before)
    if counts is None or suite_counts is None or test_counts is None:
        return None
    passed, failed = counts
    in_test = sum(test_counts)
    if in_test == 0 or passed + failed != sum(suite_counts) + in_test:
        return None
    if (combined.exit_code == 0) != (failed == 0):
        return None  # a failure not counted (exit 5, an error at exit) or counts that lie
    files = {test_path} | {name.split("::")[0] for name in test_before.failures if "::" in name}
    module = test_path.removesuffix(".py").replace("/", ".") + "."

    def of_test(name: str) -> bool:
        return name.split("::")[0] in files or name.startswith(module)

    test_failures = [name for name in combined.failures if of_test(name)]
    suite_failures = [name for name in combined.failures if not of_test(name)]
    test_failed = len(test_failures)
    suite_failed = failed - test_failed
    test_passed = in_test - test_failed
    suite_passed = passed - test_passed
    if min(suite_failed, test_passed, suite_passed) < 0 or (suite_failures and not suite_failed):
        return None
    if suite_failed and (
        suite_before.exit_code == 0 or set(suite_failures) - set(suite_before.failures)
    ):
        return None  # maybe the test's doing (state it changed for the tests after it): alone

    def part(label: str, passed: int, failed: int, failures: list[str]) -> CommandRun:
        exit_code = combined.exit_code if failed else 0
        update = {"label": label, "passed": passed, "failed": failed, "failures": failures}
        return combined.model_copy(update={**update, "exit_code": exit_code})

    suite = part("after", suite_passed, suite_failed, suite_failures)
    test = part("regression-after", test_passed, test_failed, test_failures)
    test.ran_with = "after"
    return suite, test


def judge(
    command: str,
    before: CommandRun,
    after: CommandRun,
    runs: list[CommandRun],
    test_path: str | None,
    reproduced: bool | None,
) -> VerificationResult:
    """The verdict: passed when the suite passes after the patch; new failures are the ones
    that did not fail before it."""
    passed = after.exit_code == 0 and not after.timed_out
    new_failures = [f for f in after.failures if f not in before.failures]
    before_ok = before.exit_code == 0 and not before.timed_out
    if not passed and not new_failures and before_ok:
        new_failures = [f"{command!r}: {describe(after)} after the patch, passed before"]
    lines = [f"Tests before the patch: {describe(before)}.", f"After: {describe(after)}."]
    if new_failures:
        lines.append(f"New failures: {', '.join(new_failures[:10])}.")
    elif not passed:
        lines.append("No new failures: the suite already failed before the patch.")
    if test_path:
        verdict = (
            "fails before the patch and passes after it: reproduced and fixed"
            if reproduced
            else f"before: {describe(runs[1])}, after: {describe(runs[-1])}: not reproduced"
        )
        lines.append(f"Regression test {test_path} {verdict}.")
    tests_run = (after.passed or 0) + (after.failed or 0) if after.passed is not None else None
    return VerificationResult(
        status="passed" if passed else "failed",
        summary=" ".join(lines),
        tests_run=tests_run,
        new_failures=new_failures,
        reproduced=reproduced,
        regression_test=test_path,
        runs=runs,
    )
