"""Golden tests of the inside-a-node GPU imbalance detector: hand-built windows, exact conditions."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpulse.detect.base import Condition, ProcessSeen, Window
from gpulse.detect.gpu_imbalance import ACTION, GpuImbalanceDetector
from gpulse.finding import Evidence, EvidenceRow

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120  # 10 minutes of 5 s bins
GIB = 1 << 30
DETECTOR = GpuImbalanceDetector()
ALICE_CONTAINER = "3f2a1b9c8d7e" + "0123456789abcdef" * 3 + "0123"  # a 64-hex container id


def at(bin_index: int) -> float:
    return T0 + STEP * bin_index


def make_window(util: np.ndarray, processes: list[list[ProcessSeen]], node: str = "node-06") -> Window:
    """One node whose GPU i (row i of util, (GPUs × bins)) has device index i."""
    util = np.atleast_2d(np.asarray(util, dtype=float))
    g, t = util.shape
    return Window(
        cluster="demo",
        start=T0,
        step=STEP,
        end=T0 + STEP * t,
        nodes=[node],
        node_groups=[None],
        node_last_seen=np.array([T0 + STEP * t]),
        host={},
        cpu_count=np.array([128.0]),
        host_mem_total=np.array([2.0 * 2**40]),
        gpu_node=np.zeros(g, dtype=int),
        gpu_index=np.arange(g),
        gpu={"util_gpu": util, "mem_used": np.full((g, t), 20.0 * GIB)},
        gpu_mem_total=np.full(g, 80.0 * GIB),
        gpu_has_process=np.array([[bool(p)] * t for p in processes], dtype=bool).reshape(g, t),
        gpu_processes=processes,
    )


def detect(window: Window, **overrides: object) -> list[Condition]:
    return DETECTOR.detect(window, {**DETECTOR.defaults, **overrides})


def proc(
    pid: int, user: str | None, container: str | None, first: int = 0, last: int = BINS - 1
) -> ProcessSeen:
    return ProcessSeen(pid, user, container, "python", 2 * GIB, at(first), at(last) + 4.0)


def on(gpus: int, *placed: tuple[range | list[int], ProcessSeen]) -> list[list[ProcessSeen]]:
    """Per-GPU process lists: each process put on each GPU of its range."""
    out: list[list[ProcessSeen]] = [[] for _ in range(gpus)]
    for where, q in placed:
        for g in where:
            out[g].append(q)
    return out


# --- it fires --------------------------------------------------------------------------------


def test_a_dataparallel_job_computes_on_one_of_its_eight_gpus() -> None:
    util = np.zeros((8, BINS))
    util[0, 20:] = 97.0  # alice's job started at bin 20 and only ever computes on cuda:0
    alice = proc(3001, "alice", ALICE_CONTAINER, first=20)
    window = make_window(util, on(8, (range(8), alice)))

    idle_row: list[float | None] = [0.0] * 30
    busy_row: list[float | None] = [*[0.0] * 5, *[97.0] * 25]
    assert detect(window) == [
        Condition(
            rule="gpu_imbalance",
            subject={"cluster": "demo", "node": "node-06", "container": ALICE_CONTAINER},
            since=at(20),
            severity="warning",
            summary=(
                "node-06: 1 of 8 GPUs of alice's job (container 3f2a1b9c8d7e) busy at 97 %, 7 idle at 0 %"
            ),
            action=ACTION,
            nodes=["node-06"],
            gpus=[f"node-06/{i}" for i in range(8)],
            users=["alice"],
            containers=[ALICE_CONTAINER],
            values={
                "gpus": 8.0,
                "busy_gpus": 1.0,
                "idle_gpus": 7.0,
                "busy_level": 97.0,
                "idle_level": 0.0,
                "busy_util": 50.0,
                "idle_util": 10.0,
                "min_idle_gpus": 2.0,
                "duration_s": 500.0,
            },
            evidence=Evidence(
                title=(
                    "node-06: GPU utilisation per GPU, last 10m; "
                    "flagged: the idle GPUs of alice's job (container 3f2a1b9c8d7e)"
                ),
                unit="%",
                rows=[
                    EvidenceRow("node-06/0", busy_row, 97.0, False, "gpu.util_gpu", "node-06/0", "mean"),
                    *[
                        EvidenceRow(
                            f"node-06/{i}", idle_row, 0.0, True, "gpu.util_gpu", f"node-06/{i}", "mean"
                        )
                        for i in range(1, 8)
                    ],
                ],
                reference=10.0,
                reference_label="idle threshold",
            ),
        )
    ]


def test_without_containers_a_job_is_its_users_processes() -> None:
    util = np.zeros((8, BINS))
    util[4] = 90.0
    bob = proc(4100, "bob", None)
    carol = proc(4200, "carol", None)
    util[0] = 85.0  # carol's one-GPU job on GPU 0 is not bob's: it counts for neither
    window = make_window(util, on(8, (range(4, 8), bob), ([0], carol)))

    [cond] = detect(window)

    assert cond.subject == {"cluster": "demo", "node": "node-06", "user": "bob"}
    assert cond.summary == "node-06: 1 of 4 GPUs of bob's job busy at 90 %, 3 idle at 0 %"
    assert (cond.users, cond.containers, cond.gpus) == (["bob"], [], [f"node-06/{i}" for i in range(4, 8)])
    assert [r.flagged for r in cond.evidence.rows] == [False] * 5 + [True] * 3  # type: ignore[union-attr]


def test_two_jobs_on_one_node_are_two_conditions() -> None:
    util = np.zeros((8, BINS))
    util[0] = 99.0
    util[4] = 95.0
    alice = proc(3001, "alice", ALICE_CONTAINER)
    dave = proc(5001, "dave", "train-pod-7")
    conds = detect(make_window(util, on(8, (range(4), alice), (range(4, 8), dave))))
    assert [(c.subject, c.summary) for c in conds] == [
        (
            {"cluster": "demo", "node": "node-06", "container": ALICE_CONTAINER},
            "node-06: 1 of 4 GPUs of alice's job (container 3f2a1b9c8d7e) busy at 99 %, 3 idle at 0 %",
        ),
        (
            {"cluster": "demo", "node": "node-06", "container": "train-pod-7"},
            "node-06: 1 of 4 GPUs of dave's job (container train-pod-7) busy at 95 %, 3 idle at 0 %",
        ),
    ]


def test_one_process_per_gpu_where_the_ranks_stall_is_one_job() -> None:
    # torchrun started 4 ranks in one container; ranks 1-3 sit at 0 % while rank 0 computes
    util = np.zeros((4, BINS))
    util[0] = 88.0
    ranks = [(range(i, i + 1), proc(7000 + i, "erin", "ddp-pod", first=0)) for i in range(4)]
    [cond] = detect(make_window(util, on(4, *ranks)))
    assert (
        cond.summary == "node-06: 1 of 4 GPUs of erin's job (container ddp-pod) busy at 88 %, 3 idle at 0 %"
    )


def test_a_container_shared_by_users_and_one_with_no_user() -> None:
    util = np.zeros((4, BINS))
    util[0] = 70.0
    window = make_window(util, on(4, ([0, 1], proc(1, "ann", "lab")), ([2, 3], proc(2, "ben", "lab"))))
    [cond] = detect(window)
    assert (
        cond.summary
        == "node-06: 1 of 4 GPUs of the job of ann, ben (container lab) busy at 70 %, 3 idle at 0 %"
    )
    [anon] = detect(make_window(util, on(4, (range(4), proc(3, None, "lab")))))
    assert anon.summary == "node-06: 1 of 4 GPUs of the job in container lab busy at 70 %, 3 idle at 0 %"


def test_min_idle_gpus_one_catches_a_two_gpu_job() -> None:
    util = np.zeros((2, BINS))
    util[1] = 93.0
    window = make_window(util, on(2, (range(2), proc(9, "fay", None))))
    assert detect(window) == []
    [cond] = detect(window, min_idle_gpus=1)
    assert cond.summary == "node-06: 1 of 2 GPUs of fay's job busy at 93 %, 1 idle at 0 %"


def test_the_busy_gpu_is_judged_by_its_mean_over_the_run() -> None:
    # GPU 0 computes in phases (100 %, then 20 % while rank 0 writes a checkpoint): 60 % on average,
    # below busy_util in every other bin. Judged bin by bin the run would restart at each dip.
    util = np.zeros((4, BINS))
    util[0] = np.tile([100.0, 20.0], BINS // 2)
    [cond] = detect(make_window(util, on(4, (range(4), proc(1, "alice", None)))))
    assert cond.since == T0
    assert cond.summary == "node-06: 1 of 4 GPUs of alice's job busy at 60 %, 3 idle at 0 %"
    assert (cond.values["busy_level"], cond.values["duration_s"]) == (60.0, 600.0)


def test_a_job_uneven_since_it_began_loading() -> None:
    # alice's job holds 8 GPUs from bin 20 and loads weights on all of them (5 %) until bin 40,
    # then computes on cuda:0 only: its 7 other GPUs have been idle, and held, since bin 20
    util = np.zeros((8, BINS))
    util[:, 20:40] = 5.0
    util[0, 40:] = 97.0
    [cond] = detect(make_window(util, on(8, (range(8), proc(3001, "alice", ALICE_CONTAINER, first=20)))))
    assert cond.since == at(20)
    assert cond.values["busy_level"] == 78.6  # (20 × 5 + 80 × 97) / 100: the mean over the run
    assert (cond.values["idle_gpus"], cond.values["idle_level"]) == (7.0, 1.0)


def test_only_gpus_idle_through_the_whole_run_are_idle() -> None:
    # GPUs 1 and 2 idle all window; GPU 3 half-busy until bin 80, idle since
    util = np.zeros((4, BINS))
    util[0] = 95.0
    util[3, :80] = 30.0
    window = make_window(util, on(4, (range(4), proc(1, "alice", None))))
    [cond] = detect(window)
    assert (cond.since, cond.values["idle_gpus"]) == (T0, 2.0)
    assert cond.summary == "node-06: 1 of 4 GPUs of alice's job busy at 95 %, 2 idle at 0 %"
    assert [r.flagged for r in cond.evidence.rows] == [False, True, True, False]  # type: ignore[union-attr]
    # three idle GPUs wanted: the run starts where the third one's idle run does
    [cond3] = detect(window, min_idle_gpus=3)
    assert (cond3.since, cond3.values["idle_gpus"]) == (at(80), 3.0)
    assert cond3.summary == "node-06: 1 of 4 GPUs of alice's job busy at 95 %, 3 idle at 0 %"


def test_a_busy_gpu_that_stops_counts_until_its_mean_drops() -> None:
    # the limit of judging by the mean: GPU 0 stopped at bin 70 and the job's GPUs are all idle now,
    # yet over the run (the whole window) GPU 0 is still busy on average, 97 × 70 / 120 = 57 %
    util = np.zeros((4, BINS))
    util[0, :70] = 97.0
    [cond] = detect(make_window(util, on(4, (range(4), proc(1, "alice", None)))))
    assert cond.summary == "node-06: 1 of 4 GPUs of alice's job busy at 57 %, 3 idle at 0 %"
    util[0, 60:] = 0.0  # stopped at bin 60: 48.5 % on average, no longer busy
    assert detect(make_window(util, on(4, (range(4), proc(1, "alice", None))))) == []


# --- it stays quiet --------------------------------------------------------------------------


def test_a_serving_container_whose_replicas_burst_on_their_own() -> None:
    # carol's serving container, one replica per GPU: each serves a 20 s burst at 80 % every two
    # minutes, the replicas 15 s apart; idle, a GPU reads 1 % now and then. In every bin one or two
    # GPUs are busy and six or more idle, but not the same ones: no GPU stays idle through a run
    # that a busy one fills (the rule counted per bin fired here: 8.3 false alarms per node-day).
    bins = np.arange(BINS + 24)  # the pattern repeats every 24 bins: evaluate at each of its phases
    util = np.where(bins % 7 == 3, 1.0, 0.0) * np.ones((8, 1))
    for g in range(8):
        util[g, (bins - 3 * g) % 24 < 4] = 80.0
    busy_per_bin, idle_per_bin = (util >= 50).sum(axis=0), (util <= 10).sum(axis=0)
    assert busy_per_bin.min() >= 1 and idle_per_bin.min() >= 2
    replicas = [([g], proc(8000 + g, "carol", "serve-pool")) for g in range(8)]
    for phase in range(24):
        window = make_window(util[:, phase : phase + BINS], on(8, *replicas), node="serve-03")
        assert detect(window) == [], phase


def test_all_gpus_of_the_job_busy_is_fine() -> None:
    util = np.full((8, BINS), 95.0)
    assert detect(make_window(util, on(8, (range(8), proc(1, "alice", ALICE_CONTAINER))))) == []


def test_idle_gpus_of_other_users_do_not_count() -> None:
    # a shared node: alice computes on GPU 0, bob holds GPUs 1-3 idle (his own problem: idle_held),
    # GPUs 4-7 are free
    util = np.zeros((8, BINS))
    util[0] = 97.0
    window = make_window(
        util, on(8, ([0], proc(1, "alice", "a-pod")), (range(1, 4), proc(2, "bob", "b-pod")))
    )
    assert detect(window) == []


def test_a_node_with_one_gpu_never_fires() -> None:
    util = np.full((1, BINS), 97.0)
    assert detect(make_window(util, on(1, ([0], proc(1, "alice", None)))), min_idle_gpus=1) == []


def test_gpus_between_busy_and_idle_are_neither() -> None:
    util = np.full((8, BINS), 30.0)  # a job busy on one GPU and only half-fed on six
    util[0], util[7] = 97.0, 0.0
    assert detect(make_window(util, on(8, (range(8), proc(1, "alice", None))))) == []


def test_gpus_the_job_released_no_longer_count() -> None:
    # four ranks; ranks 1-3 exited at bin 50 (their GPUs now free and idle), rank 0 still computes
    util = np.zeros((4, BINS))
    util[0] = 90.0
    ranks = [([0], proc(7000, "erin", "ddp-pod"))]
    ranks += [([i], proc(7000 + i, "erin", "ddp-pod", last=50)) for i in range(1, 4)]
    assert detect(make_window(util, on(4, *ranks))) == []


def test_a_gpu_without_data_in_the_last_bin_is_not_idle() -> None:
    util = np.zeros((3, BINS))
    util[0] = 97.0
    util[1:, -1] = np.nan
    assert detect(make_window(util, on(3, (range(3), proc(1, "alice", None))))) == []


def test_processes_with_no_owner_belong_to_no_job() -> None:
    util = np.zeros((4, BINS))
    util[0] = 97.0
    assert detect(make_window(util, on(4, (range(4), proc(1, None, None))))) == []


def test_empty_and_all_nan_windows() -> None:
    nan = np.full((4, BINS), np.nan)
    assert detect(make_window(nan, on(4, (range(4), proc(1, "alice", None))))) == []
    assert detect(make_window(np.empty((4, 0)), on(4, (range(4), proc(1, "alice", None))))) == []
    assert detect(make_window(np.empty((0, BINS)), [])) == []


# --- parameters ------------------------------------------------------------------------------


def test_thresholds_are_parameters() -> None:
    util = np.full((4, BINS), 15.0)
    util[0] = 45.0
    window = make_window(util, on(4, (range(4), proc(1, "alice", None))))
    assert detect(window) == []
    [cond] = detect(window, busy_util=40, idle_util=20, severity="info")
    assert (cond.severity, cond.values["busy_util"], cond.values["idle_util"]) == ("info", 40.0, 20.0)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"busy_util": 101}, "busy_util"),
        ({"idle_util": 60}, "idle_util"),  # not below busy_util
        ({"min_idle_gpus": 0}, "min_idle_gpus"),
        ({"min_idle_gpus": 1.5}, "min_idle_gpus"),
        ({"severity": "page"}, "severity"),
        ({"idle_pct": 3}, "idle_pct"),
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DETECTOR.validate({**DETECTOR.defaults, **overrides})


# --- properties ------------------------------------------------------------------------------


@st.composite
def shared_nodes(draw: st.DrawFn) -> Window:
    """One node of 1-8 GPUs, processes of a few owners coming and going (or there all along), each
    GPU's utilisation mostly idle, mostly busy or anywhere, NaN too."""
    g = draw(st.integers(1, 8))
    t = draw(st.integers(0, 40))
    anywhere = st.one_of(st.just(np.nan), st.floats(0, 100), st.sampled_from([0.0, 10.0, 50.0, 100.0]))
    idle = st.sampled_from([0.0, 0.0, 1.0, 10.0, 11.0, np.nan])
    busy = st.one_of(st.sampled_from([100.0, 90.0, 50.0, 20.0, 0.0]), st.floats(0, 100))
    rows = [
        draw(hnp.arrays(np.float64, (t,), elements=draw(st.sampled_from([anywhere, idle, busy]))))
        for _ in range(g)
    ]
    util = np.array(rows).reshape(g, t)
    owners = st.sampled_from([(None, None), ("alice", None), ("bob", "b-pod"), (None, "c-pod")])
    span = st.one_of(st.just([-5, t + 5]), st.lists(st.integers(-5, t + 5), min_size=2, max_size=2))
    placed = []
    for pid in range(draw(st.integers(0, 6))):
        user, container = draw(owners)
        first, last = sorted(draw(span))
        gpus = draw(st.sets(st.integers(0, g - 1), min_size=1))
        placed.append((sorted(gpus), proc(pid, user, container, first, last)))
    return make_window(util, on(g, *placed))


NEAR = 1e-9  # a mean this close to busy_util may fall on either side, as sums are rounded


def reference(window: Window, min_idle: int) -> dict[str, float] | None:
    """The rule written plainly, GPU by GPU and bin by bin: {job: since} of the uneven jobs now;
    None when a busy mean lands on busy_util, where rounding decides."""
    jobs: dict[tuple[str, str], dict[int, list[ProcessSeen]]] = {}
    for g, procs in enumerate(window.gpu_processes):
        for q in procs:
            key = ("container", q.container) if q.container else ("user", q.user) if q.user else None
            if key is not None:
                jobs.setdefault(key, {}).setdefault(g, []).append(q)
    util, t = window.gpu["util_gpu"], window.bins
    out: dict[str, float] = {}
    for (kind, ident), by_gpu in jobs.items():

        def held(g: int, b: int, procs: list[ProcessSeen]) -> bool:
            return any(
                (q.first_seen - window.start) // window.step
                <= b
                <= (q.last_seen - window.start) // window.step
                for q in procs
            )

        idle_from = {}
        for g, procs in by_gpu.items():
            b = t - 1
            while b >= 0 and held(g, b, procs) and util[g, b] <= 10.0:  # NaN: not idle
                b -= 1
            if b < t - 1:
                idle_from[g] = b + 1
        if len(by_gpu) < min_idle + 1 or len(idle_from) < min_idle:
            continue
        start = sorted(idle_from.values())[min_idle - 1]
        busy = False
        for g, procs in by_gpu.items():
            seen = [util[g, b] for b in range(start, t) if held(g, b, procs) and np.isfinite(util[g, b])]
            if held(g, t - 1, procs) and seen:
                mean = sum(seen) / len(seen)
                if abs(mean - 50.0) < NEAR:
                    return None
                busy = busy or mean >= 50.0
        if busy:
            out[f"{kind}={ident}"] = window.start + start * window.step
    return out


@settings(max_examples=150, deadline=None)
@given(window=shared_nodes(), min_idle=st.integers(1, 3))
def test_any_node_gives_pure_json_safe_conditions(window: Window, min_idle: int) -> None:
    first = detect(window, min_idle_gpus=min_idle)
    assert detect(window, min_idle_gpus=min_idle) == first
    expected = reference(window, min_idle)
    assume(expected is not None)
    kinds = ("container", "user")
    assert {f"{k}={c.subject[k]}": c.since for c in first for k in kinds if k in c.subject} == expected
    for cond in first:
        json.dumps(asdict(cond), allow_nan=False)
        assert window.start <= cond.since < window.end
        assert cond.values["idle_gpus"] >= min_idle and cond.values["busy_gpus"] >= 1
    assert len({json.dumps(c.subject) for c in first}) == len(first)
