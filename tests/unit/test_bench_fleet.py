"""bench/bench_fleet.py in its quick mode: it runs, prints its JSON lines, and the warm path reads
only the new chunks while finding what a rebuild finds (the figures themselves are the bench's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fleet_bench_runs_quick_and_warm_ticks_equal_rebuilds() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_fleet.py"), "--quick", "--modes", "full", "incremental"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    ticks = [r for r in lines if r["measure"] == "tick"]
    assert [(r["mode"], r["tick"], r["cold"]) for r in ticks] == [
        ("full", 0, True),
        ("full", 1, True),
        ("full", 2, True),
        ("incremental", 0, True),
        ("incremental", 1, False),
        ("incremental", 2, False),
    ]
    full = {r["tick"]: r for r in ticks if r["mode"] == "full"}
    for r in ticks:
        if r["mode"] == "incremental":
            assert r["conditions"] == full[r["tick"]]["conditions"]
            if not r["cold"]:
                assert r["chunks"] * 4 < full[r["tick"]]["chunks"]  # a minute of a 5-minute window
    summaries = {r["mode"]: r for r in lines if r["measure"] == "summary"}
    assert summaries["incremental"]["same_conditions_as"] == ["full", "incremental"]
    assert summaries["full"]["gpus"] == 80
