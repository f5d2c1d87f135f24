"""remedy.evidence: the order in which the prompts show code, and the files and functions it
points at, which the localization benchmark scores (pure)."""

from __future__ import annotations

import pytest

from remedy.evidence import (
    MAX_FRAME_WINDOWS,
    MAX_RELATED_WINDOWS,
    is_test_path,
    ranked_chunks,
    ranked_files,
    ranked_windows,
)
from remedy.models import Evidence, FrameEvidence, RelatedCode, SuspectCommit


def frame(path: str, function: str | None, line: int = 10, found: bool = True) -> FrameEvidence:
    return FrameEvidence(path=path, line=line, function=function, found=found)


def related(path: str, symbol: str | None, score: float) -> RelatedCode:
    return RelatedCode(path=path, symbol=symbol, start_line=1, end_line=9, score=score)


def commit(*paths: str) -> SuspectCommit:
    return SuspectCommit(
        sha="a" * 40, author="Bob", date="2026-01-01", subject="x", paths=list(paths)
    )


# Innermost frame first, as investigate lists them.
EVIDENCE = Evidence(
    summary="KeyError: 'sku'",
    frames=[
        frame("app/cart.py", "line_total", 8),
        frame("app/cart.py", "cart_total", 13),
        frame("app/checkout.py", "checkout", 6),
        frame("/usr/lib/python3.11/json/decoder.py", None, found=False),
    ],
    suspect_commits=[commit("app/cart.py", "app/pricing.py")],
    related_code=[
        related("app/coupons.py", "Coupon.apply", 0.41),
        related("app/cart.py", "line_total", 0.9),
        related("app/tax.py", "tax_for", 0.77),
        related("app/coupons.py", None, 0.6),
    ],
)


def test_windows_come_innermost_frame_first_then_related_code_by_score() -> None:
    assert [(w.path, w.symbol, w.note) for w in ranked_windows(EVIDENCE)] == [
        ("app/cart.py", "line_total", "frame line_total, line 8"),
        ("app/cart.py", "cart_total", "frame cart_total, line 13"),
        ("app/checkout.py", "checkout", "frame checkout, line 6"),
        ("app/cart.py", "line_total", "related (score 0.90)"),
        ("app/tax.py", "tax_for", "related (score 0.77)"),
        ("app/coupons.py", None, "related (score 0.60)"),
    ]
    assert ranked_files(EVIDENCE, limit=10) == [
        "app/cart.py",
        "app/checkout.py",
        "app/tax.py",
        "app/coupons.py",
    ]


def test_windows_frame_the_failing_line_and_cap_related_code() -> None:
    evidence = Evidence(
        summary="",
        frames=[
            FrameEvidence(
                path="app/cart.py", line=40, function="total", start_line=35, end_line=60
            ),
            FrameEvidence(path="app/gone.py", line=3, found=False),
            FrameEvidence(path="app/api.py", line=10, function="checkout"),
            FrameEvidence(path="app/big.py", line=500, function="run", start_line=1, end_line=900),
        ],
        related_code=[RelatedCode(path="app/prices.py", start_line=1, end_line=500, score=0.7)],
    )
    assert [(w.path, w.start, w.end) for w in ranked_windows(evidence)] == [
        ("app/cart.py", 35, 60),
        ("app/api.py", 1, 22),
        ("app/big.py", 460, 540),
        ("app/prices.py", 1, 80),
    ]


def test_the_limit_cuts_the_ranking() -> None:
    assert ranked_files(EVIDENCE, limit=2) == ["app/cart.py", "app/checkout.py"]
    assert ranked_chunks(EVIDENCE, limit=1) == ["app/cart.py::line_total"]
    assert ranked_files(Evidence(summary="nothing"), limit=5) == []


def test_the_prompt_shows_the_innermost_frames_and_the_best_related_code_only() -> None:
    evidence = Evidence(
        summary="x",
        frames=[frame(f"app/m{n}.py", f"f{n}") for n in range(MAX_FRAME_WINDOWS + 2)],
        related_code=[
            related(f"lib/r{n}.py", f"r{n}", 0.5 + n / 100) for n in range(MAX_RELATED_WINDOWS + 2)
        ],
    )
    windows = ranked_windows(evidence)
    assert [w.path for w in windows] == [
        *(f"app/m{n}.py" for n in range(MAX_FRAME_WINDOWS)),
        *(f"lib/r{n}.py" for n in reversed(range(2, MAX_RELATED_WINDOWS + 2))),
    ]


def test_suspect_commits_hold_no_window() -> None:
    evidence = Evidence(
        summary="x",
        frames=[frame("app/cart.py", "total")],
        suspect_commits=[commit("app/cart.py", "app/prices.py")],
    )
    assert ranked_files(evidence) == ["app/cart.py"]


def test_test_files_rank_after_the_code_they_exercise() -> None:
    evidence = Evidence(
        summary="AssertionError",
        frames=[
            frame("tests/test_cart.py", "assert_totals", 40),
            frame("tests/test_cart.py", "test_total", 12),
        ],
        related_code=[
            related("tests/test_cart.py", "test_total", 0.95),
            related("app/cart.py", "Cart.total", 0.5),
            related("app/test_helpers.py", "make_cart", 0.4),
        ],
    )
    assert ranked_files(evidence) == ["app/cart.py", "tests/test_cart.py", "app/test_helpers.py"]
    assert ranked_chunks(evidence) == [
        "app/cart.py::Cart.total",
        "tests/test_cart.py::assert_totals",
        "tests/test_cart.py::test_total",
        "app/test_helpers.py::make_cart",
    ]


def test_chunks_are_frame_functions_then_related_symbols_by_score_each_once() -> None:
    assert ranked_chunks(EVIDENCE) == [
        "app/cart.py::line_total",
        "app/cart.py::cart_total",
        "app/checkout.py::checkout",
        "app/tax.py::tax_for",
    ]


def test_module_code_and_synthetic_frames_name_no_function() -> None:
    evidence = Evidence(
        summary="x",
        frames=[
            frame("app/jobs.py", "<lambda>"),
            frame("app/jobs.py", "<listcomp>"),
            frame("app/jobs.py", "run_all"),
            frame("app/main.py", "<module>"),
            frame("app/main.py", None),
        ],
        related_code=[related("app/settings.py", None, 0.9)],
    )
    assert ranked_chunks(evidence) == ["app/jobs.py::run_all"]
    assert ranked_files(evidence) == ["app/jobs.py", "app/main.py", "app/settings.py"]


@pytest.mark.parametrize(
    ("path", "is_test"),
    [
        ("tests/test_cart.py", True),
        ("tornado/test/web_test.py", True),
        ("app/cart_test.go", True),
        ("src/cart.spec.ts", True),
        ("conftest.py", True),
        ("test/helpers/factories.py", True),
        ("app/cart.py", False),
        ("app/testing_tools.py", False),
        ("app/contest.py", False),
        ("latest/app.py", False),
    ],
)
def test_test_paths_follow_the_common_conventions(path: str, is_test: bool) -> None:
    assert is_test_path(path) is is_test
