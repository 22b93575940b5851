"""Golden tests of the MIG detectors: hand-built windows, exact conditions out, and one pass
through the real window builder from Batch v1 documents."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpulse import codec
from gpulse.detect.base import Condition, MigInstance, ProcessSeen, Window
from gpulse.detect.mig import (
    IDLE_ACTION,
    LAYOUT_ACTION,
    ZOMBIE_ACTION,
    MigIdleDetector,
    MigLayoutDetector,
    layout_text,
    mig_name,
)
from gpulse.finding import Evidence, EvidenceRow
from gpulse.window import build_window
from tests.factories import batch_doc

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
GIB = float(1 << 30)
MIB = float(1 << 20)
SLICE_MEM = 9984 * MIB  # a 1g.10gb instance: NVML counts a little under the profile's nominal size
IDLE = MigIdleDetector()
LAYOUT = MigLayoutDetector()
UUIDS = [f"MIG-7a1c0d2e-0000-4000-8000-00000000000{i}" for i in range(7)]
SEVEN_SMALL = frozenset(("1g.10gb", gi, 0) for gi in range(7, 14))


def at(bin_index: int) -> float:
    return T0 + STEP * bin_index


def make_window(
    util_sm: np.ndarray | None,
    mem: np.ndarray,
    *,
    has_process: np.ndarray | None = None,
    processes: list[ProcessSeen] | None = None,
    instances: list[MigInstance] | None = None,
    layouts: dict[int, list[tuple[float, frozenset[tuple[str, int, int]]]]] | None = None,
) -> Window:
    """node-07 with four GPUs; GPU 2 is in MIG mode with the instances given (default: seven
    1g.10gb, GI 7..13, rows of `util_sm` and `mem`). util_sm None = not reported (pre-Hopper)."""
    mem = np.atleast_2d(np.asarray(mem, dtype=float))
    m, t = mem.shape
    instances = instances or [MigInstance(2, UUIDS[i], "1g.10gb", 7 + i, 0, SLICE_MEM) for i in range(m)]
    gpu_util = np.full((4, t), 90.0)
    gpu_util[2] = np.nan  # NVML has no util_gpu for a GPU in MIG mode
    procs: list[list[ProcessSeen]] = [[] for _ in range(4)]
    procs[2] = processes or []
    metrics = {"mem_used": mem}
    if util_sm is not None:
        metrics["util_sm"] = np.atleast_2d(np.asarray(util_sm, dtype=float))
    return Window(
        cluster="demo",
        start=T0,
        step=STEP,
        end=T0 + STEP * t,
        nodes=["node-07"],
        node_groups=[None],
        node_last_seen=np.array([T0 + STEP * t]),
        host={},
        cpu_count=np.array([64.0]),
        host_mem_total=np.array([2.0 * 2**40]),
        gpu_node=np.zeros(4, dtype=int),
        gpu_index=np.arange(4),
        gpu={"util_gpu": gpu_util, "mem_used": np.full((4, t), 40 * GIB)},
        gpu_mem_total=np.full(4, 80 * GIB),
        gpu_has_process=np.ones((4, t), dtype=bool),
        gpu_processes=procs,
        mig=instances,
        mig_metrics=metrics,
        mig_has_process=has_process if has_process is not None else np.zeros((m, t), dtype=bool),
        mig_layouts=layouts if layouts is not None else {2: [(T0 - 3600, SEVEN_SMALL)]},
    )


def idle(window: Window, **overrides: object) -> list[Condition]:
    return IDLE.detect(window, {**IDLE.defaults, **overrides})


def layout(window: Window, **overrides: object) -> list[Condition]:
    return LAYOUT.detect(window, {**LAYOUT.defaults, **overrides})


def seven_busy_slices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """util_sm, mem and has_process of seven 1g.10gb instances, each busy with its own job."""
    return np.full((7, BINS), 70.0), np.full((7, BINS), 6 * GIB), np.ones((7, BINS), dtype=bool)


# --- mig_idle: it fires ----------------------------------------------------------------------


def test_carol_holds_a_slice_at_zero_percent() -> None:
    util, mem, proc = seven_busy_slices()
    util[0, 60:] = 0.0  # carol's slice (GI 7) stopped computing at bin 60, still holding 4.1 GiB
    mem[0] = 4.1 * GIB
    carol = ProcessSeen(5150, "carol", None, None, int(4.1 * GIB), T0, at(119), mig_uuid=UUIDS[0])
    dave = ProcessSeen(5151, "dave", None, "python", int(6 * GIB), T0, at(119), mig_uuid=UUIDS[1])
    window = make_window(util, mem, has_process=proc, processes=[carol, dave])

    [cond] = idle(window)

    assert cond == Condition(
        rule="mig_idle",
        subject={"cluster": "demo", "node": "node-07", "gpu": 2, "mig": UUIDS[0]},
        since=at(60),
        severity="warning",
        summary="node-07 GPU 2 MIG 1g.10gb (GI 7) held by carol with 4.1 GiB at 0 % SM utilisation",
        action=IDLE_ACTION,
        nodes=["node-07"],
        gpus=["node-07/2"],
        users=["carol"],  # not dave: his process is on another instance of the same GPU
        containers=[],
        values={
            "util_sm": 0.0,
            "idle_util": 5.0,
            "held_mem_bytes": GIB,
            "duration_s": 300.0,
            "mem_used": 4.1 * GIB,
            "mem_total": SLICE_MEM,
        },
        evidence=Evidence(
            title=(
                "node-07/2 MIG 1g.10gb (GI 7): SM utilisation (%) and memory in use (% of 9.8 GiB), last 10m"
            ),
            unit="%",
            rows=[
                EvidenceRow(
                    "SM utilisation", [*[70.0] * 15, *[0.0] * 15], 0.0, True, "mig.util_sm", UUIDS[0], "mean"
                ),
                EvidenceRow(  # 4.1 GiB of 9,984 MiB
                    "memory in use", [42.1] * 30, 42.1, False, "mig.mem_pct", UUIDS[0], "last"
                ),
            ],
            reference=5.0,
            reference_label="idle threshold",
        ),
    )


def test_memory_held_on_a_slice_with_no_process_is_a_zombie() -> None:
    util, mem, proc = seven_busy_slices()
    util[3, 90:] = 1.0
    proc[3, 80:] = False  # the process left; its 3 GiB did not
    mem[3, 80:] = 3 * GIB

    [cond] = idle(make_window(util, mem, has_process=proc))

    assert cond.subject == {"cluster": "demo", "node": "node-07", "gpu": 2, "mig": UUIDS[3]}
    assert cond.since == at(90)
    assert cond.summary == (
        "node-07 GPU 2 MIG 1g.10gb (GI 10): memory held with no process (3.0 GiB at 1 % SM utilisation): "
        "a zombie allocation or a process in another PID namespace"
    )
    assert cond.action == ZOMBIE_ACTION
    assert (cond.users, cond.containers) == ([], [])


def test_a_process_holds_a_slice_even_with_little_memory() -> None:
    util = np.zeros((1, BINS))
    mem = np.full((1, BINS), 500 * MIB)  # under held_mem_bytes: the process alone makes it held
    bob = ProcessSeen(77, "bob", "3f2a1b9c8d7e" + "0" * 52, "jupyter", None, T0, at(119), mig_uuid=UUIDS[0])
    window = make_window(util, mem, has_process=np.ones((1, BINS), dtype=bool), processes=[bob])

    [cond] = idle(window)

    assert cond.since == T0
    assert cond.summary == (
        "node-07 GPU 2 MIG 1g.10gb (GI 7) held by bob (container 3f2a1b9c8d7e, jupyter) "
        "with 0.5 GiB at 0 % SM utilisation"
    )
    assert cond.containers == ["3f2a1b9c8d7e" + "0" * 52]


def test_a_compute_instance_is_named_when_not_the_first() -> None:
    inst = MigInstance(2, UUIDS[0], "1c.3g.40gb", 1, 2, 40 * GIB)
    [cond] = idle(make_window(np.zeros((1, BINS)), np.full((1, BINS), 2 * GIB), instances=[inst]))
    assert cond.summary.startswith("node-07 GPU 2 MIG 1c.3g.40gb (GI 1, CI 2): memory held with no process")
    assert mig_name(MigInstance(0, "u", None, 4, 0, 0.0)) == "MIG (GI 4)"


# --- mig_idle: it stays quiet ----------------------------------------------------------------


def test_without_util_sm_an_instance_is_never_judged() -> None:
    # Ampere (A100) has no GPM: util_sm is absent, and memory alone never says "idle"
    _, mem, proc = seven_busy_slices()
    assert idle(make_window(None, mem, has_process=proc)) == []
    nan = np.full((7, BINS), np.nan)
    assert idle(make_window(nan, mem, has_process=proc)) == []


def test_a_slice_with_no_util_sm_in_its_last_bin_is_not_idle() -> None:
    util, mem, proc = seven_busy_slices()
    util[0, 40:] = 0.0
    util[0, -1] = np.nan
    assert idle(make_window(util, mem, has_process=proc)) == []


def test_an_empty_slice_at_its_baseline_memory_is_free() -> None:
    # an instance nobody uses shows only a few MiB in use; a CUDA context alone takes hundreds
    assert idle(make_window(np.zeros((7, BINS)), np.full((7, BINS), 13 * MIB))) == []


def test_busy_slices_are_fine() -> None:
    util, mem, proc = seven_busy_slices()
    assert idle(make_window(util, mem, has_process=proc)) == []


def test_one_busy_bin_restarts_the_run() -> None:
    util, mem, proc = seven_busy_slices()
    util[5, 20:] = 0.0
    util[5, 100] = 30.0
    [cond] = idle(make_window(util, mem, has_process=proc))
    assert (cond.since, cond.values["duration_s"]) == (at(101), 95.0)


def test_empty_and_all_nan_mig_windows() -> None:
    nan = np.full((3, BINS), np.nan)
    assert idle(make_window(nan, nan)) == []
    assert idle(make_window(np.empty((3, 0)), np.empty((3, 0)))) == []
    no_mig = make_window(np.empty((0, BINS)), np.empty((0, BINS)), instances=[], layouts={})
    assert idle(no_mig) == []
    assert layout(no_mig) == []


def test_thresholds_are_parameters() -> None:
    util = np.full((1, BINS), 8.0)
    mem = np.full((1, BINS), 800 * MIB)
    window = make_window(util, mem)
    assert idle(window) == []
    [cond] = idle(window, idle_util=10, held_mem_bytes=512 * MIB, severity="critical")
    assert (cond.severity, cond.values["idle_util"], cond.values["held_mem_bytes"]) == (
        "critical",
        10.0,
        512 * MIB,
    )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"idle_util": 101}, "idle_util"),
        ({"held_mem_bytes": -1}, "held_mem_bytes"),
        ({"for_s": True}, "for_s"),
        ({"severity": "page"}, "severity"),
        ({"idle_sm": 3}, "idle_sm"),
    ],
)
def test_bad_idle_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        IDLE.validate({**IDLE.defaults, **overrides})


# --- mig_layout ------------------------------------------------------------------------------

THREE_AND_TWO_TWOS = frozenset({("3g.40gb", 1, 0), ("2g.20gb", 5, 0), ("2g.20gb", 6, 0)})


def test_a_repartitioned_gpu_is_announced_with_who_lost_their_slice() -> None:
    util, mem, proc = seven_busy_slices()
    carol = ProcessSeen(5150, "carol", "train-pod-3", "python", None, T0, at(69), mig_uuid=UUIDS[0])
    layouts = {2: [(T0 - 1800, SEVEN_SMALL), (at(70), THREE_AND_TWO_TWOS)]}
    window = make_window(util, mem, has_process=proc, processes=[carol], layouts=layouts)

    assert layout(window) == [
        Condition(
            rule="mig_layout",
            subject={"cluster": "demo", "node": "node-07", "gpu": 2, "changed_at": int(at(70))},
            since=at(70),
            severity="info",
            summary=(
                "node-07 GPU 2 MIG layout changed: 7×1g.10gb → 1×3g.40gb + 2×2g.20gb; "
                "carol had processes on the removed instances"
            ),
            action=LAYOUT_ACTION,
            nodes=["node-07"],
            gpus=["node-07/2"],
            users=["carol"],
            containers=["train-pod-3"],
            values={"instances_before": 7.0, "instances_after": 3.0, "changes_in_window": 1.0},
        )
    ]


def test_the_latest_of_several_changes_is_the_one_reported() -> None:
    back = frozenset(("1g.10gb", gi, 0) for gi in range(7, 14))
    layouts = {2: [(T0, SEVEN_SMALL), (at(30), THREE_AND_TWO_TWOS), (at(90), back)]}
    [cond] = layout(make_window(*seven_busy_slices()[:2], layouts=layouts))
    assert cond.since == at(90)
    assert cond.subject["changed_at"] == int(at(90))
    assert cond.summary == "node-07 GPU 2 MIG layout changed: 1×3g.40gb + 2×2g.20gb → 7×1g.10gb"
    assert cond.values["changes_in_window"] == 2.0


def test_instances_recreated_with_the_same_profiles_are_a_change() -> None:
    recreated = frozenset(("1g.10gb", gi, 0) for gi in range(1, 8))
    layouts = {2: [(T0, SEVEN_SMALL), (at(100), recreated)]}
    [cond] = layout(make_window(*seven_busy_slices()[:2], layouts=layouts))
    assert cond.summary == "node-07 GPU 2 MIG layout changed: 7×1g.10gb → 7×1g.10gb (instances recreated)"


def test_mig_mode_switched_on_then_partitioned() -> None:
    layouts = {2: [(T0, frozenset()), (at(10), SEVEN_SMALL)]}
    [cond] = layout(make_window(*seven_busy_slices()[:2], layouts=layouts))
    assert cond.summary == "node-07 GPU 2 MIG layout changed: no instances → 7×1g.10gb"
    assert (cond.users, cond.values["instances_before"]) == ([], 0.0)


def test_a_gpu_with_one_layout_in_the_window_is_quiet() -> None:
    assert layout(make_window(*seven_busy_slices()[:2])) == []
    assert layout(make_window(*seven_busy_slices()[:2], layouts={2: [(T0, frozenset())]})) == []


def test_a_layout_first_seen_after_the_window_end_waits_for_the_next_run() -> None:
    # a fast node's latest batch can start after the end the slowest fresh node sets
    layouts = {2: [(T0, SEVEN_SMALL), (at(BINS) + 2, THREE_AND_TWO_TWOS)]}
    assert layout(make_window(*seven_busy_slices()[:2], layouts=layouts)) == []


def test_layout_text_orders_larger_slices_first() -> None:
    assert layout_text(frozenset({("1g.10gb", 9, 0), ("4g.40gb", 1, 0), ("", 2, 0), ("1g.10gb", 10, 0)})) == (
        "1×4g.40gb + 2×1g.10gb + 1×?"
    )


def test_layout_change_is_an_event_with_info_severity() -> None:
    assert (LAYOUT.one_shot, LAYOUT.defaults) == (True, {"for_s": 0, "severity": "info"})
    with pytest.raises(ValueError, match="severity"):
        LAYOUT.validate({"for_s": 0, "severity": "loud"})
    with pytest.raises(ValueError, match="min_change"):
        LAYOUT.validate({"for_s": 0, "severity": "info", "min_change": 1})


# --- through the real window builder ---------------------------------------------------------


def mig_doc(
    t0: float, n: int, profiles: list[tuple[str, int, str]], util_sm: float | None, pid: int = 5150
) -> dict[str, Any]:
    """A Batch v1 document from one H100 in MIG mode: `profiles` = (profile, gi_id, uuid) per instance,
    carol's process `pid` on the first one."""
    doc = batch_doc(cluster="demo", node="node-07", t0=t0, n=n, gpus=1, util=[[None] * n])
    doc["gpus"][0]["mig_mode"] = True
    doc["gpus"][0]["metrics"]["mem_used"] = [8 * GIB] * n
    doc["mig"] = [
        {
            "gpu_index": 0,
            "uuid": uuid,
            "gi_id": gi,
            "ci_id": 0,
            "profile": profile,
            "mem_total": int(SLICE_MEM),
            "metrics": {
                "mem_used": [4 * GIB if i == 0 else 13 * MIB] * n,
                **({"util_sm": [util_sm] * n} if util_sm is not None else {}),
            },
        }
        for i, (profile, gi, uuid) in enumerate(profiles)
    ]
    first_uuid = profiles[0][2]
    doc["processes"] = [
        {"gpu_index": 0, "mig_uuid": first_uuid, "pid": pid, "user": "carol", "container": None,
         "name": "python", "mem_used": int(4 * GIB), "first_seen": t0, "last_seen": t0 + n - 1},
    ]  # fmt: skip
    return doc


def test_a_window_built_from_batches_feeds_both_detectors() -> None:
    small = [("1g.10gb", 7 + i, UUIDS[i]) for i in range(7)]
    big = [("3g.40gb", 1, "MIG-big-1"), ("2g.20gb", 5, "MIG-mid-5"), ("2g.20gb", 6, "MIG-mid-6")]
    docs = [mig_doc(T0 + 60 * k, 60, small, util_sm=0.0) for k in range(5)]
    # carol restarted her job on the new 3g.40gb instance: a new process
    docs += [mig_doc(T0 + 300 + 60 * k, 60, big, util_sm=0.0, pid=6160) for k in range(5)]
    chunks = [codec.decode(codec.encode(d)) for d in docs]
    window = build_window("demo", chunks, end=T0 + 600, span_s=600, step=STEP)

    [change] = layout(window)
    assert change.since == T0 + 300
    assert change.summary == (
        "node-07 GPU 0 MIG layout changed: 7×1g.10gb → 1×3g.40gb + 2×2g.20gb; "
        "carol had processes on the removed instances"
    )
    [held] = idle(window)  # carol's new 3g.40gb slice, idle since it was created
    assert held.subject == {"cluster": "demo", "node": "node-07", "gpu": 0, "mig": "MIG-big-1"}
    assert held.since == T0 + 300
    assert (
        held.summary
        == "node-07 GPU 0 MIG 3g.40gb (GI 1) held by carol (python) with 4.0 GiB at 0 % SM utilisation"
    )


def test_a_window_built_from_ampere_batches_never_judges_idleness() -> None:
    small = [("1g.5gb", 7 + i, UUIDS[i]) for i in range(7)]
    docs = [mig_doc(T0 + 60 * k, 60, small, util_sm=None) for k in range(10)]
    chunks = [codec.decode(codec.encode(d)) for d in docs]
    window = build_window("demo", chunks, end=T0 + 600, span_s=600, step=STEP)
    assert (idle(window), layout(window)) == ([], [])


# --- properties ------------------------------------------------------------------------------


@st.composite
def mig_windows(draw: st.DrawFn) -> Window:
    """Small windows with MIG instances on some of four GPUs, NaN anywhere, processes and layouts."""
    m = draw(st.integers(0, 5))
    t = draw(st.integers(0, 30))
    cells = st.one_of(st.just(np.nan), st.floats(0, 100), st.sampled_from([0.0, 5.0, 100.0]))
    util = draw(hnp.arrays(np.float64, (m, t), elements=cells))
    mem = draw(hnp.arrays(np.float64, (m, t), elements=st.one_of(st.just(np.nan), st.floats(0, 2 * GIB))))
    gpu_of = draw(st.lists(st.integers(0, 3), min_size=m, max_size=m))
    instances = [
        MigInstance(g, f"MIG-{i}", draw(st.sampled_from([None, "1g.10gb", "3g.40gb"])), i, 0, SLICE_MEM)
        for i, g in enumerate(gpu_of)
    ]
    procs = [
        ProcessSeen(
            i, draw(st.sampled_from([None, "u"])), None, None, None, T0, T0 + STEP * t, mig_uuid=f"MIG-{i}"
        )
        for i in range(m)
        if draw(st.booleans())
    ]
    layouts = {
        g: [(T0 + k, frozenset(draw(st.sets(st.sampled_from([("1g.10gb", 1, 0), ("2g.20gb", 2, 0)])))))
            for k in range(draw(st.integers(1, 3)))]
        for g in draw(st.sets(st.integers(0, 3)))
    }  # fmt: skip
    window = make_window(
        util if draw(st.booleans()) else None,
        mem,
        has_process=draw(hnp.arrays(np.bool_, (m, t))),
        instances=instances,
        layouts=layouts,
    )
    for q in procs:
        window.gpu_processes[instances[q.pid].gpu_row].append(q)
    return window


@settings(max_examples=150, deadline=None)
@given(window=mig_windows())
def test_mig_detectors_are_pure_and_never_raise(window: Window) -> None:
    for detector in (IDLE, LAYOUT):
        first = detector.detect(window, detector.defaults)
        assert detector.detect(window, detector.defaults) == first
        for cond in first:
            json.dumps(asdict(cond), allow_nan=False)  # travels as a Finding: no NaN, no numpy types
            assert cond.rule == detector.name and cond.summary and cond.action
            assert cond.since < window.end
