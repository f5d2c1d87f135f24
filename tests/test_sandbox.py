"""The sandbox and verify_patch: no network, enforced limits, no secrets, before/after runs."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.sandbox import (
    SandboxActivities,
    SandboxLimits,
    SandboxOutcome,
    network_isolation_prefix,
    parse_test_output,
    run_sandboxed,
)
from remedy.artifacts import ArtifactStore
from remedy.config import LimitsConfig, RemedyConfig, ServiceConfig
from remedy.models import (
    PatchResult,
    RegressionTest,
    VerificationResult,
    VerifyRequest,
    Worktree,
)
from tests.repos import git, make_service_repo

PYTHON = sys.executable
ISOLATION = network_isolation_prefix()
needs_isolation = pytest.mark.skipif(
    ISOLATION is None, reason="this machine cannot make network namespaces (unshare)"
)
LIMITS = SandboxLimits(
    wall_s=20, cpu_s=20, memory_bytes=1024 * 1024 * 1024, file_bytes=64 * 1024 * 1024
)


async def sandboxed(
    tmp_path: Path,
    command: str,
    limits: SandboxLimits = LIMITS,
    isolation: list[str] | None = ISOLATION,
) -> tuple[SandboxOutcome, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    log = tmp_path / "run.log"
    outcome = await run_sandboxed(
        command,
        cwd=tmp_path,
        home=home,
        log=log,
        limits=limits,
        isolation=isolation,
    )
    return outcome, log.read_text(errors="replace")


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


@needs_isolation
async def test_the_test_command_has_no_network(tmp_path: Path, listener: int) -> None:
    outcome, output = await sandboxed(tmp_path, connect_script(listener))
    assert outcome.exit_code == 0, output
    assert "REFUSED" in output and "CONNECTED" not in output
    assert "NO ROUTE" in output and "OUTSIDE" not in output


async def test_without_isolation_the_same_command_connects(tmp_path: Path, listener: int) -> None:
    _, output = await sandboxed(tmp_path, connect_script(listener), isolation=None)
    assert "CONNECTED" in output


@needs_isolation
async def test_tests_can_still_serve_on_their_own_loopback(tmp_path: Path) -> None:
    script = (
        f"{PYTHON} -c \"import socket; s = socket.create_server(('127.0.0.1', 0)); "
        "c = socket.create_connection(s.getsockname(), 2); print('LOOPBACK OK')\""
    )
    outcome, output = await sandboxed(tmp_path, script)
    assert outcome.exit_code == 0 and "LOOPBACK OK" in output, output


async def test_no_secret_reaches_the_test_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-very-secret")
    monkeypatch.setenv("REMEDY_CHECKOUT_TOKEN", "intake-token-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    script = f'{PYTHON} -c "import json, os; print(json.dumps(sorted(os.environ)))"'
    outcome, output = await sandboxed(tmp_path, script)
    assert outcome.exit_code == 0, output
    names = set(json.loads(output.strip().splitlines()[-1]))
    assert names <= {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "LC_CTYPE"}, names
    assert {"PATH", "HOME", "LANG"} <= names
    env_dump, _ = await sandboxed(tmp_path, "env > env.txt")
    dumped = (tmp_path / "env.txt").read_text()
    assert env_dump.exit_code == 0
    for value in ("sk-ant-very-secret", "intake-token-value", "aws-secret-value"):
        assert value not in dumped
    assert f"HOME={tmp_path / 'home'}" in dumped


async def test_cpu_time_is_limited(tmp_path: Path) -> None:
    limits = SandboxLimits(
        wall_s=30, cpu_s=1, memory_bytes=LIMITS.memory_bytes, file_bytes=LIMITS.file_bytes
    )
    outcome, _ = await sandboxed(tmp_path, f'{PYTHON} -c "while True: pass"', limits)
    assert not outcome.timed_out
    assert outcome.signal in {"SIGXCPU", "SIGKILL"}
    assert outcome.duration_s < 10


async def test_memory_is_limited(tmp_path: Path) -> None:
    limits = SandboxLimits(
        wall_s=30, cpu_s=20, memory_bytes=256 * 1024 * 1024, file_bytes=LIMITS.file_bytes
    )
    outcome, output = await sandboxed(
        tmp_path, f'{PYTHON} -c "b = bytearray(512 * 1024 * 1024); print(len(b))"', limits
    )
    assert outcome.exit_code != 0 and "MemoryError" in output


async def test_file_size_is_limited(tmp_path: Path) -> None:
    limits = SandboxLimits(
        wall_s=30, cpu_s=20, memory_bytes=LIMITS.memory_bytes, file_bytes=1024 * 1024
    )
    outcome, _ = await sandboxed(tmp_path, "head -c 4000000 /dev/zero > big.bin", limits)
    assert outcome.signal == "SIGXFSZ"
    assert (tmp_path / "big.bin").stat().st_size <= 1024 * 1024


async def test_wall_clock_kills_the_whole_process_group(tmp_path: Path) -> None:
    limits = SandboxLimits(
        wall_s=1, cpu_s=20, memory_bytes=LIMITS.memory_bytes, file_bytes=LIMITS.file_bytes
    )
    outcome, _ = await sandboxed(tmp_path, "sleep 60 & echo $! > child.pid; sleep 60", limits)
    assert outcome.timed_out and outcome.duration_s < 10
    child = int((tmp_path / "child.pid").read_text())
    status = Path(f"/proc/{child}/status")
    # Gone, or a zombie waiting for init to reap it: either way no longer running.
    state = status.read_text() if status.exists() else ""  # noqa: ASYNC240
    assert state == "" or "State:\tZ" in state


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
    def __init__(self, tmp_path: Path, test_command: str | None) -> None:
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

    def regression(self, path: str = "tests/test_regression_qty.py") -> RegressionTest:
        return RegressionTest(
            path=path,
            content=self.store.put_text(f"{INCIDENT}/regression/test_file.py", REGRESSION),
        )

    async def verify(
        self, patch: PatchResult, test: RegressionTest | None = None
    ) -> VerificationResult:
        acts = SandboxActivities(self.config, self.store)
        request = VerifyRequest(
            incident_id=INCIDENT, worktree=self.worktree, patch=patch, regression_test=test
        )
        result: VerificationResult = await ActivityEnvironment().run(acts.verify_patch, request)
        return result


PYTEST = f"{PYTHON} -m pytest -q -p no:cacheprovider"


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
    assert "reproduced and fixed" in result.summary
    assert result.regression_test == "tests/test_regression_qty.py"
    assert result.network_isolated is (ISOLATION is not None)
    before_log = shop.store.get_text(f"{INCIDENT}/verify/regression-before.log")
    assert "KeyError: 'qty'" in before_log
    assert result.artifact is not None and shop.store.get_json(result.artifact)["command"] == PYTEST
    assert list((tmp_path / "home" / "sandbox").iterdir()) == []  # the scratch copy is gone
    assert git(shop.repo.work, "status", "--porcelain") == ""  # the worktree is untouched


async def test_a_fix_that_breaks_a_test_names_the_new_failure(tmp_path: Path) -> None:
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["price"] * item["qty"]', 'item["price"] + item["qty"]')
    result = await shop.verify(patch)

    assert result.status == "failed"
    assert result.new_failures == ["tests/test_cart.py::test_total"]
    assert result.reproduced is None
    assert "New failures: tests/test_cart.py::test_total" in result.summary


async def test_a_regression_test_that_passes_before_the_fix_reproduces_nothing(
    tmp_path: Path,
) -> None:
    shop = Shop(tmp_path, PYTEST)
    patch = shop.patch('item["qty"]', 'item.get("qty", 1)')
    trivial = RegressionTest(
        path="tests/test_trivial.py",
        content=shop.store.put_text(f"{INCIDENT}/regression/t.py", "def test_ok():\n    pass\n"),
    )
    result = await shop.verify(patch, trivial)
    assert result.status == "passed" and result.reproduced is False
    assert "not reproduced" in result.summary


async def test_without_a_test_command_verification_is_skipped(tmp_path: Path) -> None:
    shop = Shop(tmp_path, None)
    result = await shop.verify(shop.patch('item["qty"]', "1"))
    assert result.status == "skipped" and "no test_command" in result.summary


async def test_a_patch_that_does_not_apply_is_an_error(tmp_path: Path) -> None:
    shop = Shop(tmp_path, f"{PYTHON} -c pass")
    patch = shop.patch('item["qty"]', "1")
    assert patch.diff is not None
    stale = shop.store.get_text(patch.diff).replace("qty", "qtz")
    shop.store.put_text(patch.diff.key, stale)
    result = await shop.verify(patch)
    assert result.status == "error" and "does not apply" in result.summary
    assert [r.label for r in result.runs] == ["before"]
