"""The scenario fleet generator: deterministic, valid Batch v1, and shaped like the real GPU."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

from gpulse.wire.batch import parse
from node_shipper.simulate import IDLE_MEM_MIB
from scenarios.fleet import (
    GIB,
    MIB,
    MIG_3G_2G_2X1G,
    MIG_7X1G,
    Delivery,
    Fleet,
    Job,
    Node,
    deliveries,
    gpu_numa,
    numa_cpus,
)

MIG_UTIL_GPU_NULL = None


def small_fleet(seed: int = 5, duration_s: float = 600.0) -> Fleet:
    """Two training nodes (one noisy), one MIG node, one dev node with a job that starts and ends."""
    train = (Node("t-01", "train", gpus=4), Node("t-02", "train", gpus=4, noisy=True))
    mig = Node("m-01", "mig", gpus=4, mig={0: MIG_7X1G, 1: MIG_3G_2G_2X1G})
    dev = Node("d-01", "d-01", gpus=4)
    jobs = (
        Job(
            "train",
            "pre",
            tuple((n.name, g, None) for n in train for g in range(4)),
            -3600,
            1e9,
            "alice",
            61_440,
            swing=20,
        ),
        Job("inference", "slices", tuple(("m-01", 0, s.gi_id) for s in MIG_7X1G), -3600, 1e9, "carol", 7_000),
        Job(
            "inference", "whole", (("m-01", 2, None), ("m-01", 3, None)), -3600, 1e9, "carol", 30_000, cpus=16
        ),
        Job("finetune", "ft", (("d-01", 1, None),), 200, 450, "erin", 30_000, warmup_s=30),
    )
    return Fleet("small", "small", seed, duration_s, (*train, mig, dev), jobs)


@cache
def batches(seed: int = 5) -> tuple[Delivery, ...]:
    return tuple(deliveries(small_fleet(seed)))


def series(node: str, gpu: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(t since start, values) of one GPU metric, NaN for null."""
    fleet = small_fleet()
    ts, vs = [], []
    for d in batches():
        if d.node == node:
            ts += d.doc["timestamps"]
            vs += d.doc["gpus"][gpu]["metrics"][metric]
    return np.array(ts) - fleet.start, np.array([np.nan if v is None else v for v in vs], dtype=float)


def test_the_same_seed_gives_the_same_documents_and_another_seed_others() -> None:
    first = [json.dumps(d.doc, sort_keys=True) for d in batches(5)]
    again = [json.dumps(d.doc, sort_keys=True) for d in deliveries(small_fleet(5))]
    other = [json.dumps(d.doc, sort_keys=True) for d in batches(6)]
    assert first == again
    assert first != other


def test_every_document_is_valid_batch_v1() -> None:
    for d in batches():
        raw = json.dumps(d.doc, allow_nan=False).encode()
        assert parse(raw, now=d.at).batch_id == d.doc["batch_id"]


def test_batches_are_1_hz_thirty_samples_in_order_of_arrival() -> None:
    ds = batches()
    assert [d.at for d in ds] == sorted(d.at for d in ds)
    for node in ("t-01", "m-01"):
        docs = [d.doc for d in ds if d.node == node]
        ts = np.concatenate([d["timestamps"] for d in docs])
        assert len(ts) == 600
        assert np.all(np.abs(np.diff(ts) - 1.0) < 0.05)
        assert [len(d["timestamps"]) for d in docs[1:-1]] == [30] * (len(docs) - 2)
        assert [d["seq"] for d in docs] == list(range(len(docs)))
        assert all(d.at > d.doc["timestamps"][-1] for d in ds)


def test_an_idle_gpu_looks_like_the_real_trace() -> None:
    # d-01 GPU 0 never runs anything: 0 % (1 % now and then), the 1,047 MiB baseline
    _, util = series("d-01", 0, "util_gpu")
    _, mem = series("d-01", 0, "mem_used")
    assert set(np.unique(util)) <= {0.0, 1.0}
    assert (util == 0).mean() > 0.97
    assert set(np.unique(mem)) == {IDLE_MEM_MIB * MIB}


def test_training_is_busy_integer_and_in_mib_steps_and_ranks_move_together() -> None:
    _, a = series("t-01", 0, "util_gpu")
    _, b = series("t-01", 3, "util_gpu")
    _, mem = series("t-01", 0, "mem_used")
    assert np.all(a == np.round(a))
    assert 40 <= np.mean(a) <= 95
    assert np.corrcoef(a, b)[0, 1] > 0.9  # the shared step pattern
    assert np.all(mem % MIB == 0)
    assert 55 * GIB < mem.mean() < 75 * GIB


def test_a_job_warms_up_then_ends_and_releases_its_gpu() -> None:
    t, util = series("d-01", 1, "util_gpu")
    _, mem = series("d-01", 1, "mem_used")
    before, warm, running, after = t < 199, (t > 205) & (t < 228), (t > 240) & (t < 440), t > 460
    assert mem[before].max() == IDLE_MEM_MIB * MIB
    assert util[warm].max() <= 20  # the process is there, loading
    assert util[running].mean() > 35
    assert mem[after].max() == IDLE_MEM_MIB * MIB
    procs = [
        p for d in batches() if d.node == "d-01" for p in d.doc.get("processes", []) if p["gpu_index"] == 1
    ]
    start = small_fleet().start
    assert min(p["first_seen"] for p in procs) - start == pytest.approx(200, abs=4)
    assert max(p["last_seen"] for p in procs) - start == pytest.approx(450, abs=5)


def test_processes_carry_affinity_on_their_gpus_numa_node() -> None:
    fleet = small_fleet()
    node = fleet.node("t-01")
    doc = next(d.doc for d in batches() if d.node == "t-01")
    numa = {g["index"]: g["numa_node"] for g in doc["gpus"]}
    assert numa == {0: 0, 1: 0, 2: 1, 3: 1}
    for p in doc["processes"]:
        home = gpu_numa(node, p["gpu_index"])
        assert p["cpu_numa_nodes"] == [home]
        assert p["cpu_affinity"] == sorted(numa_cpus(node.hw, home))
    whole = next(d.doc for d in batches() if d.node == "m-01")
    pinned = [p for p in whole["processes"] if p["gpu_index"] == 2]
    assert len(pinned[0]["cpu_affinity"]) == 16
    assert all(g["temp_slowdown_c"] == 87.0 and g["power_limit_w"] == 700.0 for g in doc["gpus"])


def test_mig_gpus_report_instances_with_util_sm_and_no_gpu_utilisation() -> None:
    doc = [d.doc for d in batches() if d.node == "m-01"][5]
    gpus = {g["index"]: g for g in doc["gpus"]}
    assert [gpus[g]["mig_mode"] for g in range(4)] == [True, True, False, False]
    assert set(gpus[0]["metrics"]["util_gpu"]) == {MIG_UTIL_GPU_NULL}
    assert all(v is not None for v in gpus[2]["metrics"]["util_gpu"])
    profiles = sorted((m["gpu_index"], m["profile"]) for m in doc["mig"])
    assert profiles == [(0, "1g.10gb")] * 7 + [(1, "1g.10gb"), (1, "1g.10gb"), (1, "2g.20gb"), (1, "3g.40gb")]
    on_slices = {p["mig_uuid"] for p in doc["processes"] if p["gpu_index"] == 0}
    assert on_slices == {m["uuid"] for m in doc["mig"] if m["gpu_index"] == 0}
    busy = [v for m in doc["mig"] for v in m["metrics"]["util_sm"]]
    assert all(v is not None and 0 <= v <= 100 for v in busy)
    empty = [m for m in doc["mig"] if m["gpu_index"] == 1]  # no job on GPU 1's instances
    assert {v for m in empty for v in m["metrics"]["mem_used"]} == {13 * MIB}


def test_a_noisy_node_has_null_samples_and_a_quiet_one_none() -> None:
    _, noisy = series("t-02", 1, "util_gpu")
    nulls = sum(
        v is None
        for d in batches()
        if d.node == "t-02"
        for g in d.doc["gpus"]
        for v in g["metrics"]["util_gpu"]
    )
    quiet = sum(
        v is None
        for d in batches()
        if d.node == "t-01"
        for g in d.doc["gpus"]
        for v in g["metrics"]["power_w"]
    )
    assert nulls > 0
    assert quiet == 0
    assert np.isfinite(noisy).mean() > 0.98
