"""The whole pipeline, shipper to chat, on the local stack: the README demo on a faster clock."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from devstack.demo import DemoPlan, headline, run_demo

pytestmark = pytest.mark.e2e
BOB = "node-05 GPU 7 held by bob (container 001547062189, jupyter)"
IDLE_NODES = "2 of 8 nodes in demo at a low % GPU utilisation"

# a 5 s minute (an analyze tick every 0.83 s), batches every 5 s, faults from +15 s to +60 s. `for`
# is 20 s: longer than the simulated job's ~8 s start-up (process present, GPU near 0 %), which a
# shorter `for` rightly reports.
PLAN = DemoPlan(batch_s=5, fault_start_s=15, fault_end_s=60, time_scale=12, for_s=20, max_s=120)


def what(message: dict[str, Any]) -> tuple[str, str]:
    """(kind, the headline up to the part that depends on timing). The idle nodes' level is the
    mean over their run so far, which may still hold the bin they fell in: checked apart."""
    line = headline(message).split(" with ")[0].split(" while ")[0]
    level = re.search(r" at (\d+)(?:–(\d+))? % GPU utilisation$", line)
    if level:
        assert int(level.group(2) or level.group(1)) <= 15, line
        line = line[: level.start()] + " at a low % GPU utilisation"
    return message["kind"], line


def test_imbalance_and_idle_held_fire_and_resolve_in_both_formats(tmp_path: Path) -> None:
    messages = run_demo(PLAN, tmp_path / "run", out=open(tmp_path / "demo.out", "w"))  # noqa: SIM115
    got = [what(m) for m in messages]
    expected = {
        ("slack", f"🟠 [FIRING] Cross-node imbalance — {IDLE_NODES}"),
        ("jandi", f"[FIRING] Cross-node imbalance — {IDLE_NODES}"),
        (
            "slack",
            f"🟠 [FIRING] GPU held but idle — {BOB}",
        ),
        ("jandi", f"[FIRING] GPU held but idle — {BOB}"),
        (
            "slack",
            f"✅ [RESOLVED] Cross-node imbalance — was: {IDLE_NODES}",
        ),
        ("jandi", f"[RESOLVED] Cross-node imbalance — was: {IDLE_NODES}"),
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
    # every message carried a chart the sink fetched: a PNG of the stated size, kept on disk (a
    # resolve's shows the recovery: analyze re-drew its picture from the window that resolved it)
    for m in messages:
        (picture,) = m["pictures"]
        assert (picture["ok"], picture["width"], picture["height"]) == (True, 800, 400), picture
        assert "/v1/charts/" in picture["url"] and "&sig=" in picture["url"]  # gpulse's signed link
        assert Path(picture["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(picture["file"]).parent == tmp_path / "run" / "pictures"
