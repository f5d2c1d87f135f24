"""verify_patch one run at a time with nothing reused, against the defaults, interleaved.

Both sides run the product's activity on the same small service (tests/test_sandbox.py's
cart) with its pytest suite; each round is a new incident on the same commit with its own fix
and regression test, as in bench/e2e.py. "serial" is `[sandbox] parallel_runs = 1,
reuse_runs = false`; "now" the defaults. Round 0 (the sandbox probe, the first run of the
suite) is not counted. Interleaving makes the ratio fair on a machine that others load.

    .venv/bin/python bench/verify.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import ActivityEnvironment

from activities.sandbox import SandboxActivities
from remedy.config import SandboxConfig
from remedy.models import Edit, RegressionTest, VerifyRequest
from tests.test_sandbox import INCIDENT, PYTEST, Shop

SIDES = {
    "serial": SandboxConfig(parallel_runs=1, reuse_runs=False),
    "now": SandboxConfig(),
}


def request(shop: Shop, round_number: int) -> VerifyRequest:
    fix = f'item.get("qty", 1) + 0 * {round_number}'  # a patched tree of its own each round
    test = shop.store.put_text(
        f"{INCIDENT}/regression/t{round_number}.py",
        f"from app.cart import total\n\n\ndef test_{round_number}():\n"
        "    assert total([{'price': 2}]) == 2\n",
    )
    return VerifyRequest(
        incident_id=f"{INCIDENT}{round_number}",
        worktree=shop.worktree,
        patch=shop.patch('item["qty"]', fix),
        regression_test=RegressionTest(path=f"tests/test_r{round_number}.py", content=test),
        edits=[Edit(path="app/cart.py", search='item["qty"]', replace=fix)],
    )


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="remedy-verify-") as scratch:
        sides = {}
        for name, settings in SIDES.items():
            folder = Path(scratch) / name
            folder.mkdir()
            shop = Shop(folder, PYTEST, settings)
            sides[name] = (shop, SandboxActivities(shop.config, shop.store))
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        ran: dict[str, list[int]] = {name: [] for name in sides}
        env = ActivityEnvironment()
        for number in range(rounds + 1):
            for name, (shop, activities) in sides.items():
                started = time.perf_counter()
                result = await env.run(activities.verify_patch, request(shop, number))
                if result.status != "passed" or not result.reproduced:
                    raise SystemExit(f"{name} round {number}: {result.summary}")
                if number:
                    seconds[name].append(time.perf_counter() - started)
                    started_runs = [r for r in result.runs if not (r.cached_from or r.ran_with)]
                    ran[name].append(len(started_runs))
    for name, values in seconds.items():
        print(
            f"{name:<7} verify_patch p50 {statistics.median(values):.2f} s  "
            f"min {min(values):.2f} s  runs started {statistics.mean(ran[name]):.1f}"
        )
    ratio = statistics.median(seconds["now"]) / statistics.median(seconds["serial"])
    print(f"now / serial {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
