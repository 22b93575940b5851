"""The detector catalogue: each detector registered once, its parameters merged and checked, its
documentation in step, and every detector pure and unbreakable on any window."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpulse.detect.base import ProcessSeen, Window
from gpulse.detect.catalogue import CATALOGUE, KEEP_FIRING_FOR_S, params_for
from gpulse.detect.idle_held import IdleHeldDetector
from gpulse.detect.imbalance import ImbalanceDetector
from gpulse.finding import SEVERITIES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "detectors.md"


def test_each_detector_is_registered_once_under_its_name() -> None:
    assert list(CATALOGUE) == [
        "imbalance",
        "idle_held",
        "hardware_errors",
        "gpu_imbalance",
        "mig_idle",
        "mig_layout",
        "silent_node",
        "throttling",
        "numa",
        "network",
        "input_bound",
        "memory_pressure",
    ]
    assert isinstance(CATALOGUE["imbalance"], ImbalanceDetector)
    assert isinstance(CATALOGUE["idle_held"], IdleHeldDetector)
    for name, detector in CATALOGUE.items():
        assert detector.name == name
        assert detector.title and detector.description and detector.reads
        assert {"for_s", "severity"} <= set(detector.defaults)
        assert detector.defaults["severity"] in SEVERITIES


def test_params_for_lays_overrides_over_the_defaults() -> None:
    assert params_for("idle_held") == {
        "for_s": 300,
        "severity": "warning",
        "idle_util": 5.0,
        "held_mem_bytes": 2 * 2**30,
        "keep_firing_for_s": 120,
    }
    assert params_for("imbalance", {"min_gap": 30, "severity": "critical"}) == {
        **ImbalanceDetector.defaults,
        "keep_firing_for_s": 180,
        "min_gap": 30,
        "severity": "critical",
    }
    assert params_for("imbalance", None) == {**ImbalanceDetector.defaults, "keep_firing_for_s": 180}


def test_every_rule_has_a_documented_hold_down() -> None:
    assert set(KEEP_FIRING_FOR_S) == set(CATALOGUE)
    section = DOCS.read_text().split("## Hold-down before resolve", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", section, flags=re.MULTILINE))
    assert {name: float(v) for name, v in rows.items()} == KEEP_FIRING_FOR_S
    assert params_for("throttling", {"keep_firing_for_s": 0})["keep_firing_for_s"] == 0
    with pytest.raises(ValueError, match=r"throttling: keep_firing_for_s must be a number in \[0, 86400\]"):
        params_for("throttling", {"keep_firing_for_s": -1})
    with pytest.raises(ValueError, match="keep_firing_for_s"):
        params_for("throttling", {"keep_firing_for_s": "5m"})


def test_params_for_does_not_touch_the_defaults() -> None:
    params_for("imbalance", {"min_gap": 30})["for_s"] = 5
    assert ImbalanceDetector.defaults["min_gap"] == 25.0
    assert ImbalanceDetector.defaults["for_s"] == 60


def test_numbers_from_dynamodb_are_accepted() -> None:
    # boto3 hands DynamoDB numbers over as Decimal
    assert params_for("idle_held", {"idle_util": Decimal("2.5")})["idle_util"] == Decimal("2.5")
    assert params_for("imbalance", {"min_nodes": Decimal("4")})["min_nodes"] == Decimal("4")


def test_params_for_names_what_is_wrong() -> None:
    with pytest.raises(KeyError, match="no detector named 'thermal'"):
        params_for("thermal")
    with pytest.raises(ValueError, match="idle_pct"):
        params_for("idle_held", {"idle_pct": 3})
    with pytest.raises(ValueError, match="level_ratio"):
        params_for("imbalance", {"level_ratio": -0.1})
    with pytest.raises(ValueError, match="for_s"):
        params_for("idle_held", {"for_s": -5})


def test_the_docs_describe_every_detector_and_parameter() -> None:
    text = DOCS.read_text()
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    documented = {}
    for section in sections:
        m = re.search(r"`name`: `(\w+)`", section)
        if m:
            documented[m.group(1)] = section
    assert set(documented) == set(CATALOGUE)
    for name, detector in CATALOGUE.items():
        assert documented[name].startswith(detector.title)
        rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", documented[name], flags=re.MULTILINE))
        assert set(rows) == set(detector.defaults), name
        for key, default in detector.defaults.items():
            assert rows[key].strip().split(" ")[0] == str(default), (name, key)


# --- properties: any window, every detector --------------------------------------------------


@st.composite
def windows(draw: st.DrawFn) -> Window:
    """Small windows of every shape, values anywhere in range, NaN anywhere."""
    n = draw(st.integers(0, 5))
    per_node = draw(st.integers(1, 3))
    t = draw(st.integers(0, 40))
    g = n * per_node
    cells = st.one_of(st.just(np.nan), st.floats(0, 100), st.sampled_from([0.0, 1.0, 50.0, 100.0]))
    util = draw(hnp.arrays(np.float64, (g, t), elements=cells))
    mem = util * 2**30 if draw(st.booleans()) else np.full((g, t), np.nan)
    has_process = draw(hnp.arrays(np.bool_, (g, t)))
    groups = draw(st.lists(st.sampled_from([None, "a", "b"]), min_size=n, max_size=n))
    start, step = 1_770_000_000.0, draw(st.sampled_from([1.0, 5.0, 15.0]))
    return Window(
        cluster="prop",
        start=start,
        step=step,
        end=start + step * t,
        nodes=[f"n{i}" for i in range(n)],
        node_groups=groups,
        node_last_seen=np.full(n, start + step * t),
        host={},
        cpu_count=np.full(n, 8.0),
        host_mem_total=np.full(n, 2.0**36),
        gpu_node=np.repeat(np.arange(n), per_node),
        gpu_index=np.tile(np.arange(per_node), n),
        gpu={"util_gpu": util, "mem_used": mem},
        gpu_mem_total=np.full(g, draw(st.sampled_from([np.nan, 0.0, 80.0 * 2**30]))),
        gpu_has_process=has_process,
        gpu_processes=[
            [ProcessSeen(9, "u", "c", "p", None, start, start + step * t)] if i % 2 else [] for i in range(g)
        ],
    )


@pytest.mark.parametrize("name", list(CATALOGUE))
@settings(max_examples=100, deadline=None)
@given(window=windows())
def test_detectors_are_pure_and_never_raise(name: str, window: Window) -> None:
    detector, params = CATALOGUE[name], params_for(name, {"min_nodes": 2} if name == "imbalance" else {})
    before = {k: v.copy() for k, v in window.gpu.items()}

    first = detector.detect(window, params)

    assert detector.detect(window, params) == first  # equal also proves no NaN crept in
    for k, v in before.items():
        np.testing.assert_array_equal(window.gpu[k], v)  # the window is not written to
    for cond in first:
        json.dumps(asdict(cond), allow_nan=False)  # travels as a Finding: no NaN, no numpy types
        assert window.start <= cond.since < window.end
        assert cond.rule == name and cond.summary and cond.action


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_all_nan_windows_give_nothing(name: str) -> None:
    nan = np.full((6, 30), np.nan)
    window = Window(
        cluster="c",
        start=0.0,
        step=5.0,
        end=150.0,
        nodes=["a", "b", "c"],
        node_groups=[None, None, None],
        node_last_seen=np.zeros(3),
        host={},
        cpu_count=np.full(3, np.nan),
        host_mem_total=np.full(3, np.nan),
        gpu_node=np.repeat(np.arange(3), 2),
        gpu_index=np.tile(np.arange(2), 3),
        gpu={"util_gpu": nan, "mem_used": nan},
        gpu_mem_total=np.full(6, np.nan),
        gpu_has_process=np.zeros((6, 30), dtype=bool),
        gpu_processes=[[] for _ in range(6)],
    )
    assert CATALOGUE[name].detect(window, params_for(name)) == []
