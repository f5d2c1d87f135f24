"""Diagnosis with a real model: the real IncidentWorkflow on real bugs, a local model via Ollama.

Each case of ../shared/bench/realbugs beside the repository becomes a one-commit repository
(bench/localize.py's `project_repository`) and its error an incident the way the intake makes
one (`build_incident_start`). The incident runs in the real IncidentWorkflow on a Temporal
dev server (the binary tests/conftest.py uses), with the worker the product runs
(`worker.build_worker`: every real activity), the local forge, no Slack, no GitHub and no
verification command (the projects' own test environments are not installed here, so
verification is `skipped`); `[llm] request_timeout_s` is raised for one CPU thread
(`--request-timeout-s`), everything else is the product's default configuration. The model
is Qwen2.5-Coder-1.5B-Instruct Q4_K_M (bench/llm_model.py) in llama.cpp behind
bench/ollama_llama.py, which the product's `ollama` client reaches as `[llm] mode = "local"`.
A case stops when the incident reaches `awaiting_approval` or an end phase, or when its time
budget is spent; the run is then terminated.

One deviation, said here: a never-indexed repository's first incident starts IndexWorkflow
to fill in the rest of the index after the focus index. On these 2 cores a full index takes
many minutes (925 s for tornado alone) and would take the CPU from the model, so the bench
parks that child: before the incident it starts a workflow with the child's id on a queue
nobody polls, and the incident finds it "already running", as a second incident on the
same commit does. The evidence therefore comes from the focus index, what a service's
first incident gets.

Scored per case, and only after the run (the answer key `fix_*` is never passed into the
pipeline): a fix file named (the diagnosis' evidence and edit paths meet `fix_files`); a fix
function edited (an edit's lines overlap a fix hunk or a fix function of the buggy tree);
the patch applied; the scope respected (`remedy.policy.scope_violations`); abstained (no
diagnosis or no edits); the phase reached; fix attempts recorded; model turns (chats the
server answered); tool calls (the product's record, JSON actions included; in parentheses
the native `<tool_call>` blocks the server parsed); tokens (prompt tokens reused from the
cache vs evaluated, and generated); wall time. The baseline is the
evidence alone, without a model, scored as bench/localize.py scores it: a fix file in the
first 5 files of the prompt's evidence order, a fix function in the first 10 functions,
with everything and with the stack frames only.

Cases: `--cases ID,ID`, or by default 12 exception cases chosen by a fixed rule: in
bench/localize.py's order (project, then id), the first exception case of each project,
then the second of each, and so on until 12. Results are appended to `--results` (JSON
lines) as each case ends; a rerun skips the cases already there (except those cut by the
time budget, which run again), and the table shows the latest result of each chosen case.

    nice .venv/bin/python bench/diagnose.py [--cases ID,ID] [--budget-s 600] [--total-budget-s S]
        [--results bench/out/diagnose/results.jsonl] [--model PATH]

Needs the `bench-llm` extra (llama-cpp-python) and the model file; the product never does.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from bench.llm_model import DEFAULT_CACHE, ensure_model
from bench.localize import (
    FILE_TOP,
    FUNCTION_TOP,
    REALBUGS,
    config_for,
    git,
    incident_event,
    load_cases,
    project_repository,
    rank_of,
    same_function,
    service_name,
)
from bench.ollama_llama import OLLAMA_DEFAULT_NUM_CTX, SERVED_MODEL, LlamaModel, OllamaLlama
from remedy import names, policy
from remedy.config import LLMConfig, RemedyConfig
from remedy.evidence import ranked_chunks, ranked_files
from remedy.intake import build_incident_start
from remedy.models import Edit, Evidence, IncidentStatus, Phase
from remedy.temporal import data_converter
from worker import build_worker
from workflows.incident import IncidentWorkflow

log = logging.getLogger("bench.diagnose")

DEFAULT_CASES = 12
TASK_QUEUE = "bench-diagnose"
PARKED_QUEUE = "bench-diagnose-parked"  # polled by nobody
STOP_PHASES = {
    Phase.AWAITING_APPROVAL,
    Phase.PR_OPENED,
    Phase.TRIAGED,
    Phase.NOTIFIED,
    Phase.REJECTED,
    Phase.EXPIRED,
    Phase.RATE_LIMITED,
    Phase.FAILED,
}
POLL_S = 2.0
MIN_CASE_S = 180.0  # no case starts with less of the total budget left: it could not finish
TEMPORAL = Path(sys.executable).parent / "temporal"
BENCH = Path(__file__).resolve().parent


def default_cases(cases: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The first exception case of each project, then the second of each, ... (`cases` in
    bench/localize.py's order), until `count`."""
    by_project: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        if case["kind"] == "exception":
            by_project.setdefault(case["project"], []).append(case)
    chosen: list[dict[str, Any]] = []
    depth = 0
    while len(chosen) < count and any(len(group) > depth for group in by_project.values()):
        chosen += [group[depth] for group in by_project.values() if len(group) > depth]
        depth += 1
    return chosen[:count]


# ---------------------------------------------------------------------------- scoring


def edit_lines(repo: Path, edit: Edit) -> tuple[int, int] | None:
    """The lines of the buggy file an edit's `search` text covers (None: not found)."""
    path = repo / edit.path
    if not path.is_file():
        return None
    text = path.read_text(errors="replace")
    at = text.find(edit.search)
    if at < 0:
        return None
    first = text.count("\n", 0, at) + 1
    return first, first + edit.search.rstrip("\n").count("\n")


def qualified_spans(source: str) -> dict[str, tuple[int, int]]:
    """Each class and function of a Python source by its qualified name (`Cls.method`, as the
    answer key's fix_functions name them), with its lines (decorators included)."""
    spans: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                spans[name] = (first, child.end_lineno or child.lineno)
                visit(child, f"{name}.")

    try:
        visit(ast.parse(source), "")
    except SyntaxError:
        return {}
    return spans


def fix_spans(repo: Path, case: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
    """Per fix file, the buggy tree's line spans the real fix touched: its hunks and its fix
    functions."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for hunk in case["fix_hunks"]:
        last = hunk["old_start"] + max(hunk["old_lines"], 1) - 1
        spans.setdefault(hunk["file"], []).append((hunk["old_start"], last))
    for fix in case["fix_functions"]:
        path, _, qualified = fix.partition("::")
        source = repo / path
        if source.is_file() and path.endswith(".py"):
            span = qualified_spans(source.read_text(errors="replace")).get(qualified)
            if span:
                spans.setdefault(path, []).append(span)
    return spans


def score(
    case: dict[str, Any], repo: Path, status: IncidentStatus, start_policy: Any
) -> dict[str, Any]:
    """The case's figures. The answer key is read here, after the run, and nowhere else."""
    fix_files = set(case["fix_files"])
    result = status.diagnosis
    diagnosis = result.diagnosis if result else None
    edits = diagnosis.edits if diagnosis else []
    cited = {line.path for line in diagnosis.evidence} if diagnosis else set()
    named = sorted((cited | {edit.path for edit in edits}) & fix_files)
    spans = fix_spans(repo, case)
    function_edited = False
    for edit in edits:
        lines = edit_lines(repo, edit)
        if lines and any(a <= lines[1] and lines[0] <= b for a, b in spans.get(edit.path, [])):
            function_edited = True
    violations = (
        policy.scope_violations(edits, start_policy, status.service, built_in_rules=True)
        if edits
        else []
    )
    evidence = status.evidence or Evidence(summary="")
    frames_only = Evidence(summary=evidence.summary, frames=evidence.frames)
    return {
        "fix_file_named": bool(named),
        "named_fix_files": named,
        "fix_function_edited": function_edited,
        "patch_applied": bool(status.patch and status.patch.applied),
        "scope_respected": not violations,
        "abstained": diagnosis is None or not edits,
        "evidence_file_rank": rank_of(
            ranked_files(evidence, FILE_TOP), case["fix_files"], str.__eq__
        ),
        "evidence_function_rank": rank_of(
            ranked_chunks(evidence, FUNCTION_TOP), case["fix_functions"], same_function
        ),
        "frames_file_rank": rank_of(
            ranked_files(frames_only, FILE_TOP), case["fix_files"], str.__eq__
        ),
        "frames_function_rank": rank_of(
            ranked_chunks(frames_only, FUNCTION_TOP), case["fix_functions"], same_function
        ),
    }


# ---------------------------------------------------------------------------- one case


def bench_config(
    work: Path, services: dict[str, Path], llm_url: str, request_timeout_s: float
) -> RemedyConfig:
    config = config_for(work, services)
    config.llm = LLMConfig(
        mode="local",
        ollama_host=llm_url,
        ollama_model=SERVED_MODEL,
        fallback=False,
        request_timeout_s=request_timeout_s,
    )
    for service in config.services.values():
        service.llm = "local"
    config.temporal.task_queue = TASK_QUEUE
    return config


async def park_full_index(client: Client, service: str, commit: str) -> WorkflowHandle[Any, Any]:
    """Hold the id of the IndexWorkflow the incident would start (workflows/incident.py
    `_complete_index`), on a queue nobody polls."""
    return await client.start_workflow(
        "IndexWorkflow", id=f"index-{service}-{commit[:12]}", task_queue=PARKED_QUEUE
    )


async def run_case(
    case: dict[str, Any],
    *,
    client: Client,
    config: RemedyConfig,
    repo: Path,
    commit: str,
    server: OllamaLlama,
    budget_s: float,
) -> dict[str, Any]:
    service = service_name(case["project"])
    parked = await park_full_index(client, service, commit)
    start = build_incident_start(incident_event(case, commit), config)
    first_request = len(server.requests)
    started = time.perf_counter()
    handle = await client.start_workflow(
        IncidentWorkflow.run,
        start,
        id=names.workflow_id_for(start.service, start.fingerprint),
        task_queue=TASK_QUEUE,
    )
    status = await handle.query(IncidentWorkflow.status)
    out_of_time = False
    while status.phase not in STOP_PHASES:
        if time.perf_counter() - started > budget_s:
            out_of_time = True
            break
        await asyncio.sleep(POLL_S)
        status = await handle.query(IncidentWorkflow.status)
    wall_s = time.perf_counter() - started
    if status.phase == Phase.AWAITING_APPROVAL or out_of_time:
        await handle.terminate("bench/diagnose.py: case done")
    await parked.terminate("bench/diagnose.py: case done")
    chats = server.requests[first_request:]
    marks = {change.phase: change.at.timestamp() for change in status.history}
    received = status.history[0].at.timestamp() if status.history else 0.0
    result = status.diagnosis
    diagnosis = result.diagnosis if result else None
    usage = result.usage if result else []
    return {
        "case": case["id"],
        "project": case["project"],
        "phase": status.phase.value,
        "reason": status.reason,
        "out_of_time": out_of_time,
        **score(case, repo, status, start.policy),
        "fix_attempts": len(status.fix_attempts),
        "attempt": status.assurance.attempt if status.assurance else None,
        "assurance": status.assurance.level if status.assurance else None,
        "verification": status.verification.status if status.verification else None,
        "model_confidence": diagnosis.confidence if diagnosis else None,
        "abstained_reason": result.abstained_reason if result else None,
        "edit_paths": [edit.path for edit in diagnosis.edits] if diagnosis else [],
        "evidence_paths": [f"{e.path}:{e.line}" for e in diagnosis.evidence] if diagnosis else [],
        "summary": diagnosis.summary[:300] if diagnosis else None,
        "turns": len(chats),
        "diagnose_calls": sum(u.calls for u in usage),
        "tool_calls": sum(c.tool_calls for c in chats),
        "recorded_tool_calls": [c.name for c in result.tool_calls] if result else [],
        "tokens": status.llm_tokens,
        "prompt_tokens": sum(c.prompt_tokens for c in chats),
        "reused_tokens": sum(c.reused_tokens for c in chats),
        "evaluated_tokens": sum(c.evaluated_tokens for c in chats),
        "output_tokens": sum(c.output_tokens for c in chats),
        "model_s": sum(c.prompt_s + c.generate_s for c in chats),
        "chats": [asdict(c) for c in chats],
        "to_diagnosing_s": marks.get(Phase.DIAGNOSING, received) - received,
        "wall_s": wall_s,
    }


# ---------------------------------------------------------------------------- the run


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The latest result of each case in the file (a rerun appends a case cut by its budget)."""
    if not path.is_file():
        return {}
    latest: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            result = json.loads(line)
            latest[result["case"]] = result
    return latest


def _yes(value: bool) -> str:
    return "yes" if value else "-"


def _rank(rank: int | None) -> str:
    return f"#{rank}" if rank else "-"


COLUMNS = (
    "| case | phase | fix file named | fix function edited | patch applied | scope ok "
    "| abstained | attempts | turns | tool calls (native) | tokens (reused / evaluated / out) "
    "| wall s | evidence file@5 / func@10 | frames file@5 / func@10 |"
)


def table(results: Sequence[dict[str, Any]]) -> list[str]:
    rows = [COLUMNS, "|" + " --- |" * COLUMNS.count(" | ") + " --- |"]
    for r in results:
        rows.append(
            f"| {r['case']} | {r['phase']}{' (budget)' if r['out_of_time'] else ''} "
            f"| {_yes(r['fix_file_named'])} | {_yes(r['fix_function_edited'])} "
            f"| {_yes(r['patch_applied'])} | {_yes(r['scope_respected'])} "
            f"| {_yes(r['abstained'])} | {r['fix_attempts'] + (1 if r['attempt'] else 0)} "
            f"| {r['turns']} | {len(r['recorded_tool_calls'])} ({r['tool_calls']}) "
            f"| {r['prompt_tokens']:,} ({r['reused_tokens']:,} / {r['evaluated_tokens']:,} / "
            f"{r['output_tokens']:,}) | {r['wall_s']:.0f} "
            f"| {_rank(r['evidence_file_rank'])} / {_rank(r['evidence_function_rank'])} "
            f"| {_rank(r['frames_file_rank'])} / {_rank(r['frames_function_rank'])} |"
        )
    n = len(results)
    if not n:
        return rows

    def count(key: str) -> str:
        return f"{sum(1 for r in results if r[key])}/{n}"

    def ranked(key: str) -> str:
        return f"{sum(1 for r in results if r[key] is not None)}/{n}"

    phases: dict[str, int] = {}
    for r in results:
        phases[r["phase"]] = phases.get(r["phase"], 0) + 1
    rows.append(
        f"| **all {n}** | {', '.join(f'{p} {c}' for p, c in sorted(phases.items()))} "
        f"| {count('fix_file_named')} | {count('fix_function_edited')} "
        f"| {count('patch_applied')} | {count('scope_respected')} | {count('abstained')} "
        f"| {sum(r['fix_attempts'] + (1 if r['attempt'] else 0) for r in results)} "
        f"| {sum(r['turns'] for r in results)} "
        f"| {sum(len(r['recorded_tool_calls']) for r in results)} "
        f"({sum(r['tool_calls'] for r in results)}) "
        f"| {sum(r['prompt_tokens'] for r in results):,} "
        f"({sum(r['reused_tokens'] for r in results):,} / "
        f"{sum(r['evaluated_tokens'] for r in results):,} / "
        f"{sum(r['output_tokens'] for r in results):,}) "
        f"| {sum(r['wall_s'] for r in results):.0f} "
        f"| {ranked('evidence_file_rank')} / {ranked('evidence_function_rank')} "
        f"| {ranked('frames_file_rank')} / {ranked('frames_function_rank')} |"
    )
    return rows


async def run(arguments: argparse.Namespace) -> None:
    everything = load_cases(arguments.data, None, [])
    if arguments.cases:
        only = [c for c in arguments.cases.split(",") if c]
        cases = load_cases(arguments.data, None, only)
    else:
        cases = default_cases(everything, DEFAULT_CASES)
    # A case cut by the time budget runs again; every other result stands.
    done = {case for case, r in read_results(arguments.results).items() if not r["out_of_time"]}
    todo = [c for c in cases if c["id"] not in done]
    print(f"cases: {', '.join(c['id'] for c in cases)} ({len(todo)} to run)", flush=True)
    if todo and not arguments.report:
        for secret in ("ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "GITHUB_TOKEN"):
            os.environ.pop(secret, None)  # no case may reach a cloud model, Slack or GitHub
        arguments.results.parent.mkdir(parents=True, exist_ok=True)
        model = arguments.model or ensure_model(arguments.model_dir)
        with OllamaLlama(LlamaModel(model, default_num_ctx=arguments.default_num_ctx)) as server:
            await run_cases(todo, arguments, server)
    results = read_results(arguments.results)
    print("\n".join(table([results[c["id"]] for c in cases if c["id"] in results])))


async def run_cases(
    todo: list[dict[str, Any]], arguments: argparse.Namespace, server: OllamaLlama
) -> None:
    work: Path = arguments.work
    bench_commit = git(BENCH, "rev-parse", "HEAD")
    services = {service_name(c["project"]): work / "projects" / service_name(c["project"])
                for c in todo}  # fmt: skip
    config = bench_config(work, services, server.url, arguments.request_timeout_s)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL),
        search_attributes=names.SEARCH_ATTRIBUTES,
        data_converter=data_converter(),
        dev_server_log_level="error",
    )
    started = time.perf_counter()
    try:
        async with build_worker(env.client, config):
            for case in todo:
                left = arguments.total_budget_s - (time.perf_counter() - started)
                if left < MIN_CASE_S:
                    print(f"total budget spent: {case['id']} and later not run", flush=True)
                    break
                repo, commit = await asyncio.to_thread(
                    project_repository, case, arguments.data, work
                )
                result = await run_case(
                    case,
                    client=env.client,
                    config=config,
                    repo=repo,
                    commit=commit,
                    server=server,
                    budget_s=min(arguments.budget_s, left),
                )
                result["bench_commit"] = bench_commit
                with arguments.results.open("a") as out:
                    out.write(json.dumps(result) + "\n")
                print(
                    f"{result['case']}: {result['phase']}{' (budget)' * result['out_of_time']}, "
                    f"file named {_yes(result['fix_file_named'])}, function edited "
                    f"{_yes(result['fix_function_edited'])}, applied "
                    f"{_yes(result['patch_applied'])}, {result['turns']} turns, "
                    f"{len(result['recorded_tool_calls'])} tool calls "
                    f"({result['tool_calls']} native), {result['wall_s']:.0f} s "
                    f"({result['model_s']:.0f} s in the model)",
                    flush=True,
                )
    finally:
        await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="", help="comma-separated case ids")
    parser.add_argument("--budget-s", type=float, default=600.0, help="per case")
    parser.add_argument("--total-budget-s", type=float, default=float("inf"), help="all cases")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(__file__).resolve().parent / "out" / "diagnose" / "results.jsonl",
        help="JSON lines, one per finished case; cases already there are skipped",
    )
    parser.add_argument(
        "--report", action="store_true", help="only print the table of the results file"
    )
    parser.add_argument("--model", type=Path, help="the GGUF file (default: bench/llm_model.py's)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_CACHE, help="the model cache")
    parser.add_argument(
        "--default-num-ctx",
        type=int,
        default=OLLAMA_DEFAULT_NUM_CTX,
        help="the context of a request that sets no num_ctx (Ollama's default)",
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=1200.0,
        help="[llm] request_timeout_s: one thread evaluates a first prompt of the default "
        "context budget (about 6,500 tokens) in 4-6 minutes here, past the 300 s default",
    )
    parser.add_argument(
        "--data", type=Path, default=REALBUGS, help=f"the realbugs folder (default {REALBUGS})"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(__file__).resolve().parent / "out" / "diagnose",
        help="scratch repositories, the index store, Remedy's home",
    )
    arguments = parser.parse_args()
    if arguments.model and not arguments.model.is_file():
        raise SystemExit(f"--model: no file {arguments.model}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "aiohttp.access", "temporalio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(run(arguments))


if __name__ == "__main__":
    main()
