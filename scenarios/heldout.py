"""Held-out fleets: the detector catalogue scored on fleets and faults that are not in the suite.

`python -m scenarios.heldout [--seed N] [--quick]`

Written from what an operator means and from the documented contract (docs/detectors.md,
docs/batch-v1.md) only — not from scenarios/fleet.py, faults.py, suite.py or the detectors — so it
is an independent check of the catalogue. Shapes differ from the suite on purpose: 1, 2, 4 and 8
GPUs a node; 2 to 24 nodes; batch intervals of 5–60 s, mixed within a fleet, with transit jitter
and late (out-of-order) batches; nodes sampling every 2 s; pipeline-parallel training, an RL job
whose load swings, LLM serving with bursts, a sweep of 1-GPU jobs, notebook users; faults of
other magnitudes (a node at 30 % of its peers, leaks that fill in 10 and in 40 minutes, a
temperature creeping up, a node at 57 % of its peers for 30 minutes, a stalled rank holding its
memory, a GPU that cools in its own 40 s pauses) beside borderline ones the docs say must not
fire (a node 10 % or 20 % below its peers, a 4-minute idle notebook, a 30 s thermal blip, CPU at
80 % of its cores, a sweep of independent 1-GPU jobs in one node group, 16 replicas behind one
balancer each with its own load, ...).

Ground truth is what the generator did, never what a detector said. The replay and the scoring
are scenarios/run.py's (the real codec, window builder, detectors and alert state machine at
analyze's 60 s cadence); every batch is also parsed by gpulse.wire.batch first.

Delay bound: for_s + 2 analyze runs (120 s), plus a fault's own `allow_s` where the docs say the
rule needs more by construction: silent_s (180 s) for a silent node ("silent_s is already the
wait"), corr_window_s (120 s) for a node that stops following its group ("flagged about
110 s after it stopped following: the correlation window must slide mostly past the change"),
slow_window_s / 2 (90 s) for a slow node (its median over the window crosses the line when half
of it is slow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.wire.batch import parse
from scenarios.faults import GroundTruth
from scenarios.fleet import Delivery
from scenarios.heldout_fleet import (
    GIB,
    THR_HW_SLOW,
    THR_HW_THERMAL,
    THR_IDLE,
    THR_POWER_BRAKE,
    Mig,
    Node,
    Proc,
    balanced,
    clip_util,
    ddp,
    derive,
    inference,
    node_deliveries,
    notebooks,
    pipeline,
    sweep,
)
from scenarios.run import ScenarioResult, replay, report, score

EPOCH = 1_767_225_600.0  # 2026-01-01 00:00 UTC; each fleet starts at its own hour after it
MIN = 60.0
# docs/detectors.md: silent_s (180 s) is the wait and for_s is 0; the code registers the wait as
# for_s itself (no silent_s). Either way the bound is the wait + 2 runs, never counted twice.
ALLOW_SILENT = float(params_for("silent_node").get("silent_s", 0.0))
# a leak is news once it will fill the device within the horizon (the 40-minute leak below too)
HORIZON = float(params_for("memory_pressure")["horizon_s"])
ALLOW_CORR = float(params_for("imbalance")["corr_window_s"])
# a slow node is judged on its median over slow_window_s: it crosses once half of it is slow
ALLOW_SLOW = float(params_for("imbalance")["slow_window_s"]) / 2


@dataclass
class Fleet:
    """One held-out scenario: its nodes (series filled by workloads and faults) and ground truth."""

    name: str
    minutes: float
    healthy: bool = False
    hour: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    truths: list[GroundTruth] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.minutes * MIN)

    @property
    def start(self) -> float:
        return EPOCH + 3600.0 * self.hour

    def add(self, name: str, group: str | None, gpus: int, **kw: Any) -> Node:
        """A node; `group` None gives it a group of its own, as docs/detectors.md asks of pools
        that run independent jobs side by side (imbalance and network compare a group's nodes)."""
        group = group if group is not None else f"own-{name}"
        kw.setdefault("cpu_count", 128)
        kw.setdefault("numa_nodes", 2)
        kw.setdefault("mem_total", 1024 * GIB)
        kw.setdefault("intervals", (30.0,))
        node = Node(name, group, self.n, gpus, **kw)
        self.nodes[name] = node
        return node

    def truth(
        self,
        rule: str,
        subject: dict[str, Any],
        t0: float,
        t1: float,
        what: str,
        *,
        allow_s: float = 0.0,
    ) -> None:
        self.truths.append(
            GroundTruth(self.name, rule, subject, self.start + t0, self.start + t1, what, allow_s=allow_s)
        )


def span(node: Node, t0: float, t1: float) -> slice:
    return slice(int(t0), int(min(t1, node.n)))


# -- faulted fleets -------------------------------------------------------------------------------


def f_ddp_7(rng: np.random.Generator) -> Fleet:
    """Seven 8-GPU nodes of one data-parallel job; batches every 10/30 s, 60 s and 15 s."""
    f = Fleet("ho-ddp-7", 41, hour=1)
    shapes = [(10.0, 30.0), (60.0,), (15.0,)]
    nodes = [f.add(f"dgx{i:02d}", "pretrain", 8, intervals=shapes[i % 3]) for i in range(1, 8)]
    sig = ddp(nodes, rng, 60, f.n)
    slow = span(nodes[4], 15 * MIN, 27 * MIN)
    for g in nodes[4].gpus:  # dgx05 at 30 % of its peers: a rank given a bad shard
        g.util[slow] = clip_util(sig[slow] * 0.3 + rng.normal(0, 1, slow.stop - slow.start))
    f.truth("imbalance", {"node": "dgx05"}, 15 * MIN, 27 * MIN, "node at 30 % of its peers for 12 min")
    for g in nodes[1].gpus:  # borderline: dgx02 10 % below its peers all along (must not fire)
        g.util = clip_util(g.util * 0.9)
    blip = span(nodes[2], 30 * MIN, 30 * MIN + 40)
    for g in nodes[2].gpus:  # borderline: 40 s at 2 % (under for_s)
        g.util[blip] = 2
    gap = span(nodes[5], 32 * MIN, 40 * MIN)
    for g in nodes[5].gpus:  # borderline: 20 points below (under min_gap)
        g.util[gap] = clip_util(g.util[gap] - 20)
    return f


def f_groups_24(rng: np.random.Generator) -> Fleet:
    """24 four-GPU nodes in three groups: an RL job swinging 45–95 %, a pretraining job, and a
    group idle between jobs that starts one at minute 25."""
    f = Fleet("ho-groups-24", 32, hour=2)
    a = [f.add(f"a{i:02d}", "rl", 4, intervals=(15.0, 30.0)) for i in range(8)]
    b = [f.add(f"b{i:02d}", "pre", 4, intervals=(30.0,)) for i in range(10)]
    c = [f.add(f"c{i:02d}", "next", 4, intervals=(60.0,)) for i in range(6)]
    ddp(a, rng, 30, f.n, swing=True, user="rl-team")
    ddp(b, rng, 30, f.n, user="bob")
    ddp(c, rng, 25 * MIN, f.n, user="cat")
    flat = span(a[3], 10 * MIN, f.n)
    for node in (a[3], a[6]):  # stuck in a loop of their own: flat near 72 % while the group swings
        for g in node.gpus:
            g.util[flat] = clip_util(72 + rng.normal(0, 0.8, flat.stop - flat.start))
        f.truth(
            "imbalance",
            {"node": node.name},
            10 * MIN,
            f.n,
            "flat at 72 % in a group swinging 45–95 %",
            allow_s=ALLOW_CORR,
        )
    dead = span(b[2], 15 * MIN, f.n)
    for node in (b[2], b[7]):  # ranks exited: no process, no traffic, peers carry on
        for g in node.gpus:
            g.util[dead] = 0
            g.mem[dead] = 1047 * (1 << 20)
        for p in node.procs:
            p.end = min(p.end, 15 * MIN)
        node.net[dead] = 25e3
        node.cpu_busy[dead] = 0.5
        f.truth("imbalance", {"node": node.name}, 15 * MIN, f.n, "ranks exited, peers busy")
    return f


def f_slowlink_7(rng: np.random.Generator) -> Fleet:
    """Seven 2-GPU nodes fine-tuning together, slowdown at 90 °C; batches every 5 s on some."""
    f = Fleet("ho-slowlink-7", 40, hour=3)
    nodes = [
        f.add(f"s{i}", "ft", 2, cpu_count=64, slowdown=90.0, intervals=((5.0,) if i % 2 else (30.0,)))
        for i in range(1, 8)
    ]
    ddp(nodes, rng, 40, f.n, bw=0.9e9)
    slow = span(nodes[3], 12 * MIN, 30 * MIN)
    for node in nodes:  # the whole job waits on s4's link: everyone at 60 %, in step
        for g in node.gpus:
            g.util[slow] = clip_util(g.util[slow] * 0.6)
        node.net[slow] *= 0.6
    nodes[3].net[slow] = nodes[0].net[slow] * 0.08  # NCCL fell back to a slow path on s4
    f.truth("network", {"node": "s4"}, 12 * MIN, 30 * MIN, "s4 at 8 % of its peers' traffic")
    for node in nodes:
        derive(node, rng)
    full = span(nodes[0], 20 * MIN, f.n)
    nodes[0].gpus[1].mem[full] = 0.965 * nodes[0].gpus[1].mem_total  # a larger batch: 96.5 % in use
    f.truth(
        "memory_pressure", {"node": "s1", "gpu": 1}, 20 * MIN, f.n, "GPU at 96.5 % after a batch-size change"
    )
    fan = span(nodes[5], 8 * MIN, 18 * MIN)  # a fan died: HW slowdown for heat
    g = nodes[5].gpus[0]
    g.temp[fan] = 89 + np.round(rng.normal(0, 0.5, fan.stop - fan.start))
    g.throttle[fan] |= THR_HW_SLOW | THR_HW_THERMAL
    f.truth(
        "throttling", {"node": "s6", "gpu": 0}, 8 * MIN, 18 * MIN, "fan failure: HW thermal slowdown at 89 °C"
    )
    blip = span(nodes[1], 25 * MIN, 25 * MIN + 30)  # borderline: a 30 s thermal blip
    nodes[1].gpus[1].throttle[blip] |= THR_HW_THERMAL
    nodes[1].gpus[1].temp[blip] = 88
    return f


def f_pipeline_6(rng: np.random.Generator) -> Fleet:
    """Six 8-GPU pipeline stages (end stages lighter, moving a third of the bytes): two leaks."""
    f = Fleet("ho-pipeline-6", 55, hour=4)
    nodes = [f.add(f"pp{i}", "pp", 8, intervals=(20.0,)) for i in range(1, 7)]
    pipeline(nodes, rng, 30, f.n)
    for node in nodes:
        derive(node, rng)
    t = np.arange(f.n, dtype=float)
    g = nodes[2].gpus[5]  # fills in 10 minutes from 82 %: sequence lengths creeping up
    leak = span(nodes[2], 30 * MIN, 40 * MIN)
    g.mem[leak] = 66 * GIB + (t[leak] - 30 * MIN) / 600 * (g.mem_total - 66 * GIB)
    g.mem[int(40 * MIN) :] = 66 * GIB  # OOM: the stage restarts
    f.truth(
        "memory_pressure",
        {"node": "pp3", "gpu": 5},
        30 * MIN,
        40 * MIN,
        "leak filling the GPU in 10 min",
    )
    g = nodes[0].gpus[2]  # fills in 40 minutes from 55 %: only its last 15 are news
    leak = span(nodes[0], 10 * MIN, 50 * MIN)
    g.mem[leak] = 44 * GIB + (t[leak] - 10 * MIN) / 2400 * (g.mem_total - 44 * GIB)
    g.mem[int(50 * MIN) :] = 44 * GIB
    eta = 10 * MIN + 2400 - HORIZON  # full within the 15 min horizon from here
    f.truth("memory_pressure", {"node": "pp1", "gpu": 2}, eta, 50 * MIN, "leak filling the GPU in 40 min")
    for gg in nodes[3].gpus:  # borderline: a caching allocator's 3-minute sawtooth 70–88 %
        gg.mem[30:] = gg.mem_total * (0.70 + 0.18 * ((t[30:] % 180) / 180))
    g = nodes[1].gpus[0]  # borderline: a slow leak, 150 minutes from full
    g.mem[30:] = 50 * GIB + (t[30:] - 30) / 60 * 0.2 * GIB
    return f


def f_lab_3(rng: np.random.Generator) -> Fleet:
    """A lab: a 1-GPU box sampling every 2 s (no cpu_busy_cores), a 2-GPU box with a notebook and
    an H100 in MIG mode, a 4-GPU box; batches every 10, 15/5 and 60 s."""
    f = Fleet("ho-lab-3", 45, hour=5)
    l1 = f.add(
        "lab-1",
        None,
        1,
        cpu_count=16,
        numa_nodes=1,
        mem_total=128 * GIB,
        intervals=(10.0,),
        sample_s=2,
        busy_cores_metric=False,
    )
    l2 = f.add("lab-2", None, 2, cpu_count=32, mem_total=256 * GIB, intervals=(15.0, 5.0))
    l3 = f.add("lab-3", None, 4, cpu_count=64, mem_total=512 * GIB, intervals=(60.0,))
    n = f.n
    # lab-1: one training job, starved by its data loader from minute 10 to 35
    g = l1.gpus[0]
    g.util[60:] = clip_util(84 + rng.normal(0, 4, n - 60))
    g.mem[60:] = 30 * GIB
    l1.procs.append(Proc(0, 501, "dee", "dee-train00000", 60, n, 30 * GIB, list(range(16)), [0]))
    l1.cpu_busy[60:] = 6 + rng.normal(0, 0.5, n - 60)
    starve = span(l1, 10 * MIN, 35 * MIN)
    k = starve.stop - starve.start
    g.util[starve] = clip_util(np.where(rng.random(k) < 0.22, rng.uniform(60, 95, k), rng.uniform(0, 6, k)))
    l1.cpu_busy[starve] = 15.4 + rng.normal(0, 0.3, k)
    f.truth("input_bound", {"node": "lab-1"}, 10 * MIN, 35 * MIN, "1 GPU ~20 % bursty, 15.4 of 16 cores busy")
    # lab-2 GPU 0: a notebook, left idle for 20 minutes, later for 4
    notebooks(l2, rng, 0, n, ["carol"], gpus=[0])
    for a, b in ((12 * MIN, 32 * MIN), (36 * MIN, 40 * MIN)):
        l2.gpus[0].util[span(l2, a, b)] = 0
    f.truth(
        "idle_held", {"node": "lab-2", "gpu": 0}, 12 * MIN, 32 * MIN, "notebook idle 20 min holding memory"
    )
    # lab-2 GPU 1: MIG 2×3g.40gb; erin's slice idle from minute 5; repartitioned at minute 28
    g = l2.gpus[1]
    g.mig_from = 0.0
    t = np.arange(n)
    erin_sm = np.where((t % 100) < 30, 55.0, 0.0)
    erin_sm[int(5 * MIN) :] = 0
    job_sm = clip_util(70 + rng.normal(0, 5, n))
    l2.migs += [
        Mig(1, "MIG-lab2-1-gi1", 1, 0, "3g.40gb", 40 * GIB, 0, 28 * MIN, np.full(n, 9.0 * GIB), erin_sm),
        Mig(1, "MIG-lab2-1-gi2", 2, 0, "3g.40gb", 40 * GIB, 0, 28 * MIN, np.full(n, 22.0 * GIB), job_sm),
    ]
    l2.procs += [
        Proc(
            1,
            610,
            "erin",
            "jupyter-erin",
            0,
            28 * MIN - 5,
            9 * GIB,
            list(range(16, 20)),
            [1],
            mig_uuid="MIG-lab2-1-gi1",
        ),
        Proc(
            1,
            611,
            "finn",
            "finn-infer0000",
            0,
            28 * MIN - 5,
            22 * GIB,
            list(range(20, 28)),
            [1],
            mig_uuid="MIG-lab2-1-gi2",
        ),
    ]
    f.truth(
        "mig_idle",
        {"node": "lab-2", "gpu": 1, "mig": "MIG-lab2-1-gi1"},
        5 * MIN,
        28 * MIN,
        "erin's slice idle",
    )
    for i in range(7):  # the new layout: 7×1g.10gb, one slice picked up by a job, the rest empty
        sm = clip_util(65 + rng.normal(0, 6, n)) if i == 0 else np.zeros(n)
        mem = np.full(n, (6.0 * GIB) if i == 0 else 12 * (1 << 20))
        l2.migs.append(Mig(1, f"MIG-lab2-1-1g-{i}", 7 + i, 0, "1g.10gb", 10 * GIB, 28 * MIN, n, mem, sm))
    l2.procs.append(
        Proc(
            1,
            640,
            "finn",
            "finn-small000",
            29 * MIN,
            n,
            6 * GIB,
            list(range(20, 24)),
            [1],
            mig_uuid="MIG-lab2-1-1g-0",
        )
    )
    f.truth(
        "mig_layout",
        {"node": "lab-2", "gpu": 1},
        28 * MIN,
        30 * MIN,
        "2×3g.40gb → 7×1g.10gb, erin and finn lost slices",
    )
    # lab-3: fay's script holds GPUs 0-2 and computes on GPU 0 only; GPU 3 a zombie allocation
    for i in range(3):
        gg = l3.gpus[i]
        on = span(l3, 6 * MIN, 36 * MIN)
        gg.util[on] = clip_util(94 + rng.normal(0, 2, on.stop - on.start)) if i == 0 else 0
        gg.mem[on] = (40 if i == 0 else 3) * GIB
        l3.procs.append(
            Proc(i, 700, "fay", None, 6 * MIN, 36 * MIN, (40 if i == 0 else 3) * GIB, list(range(32)), [0])
        )
    f.truth(
        "gpu_imbalance",
        {"node": "lab-3"},
        6 * MIN,
        36 * MIN,
        "fay holds 3 GPUs, computes on 1",
    )
    l3.gpus[3].mem[int(8 * MIN) :] = 30 * GIB
    f.truth("idle_held", {"node": "lab-3", "gpu": 3}, 8 * MIN, n, "30 GiB held, no process: zombie")
    l3.cpu_busy[:] = 3 + rng.normal(0, 0.3, n)
    for node in (l1, l2, l3):
        derive(node, rng)
    return f


def f_dp_mistake_4(rng: np.random.Generator) -> Fleet:
    """Nodes of 4, 4, 8 and 8 GPUs: the DataParallel mistake twice, a rank-stall, a NUMA cpuset."""
    f = Fleet("ho-dpmistake-4", 40, hour=6)
    d1 = f.add("d1", None, 4, cpu_count=64, intervals=(15.0,))
    d2 = f.add("d2", None, 4, cpu_count=64, intervals=(30.0, 10.0))
    d3 = f.add("d3", None, 8, intervals=(60.0,))
    d4 = f.add("d4", None, 8, intervals=(5.0,))
    n = f.n
    # d1: a trainer beside its evaluation model (GPU 0 busy, GPU 1 at 6–9 %): by design
    d1.gpus[0].util[:] = clip_util(90 + rng.normal(0, 3, n))
    d1.gpus[1].util[:] = np.round(rng.uniform(6, 9, n))
    for i in (0, 1):
        d1.gpus[i].mem[:] = 20 * GIB
        d1.procs.append(Proc(i, 800 + i, "gil", "gil-rlhf000000", 0, n, 20 * GIB, d1.cores_of(0)[:8], [0]))
    ddp([d1], rng, 0, n, user="hana")  # overwritten below on GPUs 0-1: hana's job is on 2-3
    d1.procs = [p for p in d1.procs if p.user == "gil" or p.gpu >= 2]
    d1.gpus[0].util[:] = clip_util(90 + rng.normal(0, 3, n))
    d1.gpus[1].util[:] = np.round(rng.uniform(6, 9, n))
    # d2: a container given 4 GPUs computes on cuda:0 only, from minute 5
    on = span(d2, 5 * MIN, 30 * MIN)
    for i, gg in enumerate(d2.gpus):
        gg.util[on] = clip_util(97 + rng.normal(0, 1.5, on.stop - on.start)) if i == 0 else 0
        gg.mem[on] = (50 if i == 0 else 0.6) * GIB
        d2.procs.append(
            Proc(
                i,
                900,
                "ivy",
                "ivy-dp00000000",
                5 * MIN,
                30 * MIN,
                (50 if i == 0 else 600 << 20),
                d2.cores_of(i // 2),
                [i // 2],
            )
        )
    f.truth(
        "gpu_imbalance",
        {"node": "d2"},
        5 * MIN,
        30 * MIN,
        "1 of 4 GPUs busy, 3 held idle",
    )
    # d3: torchrun, ranks 3-7 stalled from minute 15 to 30 while 0-2 compute
    ddp([d3], rng, 60, n, user="jon")
    stall = span(d3, 15 * MIN, 30 * MIN)
    for gg in d3.gpus[3:]:
        gg.util[stall] = 0
    for p in d3.procs:
        p.container = "jon-torchrun00"
    f.truth(
        "gpu_imbalance",
        {"node": "d3"},
        15 * MIN,
        30 * MIN,
        "ranks 3-7 stalled, 0-2 busy",
    )
    # d4: every rank pinned to NUMA 1's cores by a bad cpuset: GPUs 0-3 driven from the far socket
    ddp([d4], rng, 3 * MIN, n, user="kim")
    for p in d4.procs:
        p.affinity, p.numa = d4.cores_of(1)[(p.gpu % 4) * 8 : (p.gpu % 4) * 8 + 8], [1]
    for i in range(4):
        f.truth("numa", {"node": "d4", "gpu": i}, 3 * MIN + 45, n, "rank pinned to the other socket")
    for node in (d1, d2, d3, d4):
        derive(node, rng)
    return f


def f_cpu_3(rng: np.random.Generator) -> Fleet:
    """Three 8-GPU, 128-core nodes, each job pinned to 32 cores spanning both sockets."""
    f = Fleet("ho-cpu-3", 40, hour=7)
    nodes = [f.add(f"x{i}", None, 8, intervals=(20.0,)) for i in range(1, 4)]
    n = f.n
    cores = list(range(0, 16)) + list(range(64, 80))
    for j, (node, gpu_lvl, cpu) in enumerate(zip(nodes, (85.0, 30.0, 55.0), (12.0, 25.6, 31.8), strict=True)):
        for i, g in enumerate(node.gpus):
            g.util[30:] = clip_util(
                gpu_lvl + 8 * np.sin(np.arange(n - 30) / 5.0 + i) + rng.normal(0, 4, n - 30)
            )
            g.mem[30:] = 24 * GIB
            node.procs.append(
                Proc(i, 1000 + 10 * j + i, "lee", f"lee-job{j}00000", 30, n, 24 * GIB, cores, [0, 1])
            )
        node.cpu_busy[30:] = cpu + rng.normal(0, 0.3, n - 30)
    starve = span(nodes[0], 8 * MIN, 32 * MIN)
    k = starve.stop - starve.start
    for g in nodes[0].gpus:  # x1: the loader cannot keep up
        g.util[starve] = clip_util(
            np.where(rng.random(k) < 0.15, rng.uniform(50, 90, k), rng.uniform(0, 5, k))
        )
    nodes[0].cpu_busy[starve] = 31.3 + rng.normal(0, 0.4, k)
    f.truth("input_bound", {"node": "x1"}, 8 * MIN, 32 * MIN, "GPUs ~14 %, 31.3 of 32 allowed cores busy")
    for node in nodes:
        derive(node, rng)
    return f


def f_numa_3(rng: np.random.Generator) -> Fleet:
    """A 2-GPU workstation, a 4-GPU VM that knows no NUMA, an 8-GPU node."""
    f = Fleet("ho-numa-3", 35, hour=8)
    q1 = f.add("q1", None, 2, cpu_count=64, intervals=(10.0,))
    q2 = f.add("q2", None, 4, cpu_count=32, numa_unknown=True, intervals=(30.0,))
    q3 = f.add("q3", None, 8, intervals=(15.0, 45.0))
    n = f.n
    g = q1.gpus[1]  # q1 GPU 1 (NUMA 1) driven from NUMA 0 from minute 4
    g.util[int(4 * MIN) :] = clip_util(70 + rng.normal(0, 5, n - int(4 * MIN)))
    g.mem[int(4 * MIN) :] = 30 * GIB
    q1.procs.append(Proc(1, 1101, "max", None, 4 * MIN, n, 30 * GIB, q1.cores_of(0)[:8], [0]))
    f.truth("numa", {"node": "q1", "gpu": 1}, 4 * MIN, n, "GPU on NUMA 1 driven by a process on NUMA 0")
    g = q1.gpus[0]  # q1 GPU 0: a job blocked on a lock, holding 14 GiB at 0 % from minute 6 to 26
    g.util[:] = clip_util(80 + rng.normal(0, 5, n))
    g.util[span(q1, 6 * MIN, 26 * MIN)] = 0
    g.mem[:] = 14 * GIB
    q1.procs.append(Proc(0, 1100, "max", None, 0, n, 14 * GIB, q1.cores_of(0)[8:16], [0]))
    f.truth("idle_held", {"node": "q1", "gpu": 0}, 6 * MIN, 26 * MIN, "job blocked, 14 GiB held at 0 %")
    ddp([q2], rng, 60, n, user="ned")  # q2: topology unknown (numa_node -1): never evidence
    for p in q2.procs:
        p.numa = [0]
    ddp([q3], rng, 60, n, user="oli")  # q3: ranks span both sockets; GPU 7 carries a tiny job
    for p in q3.procs:
        p.affinity, p.numa = list(range(128)), [0, 1]
    q3.procs = [p for p in q3.procs if p.gpu != 7]
    q3.gpus[7].util[:] = np.round(rng.uniform(5, 10, n))
    q3.gpus[7].mem[:] = 3 * GIB
    q3.procs.append(Proc(7, 1300, "pia", None, 0, n, 3 * GIB, q3.cores_of(0)[:4], [0]))
    for node in (q1, q2, q3):
        derive(node, rng)
    return f


def f_thermal_4(rng: np.random.Generator) -> Fleet:
    """Four 8-GPU nodes of one job: a creeping temperature, a power brake, a fan failure's XID,
    a NIC on a slow path; blips and application XIDs beside them."""
    f = Fleet("ho-thermal-4", 45, hour=9)
    nodes = [f.add(f"t{i}", "t", 8, intervals=(30.0,)) for i in range(1, 5)]
    ddp(nodes, rng, 60, f.n)
    slow = span(nodes[3], 30 * MIN, 42 * MIN)
    for node in nodes:
        for g in node.gpus:
            g.util[slow] = clip_util(g.util[slow] * 0.75)
        node.net[slow] *= 0.75
    nodes[3].net[slow] = nodes[0].net[slow] * 0.12
    f.truth("network", {"node": "t4"}, 30 * MIN, 42 * MIN, "t4 traffic at 12 % of its peers")
    for node in nodes:
        derive(node, rng)
    g = nodes[0].gpus[6]  # creeping: +20 °C over 25 minutes from minute 5 (dust, a failing fan)
    t = np.arange(f.n, dtype=float)
    creep = np.clip((t - 5 * MIN) / (25 * MIN), 0, 1) * 20.0
    creep[int(40 * MIN) :] = 0
    g.temp = np.round(np.minimum(g.temp + creep, 86))
    near = np.convolve(g.temp >= 84, np.ones(60), mode="full")[: f.n] >= 59.5  # a minute at ≥ 84 °C
    busy = g.util >= 10
    t_near = float(np.argmax(near & busy))
    f.truth(
        "throttling",
        {"node": "t1", "gpu": 6},
        t_near,
        40 * MIN,
        "temperature crept to within 3 °C of slowdown",
    )
    brake = span(nodes[2], 20 * MIN, 26 * MIN)
    nodes[2].gpus[0].throttle[brake] |= THR_POWER_BRAKE | THR_HW_SLOW
    f.truth("throttling", {"node": "t3", "gpu": 0}, 20 * MIN, 26 * MIN, "HW power brake for 6 min")
    blip = span(nodes[1], 15 * MIN, 15 * MIN + 30)
    nodes[1].gpus[3].throttle[blip] |= THR_HW_THERMAL
    nodes[1].events.append(
        {
            "ts": 25 * MIN + 0.4,
            "type": "xid",
            "gpu_index": 5,
            "code": 79,
            "message": "GPU has fallen off the bus",
        }
    )
    nodes[1].gpus[5].util_null[int(25 * MIN) + 1 :] = True
    f.truth("hardware_errors", {"node": "t2", "gpu": 5}, 25 * MIN, 26 * MIN, "XID 79")
    nodes[0].events.append(
        {"ts": 10 * MIN + 0.7, "type": "xid", "gpu_index": 2, "code": 13, "message": "Graphics Exception"}
    )
    nodes[3].gpus[4].sbe[int(12 * MIN) :] = 1
    nodes[3].gpus[4].sbe[int(22 * MIN) :] = 3
    return f


def f_infer_7(rng: np.random.Generator) -> Fleet:
    """Seven 1-GPU serving nodes (64 GiB hosts) reporting remapped rows; batches every 5, 10, 60 s."""
    f = Fleet("ho-infer-7", 40, hour=10)
    shapes = [(5.0,), (10.0,), (60.0,)]
    nodes = [
        f.add(
            f"i{i}",
            "serve",
            1,
            cpu_count=32,
            numa_nodes=1,
            mem_total=64 * GIB,
            intervals=shapes[i % 3],
            extended_hw=True,
        )
        for i in range(1, 8)
    ]
    inference(nodes, rng, 0, f.n)
    for node in nodes:
        derive(node, rng)
        node.host_mem[:] = 0.35 * node.mem_total
    nodes[5].gpus[0].dbe[int(12 * MIN) :] = 1
    f.truth("hardware_errors", {"node": "i6", "gpu": 0}, 12 * MIN, 13 * MIN, "uncorrectable ECC error")
    nodes[1].gpus[0].remapped[:] = 2
    nodes[1].gpus[0].remapped[int(20 * MIN) :] = 3
    f.truth(
        "hardware_errors",
        {"node": "i2", "gpu": 0},
        20 * MIN,
        21 * MIN,
        "row remapped for an uncorrectable error",
    )
    nodes[3].gpus[0].dbe[:] = 4  # borderline: old errors, not news
    nodes[3].gpus[0].retired[:] = 2
    nodes[4].dark.append((25 * MIN, f.n))
    f.truth(
        "silent_node", {"node": "i5"}, 25 * MIN - 1, f.n, "shipper stopped for good", allow_s=ALLOW_SILENT
    )
    t = np.arange(f.n, dtype=float)
    h = nodes[2]  # host memory leak 2.5 GiB/min from 35 % of 64 GiB: the OOM killer at ~26.6 min
    oom = 10 * MIN + (h.mem_total * 0.65) / (2.5 * GIB) * 60
    leak = span(h, 10 * MIN, oom)
    h.host_mem[leak] = 0.35 * h.mem_total + (t[leak] - 10 * MIN) / 60 * 2.5 * GIB
    f.truth(
        "memory_pressure",
        {"node": "i3", "gpu": "host"},
        max(10 * MIN, oom - HORIZON),
        oom,
        "host leak 2.5 GiB/min",
    )
    return f


def f_mig_2(rng: np.random.Generator) -> Fleet:
    """An H100 node with four GPUs in MIG mode (7×1g.10gb each) and an A100 node (no util_sm)."""
    f = Fleet("ho-mig-2", 40, hour=11)
    m1 = f.add("m1", None, 4, intervals=(10.0,))
    m2 = f.add("m2", None, 2, cpu_count=64, intervals=(30.0,))
    n = f.n
    users = ("gus", "hal", "ida", "jay", "kai", "liv", "moe")
    for g in range(4):
        m1.gpus[g].mig_from = 0.0
        for i in range(7):
            end = 15 * MIN if g == 2 else n  # GPU 2 is repartitioned at minute 15
            uuid = f"MIG-m1-{g}-{7 + i}"
            sm = np.where((np.arange(n) + 37 * i) % 150 < 60, rng.uniform(35, 90), 0.0) + rng.uniform(0, 3, n)
            m1.migs.append(
                Mig(g, uuid, 7 + i, 0, "1g.10gb", 10 * GIB, 0, end, np.full(n, 4.0 * GIB), clip_util(sm))
            )
            m1.procs.append(
                Proc(
                    g,
                    2000 + 10 * g + i,
                    users[i],
                    f"jupyter-{users[i]}",
                    0,
                    end - 1,
                    4 * GIB,
                    m1.cores_of(g // 2)[i * 4 : i * 4 + 4],
                    [g // 2],
                    mig_uuid=uuid,
                    name="ipykernel",
                )
            )
    idle = next(m for m in m1.migs if m.uuid == "MIG-m1-0-9")
    assert idle.util_sm is not None
    idle.util_sm[int(6 * MIN) : int(30 * MIN)] = 0  # ida's notebook left idle
    f.truth(
        "mig_idle",
        {"node": "m1", "gpu": 0, "mig": "MIG-m1-0-9"},
        6 * MIN,
        30 * MIN,
        "notebook slice idle 24 min",
    )
    z = next(m for m in m1.migs if m.uuid == "MIG-m1-1-11")  # a crashed process left 3 GiB behind
    assert z.util_sm is not None
    z.util_sm[int(2 * MIN) :] = 0
    z.mem[int(2 * MIN) :] = 3 * GIB
    for p in m1.procs:
        if p.mig_uuid == z.uuid:
            p.end = 2 * MIN
    f.truth("mig_idle", {"node": "m1", "gpu": 1, "mig": z.uuid}, 2 * MIN, n, "3 GiB held, no process")
    for k, (gi, prof, mem) in enumerate(((1, "3g.40gb", 40), (5, "2g.20gb", 20), (3, "2g.20gb", 20))):
        m1.migs.append(
            Mig(
                2,
                f"MIG-m1-2-new{k}",
                gi,
                0,
                prof,
                mem * GIB,
                15 * MIN,
                n,
                np.full(n, 15 * (1 << 20)),
                np.zeros(n),
            )
        )
    f.truth("mig_layout", {"node": "m1", "gpu": 2}, 15 * MIN, 17 * MIN, "7×1g.10gb → 1×3g.40gb + 2×2g.20gb")
    # m2 (A100, no util_sm): GPU 0 in MIG mode with idle slices held by processes: not judgeable
    m2.gpus[0].mig_from = 0.0
    for i in range(3):
        uuid = f"MIG-m2-0-{i}"
        m2.migs.append(Mig(0, uuid, 1 + i, 0, "2g.20gb", 20 * GIB, 0, n, np.full(n, 5.0 * GIB), None))
        m2.procs.append(Proc(0, 2100 + i, "nia", None, 0, n, 5 * GIB, m2.cores_of(0)[:4], [0], mig_uuid=uuid))
    # m2 GPU 1: busy, then MIG mode on at minute 10 with nothing created, partitioned at 14
    g1 = m2.gpus[1]
    g1.util[: int(9 * MIN)] = clip_util(75 + rng.normal(0, 5, int(9 * MIN)))
    g1.mem[: int(9 * MIN)] = 30 * GIB
    m2.procs.append(Proc(1, 2200, "oz", None, 0, 9 * MIN, 30 * GIB, m2.cores_of(1)[:8], [1]))
    g1.mig_from = 10 * MIN
    for k, gi in enumerate((1, 2)):
        m2.migs.append(
            Mig(1, f"MIG-m2-1-{k}", gi, 0, "3g.40gb", 40 * GIB, 14 * MIN, n, np.full(n, 15 * (1 << 20)), None)
        )
    f.truth("mig_layout", {"node": "m2", "gpu": 1}, 14 * MIN, 16 * MIN, "MIG on, then partitioned 2×3g.40gb")
    for node in (m1, m2):
        for gpu in node.gpus:  # a GPU's memory in use is at least its instances'
            gpu.mem = np.maximum(gpu.mem, sum((m.mem for m in node.migs if m.gpu == gpu.index), np.zeros(n)))
        derive(node, rng)
    return f


def f_silent_5(rng: np.random.Generator) -> Fleet:
    """Five 2-GPU nodes of one job batching every 60 s: two shippers stop, one link drops 100 s."""
    f = Fleet("ho-silent-5", 40, hour=12)
    nodes = [f.add(f"n{c}", "j", 2, cpu_count=64, intervals=(60.0,), late_p=0.08) for c in "abcde"]
    ddp(nodes, rng, 30, f.n)
    for node in nodes:
        derive(node, rng)
    nodes[1].dark.append((10 * MIN, 18 * MIN))
    f.truth("silent_node", {"node": "nb"}, 10 * MIN - 1, 18 * MIN, "shipper down 8 min", allow_s=ALLOW_SILENT)
    nodes[3].spooled.append((20 * MIN, 20 * MIN + 100))  # borderline: spooled, delivered late
    nodes[4].dark.append((25 * MIN, f.n))
    f.truth(
        "silent_node", {"node": "ne"}, 25 * MIN - 1, f.n, "shipper stopped for good", allow_s=ALLOW_SILENT
    )
    return f


def f_jobs_8(rng: np.random.Generator) -> Fleet:
    """Eight 2-GPU nodes of one data-parallel job (evaluations and checkpoints pause it): a node
    at 57 % of its peers for 30 minutes, a node 20 % below all along (must not fire), then a
    stalled rank holding its memory (one job, one alert at a time), a GPU overheating for 30
    minutes that cools 9 °C in each 40 s pause of its own, a leak that fills a GPU in 5 minutes;
    batches every 10, 30 and 60 s."""
    f = Fleet("ho-jobs-8", 50, hour=12)
    shapes = [(10.0,), (30.0,), (60.0,)]
    nodes = [f.add(f"j{i}", "jobs", 2, intervals=shapes[i % 3]) for i in range(1, 9)]
    sig = ddp(nodes, rng, 60, f.n, user="kim")
    slow = span(nodes[2], 5 * MIN, 35 * MIN)
    for g in nodes[2].gpus:  # j3: a slow disk, every step 1.75 times as long
        g.util[slow] = clip_util(sig[slow] * 0.57 + rng.normal(0, 1, slow.stop - slow.start))
    f.truth(
        "imbalance",
        {"node": "j3"},
        5 * MIN,
        35 * MIN,
        "node at 57 % of its peers for 30 min",
        allow_s=ALLOW_SLOW,
    )
    for g in nodes[5].gpus:  # borderline: j6 20 % below its peers all along
        g.util = clip_util(g.util * 0.8)
    stall = span(nodes[7], 40 * MIN, 48 * MIN)
    for g in nodes[7].gpus:  # j8: ranks hung before a collective, processes and memory kept
        g.util[stall] = 0
    nodes[7].net[stall] = 3e4
    f.truth(
        "imbalance",
        {"node": "j8"},
        40 * MIN,
        48 * MIN,
        "rank stalled, memory held",
    )
    for node in nodes:
        derive(node, rng)
    g = nodes[0].gpus[0]  # j1 GPU 0: cooling failed; its own 40 s pauses every 5 min cool it 9 °C
    hot = span(nodes[0], 12 * MIN, 42 * MIN)
    t = np.arange(f.n, dtype=float)
    g.temp[hot] = 87 + np.round(rng.normal(0, 0.5, hot.stop - hot.start))
    g.throttle[hot] |= THR_HW_SLOW | THR_HW_THERMAL
    phase = (t - 12 * MIN) % 300
    rest = (t >= 12 * MIN) & (t < 42 * MIN) & (phase >= 260)
    g.util[rest] = 0
    g.temp[rest] = np.round(87 - 9 * (phase[rest] - 260) / 40)
    g.throttle[rest] = THR_IDLE
    f.truth(
        "throttling", {"node": "j1", "gpu": 0}, 12 * MIN, 42 * MIN, "hot for 30 min, cooling in 40 s pauses"
    )
    g = nodes[1].gpus[1]  # j2 GPU 1: fills in 5 minutes from 73 % (a cache with no bound), then OOM
    leak = span(nodes[1], 35 * MIN, 40 * MIN)
    g.mem[leak] = 58 * GIB + (t[leak] - 35 * MIN) / 300 * (g.mem_total - 58 * GIB)
    g.mem[int(40 * MIN) :] = 58 * GIB
    f.truth("memory_pressure", {"node": "j2", "gpu": 1}, 35 * MIN, 40 * MIN, "leak filling the GPU in 5 min")
    return f


# -- healthy fleets -------------------------------------------------------------------------------


def h_llm_24(rng: np.random.Generator, minutes: float) -> Fleet:
    """24 eight-GPU nodes: pretraining (restarted once), pipeline-parallel, LLM serving."""
    f = Fleet("ho-healthy-llm-24", minutes, healthy=True, hour=13)
    pre = [f.add(f"pt{i:02d}", "pretrain", 8, intervals=(15.0, 30.0)) for i in range(12)]
    pp = [f.add(f"pp{i}", "pp", 8, intervals=(10.0,)) for i in range(6)]
    sv = [f.add(f"sv{i}", "serve", 8, intervals=((5.0,) if i % 2 else (60.0,))) for i in range(6)]
    if minutes > 60:
        ddp(pre, rng, 120, 100 * MIN)
        ddp(pre, rng, 104 * MIN, f.n, user="alice2")
    else:
        ddp(pre, rng, 120, f.n)
    pipeline(pp, rng, 60, f.n)
    inference(sv, rng, 0, f.n)
    for node in f.nodes.values():
        derive(node, rng)
    return f


def h_sweep_7(rng: np.random.Generator, minutes: float) -> Fleet:
    """Seven 4-GPU nodes running a sweep of 1-GPU jobs from a deep queue."""
    f = Fleet("ho-healthy-sweep-7", minutes, healthy=True, hour=18)
    nodes = [
        f.add(f"w{i}", None, 4, cpu_count=64, intervals=((60.0,) if i % 2 else (15.0,))) for i in range(7)
    ]
    sweep(nodes, rng, 0, f.n)
    for node in nodes:
        derive(node, rng)
    return f


def h_lab_3(rng: np.random.Generator, minutes: float) -> Fleet:
    """Notebook users on 1-, 2- and 4-GPU boxes (one sampling every 2 s), one H100 GPU in MIG
    mode with busy notebook slices."""
    f = Fleet("ho-healthy-lab-3", minutes, healthy=True, hour=23)
    l1 = f.add(
        "hl-1", None, 1, cpu_count=16, numa_nodes=1, mem_total=128 * GIB, sample_s=2, intervals=(10.0,)
    )
    l2 = f.add("hl-2", None, 2, cpu_count=32, mem_total=256 * GIB, intervals=(15.0,))
    l3 = f.add("hl-3", None, 4, cpu_count=64, mem_total=512 * GIB, intervals=(60.0, 30.0))
    notebooks(l1, rng, 0, f.n, ["pam"])
    notebooks(l2, rng, 0, f.n, ["quin"], gpus=[0])
    notebooks(l3, rng, 0, f.n, ["rae", "sol", "tam", "uma"])
    g = l2.gpus[1]
    g.mig_from = 0.0
    n = f.n
    for i in range(4):
        uuid = f"MIG-hl2-{i}"
        sm = np.zeros(n)
        t = float(rng.uniform(0, 60))
        while t < n:
            run = int(rng.uniform(15, 80))
            sm[int(t) : int(t) + run] = rng.uniform(25, 90)
            t += run + min(float(rng.exponential(60)) + 5, 220.0)
        m = Mig(1, uuid, 3 + i, 0, "1g.20gb", 20 * GIB, 0, n, np.full(n, 5.0 * GIB), clip_util(sm))
        l2.migs.append(m)
        l2.procs.append(
            Proc(
                1,
                3300 + i,
                f"stu{i}",
                f"jupyter-stu{i}",
                0,
                n,
                5 * GIB,
                l2.cores_of(1)[i * 2 : i * 2 + 2],
                [1],
                mig_uuid=uuid,
            )
        )
    g.mem[:] = 20 * GIB
    for node in (l1, l2, l3):
        derive(node, rng)
    return f


def h_night_5(rng: np.random.Generator, minutes: float) -> Fleet:
    """Five 2-GPU nodes idle (nothing held) until a job starts, then idle again when it ends."""
    f = Fleet("ho-healthy-night-5", minutes, healthy=True, hour=31)
    nodes = [f.add(f"k{i}", "k", 2, cpu_count=48, intervals=(30.0, 60.0)) for i in range(5)]
    t0, t1 = (3 * 60 * MIN, 5 * 60 * MIN) if minutes > 60 else (20 * MIN, f.n)
    ddp(nodes, rng, t0, t1, user="vic")
    for node in nodes:
        derive(node, rng)
    return f


def h_shared_6(rng: np.random.Generator, minutes: float) -> Fleet:
    """Six 4-GPU nodes in ONE node group running a sweep of 1-GPU jobs (each its own container,
    users taking turns): independent jobs sharing a group, none another's peer."""
    f = Fleet("ho-healthy-shared-6", minutes, healthy=True, hour=40)
    nodes = [
        f.add(f"sh{i}", "shared", 4, cpu_count=64, intervals=((30.0,) if i % 2 else (10.0,)))
        for i in range(6)
    ]
    sweep(nodes, rng, 0, f.n)
    for node in nodes:
        derive(node, rng)
    return f


def h_lb_16(rng: np.random.Generator, minutes: float) -> Fleet:
    """Sixteen 1-GPU replicas behind one balancer, busy, each answering its own requests."""
    f = Fleet("ho-healthy-lb-16", minutes, healthy=True, hour=44)
    nodes = [f.add(f"lb{i:02d}", "lb", 1, cpu_count=32, numa_nodes=1, intervals=(30.0,)) for i in range(16)]
    balanced(nodes, rng, 0, f.n)
    for node in nodes:
        derive(node, rng)
    return f


FAULTED: dict[str, Callable[[np.random.Generator], Fleet]] = {
    "ho-ddp-7": f_ddp_7,
    "ho-groups-24": f_groups_24,
    "ho-slowlink-7": f_slowlink_7,
    "ho-pipeline-6": f_pipeline_6,
    "ho-lab-3": f_lab_3,
    "ho-dpmistake-4": f_dp_mistake_4,
    "ho-cpu-3": f_cpu_3,
    "ho-numa-3": f_numa_3,
    "ho-thermal-4": f_thermal_4,
    "ho-infer-7": f_infer_7,
    "ho-mig-2": f_mig_2,
    "ho-silent-5": f_silent_5,
    "ho-jobs-8": f_jobs_8,
}
HEALTHY: dict[str, tuple[Callable[[np.random.Generator, float], Fleet], float, float]] = {
    # name: (builder, minutes in the full run, minutes in --quick)
    "ho-healthy-llm-24": (h_llm_24, 120, 20),
    "ho-healthy-sweep-7": (h_sweep_7, 240, 40),
    "ho-healthy-lab-3": (h_lab_3, 480, 40),
    "ho-healthy-night-5": (h_night_5, 360, 40),
    "ho-healthy-shared-6": (h_shared_6, 240, 15),
    "ho-healthy-lb-16": (h_lb_16, 240, 15),
}


# -- running --------------------------------------------------------------------------------------


def build(name: str, seed: int, quick: bool) -> Fleet:
    """The named fleet, generated from `seed` (and the name, so fleets do not share noise)."""
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    if name in FAULTED:
        fleet = FAULTED[name](rng)
    else:
        builder, full, short = HEALTHY[name]
        fleet = builder(rng, short if quick else full)
    for node in fleet.nodes.values():
        if not node.derived:
            derive(node, rng)
    return fleet


def deliveries(fleet: Fleet, seed: int) -> list[Delivery]:
    """Every node's batches in order of arrival, each parsed as ingest would parse it."""
    rng = np.random.default_rng([seed, 7, sum(map(ord, fleet.name))])
    out = [d for node in fleet.nodes.values() for d in node_deliveries(node, fleet.name, fleet.start, rng)]
    out.sort(key=lambda d: d.at)
    for d in out:
        parse(json.dumps(d.doc).encode(), now=d.at)  # raises InvalidInput on a document ingest would refuse
    return out


def run_fleet(args: tuple[str, int, bool]) -> ScenarioResult:
    """Generate, validate and replay one fleet through analyze's path."""
    name, seed, quick = args
    t0 = time.perf_counter()
    fleet = build(name, seed, quick)
    batches = deliveries(fleet, seed)
    end = fleet.start + fleet.n
    alarms, runs, count = replay(name, fleet.name, batches, fleet.start, end)
    return ScenarioResult(
        name=name,
        healthy=fleet.healthy,
        nodes=len(fleet.nodes),
        duration_s=float(fleet.n),
        start=fleet.start,
        truths=tuple(fleet.truths),
        alarms=tuple(alarms),
        runs=runs,
        batches=count,
        seconds=time.perf_counter() - t0,
    )


def run_heldout(seed: int = 1, quick: bool = False, workers: int | None = None) -> list[ScenarioResult]:
    """Every held-out fleet (faulted and healthy), over `workers` processes."""
    names = [*FAULTED, *HEALTHY]
    jobs = [(n, seed, quick) for n in names]
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        return [run_fleet(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_fleet, jobs))


def exercised(results: Iterable[ScenarioResult]) -> list[str]:
    """The rules some held-out fault is about, in catalogue order."""
    rules = {t.rule for r in results for t in r.truths}
    return [r for r in CATALOGUE if r in rules]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.heldout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="noise seed (default 1)")
    parser.add_argument("--quick", action="store_true", help="short healthy fleets (about a minute)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    parser.add_argument("--jsonl", action="store_true", help="also print one JSON line per rule, alarm, miss")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = run_heldout(args.seed, args.quick, args.workers)
    rules = list(CATALOGUE)
    scores = score(results, rules)
    lines: list[str] = []
    report(results, scores, {}, sys.stdout, lambda row: lines.append(json.dumps(row, default=str)))
    print(f"\nexercised: {', '.join(exercised(results))}")
    for r in results:
        print(
            f"  {r.name:<22} {r.nodes:>3} nodes {r.duration_s / 60:>5.0f} min {len(r.truths):>2} faults "
            f"{len(r.alarms):>3} alarms {r.batches:>6} batches {r.seconds:>5.1f} s"
        )
    if args.jsonl:
        print("\n".join(lines))
    print(f"\n{len(results)} fleets, seed {args.seed}, quick={args.quick}, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
