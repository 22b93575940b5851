"""The whole pipeline, shipper to chat, on the local stack: the README demo on a faster clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack.demo import DemoPlan, headline, run_demo

pytestmark = pytest.mark.e2e
BOB = "node-05 GPU 7 held by bob (container 001547062189, jupyter)"

# analyze every 5 s, batches every 5 s, faults from +15 s to +60 s. `for` is 20 s: longer than the
# simulated job's ~8 s start-up (process present, GPU near 0 %), which a shorter `for` rightly reports.
PLAN = DemoPlan(batch_s=5, fault_start_s=15, fault_end_s=60, time_scale=12, for_s=20, max_s=120)


def what(message: dict[str, Any]) -> tuple[str, str]:
    """(kind, the headline up to the part that depends on timing)."""
    line = headline(message)
    return message["kind"], line.split(" with ")[0].split(" while ")[0]


def test_imbalance_and_idle_held_fire_and_resolve_in_both_formats(tmp_path: Path) -> None:
    messages = run_demo(PLAN, tmp_path / "run", out=open(tmp_path / "demo.out", "w"))  # noqa: SIM115
    got = [what(m) for m in messages]
    expected = {
        ("slack", "🟠 [FIRING] Cross-node imbalance — 2 of 8 nodes in demo at 0 % GPU utilisation"),
        ("jandi", "[FIRING] Cross-node imbalance — 2 of 8 nodes in demo at 0 % GPU utilisation"),
        (
            "slack",
            f"🟠 [FIRING] GPU held but idle — {BOB}",
        ),
        ("jandi", f"[FIRING] GPU held but idle — {BOB}"),
        ("slack", "✅ [RESOLVED] Cross-node imbalance — was: 2 of 8 nodes in demo at 0 % GPU utilisation"),
        ("jandi", "[RESOLVED] Cross-node imbalance — was: 2 of 8 nodes in demo at 0 % GPU utilisation"),
        (
            "slack",
            f"✅ [RESOLVED] GPU held but idle — was: {BOB}",
        ),
        (
            "jandi",
            f"[RESOLVED] GPU held but idle — was: {BOB}",
        ),
    }
    assert len(got) == 8 and set(got) == expected  # each exactly once
    imbalance = [m for m in messages if "Cross-node imbalance" in headline(m)]
    assert all("node-03, node-06" in headline(m) for m in imbalance)
    for kind in ("slack", "jandi"):  # each alert resolved after it fired
        for title in ("Cross-node imbalance", "GPU held but idle"):
            times = {
                ("RESOLVED" in headline(m)): m["received_at"]
                for m in messages
                if m["kind"] == kind and title in headline(m)
            }
            assert times[False] < times[True]
