"""The simulator: deterministic, valid Batch v1, honest in shape, the demo's faults where and when due."""

from __future__ import annotations

import json
import statistics
from functools import cache
from typing import Any

import pytest

from gpulse.wire.batch import parse
from node_shipper.simulate import (
    ALICE_CONTAINER,
    BOB_CONTAINER,
    IDLE_MEM_MIB,
    Scenario,
    SimulatedNode,
    simulate_batches,
)

T0 = 1_770_000_000.0
MIB = 1 << 20
GIB = 1 << 30


@cache
def _run(
    name: str, duration_s: float = 200.0, batch_s: float = 10.0, seed: int = 7
) -> tuple[dict[str, Any], ...]:
    return tuple(simulate_batches(Scenario.named(name, seed=seed), T0, duration_s, batch_s))


def _series(docs: tuple[dict[str, Any], ...], node: str, gpu: int, metric: str) -> dict[float, Any]:
    """t (seconds after start) → value, for one GPU of one node."""
    out: dict[float, Any] = {}
    for d in docs:
        if d["node"] == node:
            values = d["gpus"][gpu]["metrics"][metric]
            out.update({round(ts - T0, 3): v for ts, v in zip(d["timestamps"], values, strict=True)})
    return out


def _procs(docs: tuple[dict[str, Any], ...], node: str, gpu: int, t: float) -> list[dict[str, Any]]:
    """The processes on that GPU in the batch covering t."""
    for d in docs:
        if d["node"] == node and d["timestamps"][0] - T0 <= t <= d["timestamps"][-1] - T0:
            return [p for p in d.get("processes", []) if p["gpu_index"] == gpu]
    raise AssertionError(f"no batch of {node} covers t={t}")


def test_named_scenarios() -> None:
    demo = Scenario.named("demo")
    assert (demo.nodes, demo.gpus_per_node, demo.cluster, demo.fault_start_s, demo.fault_end_s) == (
        8,
        8,
        "demo",
        40,
        130,
    )
    assert demo.node_names() == [f"node-0{i}" for i in range(1, 9)]
    day = Scenario.named("day")
    assert (day.nodes, day.gpus_per_node) == (1, 8)
    assert Scenario.named("demo", nodes=2, fault_start_s=5.0).fault_start_s == 5.0
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        Scenario.named("nope")
    with pytest.raises(ValueError, match="fault_end_s"):
        Scenario.named("demo", fault_start_s=50.0, fault_end_s=10.0)


def test_every_batch_is_valid_and_in_time_order() -> None:
    docs = _run("demo")
    assert len(docs) == 8 * 20
    starts = [d["timestamps"][0] for d in docs]
    assert starts == sorted(starts)
    for d in docs:
        parse(json.dumps(d).encode(), now=T0 + 200)
        assert d["shipper"] == {"version": "0.1.0", "simulated": True, "sample_interval_s": 1.0}
        assert len(d["timestamps"]) == 10
    assert [d["seq"] for d in docs if d["node"] == "node-04"] == list(range(20))
    assert len({d["batch_id"] for d in docs}) == len(docs)


def test_deterministic_given_the_seed() -> None:
    again = tuple(simulate_batches(Scenario.named("demo", seed=7), T0, 200.0, 10.0))
    assert again == _run("demo")
    other = _run("demo", seed=8)
    assert _series(other, "node-01", 0, "util_gpu") != _series(_run("demo"), "node-01", 0, "util_gpu")


def test_live_sampling_uses_the_same_generator() -> None:
    scenario = Scenario.named("demo", nodes=3)
    node = SimulatedNode(scenario, 2, start=T0)
    live = [node.sample(T0 + k).gpus[5]["util_gpu"] for k in range(50)]
    batched = [v for t, v in sorted(_series(_run("demo"), "node-03", 5, "util_gpu").items()) if t < 50]
    assert live == batched


def test_looks_like_a_real_gpu() -> None:
    docs = _run("demo")
    for d in docs:
        for gpu in d["gpus"]:
            m = gpu["metrics"]
            assert all(isinstance(u, int) and 0 <= u <= 100 for u in m["util_gpu"])  # nvidia-smi's integer %
            assert all(v % MIB == 0 for v in m["mem_used"])  # memory moves in MiB steps
            assert all(60 <= p <= gpu["power_limit_w"] for p in m["power_w"])
            assert all(28 <= c <= 75 for c in m["temp_c"])
            assert all(c == 345 or 1900 <= c <= 1980 for c in m["sm_clock_mhz"])
            assert all(v % 1024 == 0 for v in m["pcie_rx_bps"])  # NVML reports KB/s
    util = _series(docs, "node-01", 0, "util_gpu")
    assert len(set(util.values())) >= 5  # noisy, not a flat line
    power = _series(docs, "node-01", 0, "power_w")
    assert all(power[t] >= 550 for t in util if util[t] >= 88)
    assert _series(docs, "node-03", 0, "mem_used")[100.0] == IDLE_MEM_MIB * MIB  # the trace's idle baseline


def test_training_is_correlated_across_nodes() -> None:
    docs = _run("healthy")
    a = [v for _, v in sorted(_series(docs, "node-01", 0, "util_gpu").items())]
    b = [v for _, v in sorted(_series(docs, "node-08", 3, "util_gpu").items())]
    assert statistics.correlation(a, b) > 0.5


def test_demo_fault_idles_node_03_and_06() -> None:
    docs = _run("demo")
    for node in ("node-03", "node-06"):
        for gpu in range(8):
            util = _series(docs, node, gpu, "util_gpu")
            mem = _series(docs, node, gpu, "mem_used")
            for t in range(40, 130):
                assert util[t] <= 2 and mem[t] <= 1.1 * GIB, (node, gpu, t)
            for t in range(0, 40):
                assert 84 <= util[t] <= 98 and mem[t] > 55 * GIB
            assert _procs(docs, node, gpu, 45.0) == _procs(docs, node, gpu, 125.0) == []  # not held
            for t in range(150, 200):
                assert 84 <= util[t] <= 98  # back after fault_end (+ a 20 s restart)
    busy = [
        statistics.mean(_series(docs, "node-01", g, "util_gpu")[t] for t in range(40, 130)) for g in range(8)
    ]
    assert min(busy) > 88  # the peers stay busy


def test_demo_fault_bob_holds_node_05_gpu_7_idle() -> None:
    docs = _run("demo")
    util = _series(docs, "node-05", 7, "util_gpu")
    mem = _series(docs, "node-05", 7, "mem_used")
    for t in range(60, 130):  # bob's notebook loads its ~22 GiB in the first 20 s
        assert util[t] <= 1 and 21 * GIB <= mem[t] <= 23 * GIB, t
    (bob,) = _procs(docs, "node-05", 7, 100.0)
    assert (bob["user"], bob["name"], bob["container"]) == ("bob", "jupyter", BOB_CONTAINER)
    (before,) = _procs(docs, "node-05", 7, 20.0)
    (after,) = _procs(docs, "node-05", 7, 180.0)
    assert (before["user"], after["user"]) == ("alice", "alice")
    assert before["pid"] != after["pid"]  # the training rank was started again
    assert _series(docs, "node-05", 6, "util_gpu")[100.0] >= 84  # its neighbours train on


def test_demo_training_processes() -> None:
    docs = _run("demo")
    (p,) = _procs(docs, "node-01", 4, 100.0)
    assert (p["user"], p["name"], p["container"]) == ("alice", "python", ALICE_CONTAINER)
    assert 55 * GIB < p["mem_used"] < 65 * GIB
    assert p["cpu_affinity"] == list(range(56, 112)) + list(range(168, 224))  # GPU 4 sits on NUMA node 1


def test_healthy_has_no_fault() -> None:
    docs = _run("healthy")
    for d in docs:
        for gpu in d["gpus"]:
            assert min(gpu["metrics"]["util_gpu"]) >= 84, (d["node"], gpu["index"])
        assert {(p["user"], p["gpu_index"]) for p in d["processes"]} == {("alice", g) for g in range(8)}


def test_host_follows_the_load() -> None:
    docs = _run("demo")
    busy = {d["node"]: d["host"]["metrics"] for d in docs if d["timestamps"][0] - T0 == 100}
    assert busy["node-01"]["cpu_busy_cores"][0] > 30 > 3 > busy["node-03"]["cpu_busy_cores"][0]
    assert busy["node-01"]["net_rx_bps"][0] > 1e9 > 1e6 > busy["node-03"]["net_rx_bps"][0]


def test_day_has_jobs_gaps_and_users() -> None:
    scenario = Scenario.named("day")
    node = SimulatedNode(scenario, 0, start=T0)
    samples = [node.sample(T0 + t) for t in range(0, 24 * 3600, 60)]  # one look a minute, a whole day
    utils = [float(g["util_gpu"] or 0) for s in samples for g in s.gpus.values()]
    idle = sum(1 for u in utils if u == 0) / len(utils)
    assert 0.2 < idle < 0.8  # gaps between jobs, but a used node
    assert max(utils) >= 95
    procs = [p for s in samples for p in s.processes]
    assert len({p.user for p in procs}) >= 4
    assert {"python", "python3", "jupyter"} <= {p.name for p in procs}
    assert len({p.container for p in procs}) >= 10  # many jobs over the day
    held_idle = [
        s
        for s in samples
        for p in s.processes
        if s.gpus[p.gpu_index]["util_gpu"] == 0 and p.name == "jupyter"
    ]
    assert held_idle  # like the trace: memory held at 0 %
    batch = next(iter(simulate_batches(scenario, T0, 120, 60)))
    parse(json.dumps(batch).encode(), now=T0 + 120)


def test_healthy_h100_memory_health() -> None:
    """Hopper remaps rows (0 of them, no failure) and has no page retirement (NVML: NotSupported)."""
    for d in _run("demo"):
        for gpu in d["gpus"]:
            m = gpu["metrics"]
            assert m["retired_pages"] == [None] * 10
            assert m["remapped_rows_unc"] == m["remap_failure"] == [0] * 10


def test_pre_ampere_gpus_retire_pages_instead() -> None:
    scenario = Scenario.named("healthy", nodes=1, gpu_name="Tesla V100-SXM2-32GB")
    (doc,) = simulate_batches(scenario, T0, 10.0, 10.0)
    m = doc["gpus"][0]["metrics"]
    assert (m["retired_pages"], m["remapped_rows_unc"], m["remap_failure"]) == (
        [0] * 10,
        [None] * 10,
        [None] * 10,
    )


def test_processes_numa_nodes_follow_affinity_and_gpu() -> None:
    docs = _run("demo")
    numa_of_gpu = {g["index"]: g["numa_node"] for g in docs[0]["gpus"]}
    assert numa_of_gpu == {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1, 7: 1}
    socket = {0: set(range(0, 56)) | set(range(112, 168)), 1: set(range(56, 112)) | set(range(168, 224))}
    seen = 0
    for d in docs:
        for p in d.get("processes", []):
            if "cpu_affinity" not in p:  # bob's notebook is not pinned: nothing to say
                assert "cpu_numa_nodes" not in p
                continue
            seen += 1
            assert p["cpu_numa_nodes"] == [numa_of_gpu[p["gpu_index"]]]
            assert set(p["cpu_affinity"]) <= socket[p["cpu_numa_nodes"][0]]
    assert seen > 1000


def test_no_mig_unless_asked() -> None:
    assert all("mig" not in d and not any(g["mig_mode"] for g in d["gpus"]) for d in _run("demo"))
    with pytest.raises(ValueError, match=r"mig_gpus must be 0\.\.gpus_per_node"):
        Scenario.named("demo", mig_gpus=9)


def test_mig_gpus_report_instances_with_sm_utilisation() -> None:
    scenario = Scenario.named("day", mig_gpus=2)
    docs = list(simulate_batches(scenario, T0, 600.0, 60.0))
    for d in docs:
        parse(json.dumps(d).encode(), now=T0 + 600)
        assert [g["mig_mode"] for g in d["gpus"]] == [False] * 6 + [True] * 2
        for gpu in d["gpus"][6:]:
            # NVML reports no utilisation for a GPU in MIG mode; the board's power still moves.
            assert gpu["metrics"]["util_gpu"] == gpu["metrics"]["util_mem"] == [None] * 60
            assert all(p is not None for p in gpu["metrics"]["power_w"])
        assert [(m["gpu_index"], m["gi_id"], m["profile"]) for m in d["mig"]] == [
            (g, gi, "1g.10gb") for g in (6, 7) for gi in range(7, 14)
        ]
        instances = {m["uuid"] for m in d["mig"]}
        on_mig = [p for p in d["processes"] if p["mig_uuid"] is not None]
        assert len(on_mig) == 12  # one instance of each GPU sits empty
        assert {p["mig_uuid"] for p in on_mig} <= instances
    first = docs[0]["mig"]
    assert all(m["metrics"]["util_sm"][0] is None for m in first)  # GPM: no earlier sample yet
    util = [v for d in docs for m in d["mig"] for v in m["metrics"]["util_sm"] if v is not None]
    assert all(0 <= v <= 100 for v in util)
    assert max(util) > 50 and util.count(0.0) > len(util) / 4  # bursts of inference, idle notebooks
    live = SimulatedNode(scenario, 0, start=T0)
    assert [m.metrics["util_sm"] for m in live.sample(T0 + 1).mig][:1] == [None]
