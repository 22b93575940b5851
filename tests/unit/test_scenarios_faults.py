"""Each fault injector puts into the data what its ground truth claims, where and when it claims."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.wire.batch import parse
from node_shipper.simulate import IDLE_MEM_MIB
from scenarios.faults import (
    POWER_BRAKE,
    THERMAL_SW,
    Fault,
    GpuLeak,
    GroundTruth,
    HostFill,
    MigNotebook,
    MigReconfigure,
    NetCollapse,
    Notebook,
    OneGpuWorks,
    OutOfStep,
    Overheat,
    PowerBrake,
    RanksLost,
    Silent,
    Starved,
    WrongNuma,
    Xid,
    Zombie,
)
from scenarios.fleet import (
    GIB,
    MIB,
    MIG_2X3G,
    MIG_3G_2G_2X1G,
    MIG_7X1G,
    Delivery,
    Fleet,
    Job,
    Node,
    deliveries,
    planned,
)
from scenarios.run import BOUND_RUNS, EVERY_S
from scenarios.suite import suite

T = 1200.0  # every fault below runs from 300 s to 900 s of a 20-minute fleet


def train_fleet(count: int = 4, swing: float = 0.0) -> Fleet:
    nodes = tuple(Node(f"t-{i + 1:02d}", "train", gpus=4) for i in range(count))
    job = Job(
        "train",
        "pre",
        tuple((n.name, g, None) for n in nodes for g in range(4)),
        -3600,
        1e9,
        "alice",
        61_440,
        swing=swing,
    )
    return Fleet("f", "f", 3, T, nodes, (job,))


def idle_fleet(count: int = 1, gpus: int = 4) -> Fleet:
    return Fleet(
        "f", "f", 3, T, tuple(Node(f"d-{i + 1:02d}", f"d-{i + 1:02d}", gpus=gpus) for i in range(count))
    )


def mig_fleet() -> Fleet:
    node = Node("m-01", "mig", gpus=2, mig={0: MIG_7X1G, 1: MIG_3G_2G_2X1G})
    jobs = tuple(
        Job("inference", f"s{g}", tuple(("m-01", g, s.gi_id) for s in layout), -3600, 1e9, "carol", 7_000)
        for g, layout in node.mig.items()
    )
    return Fleet("f", "f", 3, T, (node,), jobs)


def run(fleet: Fleet, *faults: Fault) -> tuple[Fleet, list[Delivery], list[GroundTruth]]:
    planned_fleet = planned(fleet, faults)
    ds = list(deliveries(planned_fleet, faults))
    truths = [t for f in faults for t in f.truth(planned_fleet, "s")]
    return planned_fleet, ds, truths


def gpu_series(
    fleet: Fleet, ds: list[Delivery], node: str, gpu: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    ts: list[float] = []
    vs: list[Any] = []
    for d in ds:
        if d.node == node:
            ts += d.doc["timestamps"]
            vs += d.doc["gpus"][gpu]["metrics"][metric]
    return np.array(ts) - fleet.start, np.array([np.nan if v is None else v for v in vs], dtype=float)


def host_series(fleet: Fleet, ds: list[Delivery], node: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    ts: list[float] = []
    vs: list[Any] = []
    for d in ds:
        if d.node == node:
            ts += d.doc["timestamps"]
            vs += d.doc["host"]["metrics"][metric]
    return np.array(ts) - fleet.start, np.array([np.nan if v is None else v for v in vs], dtype=float)


def processes(
    fleet: Fleet, ds: list[Delivery], node: str, gpu: int, lo: float, hi: float
) -> list[dict[str, Any]]:
    """The processes listed on that GPU as seen at some time in [lo, hi)."""
    return [
        p
        for d in ds
        if d.node == node
        for p in d.doc.get("processes", [])
        if p["gpu_index"] == gpu and p["last_seen"] - fleet.start >= lo and p["first_seen"] - fleet.start < hi
    ]


def inside(t: np.ndarray) -> np.ndarray:
    return (t >= 330) & (t < 890)


def test_ranks_lost_leave_their_nodes_idle_and_released_while_peers_compute() -> None:
    fleet, ds, truths = run(train_fleet(), RanksLost(("t-02",), 300.0, 900.0))
    t, lost = gpu_series(fleet, ds, "t-02", 1, "util_gpu")
    _, mem = gpu_series(fleet, ds, "t-02", 1, "mem_used")
    _, peer = gpu_series(fleet, ds, "t-03", 1, "util_gpu")
    assert lost[inside(t)].max() <= 1 and peer[inside(t)].mean() > 85
    assert set(mem[inside(t)]) == {IDLE_MEM_MIB * MIB}
    assert processes(fleet, ds, "t-02", 1, 335, 885) == []
    assert lost[(t > 960) & (t < 1150)].mean() > 85  # rejoined after warming up
    assert [(g.rule, g.subject, g.start - fleet.start, g.end - fleet.start) for g in truths] == [
        ("imbalance", {"node": "t-02"}, 300.0, 900.0)
    ]


def test_out_of_step_runs_flat_while_the_group_swings() -> None:
    fleet, ds, _ = run(train_fleet(swing=27.5), OutOfStep("t-01", 300.0, 900.0))
    t, flat = gpu_series(fleet, ds, "t-01", 0, "util_gpu")
    _, peer = gpu_series(fleet, ds, "t-02", 0, "util_gpu")
    busy = inside(t) & (peer > 20)
    assert np.all(np.abs(flat[busy] - 60) <= 3)
    assert peer[inside(t)].std() > 10


def test_a_notebook_holds_memory_with_a_process_at_zero_percent() -> None:
    fleet, ds, truths = run(idle_fleet(), Notebook("d-01", 2, 300.0, 900.0))
    t, util = gpu_series(fleet, ds, "d-01", 2, "util_gpu")
    _, mem = gpu_series(fleet, ds, "d-01", 2, "mem_used")
    assert util[inside(t)].max() <= 1
    assert mem[inside(t)].min() > 21 * GIB
    assert {p["name"] for p in processes(fleet, ds, "d-01", 2, 300, 900)} == {"jupyter"}
    assert truths[0].subject == {"node": "d-01", "gpu": 2}


def test_a_zombie_holds_memory_with_no_process() -> None:
    job = Job("finetune", "ft", (("d-01", 1, None),), -600, 1e9, "dave", 36_000)
    fleet, ds, _ = run(replace_jobs(idle_fleet(), job), Zombie("d-01", 1, 300.0, 900.0))
    t, util = gpu_series(fleet, ds, "d-01", 1, "util_gpu")
    _, mem = gpu_series(fleet, ds, "d-01", 1, "mem_used")
    assert util[t < 290].mean() > 20  # the job ran until the fault
    assert util[inside(t)].max() <= 1
    assert mem[inside(t)].min() > 36 * GIB
    assert processes(fleet, ds, "d-01", 1, 305, 895) == []
    assert set(mem[t > 905]) == {IDLE_MEM_MIB * MIB}


def test_starved_gpus_sit_low_while_the_pinned_cpus_are_saturated() -> None:
    fleet, ds, _ = run(idle_fleet(), Starved("d-01", (0, 1, 2, 3), 300.0, 900.0, cpus=32))
    t, util = gpu_series(fleet, ds, "d-01", 3, "util_gpu")
    _, busy = host_series(fleet, ds, "d-01", "cpu_busy_cores")
    assert 10 < util[inside(t)].mean() < 30
    assert np.nanmin(busy[inside(t)]) >= 0.9 * 32
    procs = processes(fleet, ds, "d-01", 0, 300, 900) + processes(fleet, ds, "d-01", 3, 300, 900)
    allowed = {c for p in procs for c in p["cpu_affinity"]}
    assert len(allowed) == 32
    assert {tuple(p["cpu_numa_nodes"]) for p in procs} == {(0, 1)}


def test_a_gpu_leak_climbs_in_a_straight_line_to_full_then_ooms() -> None:
    job = Job("inference", "srv", (("d-01", 1, None),), -3600, 1e9, "carol", 30_000)
    fleet, ds, truths = run(replace_jobs(idle_fleet(), job), GpuLeak("d-01", 1, 300.0, 900.0))
    t, mem = gpu_series(fleet, ds, "d-01", 1, "mem_used")
    total = fleet.node("d-01").hw.gpu_mem_mib * MIB
    span = inside(t)
    r = np.corrcoef(t[span], mem[span])[0, 1]
    assert r > 0.999
    assert mem[(t > 880) & (t < 900)].min() > 0.95 * total
    assert mem[(t > 905) & (t < 955)].max() == IDLE_MEM_MIB * MIB  # the OOM: gone for a minute
    assert truths[0].allow_s == 0.0  # full 600 s after it starts: within the 900 s horizon at once


def test_host_memory_fills_to_its_ratio() -> None:
    fleet, ds, _ = run(train_fleet(3), HostFill("t-02", 300.0, 700.0, 900.0))
    t, used = host_series(fleet, ds, "t-02", "mem_used")
    total = fleet.node("t-02").hw.host_mem_gib * GIB
    assert used[t < 290].max() < 0.2 * total
    assert used[(t > 705) & (t < 890)].min() > 0.96 * total
    assert used[t > 910].max() < 0.2 * total


def test_overheating_sets_thermal_bits_at_the_slowdown_temperature_while_busy() -> None:
    fleet, ds, _ = run(train_fleet(3), Overheat("t-02", 1, 300.0, 900.0))
    t, reasons = gpu_series(fleet, ds, "t-02", 1, "throttle_reasons")
    _, temp = gpu_series(fleet, ds, "t-02", 1, "temp_c")
    _, util = gpu_series(fleet, ds, "t-02", 1, "util_gpu")
    bits = reasons.astype(int)
    assert np.all(bits[inside(t)] & THERMAL_SW)
    assert not np.any(bits[t < 290] & THERMAL_SW)
    assert temp[inside(t)].min() >= 86
    assert util[inside(t)].mean() > 85


def test_a_power_brake_sets_its_bit_and_pins_the_clock_low() -> None:
    fleet, ds, _ = run(train_fleet(3), PowerBrake("t-03", 0, 300.0, 900.0))
    t, reasons = gpu_series(fleet, ds, "t-03", 0, "throttle_reasons")
    _, clock = gpu_series(fleet, ds, "t-03", 0, "sm_clock_mhz")
    assert np.all(reasons[inside(t)].astype(int) & POWER_BRAKE)
    assert not np.any(reasons[t < 290].astype(int) & POWER_BRAKE)
    assert clock[inside(t)].max() < 1000


def test_wrong_numa_processes_exclude_their_gpus_numa_node() -> None:
    fleet, ds, truths = run(idle_fleet(), WrongNuma("d-01", (2, 3), 300.0, 900.0))
    doc = next(d.doc for d in ds if d.node == "d-01" and d.doc["timestamps"][0] - fleet.start > 400)
    numa = {g["index"]: g["numa_node"] for g in doc["gpus"]}
    procs = doc["processes"]
    assert sorted(p["gpu_index"] for p in procs) == [2, 3]
    for p in procs:
        assert numa[p["gpu_index"]] == 1
        assert p["cpu_numa_nodes"] == [0]
        assert max(p["cpu_affinity"]) < 224 and all(
            c % 112 < 56 for c in p["cpu_affinity"]
        )  # socket 0's CPUs
    _, util = gpu_series(fleet, ds, "d-01", 2, "util_gpu")
    assert util[-300:].mean() > 0 and [t.subject for t in truths] == [
        {"node": "d-01", "gpu": 2},
        {"node": "d-01", "gpu": 3},
    ]


def test_network_collapse_cuts_traffic_of_those_nodes_only() -> None:
    fleet, ds, _ = run(train_fleet(), NetCollapse(("t-02",), 300.0, 900.0))
    t, cut = host_series(fleet, ds, "t-02", "net_rx_bps")
    _, peer = host_series(fleet, ds, "t-03", "net_rx_bps")
    _, util = gpu_series(fleet, ds, "t-02", 0, "util_gpu")
    assert cut[inside(t)].mean() < 0.02 * peer[inside(t)].mean()
    assert cut[t < 290].mean() > 0.8 * peer[t < 290].mean()
    assert util[inside(t)].mean() > 85


def test_a_mig_notebook_holds_its_instance_at_zero_sm() -> None:
    fleet, ds, truths = run(mig_fleet(), MigNotebook("m-01", 0, 9, 300.0, 900.0))
    uuid = truths[0].subject["mig"]
    doc = next(d.doc for d in ds if d.doc["timestamps"][0] - fleet.start > 400)
    inst = next(m for m in doc["mig"] if m["uuid"] == uuid)
    assert (inst["gpu_index"], inst["gi_id"]) == (0, 9)
    assert set(inst["metrics"]["util_sm"]) == {0}
    assert [p["name"] for p in doc["processes"] if p["mig_uuid"] == uuid] == ["jupyter"]


def test_a_mig_reconfiguration_changes_the_instances_and_says_so() -> None:
    fleet, ds, truths = run(mig_fleet(), MigReconfigure("m-01", 1, 600.0, MIG_2X3G))

    def layout(doc: dict[str, Any]) -> list[str]:
        return sorted(m["profile"] for m in doc.get("mig", []) if m["gpu_index"] == 1)

    docs = [d.doc for d in ds]
    before = next(d for d in docs if d["timestamps"][-1] - fleet.start < 500)
    after = next(d for d in docs if d["timestamps"][0] - fleet.start > 700)
    assert layout(before) == ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]
    assert layout(after) == ["3g.40gb", "3g.40gb"]
    events = [e for d in docs for e in d.get("events", [])]
    assert [(int(e["ts"] - fleet.start), e["message"]) for e in events] == [
        (600, "MIG instances now: none"),
        (608, "MIG instances now: 3g.40gb, 3g.40gb"),
    ]
    assert (truths[0].start - fleet.start, truths[0].end - fleet.start) == (600.0, 660.0)


def test_a_crashed_node_sends_nothing_and_a_cut_off_one_sends_late() -> None:
    fleet, ds, _ = run(
        idle_fleet(2), Silent("d-01", 300.0, 900.0), Silent("d-02", 300.0, 900.0, spooled=True)
    )
    crashed = [d for d in ds if d.node == "d-01"]
    spooled = [d for d in ds if d.node == "d-02"]
    assert not any(
        d.doc["timestamps"][-1] - fleet.start >= 300 and d.doc["timestamps"][0] - fleet.start < 900
        for d in crashed
    )
    held = [
        d
        for d in spooled
        if d.doc["timestamps"][-1] - fleet.start >= 300 and d.doc["timestamps"][0] - fleet.start < 900
    ]
    assert held and all(d.at - fleet.start >= 900 for d in held)
    assert not any(300 <= d.at - fleet.start < 900 for d in spooled + crashed)


def test_one_gpu_works_while_the_jobs_others_hold_and_idle() -> None:
    fleet, ds, truths = run(idle_fleet(), OneGpuWorks("d-01", (0, 1, 2), 300.0, 900.0))
    t, busy = gpu_series(fleet, ds, "d-01", 0, "util_gpu")
    _, idle = gpu_series(fleet, ds, "d-01", 2, "util_gpu")
    assert busy[inside(t)].mean() > 85 and idle[inside(t)].max() <= 1
    holders = {p["container"] for g in (0, 1, 2) for p in processes(fleet, ds, "d-01", g, 400, 800)}
    assert len(holders) == 1
    assert [(t.rule, t.subject) for t in truths] == [("gpu_imbalance", {"node": "d-01"})]


@pytest.mark.parametrize(("code", "after"), [(48, 1.0), (79, None)])
def test_an_xid_event_and_what_it_leaves(code: int, after: float | None) -> None:
    job = Job("inference", "srv", (("d-01", 1, None),), -3600, 1e9, "carol", 30_000)
    fleet, ds, _ = run(replace_jobs(idle_fleet(), job), Xid("d-01", 1, 600.0, code))
    events = [e for d in ds for e in d.doc.get("events", [])]
    assert [(e["type"], e["gpu_index"], e["code"], round(e["ts"] - fleet.start)) for e in events] == [
        ("xid", 1, code, 600)
    ]
    t, dbe = gpu_series(fleet, ds, "d-01", 1, "ecc_dbe_volatile")
    late = dbe[t > 601]
    if after is None:
        assert np.isnan(late).all() and processes(fleet, ds, "d-01", 1, 605, 1200) == []
    else:
        assert set(late) == {after} and set(dbe[t < 599]) == {0.0}


def test_faulted_documents_stay_valid_batch_v1() -> None:
    faults: tuple[Fault, ...] = (
        Overheat("t-02", 1, 300.0, 900.0),
        PowerBrake("t-03", 0, 300.0, 900.0),
        HostFill("t-01", 300.0, 700.0, 900.0),
        Xid("t-01", 2, 500.0, 79),
        Silent("t-04", 300.0, 900.0, spooled=True),
    )
    _, ds, _ = run(train_fleet(), *faults)
    for d in ds:
        parse(json.dumps(d.doc, allow_nan=False).encode(), now=d.at)


def test_every_fault_of_the_suites_outlasts_its_rules_for_s() -> None:
    for quick in (True, False):
        for scenario in suite(quick=quick):
            fleet = planned(scenario.fleet, scenario.faults)
            names = {n.name for n in fleet.nodes}
            for f in scenario.faults:
                for t in f.truth(fleet, scenario.name):
                    for_s = float(params_for(t.rule)["for_s"]) if t.rule in CATALOGUE else 0.0
                    assert t.end - t.start > for_s + BOUND_RUNS * EVERY_S or t.rule in (
                        "mig_layout",
                        "hardware_errors",
                    )
                    assert t.subject["node"] in names
                    assert fleet.start + 600 <= t.start < t.end <= fleet.start + fleet.duration_s


def replace_jobs(fleet: Fleet, *jobs: Job) -> Fleet:
    return Fleet(fleet.name, fleet.cluster, fleet.seed, fleet.duration_s, fleet.nodes, jobs)
