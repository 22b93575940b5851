"""Golden tests of the input-bound detector: hand-built windows, exact conditions out."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpulse.codec import decode, encode
from gpulse.detect.base import Condition, ProcessSeen, Window
from gpulse.detect.input_bound import ACTION, InputBoundDetector, allowed_cores, cpu_busy
from gpulse.finding import Evidence, EvidenceRow
from gpulse.window import build_window
from tests.factories import batch_doc

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
DETECTOR = InputBoundDetector()


def make_window(
    util: np.ndarray,
    *,
    busy: np.ndarray | None = None,
    cpu_util: np.ndarray | None = None,
    cpu_count: float | list[float] = 64.0,
    has_process: np.ndarray | None = None,
    processes: list[list[ProcessSeen]] | None = None,
    gpus_per_node: int = 8,
    nodes: int | None = None,
) -> Window:
    """util is (GPUs × bins), `gpus_per_node` GPUs per node, nodes named node-01, node-02, …;
    busy and cpu_util are (nodes × bins). By default every GPU holds a process all window long."""
    util = np.atleast_2d(np.asarray(util, dtype=float))
    g, t = util.shape
    n = nodes if nodes is not None else max(g // gpus_per_node, 1)
    host = {}
    if busy is not None:
        host["cpu_busy_cores"] = np.atleast_2d(np.asarray(busy, dtype=float))
    if cpu_util is not None:
        host["cpu_util"] = np.atleast_2d(np.asarray(cpu_util, dtype=float))
    return Window(
        cluster="demo",
        start=T0,
        step=STEP,
        end=T0 + STEP * t,
        nodes=[f"node-{i + 1:02d}" for i in range(n)],
        node_groups=[None] * n,
        node_last_seen=np.full(n, T0 + STEP * t),
        host=host,
        cpu_count=np.broadcast_to(np.asarray(cpu_count, dtype=float), (n,)).copy(),
        host_mem_total=np.full(n, 512.0 * 2**30),
        gpu_node=np.repeat(np.arange(n), gpus_per_node)[:g],
        gpu_index=np.tile(np.arange(gpus_per_node), n)[:g],
        gpu={"util_gpu": util, "mem_used": np.full((g, t), 30.0 * 2**30)},
        gpu_mem_total=np.full(g, 80.0 * 2**30),
        gpu_has_process=has_process if has_process is not None else np.ones((g, t), dtype=bool),
        gpu_processes=processes if processes is not None else [[] for _ in range(g)],
    )


def at(bin_index: int) -> float:
    return T0 + STEP * bin_index


def detect(window: Window, **overrides: object) -> list[Condition]:
    params = {**DETECTOR.defaults, **overrides}
    DETECTOR.validate(params)
    return DETECTOR.detect(window, params)


def job(user: str, container: str | None, cores: range | None, gpus: int = 8) -> list[list[ProcessSeen]]:
    """One process per GPU, all window long, pinned to `cores` (None: affinity unknown)."""
    affinity = tuple(cores) if cores is not None else None
    return [
        [ProcessSeen(1000 + i, user, container, "python", None, T0, at(BINS - 1), cpu_affinity=affinity)]
        for i in range(gpus)
    ]


def row(value: float, bins: int = BINS) -> np.ndarray:
    return np.full((1, bins), value)


# --- it fires --------------------------------------------------------------------------------


def test_a_job_pinned_to_sixteen_saturated_cores_starves_its_gpus() -> None:
    # eight GPUs at 90 % until bin 40, then 12 % while the 16 cores the job is pinned to (of 64)
    # run flat out: the data loader cannot keep up. Judged over the trailing minute (12 bins), both
    # cross their lines at bin 47: 4 × 90 + 8 × 12 = 38 % GPU, 4 × 62.5 + 8 × 98.75 = 86.7 % CPU;
    # the run starts where it showed, bin by bin, at bin 40 (for_s counts from there).
    util = np.full((8, BINS), 90.0)
    util[:, 40:] = 12.0
    busy = row(10.0)
    busy[0, 40:] = 15.8

    [cond] = detect(make_window(util, busy=busy, processes=job("alice", "train-4", range(16))))

    assert cond == Condition(
        rule="input_bound",
        subject={"cluster": "demo", "node": "node-01"},
        since=at(40),
        severity="warning",
        summary=(
            "node-01: GPUs 12 % busy while 15.8 of 16 allowed CPU cores are saturated"
            " — the input pipeline is the bottleneck"
        ),
        action=ACTION,
        nodes=["node-01"],
        gpus=[f"node-01/{i}" for i in range(8)],
        users=["alice"],
        containers=["train-4"],
        values={
            "gpu_util": 12.0,
            "cpu_busy_cores": 15.8,
            "cpu_allowed_cores": 16.0,
            "cpu_busy_pct": 98.8,
            "gpus": 8.0,
            "max_gpu_util": 40.0,
            "cpu_saturation": 0.85,
            "smooth_s": 60.0,
            "duration_s": 400.0,
        },
        evidence=Evidence(
            title="node-01: GPU utilisation and CPU busy (% of 16 allowed cores), last 10m",
            unit="%",
            rows=[
                EvidenceRow("GPU utilisation", [*[90.0] * 10, *[12.0] * 20], 12.0, True),
                EvidenceRow("CPU busy", [*[62.5] * 10, *[98.8] * 20], 98.8, True),
            ],
            reference=85.0,
            reference_label="CPU saturated",
        ),
    )


def test_without_known_affinity_the_whole_node_is_allowed() -> None:
    [cond] = detect(make_window(row(20.0), busy=row(15.2), cpu_count=16, gpus_per_node=1))
    assert cond.since == T0
    assert cond.summary == (
        "node-01: GPUs 20 % busy while 15.2 of 16 allowed CPU cores are saturated"
        " — the input pipeline is the bottleneck"
    )


def test_cpu_util_stands_in_for_busy_cores() -> None:
    [cond] = detect(make_window(row(8.0), cpu_util=row(95.0), cpu_count=32, gpus_per_node=1))
    assert (cond.values["cpu_busy_cores"], cond.values["cpu_allowed_cores"]) == (30.4, 32.0)


def test_busy_cores_win_over_cpu_util_bin_by_bin() -> None:
    busy = row(np.nan)
    busy[0, 60:] = 30.0  # cpu_busy_cores from bin 60 on (a newer shipper)
    window = make_window(row(8.0), busy=busy, cpu_util=row(50.0), cpu_count=32, gpus_per_node=1)
    np.testing.assert_array_equal(cpu_busy(window)[0], [16.0] * 60 + [30.0] * 60)
    # over the trailing minute the CPU is saturated once 10 of its 12 bins are at 30 of 32 cores
    [cond] = detect(window)
    assert cond.since == at(60)  # crossed at bin 69, back-dated to where it showed
    [per_bin] = detect(window, smooth_s=0)
    assert per_bin.since == at(60)


def test_the_node_busier_than_the_jobs_cores() -> None:
    # pinned to 8 cores of 64 while the node as a whole runs 40 cores' worth
    processes = job("bob", None, range(8), gpus=1)
    [cond] = detect(make_window(row(15.0), busy=row(40.0), processes=processes, gpus_per_node=1))
    assert cond.summary == (
        "node-01: GPUs 15 % busy while its 8 allowed CPU cores are saturated (40.0 cores busy on the node)"
        " — the input pipeline is the bottleneck"
    )
    assert cond.values["cpu_busy_pct"] == 500.0


def test_only_gpus_with_a_process_count() -> None:
    # two GPUs hold bob's job at 10 %; six sit idle with no process and do not dilute nor count
    util = np.zeros((8, BINS))
    util[:2] = 10.0
    has_process = np.zeros((8, BINS), dtype=bool)
    has_process[:2] = True
    processes = [*job("bob", "c1", range(8), gpus=2), *[[] for _ in range(6)]]

    [cond] = detect(make_window(util, busy=row(7.5), has_process=has_process, processes=processes))

    assert (cond.gpus, cond.users, cond.values["gpus"]) == (["node-01/0", "node-01/1"], ["bob"], 2.0)
    assert cond.values["gpu_util"] == 10.0
    assert cond.values["cpu_allowed_cores"] == 8.0


def test_the_union_of_the_processes_affinities_is_allowed() -> None:
    util = np.full((2, BINS), 20.0)
    processes = [job("eve", None, range(8), gpus=1)[0], job("eve", None, range(8, 16), gpus=1)[0]]
    window = make_window(util, busy=row(14.0), processes=processes, gpus_per_node=2)
    [cond] = detect(window)
    assert cond.values["cpu_allowed_cores"] == 16.0
    busy_12 = make_window(util, busy=row(12.0), processes=processes, gpus_per_node=2)
    assert detect(busy_12) == []  # 12 < 0.85 × 16


def test_allowed_cores_follow_the_processes_bin_by_bin() -> None:
    # GPU 1's process (cores 8-15) leaves at bin 60: from then on only GPU 0's 8 cores are the job's,
    # and 7.5 busy cores saturate them
    util = np.full((2, BINS), 20.0)
    has_process = np.ones((2, BINS), dtype=bool)
    has_process[1, 60:] = False
    processes = [job("eve", None, range(8), gpus=1)[0], job("eve", None, range(8, 16), gpus=1)[0]]
    window = make_window(util, busy=row(7.5), has_process=has_process, processes=processes, gpus_per_node=2)

    np.testing.assert_array_equal(allowed_cores(window)[0], [16.0] * 60 + [8.0] * 60)
    [cond] = detect(window)
    # the trailing minute saturated from bin 69; starved bin by bin from bin 60
    assert (cond.since, cond.gpus) == (at(60), ["node-01/0"])
    [per_bin] = detect(window, smooth_s=0)
    assert per_bin.since == at(60)


def test_a_process_of_unknown_affinity_opens_the_whole_node() -> None:
    processes = [job("eve", None, range(8), gpus=1)[0], job("eve", None, None, gpus=1)[0]]
    window = make_window(np.full((2, BINS), 20.0), busy=row(7.5), processes=processes, gpus_per_node=2)
    np.testing.assert_array_equal(allowed_cores(window)[0], np.full(BINS, 64.0))
    assert detect(window) == []


def test_affinity_never_exceeds_the_node() -> None:
    processes = job("eve", None, range(128), gpus=1)  # the shipper's word beyond the node's 64 cores
    window = make_window(row(20.0), busy=row(60.0), processes=processes, gpus_per_node=1)
    [cond] = detect(window)
    assert cond.values["cpu_allowed_cores"] == 64.0


def test_each_starved_node_is_its_own_condition() -> None:
    util = np.full((16, BINS), 10.0)
    busy = np.vstack([row(60.0), row(60.0)])
    [first, second] = detect(make_window(util, busy=busy))
    assert (first.subject, second.subject) == (
        {"cluster": "demo", "node": "node-01"},
        {"cluster": "demo", "node": "node-02"},
    )


def test_a_single_gpu_starved_between_bursts() -> None:
    # bob's fine-tuning job on GPU 5, pinned to 8 of the node's 64 CPUs, runs at 85 % until bin 20;
    # then its loader cannot keep up. The GPU works a second whenever a batch arrives, so its 5 s
    # bins read 2 % (no batch) to 50 % (three batches), about 20 % on average, and every sixth bin
    # is over max_gpu_util. Its 8 CPUs go from 2 busy to 7.8 at bin 20: the trailing minute is
    # saturated once 10 of its 12 bins are (10 × 97.5 + 2 × 25 = 85.4 %), at bin 29, where its GPU
    # mean is (2 × 85 + 196) / 12 = 30.5 %.
    util = np.zeros((8, BINS))
    util[5, :20] = 85.0
    util[5, 20:] = np.tile([18.0, 2.0, 50.0, 2.0, 18.0, 34.0], 20)[: BINS - 20]
    busy = row(2.0)
    busy[0, 20:] = 7.8
    has_process = np.zeros((8, BINS), dtype=bool)
    has_process[5] = True
    processes: list[list[ProcessSeen]] = [[] for _ in range(8)]
    processes[5] = job("bob", "ft-bob", range(40, 48), gpus=1)[0]
    window = make_window(util, busy=busy, has_process=has_process, processes=processes)

    [cond] = detect(window)

    assert (cond.since, cond.gpus, cond.users, cond.containers) == (
        at(29),
        ["node-01/5"],
        ["bob"],
        ["ft-bob"],
    )
    assert cond.summary == (
        "node-01: GPUs 20 % busy while 7.8 of 8 allowed CPU cores are saturated"
        " — the input pipeline is the bottleneck"
    )
    values = (cond.values["gpu_util"], cond.values["cpu_busy_pct"], cond.values["duration_s"])
    assert values == (20.5, 97.5, 455.0)
    # judged bin by bin (smooth_s of one bin) the run restarts after every 50 % bin, the last at 118
    [per_bin] = detect(window, smooth_s=5)
    assert per_bin.since == at(119)


# --- it stays quiet --------------------------------------------------------------------------


def test_a_busy_cpu_feeding_busy_gpus_is_a_healthy_job() -> None:
    assert detect(make_window(np.full((8, BINS), 92.0), busy=row(62.0))) == []


def test_gpus_idle_with_the_cpu_idle_is_an_idle_job() -> None:
    assert detect(make_window(np.zeros((8, BINS)), busy=row(0.5))) == []  # idle_held covers it


def test_a_cpu_only_job_next_to_free_gpus() -> None:
    window = make_window(np.zeros((8, BINS)), busy=row(63.0), has_process=np.zeros((8, BINS), dtype=bool))
    assert detect(window) == []


def test_a_cpu_just_below_saturation() -> None:
    assert detect(make_window(row(10.0), busy=row(54.0), gpus_per_node=1)) == []  # 84 % of 64 cores


def test_gpus_just_above_the_low_line() -> None:
    assert detect(make_window(row(41.0), busy=row(64.0), gpus_per_node=1)) == []


def test_half_a_minute_of_gpu_work_restarts_the_run() -> None:
    # six bins at 80 % lift the trailing minute to (6 × 80 + 6 × 10) / 12 = 45 % at bin 105; it is
    # back under 40 % once five or fewer of them are left in it, at bin 112, and starved bin by bin
    # since bin 106
    util = row(10.0)
    util[0, 100:106] = 80.0
    [cond] = detect(make_window(util, busy=row(60.0), gpus_per_node=1))
    assert cond.since == at(106)


def test_a_bin_without_cpu_data_still_breaks_the_run() -> None:
    busy = row(60.0)
    busy[0, 80] = np.nan
    [cond] = detect(make_window(row(10.0), busy=busy, gpus_per_node=1))
    assert cond.since == at(81)


def test_one_busy_gpu_bin_does_not_restart_the_run() -> None:
    util = row(10.0)
    util[0, 100] = 80.0  # (80 + 11 × 10) / 12 = 15.8 % over the trailing minute
    window = make_window(util, busy=row(60.0), gpus_per_node=1)
    [cond] = detect(window)
    assert cond.since == T0
    [per_bin] = detect(window, smooth_s=5)  # one bin: judged bin by bin, it restarts the run
    assert per_bin.since == at(101)


def test_no_cpu_data_in_the_last_bin() -> None:
    busy = row(60.0)
    busy[0, -1] = np.nan
    assert detect(make_window(row(10.0), busy=busy, gpus_per_node=1)) == []


def test_no_cpu_metric_at_all() -> None:
    assert detect(make_window(row(10.0), gpus_per_node=1)) == []


def test_an_unknown_cpu_count_without_affinity() -> None:
    window = make_window(row(10.0), cpu_util=row(99.0), cpu_count=np.nan, gpus_per_node=1)
    assert np.isnan(cpu_busy(window)).all()
    assert detect(window) == []
    assert detect(make_window(row(10.0), busy=row(60.0), cpu_count=np.nan, gpus_per_node=1)) == []


def test_empty_and_all_nan_windows() -> None:
    nan = np.full((8, BINS), np.nan)
    assert detect(make_window(nan, busy=row(np.nan), cpu_util=row(np.nan), cpu_count=np.nan)) == []
    assert (
        detect(make_window(np.empty((8, 0)), busy=np.empty((1, 0)), has_process=np.empty((8, 0), bool))) == []
    )
    assert (
        detect(make_window(np.empty((0, BINS)), busy=row(60.0), has_process=np.empty((0, BINS), bool))) == []
    )


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"cpu_saturation": 0}, "cpu_saturation"),
        ({"cpu_saturation": 1.5}, "cpu_saturation"),
        ({"max_gpu_util": 101}, "max_gpu_util"),
        ({"max_gpu_util": True}, "max_gpu_util"),
        ({"smooth_s": -5}, "smooth_s"),
        ({"smooth_s": 3_601}, "smooth_s"),
        ({"for_s": None}, "for_s"),
        ({"severity": "page"}, "severity"),
        ({"num_workers": 4}, "num_workers"),
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DETECTOR.detect(make_window(row(10.0, 4), gpus_per_node=1), {**DETECTOR.defaults, **overrides})


def test_thresholds_are_parameters() -> None:
    window = make_window(row(50.0), busy=row(48.0), gpus_per_node=1)  # 75 % of 64 cores
    assert detect(window) == []
    [cond] = detect(window, max_gpu_util=60, cpu_saturation=0.7, severity="info")
    assert (cond.severity, cond.values["max_gpu_util"], cond.values["cpu_saturation"]) == ("info", 60.0, 0.7)


# --- properties ------------------------------------------------------------------------------


@st.composite
def windows(draw: st.DrawFn) -> Window:
    """Small windows with host CPU metrics and affinities, NaN anywhere."""
    n = draw(st.integers(0, 3))
    per_node = draw(st.integers(1, 3))
    t = draw(st.integers(0, 30))
    g = n * per_node
    cells = st.one_of(st.sampled_from([np.nan, 0.0, 10.0, 100.0]), st.floats(0, 100))
    util = draw(hnp.arrays(np.float64, (g, t), elements=cells))
    busy_cells = st.one_of(st.sampled_from([np.nan, 0.0, 1.0, 16.0]), st.floats(0, 16))
    busy = draw(hnp.arrays(np.float64, (n, t), elements=busy_cells))
    cpu = draw(hnp.arrays(np.float64, (n, t), elements=cells))
    affinity = st.one_of(st.none(), st.lists(st.integers(0, 20), max_size=6).map(tuple))
    window = make_window(
        util,
        busy=busy if draw(st.booleans()) else None,
        cpu_util=cpu if draw(st.booleans()) else None,
        cpu_count=draw(st.sampled_from([np.nan, 1.0, 16.0, 16.0])),
        has_process=draw(st.one_of(st.just(np.ones((g, t), dtype=bool)), hnp.arrays(np.bool_, (g, t)))),
        processes=[
            [ProcessSeen(9, "u", "c", "p", None, T0, T0, cpu_affinity=draw(affinity))]
            if draw(st.booleans())
            else []
            for _ in range(g)
        ],
        gpus_per_node=per_node,
        nodes=n,
    )
    return window


NEAR = 1e-9  # a mean this close to its line may fall on either side, as sums are rounded


def reference(window: Window, smooth_s: float) -> dict[str, float] | None:
    """The same rule written plainly, bin by bin: {node: since} of the nodes starved now; None when
    a rolling mean lands on a line, where rounding decides."""
    w = max(1, round(smooth_s / window.step))
    nan_host = np.full((len(window.nodes), window.bins), np.nan)
    out = {}
    for n, node in enumerate(window.nodes):
        count = float(window.cpu_count[n])
        level, load = [], []
        for b in range(window.bins):
            gpus = [g for g in range(len(window.gpu_node)) if window.gpu_node[g] == n]
            active = [g for g in gpus if window.gpu_has_process[g, b]]
            levels = [
                window.gpu["util_gpu"][g, b] for g in active if np.isfinite(window.gpu["util_gpu"][g, b])
            ]
            allowed = count
            affinities = [[q.cpu_affinity for q in window.gpu_processes[g]] for g in active]
            if active and all(a and None not in a for a in affinities):
                cores = {c for a in affinities for aff in a if aff is not None for c in aff}
                if cores:
                    allowed = min(len(cores), count) if np.isfinite(count) else len(cores)
            busy = window.host.get("cpu_busy_cores", nan_host)[n, b]
            if not np.isfinite(busy):
                busy = window.host.get("cpu_util", nan_host)[n, b] / 100 * count
            level.append(sum(levels) / len(levels) if levels else np.nan)
            load.append(busy / allowed if np.isfinite(busy) and allowed > 0 else np.nan)
        since = None
        plain = []
        for b in range(window.bins):
            known = np.isfinite(level[b]) and np.isfinite(load[b])
            if known and (abs(level[b] - 40) < NEAR or abs(load[b] - 0.85) < NEAR):
                return None
            plain.append(bool(np.isfinite(level[b]) and level[b] <= 40 and load[b] >= 0.85))
        for b in range(window.bins):
            gpu_seen = [x for x in level[max(0, b - w + 1) : b + 1] if np.isfinite(x)]
            cpu_seen = [x for x in load[max(0, b - w + 1) : b + 1] if np.isfinite(x)]
            starved = False
            if np.isfinite(level[b]) and np.isfinite(load[b]):
                gpu, cpu = sum(gpu_seen) / len(gpu_seen), sum(cpu_seen) / len(cpu_seen)
                if abs(gpu - 40) < NEAR or abs(cpu - 0.85) < NEAR:
                    return None
                starved = gpu <= 40 and cpu >= 0.85
            if starved and since is None:  # a run starts: back over the plain bins just before it
                first = b
                while first > max(0, b - w + 1) and plain[first - 1]:
                    first -= 1
                since = window.start + first * window.step
            elif not starved:
                since = None
        if since is not None:
            out[node] = since
    return out


@settings(max_examples=300, deadline=None)
@given(window=windows(), smooth_s=st.sampled_from([0, 5, 20, 60]))
def test_any_window_matches_the_plain_rule_and_is_json_safe(window: Window, smooth_s: int) -> None:
    first = detect(window, smooth_s=smooth_s)
    assert detect(window, smooth_s=smooth_s) == first
    expected = reference(window, smooth_s)
    assume(expected is not None)
    assert {c.nodes[0]: c.since for c in first} == expected
    for cond in first:
        json.dumps(asdict(cond), allow_nan=False)
        assert window.start <= cond.since < window.end


# --- through the codec and the window builder ------------------------------------------------


def test_a_shipped_batch_reaches_the_detector_intact() -> None:
    # ten minutes of 1 Hz samples from a shipper: affinity, busy cores and utilisation travel
    # through Batch v1, the chunk codec and the window builder
    t0, n = 1_763_800_000.0, 600
    procs = [
        {
            "pid": 100 + g,
            "gpu_index": g,
            "user": "alice",
            "container": "train",
            "name": "python",
            "mem_used": 10 * 2**30,
            "cpu_affinity": list(range(16)),
            "first_seen": t0,
            "last_seen": t0 + n - 1,
        }
        for g in range(2)
    ]
    doc = batch_doc(t0=t0, n=n, util=[[12.0] * n, [12.0] * n], processes=procs)
    doc["host"]["metrics"]["cpu_busy_cores"] = [15.8] * n
    window = build_window("c1", [decode(encode(doc))], end=t0 + n, span_s=600, step=STEP)

    [cond] = detect(window)

    assert (cond.since, cond.users, cond.gpus) == (window.start, ["alice"], ["node-01/0", "node-01/1"])
    assert cond.summary == (
        "node-01: GPUs 12 % busy while 15.8 of 16 allowed CPU cores are saturated"
        " — the input pipeline is the bottleneck"
    )
