"""The sandbox and verify_patch: no network, enforced limits, no secrets, before/after runs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.sandbox import SandboxActivities
from remedy.artifacts import ArtifactStore
from remedy.config import LimitsConfig, RemedyConfig, SandboxConfig, ServiceConfig
from remedy.models import (
    CommandRun,
    Edit,
    PatchResult,
    RegressionTest,
    VerificationResult,
    VerifyRequest,
    Worktree,
)
from remedy.sandbox.bwrap import HOME, exposed, python_prefixes, read_only_paths
from remedy.sandbox.limits import SandboxLimits
from remedy.sandbox.results import parse_test_output, split_regression_test
from remedy.sandbox.runner import (
    Bubblewrap,
    Confinement,
    SandboxOutcome,
    Unsandboxed,
    find_bubblewrap,
    network_isolation_prefix,
    probe,
    run_confined,
)
from tests.repos import git, make_service_repo

PYTHON = sys.executable
TEST_PATH = "tests/test_regression.py"
LIMITS = SandboxLimits(
    wall_s=20, cpu_s=20, memory_bytes=1024 * 1024 * 1024, file_bytes=64 * 1024 * 1024
)


def _sandbox_here() -> tuple[Bubblewrap | None, str]:
    found = find_bubblewrap(read_only_paths(python_prefixes(PYTHON)), (65534, 65534))
    if isinstance(found, str):
        return None, found
    reason = asyncio.run(probe(found, LIMITS))
    return (found, "") if reason is None else (None, reason)


SANDBOX, NO_SANDBOX = _sandbox_here()
needs_sandbox = pytest.mark.skipif(SANDBOX is None, reason=f"no sandbox here: {NO_SANDBOX}")
UNSANDBOXED = Unsandboxed(network=None)
BOTH = pytest.mark.parametrize(
    "confinement",
    [
        pytest.param(SANDBOX, marks=needs_sandbox, id="sandbox"),
        pytest.param(UNSANDBOXED, id="unsandboxed"),
    ],
)


async def sandboxed(
    tmp_path: Path,
    command: str,
    limits: SandboxLimits = LIMITS,
    confinement: Confinement | None = None,
) -> tuple[SandboxOutcome, str]:
    """Run `command` in tmp_path/src (the sandbox here unless told otherwise)."""
    confinement = confinement or SANDBOX
    assert confinement is not None, NO_SANDBOX
    copy, home = tmp_path / "src", tmp_path / "home"
    copy.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    log = tmp_path / "run.log"
    outcome = await run_confined(
        command, copy=copy, home=home, log=log, limits=limits, confinement=confinement
    )
    return outcome, log.read_text(errors="replace")


def processes_marked(marker: str) -> list[int]:
    """Host pids whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def wait_until_gone(marker: str, within_s: float = 10.0) -> list[int]:
    """Poll until no host process carries `marker` (a busy machine reaps slowly)."""
    deadline = time.monotonic() + within_s
    # Nothing signals a process's end to a stranger: polling /proc is the only way.
    while (left := processes_marked(marker)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return left


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback that accepts and closes connections."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(2)
    server.close()


def connect_script(port: int) -> str:
    return (
        f'{PYTHON} -c "import socket\n'
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), 2); print('CONNECTED')\n"
        "except OSError as e: print('REFUSED', e)\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), 2); print('OUTSIDE')\n"
        "except OSError as e: print('NO ROUTE', e)\""
    )


# ---------------------------------------------------------------------------- the sandbox


@needs_sandbox
async def test_the_test_command_has_no_network(tmp_path: Path, listener: int) -> None:
    outcome, output = await sandboxed(tmp_path, connect_script(listener))
    assert outcome.exit_code == 0, output
    assert "REFUSED" in output and "CONNECTED" not in output
    assert "NO ROUTE" in output and "OUTSIDE" not in output


async def test_without_isolation_the_same_command_connects(tmp_path: Path, listener: int) -> None:
    _, output = await sandboxed(tmp_path, connect_script(listener), confinement=UNSANDBOXED)
    assert "CONNECTED" in output


@needs_sandbox
async def test_tests_can_still_serve_on_their_own_loopback(tmp_path: Path) -> None:
    script = (
        f"{PYTHON} -c \"import socket; s = socket.create_server(('127.0.0.1', 0)); "
        "c = socket.create_connection(s.getsockname(), 2); print('LOOPBACK OK')\""
    )
    outcome, output = await sandboxed(tmp_path, script)
    assert outcome.exit_code == 0 and "LOOPBACK OK" in output, output


@BOTH
async def test_no_secret_reaches_the_test_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, confinement: Confinement
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-very-secret")
    monkeypatch.setenv("REMEDY_CHECKOUT_TOKEN", "intake-token-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    script = f'{PYTHON} -c "import json, os; print(json.dumps(sorted(os.environ)))"'
    outcome, output = await sandboxed(tmp_path, script, confinement=confinement)
    assert outcome.exit_code == 0, output
    names = set(json.loads(output.strip().splitlines()[-1]))
    assert names <= {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "LC_CTYPE"}, names
    assert {"PATH", "HOME", "LANG"} <= names
    env_dump, _ = await sandboxed(tmp_path, "env > env.txt", confinement=confinement)
    dumped = (tmp_path / "src" / "env.txt").read_text()
    assert env_dump.exit_code == 0
    for value in ("sk-ant-very-secret", "intake-token-value", "aws-secret-value"):
        assert value not in dumped
    home = HOME if isinstance(confinement, Bubblewrap) else tmp_path / "home"
    assert f"HOME={home}" in dumped


@needs_sandbox
async def test_the_sandbox_shows_only_its_copy_the_system_and_its_own_processes(
    tmp_path: Path,
) -> None:
    script = (
        "id -u; echo ==; ls /; echo ==; ls /proc | grep -c '^[0-9]'; echo ==; "
        "touch /src/mine && echo COPY WRITABLE; "
        "touch /usr/mine 2>/dev/null || echo USR READ-ONLY; "
        "touch /mine 2>/dev/null || echo ROOT READ-ONLY; "
        f"ls {tmp_path} 2>/dev/null || echo HOST FOLDERS HIDDEN"
    )
    outcome, output = await sandboxed(tmp_path, script)
    assert outcome.exit_code == 0, output
    uid, top, processes, checks = output.split("==\n")
    assert uid.strip() == "65534"
    # The root holds the system, the sandbox's own folders and the path to the worker's Python.
    python_top = {Path(path).parts[1] for path in python_prefixes(PYTHON)}
    allowed = {"bin", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "proc", "sbin"}
    assert set(top.split()) <= allowed | {"src", "tmp", "usr"} | python_top, top
    # sh, ls, grep and bwrap's init: a fresh /proc shows nothing of the host.
    assert int(processes) <= 5, output
    assert (tmp_path / "src" / "mine").exists()
    for line in ("COPY WRITABLE", "USR READ-ONLY", "ROOT READ-ONLY", "HOST FOLDERS HIDDEN"):
        assert line in checks.splitlines(), output


@BOTH
async def test_cpu_time_is_limited(tmp_path: Path, confinement: Confinement) -> None:
    limits = SandboxLimits(
        wall_s=30, cpu_s=1, memory_bytes=LIMITS.memory_bytes, file_bytes=LIMITS.file_bytes
    )
    command = f'{PYTHON} -c "while True: pass"'
    outcome, _ = await sandboxed(tmp_path, command, limits, confinement)
    assert not outcome.timed_out
    assert outcome.signal in {"SIGXCPU", "SIGKILL"}
    assert outcome.duration_s < 10


@BOTH
async def test_memory_is_limited(tmp_path: Path, confinement: Confinement) -> None:
    limits = SandboxLimits(
        wall_s=30, cpu_s=20, memory_bytes=256 * 1024 * 1024, file_bytes=LIMITS.file_bytes
    )
    outcome, output = await sandboxed(
        tmp_path,
        f'{PYTHON} -c "b = bytearray(512 * 1024 * 1024); print(len(b))"',
        limits,
        confinement,
    )
    assert outcome.exit_code != 0 and "MemoryError" in output


@BOTH
async def test_file_size_is_limited(tmp_path: Path, confinement: Confinement) -> None:
    limits = SandboxLimits(
        wall_s=30, cpu_s=20, memory_bytes=LIMITS.memory_bytes, file_bytes=1024 * 1024
    )
    command = "head -c 4000000 /dev/zero > big.bin"
    outcome, _ = await sandboxed(tmp_path, command, limits, confinement)
    assert outcome.signal == "SIGXFSZ"
    assert (tmp_path / "src" / "big.bin").stat().st_size <= 1024 * 1024


@needs_sandbox
async def test_processes_are_limited(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, processes=16)
    script = (
        f'{PYTHON} -c "import os, time\n'
        "n = 0\ntry:\n    while n < 100:\n        if os.fork() == 0:\n"
        "            time.sleep(20); os._exit(0)\n        n += 1\n"
        "except OSError as e: print('STOPPED', n, e.errno)\""
    )
    outcome, output = await sandboxed(tmp_path, script, limits)
    assert outcome.exit_code == 0 and "STOPPED" in output, output
    assert int(output.split()[1]) < 16
    assert outcome.duration_s < 15  # the sleeping children died with the sandbox


@BOTH
async def test_wall_clock_kills_the_whole_process_group(
    tmp_path: Path, confinement: Confinement
) -> None:
    limits = SandboxLimits(
        wall_s=1, cpu_s=20, memory_bytes=LIMITS.memory_bytes, file_bytes=LIMITS.file_bytes
    )
    marker = f"remedy-orphan-{uuid.uuid4().hex}"
    sleeper = f"{PYTHON} -c 'import time; time.sleep(60)' {marker}"
    # In the sandbox even a child in a session of its own dies with the sandbox's init.
    escapee = f"setsid {sleeper} & " if isinstance(confinement, Bubblewrap) else ""
    outcome, _ = await sandboxed(tmp_path, f"{sleeper} & {escapee}sleep 60", limits, confinement)
    assert outcome.timed_out and outcome.duration_s < 10
    assert await wait_until_gone(marker) == []


def test_pytest_and_unittest_summaries_are_read() -> None:
    pytest_out = (
        "..F.\n=========== short test summary info ============\n"
        "FAILED tests/test_cart.py::test_total - KeyError: 'qty'\n"
        "ERROR tests/test_db.py::test_conn - OSError\n"
        "2 passed, 1 failed, 1 error in 0.12s\n"
    )
    counts = parse_test_output(pytest_out)
    assert (counts.passed, counts.failed) == (2, 2)
    assert counts.failures == ["tests/test_cart.py::test_total", "tests/test_db.py::test_conn"]
    unittest_out = (
        "FAIL: test_total (tests.test_cart.CartTest.test_total)\n----\n"
        "Ran 5 tests in 0.003s\n\nFAILED (failures=1, errors=1)\n"
    )
    counts = parse_test_output(unittest_out)
    assert (counts.passed, counts.failed) == (3, 2)
    assert counts.failures == ["tests.test_cart.CartTest.test_total.test_total"]
    assert parse_test_output("make: *** [test] Error 1").passed is None


def _run(label: str, exit_code: int, passed: int, failed: int, *failures: str) -> CommandRun:
    return CommandRun(
        label=label, exit_code=exit_code, passed=passed, failed=failed, failures=list(failures)
    )


def _told_apart(
    combined: CommandRun, before: CommandRun, test_before: CommandRun
) -> tuple[CommandRun, CommandRun]:
    split = split_regression_test(combined, before, test_before, TEST_PATH)
    assert split is not None, "could not be told apart"
    return split


def test_the_suite_with_the_regression_test_is_told_apart() -> None:
    test_id = "tests/test_regression.py::test_qty"
    before, test_before = _run("before", 0, 5, 0), _run("regression-before", 1, 0, 1, test_id)

    suite, test = _told_apart(_run("after", 0, 6, 0), before, test_before)
    assert (suite.label, suite.exit_code, suite.passed, suite.failed) == ("after", 0, 5, 0)
    assert (test.label, test.exit_code, test.passed, test.ran_with) == (
        "regression-after", 0, 1, "after"
    )  # fmt: skip

    # A suite that failed before fails after as it did: the test's failure is told apart.
    cart = "tests/test_cart.py::test_total"
    failing = _run("before", 1, 4, 1, cart)
    suite, test = _told_apart(_run("after", 1, 4, 2, cart, test_id), failing, test_before)
    assert (suite.exit_code, suite.passed, suite.failures) == (1, 4, [cart])
    assert (test.exit_code, test.passed, test.failures) == (1, 0, [test_id])

    # pytest's ids are relative to its rootdir: the test's own run before names them so.
    nested = "svc/tests/test_regression.py::test_qty"
    suite, test = _told_apart(
        _run("after", 1, 5, 1, nested),
        before,
        _run("regression-before", 1, 0, 1, nested),
    )
    assert (suite.exit_code, test.exit_code, test.failures) == (0, 1, [nested])

    unittest_id = "tests.test_regression.QtyTest.test_qty"
    suite, test = _told_apart(
        _run("after", 1, 5, 1, unittest_id), before, _run("regression-before", 1, 0, 1)
    )
    assert (suite.exit_code, test.failures) == (0, [unittest_id])


def test_a_run_that_cannot_be_told_apart_is_not() -> None:
    before, test_before = _run("before", 0, 5, 0), _run("regression-before", 1, 0, 1)
    cannot = {
        "the suite did not collect the test": _run("after", 0, 5, 0),
        "the patch added a test": _run("after", 0, 7, 0),
        "no counts": CommandRun(label="after", exit_code=0),
        "a failure no count shows": _run("after", 3, 6, 0),
        "counts that say a test failed, exit 0": _run("after", 0, 5, 1),
        "two failures named, one counted": _run("after", 1, 5, 1, "elsewhere", TEST_PATH),
        # In one process the test may have broken the suite: only a run alone can say.
        "a suite failure new after the patch": _run("after", 1, 4, 1, "tests/test_cart.py::x"),
        "timed out": _run("after", 0, 6, 0).model_copy(update={"timed_out": True}),
    }
    for why, combined in cannot.items():
        assert split_regression_test(combined, before, test_before, TEST_PATH) is None, why
    no_tests = _run("regression-before", 5, 0, 0)
    assert split_regression_test(_run("after", 0, 5, 0), before, no_tests, TEST_PATH) is None


# ---------------------------------------------------------------------------- verify_patch

CART = """def total(items):
    return sum(item["price"] * item["qty"] for item in items)
"""
CART_TEST = """from app.cart import total


def test_total():
    assert total([{"price": 2, "qty": 3}]) == 6
"""
REGRESSION = """from app.cart import total


def test_an_item_without_qty_counts_once():
    assert total([{"price": 2}]) == 2
"""
INCIDENT = "checkout-0123456789abcdef-a1b2c3d4"


class Shop:
    def __init__(
        self, tmp_path: Path, test_command: str | None, sandbox: SandboxConfig | None = None
    ) -> None:
        self.tmp = tmp_path
        self.repo = make_service_repo(tmp_path)
        self.commit = self.repo.commit(
            {"app/__init__.py": "", "app/cart.py": CART, "tests/test_cart.py": CART_TEST},
            "Add cart",
        )
        self.store = ArtifactStore(tmp_path / "artifacts")
        self.config = RemedyConfig(
            home=str(tmp_path / "home"),
            limits=LimitsConfig(test_timeout_s=60, test_cpu_s=60),
            sandbox=sandbox or SandboxConfig(),
            services={"checkout": ServiceConfig(repo=str(tmp_path), test_command=test_command)},
        )
        self.worktree = Worktree(
            service="checkout",
            path=str(self.repo.work),
            commit=self.commit,
            branch="main",
            commit_source="release",
        )

    def patch(self, old: str, new: str) -> PatchResult:
        """A git diff of app/cart.py with `old` replaced, as prepare_patch stores it."""
        path = self.repo.work / "app/cart.py"
        path.write_text(CART.replace(old, new))
        diff = git(self.repo.work, "diff", "--no-color") + "\n"
        git(self.repo.work, "checkout", "--", "app/cart.py")
        ref = self.store.put_text(f"{INCIDENT}/patch.diff", diff)
        return PatchResult(
            applied=True, files=["app/cart.py"], lines_added=1, lines_removed=1, diff=ref
        )

    def regression(
        self, path: str = "tests/test_regression_qty.py", text: str = REGRESSION
    ) -> RegressionTest:
        """The model's regression test, stored as write_regression_test stores it."""
        return RegressionTest(
            path=path, content=self.store.put_text(f"{INCIDENT}/regression/test_file.py", text)
        )

    async def verify(
        self,
        patch: PatchResult,
        test: RegressionTest | None = None,
        edits: list[Edit] | None = None,
        incident: str = INCIDENT,
        activities: SandboxActivities | None = None,
    ) -> VerificationResult:
        acts = activities or SandboxActivities(self.config, self.store)
        request = VerifyRequest(
            incident_id=incident,
            worktree=self.worktree,
            patch=patch,
            regression_test=test,
            edits=edits or [],
        )
        result: VerificationResult = await ActivityEnvironment().run(acts.verify_patch, request)
        return result


PYTEST = f"{PYTHON} -m pytest -q -p no:cacheprovider"


@needs_sandbox
async def test_a_fix_that_passes_and_reproduces_the_error(tmp_path: Path) -> None:
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["qty"]', 'item.get("qty", 1)')
    result = await shop.verify(patch, shop.regression())

    assert result.status == "passed", result.summary
    assert result.reproduced is True and result.tests_run == 1 and result.new_failures == []
    assert [r.label for r in result.runs] == [
        "before",
        "regression-before",
        "after",
        "regression-after",
    ]
    assert [r.exit_code == 0 for r in result.runs] == [True, False, True, True]
    # One run after the patch, the suite with the test in its tree, told apart.
    after, test_after = result.runs[2:]
    assert (after.ran_with, test_after.ran_with) == (None, "after")
    assert (after.passed, test_after.passed) == (1, 1) and test_after.log == after.log
    assert "2 passed" in shop.store.get_text(f"{INCIDENT}/verify/after.log")
    assert "reproduced and fixed" in result.summary
    assert result.regression_test == "tests/test_regression_qty.py"
    assert result.network_isolated is True
    before_log = shop.store.get_text(f"{INCIDENT}/verify/regression-before.log")
    assert "KeyError: 'qty'" in before_log
    assert result.artifact is not None and shop.store.get_json(result.artifact)["command"] == PYTEST
    assert list((tmp_path / "home" / "sandbox").iterdir()) == []  # the scratch copy is gone
    assert git(shop.repo.work, "status", "--porcelain") == ""  # the worktree is untouched


@needs_sandbox
async def test_the_edits_are_applied_not_the_diff_shown_to_people(tmp_path: Path) -> None:
    # The stored diff is redacted for people; a secret on a context line would keep it from
    # applying. Verification applies the edits themselves.
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["qty"]', 'item.get("qty", 1)')
    assert patch.diff is not None
    shop.store.put_text(f"{INCIDENT}/patch.diff", "--- redacted, does not apply ---\n")
    edits = [Edit(path="app/cart.py", search='item["qty"]', replace='item.get("qty", 1)')]
    result = await shop.verify(patch, shop.regression(), edits=edits)
    assert result.status == "passed", result.summary
    assert result.reproduced is True


@needs_sandbox
async def test_a_fix_that_breaks_a_test_names_the_new_failure(tmp_path: Path) -> None:
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["price"] * item["qty"]', 'item["price"] + item["qty"]')
    result = await shop.verify(patch)

    assert result.status == "failed"
    assert result.new_failures == ["tests/test_cart.py::test_total"]
    assert result.reproduced is None
    assert "New failures: tests/test_cart.py::test_total" in result.summary


@needs_sandbox
async def test_a_regression_test_that_passes_before_the_fix_reproduces_nothing(
    tmp_path: Path,
) -> None:
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["qty"]', 'item.get("qty", 1)')
    trivial = shop.regression("tests/test_trivial.py", "def test_ok():\n    pass\n")
    result = await shop.verify(patch, trivial)
    assert result.status == "passed" and result.reproduced is False
    assert "not reproduced" in result.summary


@needs_sandbox
async def test_a_regression_test_still_failing_after_the_fix_is_the_tests_not_the_suites(
    tmp_path: Path,
) -> None:
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["qty"]', 'item.get("qty", 0)')
    result = await shop.verify(patch, shop.regression())

    assert result.status == "passed" and result.reproduced is False, result.summary
    assert result.new_failures == [] and result.tests_run == 1
    test_after = result.runs[3]
    assert test_after.ran_with == "after" and test_after.exit_code != 0
    assert test_after.failures == [
        "tests/test_regression_qty.py::test_an_item_without_qty_counts_once"
    ]
    assert "not reproduced" in result.summary and "counted in the after run" in result.summary


@needs_sandbox
async def test_a_regression_test_the_suite_does_not_collect_runs_alone_after_the_fix(
    tmp_path: Path,
) -> None:
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["qty"]', 'item.get("qty", 1)')
    result = await shop.verify(patch, shop.regression("checks/qty_regression.py"))

    assert result.status == "passed" and result.reproduced is True, result.summary
    assert [run.ran_with for run in result.runs] == [None] * 4
    assert [run.passed for run in result.runs] == [1, 0, 1, 1]
    assert "2 passed" not in shop.store.get_text(f"{INCIDENT}/verify/after.log")


SPOILER = """import builtins

builtins.sum = lambda *args, **kwargs: -1  # every test collected after this one sees it


def test_an_item_without_qty_counts_once():
    from app.cart import total

    assert total([{"price": 2}]) == 2
"""


@needs_sandbox
async def test_a_regression_test_that_breaks_the_suite_in_its_run_is_not_held_against_the_fix(
    tmp_path: Path,
) -> None:
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["qty"]', 'item.get("qty", 1)')
    result = await shop.verify(patch, shop.regression("tests/test_a_spoiler.py", SPOILER))

    assert "1 failed" in shop.store.get_text(f"{INCIDENT}/verify/regression-before.log")
    # Together, the suite's test failed; alone it passes, and that is the verdict.
    assert result.status == "passed" and result.new_failures == [], result.summary
    assert [run.ran_with for run in result.runs] == [None] * 4
    assert result.runs[2].exit_code == 0 and result.reproduced is False


async def test_without_a_test_command_verification_is_skipped(tmp_path: Path) -> None:
    shop = Shop(tmp_path, None)
    result = await shop.verify(shop.patch('item["qty"]', "1"))
    assert result.status == "skipped" and "no test_command" in result.summary


@needs_sandbox
async def test_a_patch_that_does_not_apply_is_an_error(tmp_path: Path) -> None:
    shop = Shop(tmp_path, f"{PYTHON} -c pass")
    patch = shop.patch('item["qty"]', "1")
    assert patch.diff is not None
    stale = shop.store.get_text(patch.diff).replace("qty", "qtz")
    shop.store.put_text(patch.diff.key, stale)
    result = await shop.verify(patch)
    assert result.status == "error" and "does not apply" in result.summary
    assert result.runs == []  # nothing worth reporting ran, and nothing was left running


def _exposing(tmp_path: Path, allow_unsandboxed: bool) -> SandboxConfig:
    """A [sandbox] that would show the tests the folder holding Remedy's home."""
    return SandboxConfig(read_only_paths=[str(tmp_path)], allow_unsandboxed=allow_unsandboxed)


async def test_without_a_sandbox_verification_is_skipped_with_the_reason(tmp_path: Path) -> None:
    shop = Shop(tmp_path, PYTEST, _exposing(tmp_path, allow_unsandboxed=False))
    result = await shop.verify(shop.patch('item["qty"]', 'item.get("qty", 1)'), shop.regression())
    assert result.status == "skipped" and result.runs == []
    assert result.summary == (
        "skipped: no sandbox (a folder the tests would read holds Remedy's state: "
        f"{tmp_path} contains {tmp_path / 'home'})"
    )
    assert result.artifact is not None
    assert shop.store.get_json(result.artifact)["sandbox"] == "none"


async def test_allow_unsandboxed_runs_the_tests_and_says_so(tmp_path: Path) -> None:
    shop = Shop(tmp_path, PYTEST, _exposing(tmp_path, allow_unsandboxed=True))
    result = await shop.verify(shop.patch('item["qty"]', 'item.get("qty", 1)'), shop.regression())
    assert result.status == "passed" and result.reproduced is True, result.summary
    assert result.summary.startswith("Ran WITHOUT the sandbox ([sandbox] allow_unsandboxed = true")
    assert result.network_isolated is (network_isolation_prefix() is not None)
    assert result.artifact is not None
    assert shop.store.get_json(result.artifact)["sandbox"] == "unsandboxed"


def test_the_tests_read_the_python_they_need_and_nothing_that_holds_remedys_home() -> None:
    prefixes = python_prefixes(PYTHON)
    assert sys.prefix in prefixes and sys.base_prefix in prefixes
    shown = read_only_paths([*prefixes, "/usr/lib", "/", sys.prefix + "/lib", "/no/such/dir"])
    assert "/" not in shown and "/usr/lib" not in shown and "/no/such/dir" not in shown
    assert sys.prefix in shown and sys.prefix + "/lib" not in shown
    assert exposed(["/srv/remedy"], ["/srv/remedy/.remedy"]) == (
        "/srv/remedy contains /srv/remedy/.remedy"
    )
    assert exposed(["/srv/remedy-venv"], ["/srv/remedy"]) is None
