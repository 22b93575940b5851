"""The node model of the held-out fleets: 1 Hz series per device, workloads, and Batch v1 delivery.

Written apart from scenarios/fleet.py and scenarios/faults.py (and without reading them or the
detectors), from docs/batch-v1.md and docs/detectors.md only, so that it is an independent check.
A fleet is a set of `Node`s whose numpy series (one value per second of the scenario) are first
filled by workloads (`ddp`, `pipeline`, `inference`, `sweep`, `notebooks`) and then edited by the
faults of heldout.py; `deliveries` cuts each node's series into batches at the node's own
intervals, with transit jitter and a few late (out-of-order) batches, as a shipper's spool would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scenarios.fleet import Delivery

GIB = 1 << 30
THR_IDLE, THR_SW_POWER, THR_HW_SLOW, THR_SW_THERMAL, THR_HW_THERMAL, THR_POWER_BRAKE = (
    0x01,
    0x04,
    0x08,
    0x20,
    0x40,
    0x80,
)


@dataclass
class Proc:
    """A compute process on one GPU (or MIG instance) from `start` to `end` (seconds into the run)."""

    gpu: int
    pid: int
    user: str | None
    container: str | None
    start: float
    end: float
    mem: int
    affinity: list[int] | None = None
    numa: list[int] | None = None
    mig_uuid: str | None = None
    name: str = "python"


@dataclass
class Mig:
    """A MIG instance alive from `start` to `end`; util_sm None where the GPU has no GPM (Ampere)."""

    gpu: int
    uuid: str
    gi: int
    ci: int
    profile: str
    mem_total: int
    start: float
    end: float
    mem: np.ndarray
    util_sm: np.ndarray | None


@dataclass
class Gpu:
    index: int
    uuid: str
    mem_total: int
    numa: int | None
    slowdown: float | None
    n: int
    mig_from: float | None = None  # MIG mode on from this second (util_gpu is then not reported)

    def __post_init__(self) -> None:
        self.util = np.zeros(self.n)
        self.mem = np.full(self.n, 1047.0 * (1 << 20))  # an empty 80 GB GPU's baseline
        self.temp = np.full(self.n, 34.0)
        self.throttle = np.full(self.n, THR_IDLE, dtype=np.int64)
        self.sbe = np.zeros(self.n)
        self.dbe = np.zeros(self.n)
        self.remapped = np.zeros(self.n)
        self.retired = np.zeros(self.n)
        self.util_null = np.zeros(self.n, dtype=bool)


@dataclass
class Node:
    name: str
    group: str | None
    n: int  # seconds in the run
    gpus_n: int
    cpu_count: int
    numa_nodes: int
    mem_total: int
    intervals: tuple[float, ...]  # batch intervals the shipper cycles through (mixed when several)
    gpu_mem: int = 80 * GIB
    slowdown: float | None = 87.0
    sample_s: int = 1
    busy_cores_metric: bool = True
    net_metrics: bool = True
    extended_hw: bool = False  # reports retired_pages / remapped_rows_unc
    numa_unknown: bool = False
    phase: float = 0.3  # sub-second offset of its sampling clock
    procs: list[Proc] = field(default_factory=list)
    migs: list[Mig] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    dark: list[tuple[float, float]] = field(default_factory=list)  # shipper dead: samples lost
    spooled: list[tuple[float, float]] = field(default_factory=list)  # network down: delivered at end
    late_p: float = 0.03
    derived: bool = False  # temperatures and throttle reasons computed from utilisation

    def __post_init__(self) -> None:
        per = max(1, self.gpus_n // self.numa_nodes)
        self.gpus = [
            Gpu(
                i,
                f"GPU-{self.name}-{i:02d}",
                self.gpu_mem,
                -1 if self.numa_unknown else min(i // per, self.numa_nodes - 1),
                self.slowdown,
                self.n,
            )
            for i in range(self.gpus_n)
        ]
        self.cpu_busy = np.full(self.n, 0.6)
        self.host_mem = np.full(self.n, 0.06 * self.mem_total)
        self.net = np.full(self.n, 30e3)  # ssh, monitoring, the shipper: tens of kB/s

    def cores_of(self, numa: int) -> list[int]:
        per = self.cpu_count // self.numa_nodes
        return list(range(numa * per, (numa + 1) * per))

    def gpu_numa(self, g: int) -> int:
        numa = self.gpus[g].numa
        return 0 if numa is None or numa < 0 else numa


def clip_util(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 100)


def lag(x: np.ndarray, tau: float) -> np.ndarray:
    """First-order lag (a heat sink, a fan curve) of a 1 Hz series."""
    out = np.empty_like(x)
    a, acc = 1.0 / tau, x[0]
    for i, v in enumerate(x):
        acc += a * (v - acc)
        out[i] = acc
    return out


def derive(node: Node, rng: np.random.Generator) -> None:
    """Temperature, clocks, power and throttle reasons from utilisation, for every GPU of the node
    (faults that force a temperature or a reason edit them afterwards)."""
    node.derived = True
    for g in node.gpus:
        u = np.nan_to_num(g.util)
        g.temp = np.round(lag(33.0 + 0.38 * u, 45.0) + rng.normal(0, 0.6, node.n))
        g.throttle = np.where(u < 1, THR_IDLE, 0).astype(np.int64)
        capped = (u > 93) & (rng.random(node.n) < 0.35)  # SW power cap: a busy GPU at its limit
        g.throttle[capped] |= THR_SW_POWER


def busy_phase(n: int, t0: float, t1: float) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[int(max(t0, 0)) : int(min(t1, n))] = True
    return mask


# -- workloads ------------------------------------------------------------------------------------


def sync_signal(
    n: int, rng: np.random.Generator, level: float, *, step_s: float = 9.0, swing: bool = False
) -> np.ndarray:
    """The utilisation every rank of one synchronous job shares: a step rhythm, gradient syncs,
    evaluation passes and checkpoints at the same seconds on every node. With `swing`, the job
    alternates phases (an RL loop: 40–90 s of rollouts near half load, then as long training)."""
    t = np.arange(n, dtype=float)
    sig = level + 4.0 * np.sin(2 * math.pi * t / step_s) + rng.normal(0, 1.0, n)
    if swing:
        s, low = 0, True
        while s < n:
            d = int(rng.integers(40, 90))
            if low:
                sig[s : s + d] -= level * 0.5
            s, low = s + d, not low
    ev = int(rng.integers(500, 800))
    for s in range(int(rng.integers(100, ev)), n, ev):  # evaluation: a 40-70 s lighter pass
        sig[s : s + int(rng.integers(40, 70))] = level * 0.45 + rng.normal(0, 2, 1)
    ck = int(rng.integers(1300, 1900))
    for s in range(int(rng.integers(300, ck)), n, ck):  # checkpoint: GPUs wait on storage
        sig[s : s + int(rng.integers(15, 35))] = 3.0
    slow = 5.0 * np.sin(2 * math.pi * t / rng.uniform(200, 400) + rng.uniform(0, 6))
    return sig + slow


def job_procs(
    node: Node, gpus: list[int], t0: float, t1: float, user: str, container: str | None, mem: int, pid0: int
) -> None:
    """One rank per GPU, pinned to 8 cores of its GPU's NUMA node."""
    for k, g in enumerate(gpus):
        numa = node.gpu_numa(g)
        cores = node.cores_of(numa)
        per = max(1, min(8, len(cores) // max(1, node.gpus_n // node.numa_nodes)))
        off = (k % max(1, len(cores) // per)) * per
        node.procs.append(Proc(g, pid0 + k, user, container, t0, t1, mem, cores[off : off + per], [numa]))


def ddp(
    nodes: list[Node],
    rng: np.random.Generator,
    t0: float,
    t1: float,
    *,
    level: float = 91.0,
    swing: bool = False,
    user: str = "alice",
    bw: float = 2.4e9,
    cores_per_gpu: float = 1.6,
) -> np.ndarray:
    """A data-parallel job over `nodes`, every GPU of each; returns the shared utilisation signal."""
    n = nodes[0].n
    sig = sync_signal(n, rng, level, swing=swing)
    on = busy_phase(n, t0, t1)
    load = busy_phase(n, t0, t0 + 45)  # weights and data loading before the first step
    for j, node in enumerate(nodes):
        own = sig + rng.normal(0, 1.5, n)
        for g in node.gpus:
            u = own + rng.normal(0, 1.2, n)
            g.util = np.where(on, clip_util(np.where(load, 4.0, u)), g.util)
            used = 58 * GIB + (np.arange(n) % 9) / 9 * 1.5 * GIB
            ramp = np.clip((np.arange(n) - t0) / 40.0, 0, 1)
            g.mem = np.where(on, 1.1 * GIB + ramp * (used - 1.1 * GIB), g.mem)
        job_procs(
            node,
            list(range(node.gpus_n)),
            t0,
            t1,
            user,
            f"{user}-ddp-{j:02d}".ljust(12, "0"),
            58 * GIB,
            4000 + 97 * j,
        )
        mean = np.mean([g.util for g in node.gpus], axis=0)
        node.cpu_busy = np.where(
            on, 2.0 + cores_per_gpu * node.gpus_n * (0.4 + mean / 160) + rng.normal(0, 0.4, n), node.cpu_busy
        )
        node.host_mem = np.where(
            on, 0.22 * node.mem_total + rng.normal(0, 0.002, n) * node.mem_total, node.host_mem
        )
        node.net = np.where(
            on, bw * np.clip(mean, 0, 100) / 95 * (1 + rng.normal(0, 0.05, n)) + 5e5, node.net
        )
    return sig


def pipeline(nodes: list[Node], rng: np.random.Generator, t0: float, t1: float, *, user: str = "pat") -> None:
    """Pipeline parallelism, one stage per node: end stages compute less (fill/drain bubbles) and
    move a third of the middle stages' bytes; every stage shares the step rhythm."""
    n = nodes[0].n
    t = np.arange(n, dtype=float)
    sig = sync_signal(n, rng, 84.0, step_s=12.0)
    on = busy_phase(n, t0, t1)
    last = len(nodes) - 1
    for s, node in enumerate(nodes):
        end_stage = s in (0, last)
        bubble = 14.0 * (np.sin(2 * math.pi * (t - 1.3 * s) / 12.0) > 0.6)  # the stage's own bubble
        base = sig - (20.0 if end_stage else 0.0) - bubble
        for g in node.gpus:
            g.util = np.where(on, clip_util(base + rng.normal(0, 2.0, n)), g.util)
            g.mem = np.where(on, (44 if end_stage else 66) * GIB + rng.normal(0, 0.1, n) * GIB, g.mem)
        job_procs(node, list(range(node.gpus_n)), t0, t1, user, None, 60 * GIB, 7000 + 50 * s)
        bw = 0.45e9 if end_stage else 1.35e9
        node.net = np.where(on, bw * (1 + rng.normal(0, 0.06, n)), node.net)
        node.cpu_busy = np.where(on, 14 + rng.normal(0, 1, n), node.cpu_busy)
        node.host_mem = np.where(on, 0.3 * node.mem_total, node.host_mem)


def inference(nodes: list[Node], rng: np.random.Generator, t0: float, t1: float) -> None:
    """LLM serving behind one load balancer: one replica per GPU, memory preallocated to 90 %,
    request bursts that every replica sees (the balancer spreads them), each with its own noise."""
    n = nodes[0].n
    load = np.full(n, 30.0) + 8 * np.sin(np.arange(n) / 900.0)
    s = 0
    while s < n:
        s += int(rng.exponential(150)) + 20
        dur = int(rng.integers(20, 120))
        load[s : s + dur] += rng.uniform(25, 55)
    on = busy_phase(n, t0, t1)
    for j, node in enumerate(nodes):
        for g in node.gpus:
            g.util = np.where(on, clip_util(load + rng.normal(0, 7, n)), g.util)
            g.mem = np.where(on, 0.9 * g.mem_total + rng.normal(0, 0.001, n) * g.mem_total, g.mem)
        job_procs(
            node,
            list(range(node.gpus_n)),
            t0,
            t1,
            "svc-llm",
            f"vllm{j:02d}".ljust(12, "a"),
            70 * GIB,
            9000 + 20 * j,
        )
        for p in node.procs:  # a server is not pinned: the tokenizer and HTTP threads use any core
            p.affinity = None
        node.net = np.where(on, 40e6 * load / 50 * (1 + rng.normal(0, 0.1, n)), node.net)
        node.cpu_busy = np.where(on, 6 + load / 12 + rng.normal(0, 0.5, n), node.cpu_busy)
        node.host_mem = np.where(on, 0.35 * node.mem_total, node.host_mem)


def balanced(nodes: list[Node], rng: np.random.Generator, t0: float, t1: float) -> None:
    """Serving replicas behind one balancer, each answering its own requests: a shared level
    (the hour's traffic) and bursts and lulls that are each replica's alone."""
    n = nodes[0].n
    base = 60.0 + 10 * np.sin(np.arange(n) / 1200.0)
    on = busy_phase(n, t0, t1)
    for j, node in enumerate(nodes):
        own = np.zeros(n)
        s = int(rng.integers(0, 60))
        while s < n:  # a replica's burst (a long prompt, a batch) or lull, 5-60 s
            d = int(rng.integers(5, 60))
            own[s : s + d] = rng.uniform(-35, 35)
            s += d
        for g in node.gpus:
            g.util = np.where(on, clip_util(base + own + rng.normal(0, 6, n)), g.util)
            g.mem = np.where(on, 0.9 * g.mem_total, g.mem)
        job_procs(
            node,
            list(range(node.gpus_n)),
            t0,
            t1,
            "svc-lb",
            f"tgi{j:02d}".ljust(12, "b"),
            70 * GIB,
            7000 + 20 * j,
        )
        node.net = np.where(on, 30e6 * (1 + own / 100), node.net)
        node.cpu_busy = np.where(on, 5 + rng.normal(0, 0.5, n), node.cpu_busy)
        node.host_mem = np.where(on, 0.3 * node.mem_total, node.host_mem)


def sweep(nodes: list[Node], rng: np.random.Generator, t0: float, t1: float) -> None:
    """A hyperparameter sweep from a deep queue: 1-GPU jobs, each its own container, back to back:
    a short loading phase (weights, dataset index), 4–25 minutes of training, a few seconds free."""
    n = nodes[0].n
    users = ("ana", "ben", "chen")
    pid = 20000
    for node in nodes:
        for g in node.gpus:
            t = t0 + float(rng.uniform(0, 90))
            while t < t1:
                load = float(rng.uniform(20, 75))
                dur = float(rng.uniform(240, 1500))
                end = min(t + load + dur, t1)
                level = float(rng.uniform(62, 97))
                i0, i1, i2 = int(t), int(min(t + load, n)), int(min(end, n))
                g.util[i0:i1] = clip_util(rng.uniform(0, 4, i1 - i0))
                g.util[i1:i2] = clip_util(
                    level + 5 * np.sin(np.arange(i2 - i1) / 7.0) + rng.normal(0, 3, i2 - i1)
                )
                mem = float(rng.uniform(8, 60)) * GIB
                g.mem[i0:i1] = np.linspace(1.2 * GIB, mem, i1 - i0) if i1 > i0 else mem
                g.mem[i1:i2] = mem
                numa = node.gpu_numa(g.index)
                cores = node.cores_of(numa)
                k = g.index % max(1, node.gpus_n // node.numa_nodes)
                node.procs.append(
                    Proc(
                        g.index,
                        pid,
                        str(rng.choice(users)),
                        f"sweep{pid:07d}",
                        t,
                        end,
                        int(mem),
                        cores[4 * k : 4 * k + 4],
                        [numa],
                    )
                )
                pid += 1
                t = end + float(rng.uniform(4, 40))
        busy = np.sum([g.util > 10 for g in node.gpus], axis=0)
        node.cpu_busy = 1.0 + 2.6 * busy + rng.normal(0, 0.3, n)
        node.host_mem = (0.1 + 0.05 * busy) * node.mem_total
        node.net = 2e6 + busy * 4e6


def notebooks(
    node: Node,
    rng: np.random.Generator,
    t0: float,
    t1: float,
    users: list[str],
    *,
    gpus: list[int] | None = None,
) -> None:
    """Interactive users, one GPU each: a cell runs for 10–90 s, then the user reads, edits and
    thinks for up to four minutes before the next one."""
    n = node.n
    for k, g in enumerate(gpus if gpus is not None else range(node.gpus_n)):
        gpu = node.gpus[g]
        user = users[k % len(users)]
        mem = float(rng.uniform(5, 20)) * GIB
        gpu.mem[int(t0) : int(t1)] = mem
        u = np.zeros(n)
        t = t0 + float(rng.uniform(5, 60))
        while t < t1:
            run = int(rng.uniform(10, 90))
            u[int(t) : int(t) + run] = rng.uniform(30, 95)
            t += run + min(float(rng.exponential(70)) + 5, 230.0)
        gpu.util = np.where(busy_phase(n, t0, t1), clip_util(u + rng.uniform(0, 1.4, n)), gpu.util)
        numa = node.gpu_numa(g)
        node.procs.append(
            Proc(
                g,
                30000 + 11 * g,
                user,
                f"jupyter-{user}",
                t0,
                t1,
                int(mem),
                node.cores_of(numa)[:4],
                [numa],
                name="ipykernel",
            )
        )
    node.cpu_busy = 0.8 + np.sum([gg.util > 5 for gg in node.gpus], axis=0) * 1.2 + rng.normal(0, 0.2, n)
    node.host_mem = 0.2 * node.mem_total + rng.normal(0, 0.003, n) * node.mem_total


# -- batches --------------------------------------------------------------------------------------


def _nullable(x: np.ndarray, digits: int | None = None) -> list[float | None]:
    vals = np.round(x, digits) if digits is not None else x
    return [None if v != v else float(v) for v in vals.tolist()]


def batch_doc(
    node: Node, cluster: str, start: float, idx: np.ndarray, seq: int, sample_s: float
) -> dict[str, Any]:
    """One Batch v1 document of the node's samples at seconds `idx`."""
    ts = [round(start + float(i) + node.phase, 3) for i in idx]
    busy = np.clip(node.cpu_busy[idx], 0, node.cpu_count)
    host: dict[str, Any] = {
        "cpu_util": _nullable(busy / node.cpu_count * 100, 1),
        "mem_used": [int(v) for v in node.host_mem[idx]],
        "disk_read_bps": [0.0] * len(idx),
        "disk_write_bps": [0.0] * len(idx),
    }
    if node.busy_cores_metric:
        host["cpu_busy_cores"] = _nullable(busy, 2)
    if node.net_metrics:
        half = np.clip(node.net[idx], 0, None) / 2
        host["net_rx_bps"] = _nullable(half * 1.02, 0)
        host["net_tx_bps"] = _nullable(half * 0.98, 0)
    gpus = []
    t_lo, t_hi = float(idx[0]), float(idx[-1])
    for g in node.gpus:
        mig_on = g.mig_from is not None and t_hi >= g.mig_from
        util = np.where(g.util_null[idx], np.nan, g.util[idx])
        if mig_on:
            util = np.full(len(idx), np.nan)  # NVML gives no util_gpu for a GPU in MIG mode
        u = np.nan_to_num(g.util[idx])
        metrics: dict[str, Any] = {
            "util_gpu": _nullable(util),
            "util_mem": _nullable(np.round(u * 0.6)),
            "mem_used": [int(v) for v in g.mem[idx]],
            "power_w": _nullable(70 + 6.2 * u, 2),
            "temp_c": _nullable(g.temp[idx]),
            # an idle GPU that throttles is at its floor, not below zero (Batch v1 refuses that)
            "sm_clock_mhz": _nullable(
                np.maximum(
                    np.where(u > 0, 1980.0, 345.0) - np.where((g.throttle[idx] & 0xE8) > 0, 540.0, 0.0), 0.0
                )
            ),
            "throttle_reasons": [int(v) for v in g.throttle[idx]],
            "ecc_sbe_volatile": _nullable(g.sbe[idx]),
            "ecc_dbe_volatile": _nullable(g.dbe[idx]),
        }
        if node.extended_hw:
            metrics["retired_pages"] = _nullable(g.retired[idx])
            metrics["remapped_rows_unc"] = _nullable(g.remapped[idx])
            metrics["remap_failure"] = [0.0] * len(idx)
        dev: dict[str, Any] = {
            "index": g.index,
            "uuid": g.uuid,
            "name": "NVIDIA H100 80GB HBM3",
            "mem_total": g.mem_total,
            "power_limit_w": 700.0,
            "metrics": metrics,
        }
        if g.numa is not None:
            dev["numa_node"] = g.numa
        if g.slowdown is not None:
            dev["temp_slowdown_c"] = g.slowdown
        if g.mig_from is not None:
            dev["mig_mode"] = mig_on
        gpus.append(dev)
    migs = []
    for m in node.migs:
        if m.start <= t_hi and m.end > t_lo:
            mm: dict[str, Any] = {"mem_used": [int(v) for v in m.mem[idx]]}
            if m.util_sm is not None:
                mm["util_sm"] = _nullable(m.util_sm[idx])
            migs.append(
                {
                    "gpu_index": m.gpu,
                    "uuid": m.uuid,
                    "gi_id": m.gi,
                    "ci_id": m.ci,
                    "profile": m.profile,
                    "mem_total": m.mem_total,
                    "metrics": mm,
                }
            )
    procs = []
    for p in node.procs:
        first, last = max(float(math.ceil(p.start)), t_lo), min(p.end, t_hi)  # seen at sample times
        if first <= last:
            row: dict[str, Any] = {
                "gpu_index": p.gpu,
                "pid": p.pid,
                "user": p.user,
                "container": p.container,
                "name": p.name,
                "mem_used": p.mem,
                "first_seen": round(start + first + node.phase, 3),
                "last_seen": round(start + last + node.phase, 3),
            }
            if p.mig_uuid is not None:
                row["mig_uuid"] = p.mig_uuid
            if p.affinity is not None:
                row["cpu_affinity"] = p.affinity
            if p.numa is not None:
                row["cpu_numa_nodes"] = p.numa
            procs.append(row)
    events = [
        {**e, "ts": round(start + e["ts"], 3)} for e in node.events if t_lo <= e["ts"] < t_hi + sample_s
    ]
    doc: dict[str, Any] = {
        "version": 1,
        "batch_id": f"ho-{cluster}-{node.name}-{seq:07d}"[:64],
        "cluster": cluster,
        "node": node.name,
        "seq": seq,
        "shipper": {"version": "heldout-0", "simulated": True, "sample_interval_s": float(sample_s)},
        "timestamps": ts,
        "host": {
            "cpu_count": node.cpu_count,
            "mem_total": node.mem_total,
            "numa_nodes": node.numa_nodes,
            "metrics": host,
        },
        "gpus": gpus,
    }
    if node.group is not None:
        doc["node_group"] = node.group
    if migs:
        doc["mig"] = migs
    if procs:
        doc["processes"] = procs
    if events:
        doc["events"] = events
    return doc


def node_deliveries(node: Node, cluster: str, start: float, rng: np.random.Generator) -> Iterator[Delivery]:
    """The node's batches as they reach the API: cut at its intervals (cycled), a transit of a
    second or two, now and then a retry that lands after the next batch; nothing while dark, and
    everything of a network outage delivered at once when the link returns."""
    lost = np.zeros(node.n, dtype=bool)
    for a, b in node.dark:
        lost[int(a) : int(b)] = True
    seq, t, k = 0, 0, 0
    while t < node.n:
        width = int(node.intervals[k % len(node.intervals)])
        k += 1
        idx = np.arange(t, min(t + width, node.n), node.sample_s)
        idx = idx[~lost[idx]]
        t += width
        if len(idx) == 0:
            continue
        at = start + float(idx[-1]) + node.phase + float(rng.uniform(0.3, 2.5))
        if rng.random() < node.late_p:
            at += float(rng.uniform(15, 70))  # a retry after a 5xx: delivered after its successor
        for a, b in node.spooled:
            if a <= idx[-1] < b:
                at = max(at, start + b + float(rng.uniform(1, 5)))
        yield Delivery(at=at, node=node.name, doc=batch_doc(node, cluster, start, idx, seq, node.sample_s))
        seq += 1
