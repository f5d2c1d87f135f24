"""Which model answers an incident: the route from `llm` mode, severity and the stack's size.

`auto` asks the local model first and escalates to Claude when its answer is rejected or
unsure; severe or sprawling incidents go to Claude first. Explicit modes fall back to the
other backend only while theirs is down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from remedy.config import LLMConfig
from remedy.llm.conversation import CLAUDE, OLLAMA, BackendName
from remedy.models import Evidence
from remedy.service_policy import Severity

Mode = Literal["local", "claude", "auto", "none"]


def in_app_files(evidence: Evidence) -> int:
    """How many distinct repository files the located stack runs through."""
    return len({frame.path for frame in evidence.frames if frame.found})


@dataclass(frozen=True)
class RoutePlan:
    """Backends in the order they are asked.

    The next one is asked when the current one is unavailable (fallback) and, when `escalate`,
    also when its answer was rejected or not confident enough.
    """

    backends: tuple[BackendName, ...]
    escalate: bool
    reason: str


def plan_route(mode: Mode, *, severity: Severity, in_app_files: int, llm: LLMConfig) -> RoutePlan:
    if mode == "none":
        return RoutePlan((), False, "LLM diagnosis is off (llm = none)")
    if mode == "local":
        if llm.fallback:
            return RoutePlan(
                (OLLAMA, CLAUDE), False, "llm = local (Claude only while Ollama is down)"
            )
        return RoutePlan((OLLAMA,), False, "llm = local, no fallback")
    if mode == "claude":
        if llm.fallback:
            return RoutePlan(
                (CLAUDE, OLLAMA), False, "llm = claude (Ollama only while Claude is down)"
            )
        return RoutePlan((CLAUDE,), False, "llm = claude, no fallback")
    if severity in llm.claude_first_severities:
        return RoutePlan(
            (CLAUDE, OLLAMA), False, f"llm = auto: {severity.value} severity, Claude first"
        )
    if in_app_files >= llm.claude_first_min_files:
        return RoutePlan(
            (CLAUDE, OLLAMA),
            False,
            f"llm = auto: the stack spans {in_app_files} files of the service, Claude first",
        )
    return RoutePlan(
        (OLLAMA, CLAUDE),
        True,
        "llm = auto: local first, Claude when the local answer is rejected or unsure",
    )
