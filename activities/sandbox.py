"""verify_patch: the service's own tests, in the sandbox, before and after the patch.

The worker keeps a scratch clone of the incident's worktree, with the commit in its index and
no files checked out, which no test ever sees (its .git config could otherwise make the
worker's next git command run anything). Each run gets a fresh export of that index, and only
that export is writable inside the sandbox (`remedy.sandbox`: bubblewrap, its own user and
namespaces, no network, no view of Remedy's home, limits on CPU, memory, file size, processes
and wall clock). So nothing a run leaves behind reaches the next one, and the model's
regression test is only in its own runs.
Output goes to `<incident>/verify/<run>.log` in the artifact store (a repair try's to
`<incident>/attempt-<n>/verify/`).

The sandbox is probed once, at first use. Where it cannot run, verification is `skipped: no
sandbox (<why>)`, unless `[sandbox] allow_unsandboxed` accepts the older, weaker isolation
(a network namespace, a scrubbed environment, rlimits), which the summary then says.

When the model wrote a regression test, it runs on its own before the patch, and after it inside
the suite's run, written into its tree (`split_regression_test` tells the two apart by the
counts and the failing tests' names; where it cannot, the suite and the test each run alone):
failing before and passing after marks the fix as reproduced-and-fixed.

No run is repeated for the same inputs (`remedy.sandbox.cache`): a finished run is kept by a
hash of its tree, command line and environment, so the next incident on the same commit reuses
the suite's "before" run and a retried activity every run it finished. The runs that remain
start together, as many at once as `[sandbox] parallel_runs` and the worker's CPUs allow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shlex
import shutil
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.progress import heartbeat
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.git.diff import edited_tree
from remedy.git.runner import GitError, run_git_async
from remedy.models import (
    ArtifactRef,
    CommandRun,
    SuiteBeforeRequest,
    SuiteBeforeResult,
    VerificationResult,
    VerifyRequest,
    Worktree,
)
from remedy.patching import EditRefused, repo_path
from remedy.sandbox.bwrap import command_prefixes, exposed, python_prefixes, read_only_paths
from remedy.sandbox.cache import RunCache, RunInputs, RunRecord, environment_of
from remedy.sandbox.limits import MB, SandboxLimits
from remedy.sandbox.results import (
    judge,
    output_tail,
    parse_test_output,
    read_tail,
    split_regression_test,
)
from remedy.sandbox.runner import (
    Bubblewrap,
    Confinement,
    Unsandboxed,
    find_bubblewrap,
    network_isolation_prefix,
    probe,
    remove_tree,
    run_confined,
    scrubbed_env,
)

GIT_TIMEOUT_S = 300.0
PROBE_WALL_S = 60.0
MAX_STORED_LOG_BYTES = 4 * 1024 * 1024
PARSED_TAIL_BYTES = 256 * 1024


class _Scratch:
    """Folders for one verification, the worker's alone; removed afterwards."""

    def __init__(self, parent: Path, incident: str) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"{incident}-", dir=parent))
        self.repo = self.root / "repo"
        self.home = self.root / "home"
        self.logs = self.root / "logs"
        self.runs = self.root / "runs"
        for folder in (self.home, self.logs, self.runs):
            folder.mkdir()


@dataclass(frozen=True)
class _Run:
    """A run to start: its label, its command line, its copy and the commit it verifies."""

    label: str
    line: str
    copy: Path
    commit: str


def parallel_slots(configured: int) -> int:
    """How many runs a worker starts at once: the configured number, at most its CPUs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(configured, cpus))


class _NoCopy(Exception):
    """A run's copy could not be made; the message is the verification's summary."""


async def _git(*args: str | Path) -> tuple[int, str]:
    """(exit code, output and errors) of a git command on the scratch clone."""
    result = await run_git_async(args, timeout=GIT_TIMEOUT_S, check=False, on_wait=heartbeat)
    return result.returncode, "\n".join(filter(None, [result.text, result.stderr.strip()]))


async def _scratch_clone(worktree: Worktree, scratch: _Scratch) -> str:
    """Clone the worktree's repository into the scratch folder with the commit in its index
    and nothing checked out; the commit's tree id. Raises _NoCopy saying what failed."""
    code, out = await _git(
        "clone", "--quiet", "--shared", "--no-checkout", worktree.path, scratch.repo
    )
    # Only the index: every run's copy is exported from it, none is checked out here.
    if code == 0:
        code, out = await _git("-C", scratch.repo, "read-tree", worktree.commit)
    if code == 0:
        code, out = await _git("-C", scratch.repo, "write-tree")
    if code != 0:
        raise _NoCopy(f"could not copy the worktree at {worktree.commit[:12]}: {out[-500:]}")
    return out.strip()


async def export_copy(repo: Path, copy: Path) -> str | None:
    """Write the files of `repo`'s index (its commit, with the patch once applied) into a new
    folder `copy`, without .git; None, or git's complaint."""
    code, out = await _git("-C", repo, "checkout-index", "--all", "--force", f"--prefix={copy}/")
    return None if code == 0 else out[-500:]


def _write_inside(root: Path, relative: str, data: bytes) -> None:
    """Write root/relative through no symbolic link: a repository may hold links out of it."""
    *folders, name = relative.split("/")
    folder = root
    for part in folders:
        folder = folder / part
        if folder.is_symlink():
            raise _NoCopy(f"the regression test's path {relative} goes through a symbolic link")
        folder.mkdir(exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    try:
        handle = os.open(folder / name, flags, 0o644)
    except OSError as exc:
        raise _NoCopy(f"the regression test {relative} cannot be written: {exc}") from None
    with open(handle, "wb") as output:
        output.write(data)


class SandboxActivities:
    def __init__(self, config: RemedyConfig, store: ArtifactStore) -> None:
        self._config = config
        self._store = store
        self._probe_lock = asyncio.Lock()
        self._found: tuple[Confinement | None, str | None] | None = None
        self._slots = asyncio.Semaphore(parallel_slots(config.sandbox.parallel_runs))
        # Entries no test can write: Remedy's home is never shown to a run.
        self._cache = RunCache(config.home_dir / "cache" / "verify")
        self._identical: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def confinement(self) -> tuple[Confinement | None, str | None]:
        """How runs are confined here, and why not in bubblewrap (None when they are)."""
        async with self._probe_lock:
            if self._found is None:
                self._found = await self._find_confinement()
            return self._found

    async def _find_confinement(self) -> tuple[Confinement | None, str | None]:
        settings = self._config.sandbox
        path_env = scrubbed_env("/")["PATH"]
        candidates = python_prefixes(sys.executable)
        for service in self._config.services.values():
            candidates += command_prefixes(service.test_command or "", path_env)
        candidates += [str(self._config.resolve(path)) for path in settings.read_only_paths]
        read_only = read_only_paths(candidates)
        private = [str(self._config.home_dir), str(self._config.artifacts_dir)]
        reason: str | None
        if shown := exposed(read_only, private):
            reason = f"a folder the tests would read holds Remedy's state: {shown}"
        else:
            found = find_bubblewrap(read_only, (settings.run_as_uid, settings.run_as_gid))
            if isinstance(found, str):
                reason = found
            else:
                trial = dataclasses.replace(self._limits(), wall_s=PROBE_WALL_S)
                reason = await probe(found, trial)
                if reason is None:
                    return found, None
        if not settings.allow_unsandboxed:
            return None, reason
        network = await asyncio.to_thread(network_isolation_prefix)
        return Unsandboxed(network=tuple(network) if network else None), reason

    def _limits(self) -> SandboxLimits:
        limits, settings = self._config.limits, self._config.sandbox
        return SandboxLimits(
            wall_s=float(limits.test_timeout_s),
            cpu_s=limits.test_cpu_s,
            memory_bytes=limits.test_memory_mb * MB,
            file_bytes=limits.test_max_file_mb * MB,
            processes=settings.max_processes,
            tmpfs_bytes=settings.tmpfs_mb * MB,
        )

    @activity.defn(name=names.ACTIVITY_RUN_SUITE_BEFORE)
    async def run_suite_before(self, request: SuiteBeforeRequest) -> SuiteBeforeResult:
        """The service's suite at the incident's commit, started while the incident is still
        investigated and diagnosed: verify_patch then finds this "before" run finished, or
        waits for it on this worker, instead of starting it (remedy.sandbox.cache). Never
        fails the incident: anything in the way is a skip."""
        try:
            incident = names.safe_id(request.incident_id, "incident id")
        except ValueError as exc:
            raise ApplicationError(str(exc), type="BadRequest", non_retryable=True) from None
        service = self._config.services.get(request.worktree.service)
        if service is None or not service.test_command:
            return SuiteBeforeResult(status="skipped", detail="no test_command")
        if self._config.llm_mode(request.worktree.service) == "none":
            return SuiteBeforeResult(status="skipped", detail="no diagnosis, so no verification")
        confinement, reason = await self.confinement()
        if not isinstance(confinement, Bubblewrap) or not self._config.sandbox.reuse_runs:
            # Only sandboxed runs are kept (remedy.sandbox.cache): this one would be wasted.
            return SuiteBeforeResult(
                status="skipped", detail=reason or "[sandbox] reuse_runs is off"
            )
        scratch = _Scratch(self._config.home_dir / "sandbox", f"{incident}-before")
        try:
            tree = await _scratch_clone(request.worktree, scratch)
            environment = environment_of(confinement, self._limits())
            launched = await self._launch(
                "before",
                RunInputs(tree, service.test_command, environment),
                scratch,
                confinement,
                commit=request.worktree.commit,
                reuse=True,
            )
            record, ran_now = launched if isinstance(launched, tuple) else await launched
        except _NoCopy as exc:
            return SuiteBeforeResult(status="skipped", detail=str(exc))
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch.root, True)
        return SuiteBeforeResult(
            status="ran" if ran_now else "reused",
            detail=f"exit {record.exit_code} in {record.duration_s:.1f} s",
        )

    @activity.defn(name=names.ACTIVITY_VERIFY_PATCH)
    async def verify_patch(self, request: VerifyRequest) -> VerificationResult:
        try:
            incident = names.safe_id(request.incident_id, "incident id")
        except ValueError as exc:
            raise ApplicationError(str(exc), type="BadRequest", non_retryable=True) from None
        service = self._config.services.get(request.worktree.service)
        command = service.test_command if service else None
        if not command:
            return VerificationResult(
                status="skipped",
                summary=f"service {request.worktree.service} has no test_command in remedy.toml",
            )
        if not request.patch.applied or request.patch.diff is None:
            return VerificationResult(status="error", summary="there is no applied patch to verify")
        confinement, reason = await self.confinement()
        if confinement is None:
            result = VerificationResult(status="skipped", summary=f"skipped: no sandbox ({reason})")
        else:
            scratch = _Scratch(self._config.home_dir / "sandbox", incident)
            try:
                result = await self._verify(
                    request, command, request.patch.diff, scratch, confinement
                )
            finally:
                await asyncio.to_thread(shutil.rmtree, scratch.root, True)
            result.network_isolated = isinstance(confinement, Bubblewrap) or bool(
                confinement.network
            )
            if isinstance(confinement, Unsandboxed):
                result.summary = (
                    f"Ran WITHOUT the sandbox ([sandbox] allow_unsandboxed = true; {reason}): "
                    f"the tests ran as the worker's user and could read its files. "
                    f"{result.summary}"
                )
                if not confinement.network:
                    result.summary += (
                        "\nNetwork isolation was unavailable on this worker (no usable "
                        "`unshare`): the tests could reach the network."
                    )
        sandbox = (
            "none"
            if confinement is None
            else "bubblewrap"
            if isinstance(confinement, Bubblewrap)
            else "unsandboxed"
        )
        result.artifact = self._store.put_json(
            f"{names.attempt_folder(incident, request.attempt)}/verify/report.json",
            {
                "command": command,
                "sandbox": sandbox,
                "no_sandbox_reason": reason,
                **result.model_dump(mode="json", exclude={"artifact"}),
            },
        )
        return result

    async def _apply(
        self, request: VerifyRequest, diff: ArtifactRef, repo: Path
    ) -> tuple[int, str]:
        """Put the patched tree in the index. The edits are applied, not the stored diff: that
        one is redacted for people, and a credential on a context line would keep it from
        applying. Requests from before `edits` existed carry only the diff."""
        if not request.edits:
            patch_file = self._store.path_of(diff)
            return await _git("-C", repo, "apply", "--cached", "--whitespace=nowarn", patch_file)
        try:
            tree = await asyncio.to_thread(
                edited_tree, repo, request.worktree.commit, request.edits
            )
        except (EditRefused, GitError) as exc:
            return 1, str(exc)
        return await _git("-C", repo, "read-tree", tree)

    async def _verify(
        self,
        request: VerifyRequest,
        command: str,
        diff: ArtifactRef,
        scratch: _Scratch,
        confinement: Confinement,
    ) -> VerificationResult:
        """Plan the runs (the suite before and after the patch, the regression test before
        it), reuse the finished ones, start the rest at once (bounded by `self._slots`), each
        in a copy exported before the scratch clone moves on."""
        worktree = request.worktree
        short = worktree.commit[:12]
        try:
            base_tree = await _scratch_clone(worktree, scratch)
        except _NoCopy as exc:
            return VerificationResult(status="error", summary=str(exc))
        test = request.regression_test
        test_path = repo_path(test.path) if test else None
        test_text = self._store.get_bytes(test.content) if test else b""
        written = (test_path, hashlib.sha256(test_text).hexdigest()) if test_path else None
        environment = environment_of(confinement, self._limits())
        # Unsandboxed tests run as the worker and could write the cache: never reuse theirs.
        reuse = isinstance(confinement, Bubblewrap) and self._config.sandbox.reuse_runs
        finished: dict[str, tuple[RunRecord, bool]] = {}
        running: dict[str, asyncio.Task[tuple[RunRecord, bool]]] = {}

        async def start(label: str, tree: str, *, test_in_tree: bool, only_test: bool) -> None:
            """Launch a run of the tree; with the regression test written in, and with the
            command line naming it, so that only it runs."""
            line = f"{command} {shlex.quote(test_path)}" if only_test and test_path else command
            inputs = RunInputs(tree, line, environment, written if test_in_tree else None)
            launched = await self._launch(
                label,
                inputs,
                scratch,
                confinement,
                commit=worktree.commit,
                reuse=reuse,
                test=(test_path, test_text) if test_in_tree and test_path else None,
            )
            if isinstance(launched, asyncio.Task):
                running[label] = launched
            else:
                finished[label] = launched

        async def settle() -> None:
            for label in list(running):
                finished[label] = await running.pop(label)

        split: tuple[CommandRun, CommandRun] | None = None
        try:
            await start("before", base_tree, test_in_tree=False, only_test=False)
            if test_path:
                await start("regression-before", base_tree, test_in_tree=True, only_test=True)
            code, out = await self._apply(request, diff, scratch.repo)
            if code == 0:
                code, out = await _git("-C", scratch.repo, "write-tree")
            if code != 0:
                return VerificationResult(
                    status="error",
                    summary=f"the patch does not apply at {short}: {out[-500:]}",
                    regression_test=test_path,
                )
            patched = out.strip()
            # The suite after the patch runs with the regression test in its tree: one run
            # where there were two, told apart afterwards; where they cannot be, each runs alone.
            after = "after-with-test" if test_path else "after"
            await start(after, patched, test_in_tree=bool(test_path), only_test=False)
            await settle()
            if test_path:
                combined = finished.pop(after)
                split = split_regression_test(
                    _run_of("after", *combined),
                    _run_of("before", *finished["before"]),
                    _run_of("regression-before", *finished["regression-before"]),
                    test_path,
                )
                if split is not None:
                    finished["after"] = combined
                else:
                    await start("after", patched, test_in_tree=False, only_test=False)
                    await start("regression-after", patched, test_in_tree=True, only_test=True)
                    await settle()
        except _NoCopy as exc:
            return VerificationResult(status="error", summary=str(exc), regression_test=test_path)
        finally:
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
        folder = names.attempt_folder(request.incident_id, request.attempt)
        order = ["before", "regression-before", "after", "regression-after"]
        runs = {
            label: self._report(folder, label, *finished[label])
            for label in order
            if label in finished
        }
        if split is not None:
            log = runs["after"].log
            runs["after"], runs["regression-after"] = (
                run.model_copy(update={"log": log}) for run in split
            )
        reproduced: bool | None = None
        if test_path:
            test_before, test_after = runs["regression-before"], runs["regression-after"]
            failed_before = test_before.exit_code != 0 and not test_before.timed_out
            passed_after = test_after.exit_code == 0 and not test_after.timed_out
            reproduced = failed_before and passed_after
        result = judge(
            command, runs["before"], runs["after"], list(runs.values()), test_path, reproduced
        )
        if result.status == "failed":
            # What the next try at a fix is shown (remedy/llm/repair.py), and people too.
            result.output_tail = output_tail(finished["after"][0].log)
        return result

    async def _launch(
        self,
        label: str,
        inputs: RunInputs,
        scratch: _Scratch,
        confinement: Confinement,
        *,
        commit: str,
        reuse: bool,
        test: tuple[str, bytes] | None = None,
    ) -> tuple[RunRecord, bool] | asyncio.Task[tuple[RunRecord, bool]]:
        """A finished run with the same inputs, reused; or the task now running this one in
        its own copy of the scratch clone's index (with `test`, (path, text), written in)."""
        key = inputs.key() if reuse else None
        if key and (hit := self._cache.get(key)) is not None:
            return hit, False
        copy = scratch.runs / label
        if problem := await export_copy(scratch.repo, copy):
            raise _NoCopy(f"could not copy the worktree at {commit[:12]}: {problem}")
        if test is not None:
            _write_inside(copy, *test)
        run = _Run(label, inputs.command, copy, commit)
        return asyncio.create_task(self._run_once(run, key, scratch, confinement))

    async def _run_once(
        self, run: _Run, key: str | None, scratch: _Scratch, confinement: Confinement
    ) -> tuple[RunRecord, bool]:
        """The run's record and whether it ran now: an identical run another verification on
        this worker finished while this one waited for it is reused, never repeated."""
        try:
            if key is None:
                return await self._run_now(run, scratch, confinement), True
            lock = self._identical.setdefault(key, asyncio.Lock())
            async with lock:
                if (hit := self._cache.get(key)) is not None:
                    return hit, False
                record = await self._run_now(run, scratch, confinement)
                await asyncio.to_thread(self._cache.put, key, record)
                return record, True
        finally:
            await asyncio.to_thread(remove_tree, run.copy)

    async def _run_now(self, run: _Run, scratch: _Scratch, confinement: Confinement) -> RunRecord:
        log, home = scratch.logs / f"{run.label}.log", scratch.home / run.label
        home.mkdir()
        async with self._slots:
            outcome = await run_confined(
                run.line,
                copy=run.copy,
                home=home,
                log=log,
                limits=self._limits(),
                confinement=confinement,
                on_wait=heartbeat,
            )
        text = read_tail(log, PARSED_TAIL_BYTES).decode("utf-8", errors="replace")
        counts = parse_test_output(text)
        return RunRecord(
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            signal=outcome.signal,
            duration_s=outcome.duration_s,
            passed=counts.passed,
            failed=counts.failed,
            failures=counts.failures,
            log=read_tail(log, MAX_STORED_LOG_BYTES),
            commit=run.commit,
        )

    def _report(self, folder: str, label: str, record: RunRecord, ran_now: bool) -> CommandRun:
        """The run as the incident keeps it, its log among the incident's (or this try's)
        artifacts."""
        ref = self._store.put_bytes(f"{folder}/verify/{label}.log", record.log)
        return _run_of(label, record, ran_now).model_copy(update={"log": ref})


# What a kept record and a reported run have in common (the record adds its log and commit).
_RECORDED = ("exit_code", "timed_out", "signal", "duration_s", "passed", "failed", "failures")


def _run_of(label: str, record: RunRecord, ran_now: bool) -> CommandRun:
    """A finished run as a verification reports it, without its log."""
    recorded = {name: getattr(record, name) for name in _RECORDED}
    return CommandRun(label=label, cached_from=None if ran_now else record.commit, **recorded)
