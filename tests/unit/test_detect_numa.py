"""Golden tests of the wrong-NUMA-node detector: hand-built windows, exact conditions out."""

from __future__ import annotations

import numpy as np
import pytest

from gpulse import codec
from gpulse.detect.base import Condition, ProcessSeen, Window
from gpulse.detect.numa import ACTION, NumaDetector
from gpulse.finding import Evidence, EvidenceRow
from gpulse.window import build_window
from tests.factories import batch_doc

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
END = T0 + STEP * BINS
NOW = END - 0.5  # the last sample of the window
DETECTOR = NumaDetector()


def proc(pid: int, numa: tuple[int, ...] | None, *, user: str | None = "alice", **kw: object) -> ProcessSeen:
    """A training process seen from `first_seen` (default the window's start) until now."""
    fields: dict[str, object] = {
        "container": None,
        "name": "python",
        "mem_used": 60 << 30,
        "first_seen": T0 - 600.0,
        "last_seen": NOW,
        "cpu_numa_nodes": numa,
        **kw,
    }
    return ProcessSeen(pid, user, **fields)  # type: ignore[arg-type]


def make_window(
    processes: list[list[ProcessSeen]],
    *,
    util: np.ndarray | None = None,
    gpu_numa: list[float] | None = None,
) -> Window:
    """A two-socket node-02 with four GPUs, 0–1 on NUMA 0 and 2–3 on NUMA 1, busy at 90 %.

    A GPU's bins have a process wherever one of its processes was seen (as the window builder
    marks them)."""
    g = len(processes)
    util = np.full((g, BINS), 90.0) if util is None else util
    has_process = np.zeros((g, BINS), dtype=bool)
    for row, procs in enumerate(processes):
        for q in procs:
            lo = max(int((q.first_seen - T0) // STEP), 0)
            hi = min(int((q.last_seen - T0) // STEP), BINS - 1)
            has_process[row, lo : hi + 1] = True
    return Window(
        cluster="demo",
        start=T0,
        step=STEP,
        end=END,
        nodes=["node-02"],
        node_groups=[None],
        node_last_seen=np.array([NOW]),
        host={},
        cpu_count=np.array([224.0]),
        host_mem_total=np.array([2.0 * 2**40]),
        gpu_node=np.zeros(g, dtype=int),
        gpu_index=np.arange(g),
        gpu={"util_gpu": util},
        gpu_mem_total=np.full(g, 80.0 * 2**30),
        gpu_has_process=has_process,
        gpu_processes=processes,
        gpu_numa=np.array(gpu_numa if gpu_numa is not None else [0.0, 0.0, 1.0, 1.0][:g]),
    )


def well_placed() -> list[list[ProcessSeen]]:
    """Four ranks, each pinned to its GPU's NUMA node."""
    return [[proc(100 + i, (i // 2,))] for i in range(4)]


def detect(window: Window, **overrides: object) -> list[Condition]:
    return DETECTOR.detect(window, {**NumaDetector.defaults, **overrides})


def at(bin_index: int) -> float:
    return T0 + STEP * bin_index


# --- it fires --------------------------------------------------------------------------------


def test_a_rank_pinned_to_the_other_socket() -> None:
    processes = well_placed()
    processes[3] = [proc(4242, (0,), container="train-pod-7", first_seen=at(30) + 1.2)]

    [cond] = detect(make_window(processes))

    assert cond == Condition(
        rule="numa",
        subject={"cluster": "demo", "node": "node-02", "gpu": 3},
        since=at(30),
        severity="info",
        summary=(
            "node-02 GPU 3 (NUMA 1) driven by pid 4242 (alice) pinned to NUMA 0 CPUs, "
            "at 90 % utilisation for 7m 30s"
        ),
        action=ACTION.format(numa=1),
        nodes=["node-02"],
        gpus=["node-02/3"],
        users=["alice"],
        containers=["train-pod-7"],
        values={"gpu_numa": 1.0, "processes": 1.0, "util": 90.0, "min_util": 20.0, "duration_s": 450.0},
        evidence=Evidence(
            title="node-02/3 (NUMA 1): utilisation, last 10m",
            unit="%",
            rows=[EvidenceRow("utilisation", [90.0] * 30, 90.0, True, "gpu.util_gpu", "node-02/3", "mean")],
            reference=20.0,
            reference_label="busy threshold",
        ),
    )
    assert "numactl --cpunodebind=1 --membind=1" in cond.action


def test_since_waits_for_the_gpu_to_get_busy() -> None:
    processes = well_placed()
    processes[0] = [proc(7, (1,), user="bob", first_seen=at(10))]
    util = np.full((4, BINS), 90.0)
    util[0, :50] = 4.0  # loading data for the first 250 s: a misplaced idle process costs nothing

    [cond] = detect(make_window(processes, util=util))

    assert cond.subject == {"cluster": "demo", "node": "node-02", "gpu": 0}
    # busy is the last minute's mean (12 bins): (9 × 4 + 3 × 90) / 12 = 25.5 ≥ 20 from bin 52 on
    assert cond.since == at(52)
    assert cond.summary == (
        "node-02 GPU 0 (NUMA 0) driven by pid 7 (bob) pinned to NUMA 1 CPUs, at 90 % utilisation for 5m 40s"
    )
    assert cond.action == ACTION.format(numa=0)


def test_several_processes_grouped_by_where_they_are_pinned() -> None:
    # an EPYC node in NPS4 mode: four NUMA nodes, GPU 0 on node 1
    processes = [
        [
            proc(12, (2, 3), user=None, container="train-pod-9", first_seen=at(20)),
            proc(10, (0,), user="bob", first_seen=at(5)),
            proc(13, (1,), user="carol"),  # on the GPU's own node: not named
            proc(11, (0,), user="bob", first_seen=at(10)),
        ]
    ]

    [cond] = detect(make_window(processes, gpu_numa=[1.0]))

    assert cond.since == at(5)
    assert cond.summary == (
        "node-02 GPU 0 (NUMA 1) driven by pid 10 (bob), pid 11 (bob) pinned to NUMA 0 CPUs and "
        "pid 12 (train-pod-9) pinned to NUMA 2, 3 CPUs, at 90 % utilisation for 9m 35s"
    )
    assert (cond.users, cond.containers) == (["bob"], ["train-pod-9"])
    assert cond.values["processes"] == 3.0


def test_past_three_processes_the_rest_are_counted() -> None:
    processes = [[proc(pid, (1,), user=None) for pid in (1, 2, 3, 4, 5)]]
    [cond] = detect(make_window(processes))
    assert cond.summary == (
        "node-02 GPU 0 (NUMA 0) driven by pid 1, pid 2, pid 3 pinned to NUMA 1 CPUs +2 more, "
        "at 90 % utilisation for 10m"
    )


def test_only_the_misplaced_processes_present_now_are_named() -> None:
    processes = well_placed()
    processes[2] = [
        proc(50, (0,), user="dave", last_seen=at(40)),  # left long ago
        proc(51, (0,), user="erin", first_seen=at(60)),
    ]
    [cond] = detect(make_window(processes))
    assert cond.since == at(60)
    assert cond.users == ["erin"]


# --- it stays quiet --------------------------------------------------------------------------


def test_every_process_on_its_gpu_s_node_is_fine() -> None:
    assert detect(make_window(well_placed())) == []


def test_a_process_spanning_both_nodes_includes_the_gpu_s_own() -> None:
    processes = [[proc(100 + i, (0, 1))] for i in range(4)]
    assert detect(make_window(processes)) == []


def test_unknown_topology_is_no_evidence() -> None:
    misplaced = [[proc(100 + i, (1 - i // 2,))] for i in range(4)]
    assert len(detect(make_window(misplaced))) == 4  # known, it would fire on every GPU
    assert detect(make_window(misplaced, gpu_numa=[np.nan, -1.0, np.nan, -1.0])) == []
    unknown_affinity = [[proc(100 + i, None)] for i in range(4)] + [[proc(200, ())]]
    assert detect(make_window(unknown_affinity, gpu_numa=[0.0, 0.0, 1.0, 1.0, 1.0])) == []
    bare = make_window(misplaced)
    assert detect(Window(**{**bare.__dict__, "gpu_numa": np.zeros(0)})) == []  # the field's default


def test_a_misplaced_process_on_an_idle_gpu_costs_nothing() -> None:
    processes = well_placed()
    processes[3] = [proc(4242, (0,))]
    util = np.full((4, BINS), 90.0)
    util[3] = 12.0  # a notebook between cells: below min_util
    assert detect(make_window(processes, util=util)) == []
    assert [c.subject["gpu"] for c in detect(make_window(processes, util=util), min_util=10)] == [3]


def test_a_checkpoint_pause_does_not_restart_the_wait() -> None:
    processes = well_placed()
    processes[3] = [proc(4242, (0,))]
    util = np.full((4, BINS), 90.0)
    util[3, 60:64] = 3.0  # a 20 s synchronous checkpoint: the last minute's mean stays at 61 %
    util[3, -4:] = 3.0  # and one going on now
    [cond] = detect(make_window(processes, util=util))
    assert (cond.subject["gpu"], cond.since) == (3, at(0))
    util[3, 60:73] = 3.0  # a pause of 65 s is the GPU waiting on something else: the run restarts
    [cond] = detect(make_window(processes, util=util))
    assert (cond.subject["gpu"], cond.since) == (3, at(75))  # (9 × 3 + 3 × 90) / 12 = 24.75 ≥ 20


def test_a_misplaced_process_that_left_is_forgotten() -> None:
    processes = well_placed()
    processes[3] = [proc(4242, (0,), last_seen=at(100)), proc(4243, (1,), first_seen=at(101))]
    assert detect(make_window(processes)) == []


def test_a_gpu_without_data_in_its_last_bin_is_not_judged() -> None:
    processes = well_placed()
    processes[3] = [proc(4242, (0,))]
    util = np.full((4, BINS), 90.0)
    util[3, -1] = np.nan
    assert detect(make_window(processes, util=util)) == []


def test_empty_and_all_nan_windows() -> None:
    processes = well_placed()
    processes[3] = [proc(4242, (0,))]
    assert detect(make_window(processes, util=np.full((4, BINS), np.nan))) == []
    assert detect(make_window([], gpu_numa=[], util=np.empty((0, BINS)))) == []
    empty = make_window(processes, util=np.empty((4, 0)))
    assert detect(Window(**{**empty.__dict__, "end": T0, "gpu_has_process": np.empty((4, 0), bool)})) == []


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"min_util": 101}, "min_util"),
        ({"min_util": True}, "min_util"),
        ({"for_s": -1}, "for_s"),
        ({"severity": "debug"}, "severity"),
        ({"numa_node": 0}, "numa_node"),
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        detect(make_window(well_placed()), **overrides)


def test_a_missing_parameter_is_named() -> None:
    with pytest.raises(ValueError, match="min_util"):
        DETECTOR.validate({"for_s": 300, "severity": "info"})


# --- a window built from batches -------------------------------------------------------------


def test_affinity_from_batches() -> None:
    # two GPUs, 0 on NUMA 0 and 1 on NUMA 1; both ranks pinned to socket 0's cores 0–55
    n, t0 = 60, 1_763_800_000.0
    socket0 = list(range(56))
    processes: list[dict[str, object]] = [
        {"gpu_index": g, "pid": 300 + g, "user": "alice", "container": None, "name": "python",
         "mem_used": 60 << 30, "first_seen": t0, "last_seen": t0 + n - 1,
         "cpu_affinity": socket0, "cpu_numa_nodes": [0]}
        for g in range(2)
    ]  # fmt: skip
    doc = batch_doc(node="node-02", n=n, gpus=2, t0=t0, processes=processes)
    for g, entry in enumerate(doc["gpus"]):
        entry["numa_node"] = g
    window = build_window("c1", [codec.decode(codec.encode(doc))], end=t0 + n, span_s=n, step=STEP)

    [cond] = detect(window)

    assert cond.subject == {"cluster": "c1", "node": "node-02", "gpu": 1}
    assert cond.since == t0
    assert cond.summary == (
        "node-02 GPU 1 (NUMA 1) driven by pid 301 (alice) pinned to NUMA 0 CPUs, at 90 % utilisation for 1m"
    )
