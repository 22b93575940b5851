"""The named scenarios: healthy fleets, and fleets with faults of each rule injected.

Every scenario is built twice over: quick (4 GPUs a node, 36–60 minutes, one fault or two) for
the unit test and `--quick`, and full (8 GPUs a node, hours, several variants of each fault
on different nodes and at different times) for the figures in docs/scenarios.md. Fault
scenarios run a realistic background (the fault's natural habitat: a training group for
imbalance, a serving pool for a leak) and leave at least ten minutes before the first fault,
so that the window is full and the background has had its chance to raise false alarms.

Node groups follow what they run: the ranks of one distributed job share a group; a serving
pool is one group; a development node, whose jobs have nothing to do with its neighbours',
is a group of its own (the imbalance rule compares the nodes of a group).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from node_shipper.simulate import _mix
from scenarios.faults import (
    CoolingPauses,
    Fault,
    GpuLeak,
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
    SlowNode,
    StalledRanks,
    Starved,
    WrongNuma,
    Xid,
    Zombie,
)
from scenarios.fleet import (
    MIG_2X3G,
    MIG_3G_2G_2X1G,
    MIG_7X1G,
    Fleet,
    Job,
    Node,
)

FOREVER = 1e9
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")


@dataclass(frozen=True)
class Scenario:
    """A fleet, the faults injected into it, and whether it is a healthy (fault-free) one."""

    name: str
    about: str
    fleet: Fleet
    faults: tuple[Fault, ...] = ()
    healthy: bool = False

    @property
    def cost(self) -> float:
        """GPU-seconds: what the replay's time grows with."""
        return sum(n.gpus for n in self.fleet.nodes) * self.fleet.duration_s


# -- building blocks ------------------------------------------------------------------------------


def nodes(
    prefix: str, count: int, gpus: int, group: str | None = "", noisy: tuple[int, ...] = ()
) -> tuple[Node, ...]:
    """`prefix`-01 … in group `prefix` ("" = the prefix, None = each node its own group)."""
    out = []
    for i in range(count):
        name = f"{prefix}-{i + 1:02d}"
        out.append(Node(name, name if group is None else (group or prefix), gpus=gpus, noisy=i in noisy))
    return tuple(out)


def slots(group: tuple[Node, ...]) -> tuple[tuple[str, int, None], ...]:
    return tuple((n.name, g, None) for n in group for g in range(n.gpus))


def training(
    name: str, group: tuple[Node, ...], start: float, end: float, *, swing: float = 0.0, user: str = "alice"
) -> Job:
    """One distributed job over every GPU of the group."""
    return Job("train", name, slots(group), start, end, user, 61_440, warmup_s=45.0, swing=swing)


def serving(group: tuple[Node, ...], *, peak: float = 0.35, start: float = -3600.0) -> tuple[Job, ...]:
    """A serving replica per node (a process per GPU), each GPU's bursts its own."""
    return tuple(
        Job("inference", f"serve-{n.name}", slots((n,)), start, FOREVER, "carol", 30_000, peak=peak, cpus=16)
        for n in group
    )


def dev_jobs(group: tuple[Node, ...], seed: int, until: float) -> tuple[Job, ...]:
    """Fine-tuning jobs of 1–2 GPUs, 20–100 minutes, with idle gaps between them (GPUs released)."""
    jobs: list[Job] = []
    for n in group:
        rng = np.random.default_rng(_mix(seed, n.name, "dev"))
        for pair in range(0, n.gpus, 2):
            t = -rng.uniform(0, 3600)
            while t < until:
                width = 1 if rng.random() < 0.5 else 2
                length = rng.uniform(20 * 60, 100 * 60)
                user = USERS[int(rng.integers(len(USERS)))]
                gpus = range(pair, min(pair + width, n.gpus))
                name = f"ft-{n.name}-{pair}-{len(jobs)}"
                jobs.append(
                    Job(
                        "finetune",
                        name,
                        tuple((n.name, g, None) for g in gpus),
                        t,
                        t + length,
                        user,
                        int(rng.integers(17_000, 41_000)),
                        warmup_s=float(rng.uniform(10, 60)),
                    )
                )
                t += length + min(rng.exponential(1500), 6 * 3600)
    return tuple(jobs)


def mig_nodes(count: int, gpus: int) -> tuple[Node, ...]:
    """Serving nodes with two GPUs in MIG mode: GPU 0 as 7 × 1g.10gb, GPU 1 as 3g + 2g + 2 × 1g."""
    return tuple(
        Node(f"mig-{i + 1:02d}", "mig", gpus=gpus, mig={0: MIG_7X1G, 1: MIG_3G_2G_2X1G}) for i in range(count)
    )


def mig_jobs(group: tuple[Node, ...]) -> tuple[Job, ...]:
    """Small inference servers on every MIG instance, and a replica on each whole GPU."""
    jobs = []
    for n in group:
        for g, layout in n.mig.items():
            jobs.append(
                Job(
                    "inference",
                    f"slices-{n.name}-{g}",
                    tuple((n.name, g, s.gi_id) for s in layout),
                    -3600.0,
                    FOREVER,
                    "carol",
                    7_000,
                    peak=0.5,
                )
            )
        whole = tuple((n.name, g, None) for g in range(n.gpus) if g not in n.mig)
        if whole:
            jobs.append(
                Job("inference", f"serve-{n.name}", whole, -3600.0, FOREVER, "carol", 30_000, cpus=16)
            )
    return tuple(jobs)


def fleet(
    name: str, nodes_: tuple[Node, ...], jobs: tuple[Job, ...], duration_s: float, seed: int = 11
) -> Fleet:
    return Fleet(name=name, cluster=name, seed=seed, duration_s=duration_s, nodes=nodes_, jobs=jobs)


# -- the scenarios --------------------------------------------------------------------------------


def _size(quick: bool) -> tuple[int, float]:
    """(GPUs a node, duration)."""
    return (4, 36 * 60.0) if quick else (8, 100 * 60.0)


def imbalance_lost(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    group = nodes("train", 5 if quick else 8, gpus)
    faults: tuple[Fault, ...] = (RanksLost(("train-02", "train-04"), 600.0, 1200.0),)
    if not quick:
        faults += (
            RanksLost(("train-07",), 2700.0, 3300.0),
            RanksLost(("train-01", "train-05", "train-06"), 4500.0, 5100.0),
        )
    jobs = (training("pretrain", group, -7200.0, FOREVER),)
    return Scenario(
        "imbalance-lost",
        "ranks of a steady training job exit on some nodes",
        fleet("imb-lost", group, jobs, span),
        faults,
    )


def imbalance_step(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    group = nodes("train", 5 if quick else 8, gpus)
    faults: tuple[Fault, ...] = (OutOfStep("train-03", 600.0, 1200.0),)
    if not quick:
        faults += (OutOfStep("train-06", 3000.0, 3600.0, level=75.0),)
    jobs = (training("swinging", group, -7200.0, FOREVER, swing=27.5),)
    return Scenario(
        "imbalance-step",
        "a node runs flat while its group swings 40–95 %",
        fleet("imb-step", group, jobs, span),
        faults,
    )


def _small(quick: bool) -> tuple[int, float]:
    """(GPUs a node, duration) of the scenarios added for jobs: smaller when quick, to keep the
    default test suite's time."""
    return (2, 30 * 60.0) if quick else _size(quick)


def imbalance_slow(quick: bool) -> Scenario:
    gpus, span = _small(quick)
    group = nodes("train", 4 if quick else 8, gpus)
    faults: tuple[Fault, ...] = (SlowNode("train-03", 600.0, 1500.0, ratio=0.57),)
    if not quick:  # 30 minutes at 57 %; 50 % and 65 % later; 80 %, a spread the rule leaves alone
        faults = (
            SlowNode("train-03", 600.0, 2400.0, ratio=0.57),
            SlowNode("train-06", 3000.0, 3600.0, ratio=0.5),
            SlowNode("train-01", 4200.0, 4800.0, ratio=0.65),
            SlowNode("train-08", 5100.0, 5700.0, ratio=0.8),
        )
    jobs = (training("pretrain", group, -7200.0, FOREVER),)
    return Scenario(
        "imbalance-slow",
        "a node runs at 50–80 % of its peers' pace, for up to 30 minutes",
        fleet("imb-slow", group, jobs, span),
        faults,
    )


def imbalance_stalled(quick: bool) -> Scenario:
    gpus, span = _small(quick)
    group = nodes("train", 5 if quick else 8, gpus)
    faults: tuple[Fault, ...] = (StalledRanks(("train-02", "train-04"), 600.0, 1200.0),)
    if not quick:
        faults += (StalledRanks(("train-07",), 3000.0, 3900.0),)
    jobs = (training("pretrain", group, -7200.0, FOREVER),)
    return Scenario(
        "imbalance-stalled",
        "ranks of a training job stall with their memory held while the peers go on",
        fleet("imb-stall", group, jobs, span),
        faults,
    )


def _without(jobs: tuple[Job, ...], taken: set[tuple[str, int]]) -> tuple[Job, ...]:
    """The jobs that use none of the `taken` (node, GPU) pairs: those GPUs are the faults'."""
    return tuple(j for j in jobs if not any((s[0], s[1]) in taken for s in j.slots))


def idle_held(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    dev = nodes("dev", 3 if quick else 6, gpus, group=None)
    taken = {("dev-01", 2), ("dev-03", 1)} | (set() if quick else {("dev-05", 3)})
    # the zombie's GPU runs a job up to the fault: its memory stays when the process goes
    jobs = (
        *_without(dev_jobs(dev, 3, span), taken),
        Job("finetune", "zombie-job", (("dev-03", 1, None),), -1800.0, FOREVER, "dave", 36000),
    )
    faults: tuple[Fault, ...] = (Notebook("dev-01", 2, 600.0, 1320.0), Zombie("dev-03", 1, 660.0, 1320.0))
    if not quick:
        faults += (Notebook("dev-05", 3, 2400.0, 4200.0, user="erin", mem_mib=9_000),)
    return Scenario(
        "idle-held",
        "a notebook holding a GPU at 0 %; memory left with no process",
        fleet("idle", dev, jobs, span),
        faults,
    )


def input_bound(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    dev = nodes("dev", 3 if quick else 5, gpus, group=None)
    jobs = tuple(j for j in dev_jobs(dev, 4, span) if not any(s[0] in ("dev-02", "dev-04") for s in j.slots))
    faults: tuple[Fault, ...] = (Starved("dev-02", tuple(range(gpus)), 600.0, 1320.0, cpus=32),)
    if not quick:
        faults += (Starved("dev-04", (5,), 2400.0, 3600.0, cpus=8),)
    return Scenario(
        "input-bound", "GPUs starved by saturated pinned CPUs", fleet("input", dev, jobs, span), faults
    )


def memory_pressure(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    pool = nodes("serve", 4 if quick else 6, gpus)
    faults: tuple[Fault, ...] = (
        GpuLeak("serve-02", 1, 600.0, 1320.0),
        HostFill("serve-04", 600.0, 1200.0, 1500.0),
    )
    if not quick:  # leaks of several rates: 25 minutes, 5 minutes, and 50 minutes to full
        faults += (
            GpuLeak("serve-05", 6, 3000.0, 4500.0, to_ratio=0.985),
            GpuLeak("serve-06", 2, 2400.0, 2700.0),
            GpuLeak("serve-01", 5, 2400.0, 5400.0),
        )
    return Scenario(
        "memory-pressure",
        "a serving cache leaking GPU memory; host memory filling",
        fleet("mem", pool, serving(pool), span),
        faults,
    )


def throttling(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    group = nodes("train", 4 if quick else 6, gpus)
    faults: tuple[Fault, ...] = (
        Overheat("train-02", 3, 600.0, 1320.0),
        PowerBrake("train-04", 0, 660.0, 1260.0),
    )
    if not quick:  # 30 minutes hot, cooling 9 °C in each 40 s checkpoint pause
        faults += (Overheat("train-05", 6, 3000.0, 3900.0), CoolingPauses("train-06", 2, 3000.0, 4800.0))
    jobs = (training("pretrain", group, -7200.0, FOREVER),)
    return Scenario(
        "throttling",
        "a GPU overheating; a power brake asserted",
        fleet("throttle", group, jobs, span),
        faults,
    )


def numa(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    group = nodes("train", 3 if quick else 4, gpus)
    dev = nodes("dev", 2, gpus, group=None)
    half = gpus // 2
    jobs = (
        training("pretrain", group, -7200.0, FOREVER),
        # the control: a job on the first socket's GPUs, pinned right
        Job(
            "train",
            "right-socket",
            tuple(("dev-01", g, None) for g in range(half)),
            -600.0,
            FOREVER,
            "alice",
            50_000,
        ),
    )
    faults: tuple[Fault, ...] = (WrongNuma("dev-01", tuple(range(half, gpus)), 600.0, 1320.0),)
    if not quick:
        faults += (WrongNuma("dev-02", tuple(range(gpus)), 2400.0, 4200.0, user="erin"),)
    return Scenario(
        "numa",
        "busy GPUs whose processes run on the other socket",
        fleet("numa", group + dev, jobs, span),
        faults,
    )


def network(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    group = nodes("train", 5 if quick else 8, gpus)
    faults: tuple[Fault, ...] = (NetCollapse(("train-02", "train-05"), 600.0, 1200.0),)
    if not quick:
        faults += (NetCollapse(("train-07",), 3000.0, 3600.0, factor=0.05),)
    jobs = (training("pretrain", group, -7200.0, FOREVER),)
    return Scenario(
        "network", "some nodes of a busy group lose their fabric", fleet("net", group, jobs, span), faults
    )


def mig_idle(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    pool = mig_nodes(2, gpus)
    faults: tuple[Fault, ...] = (MigNotebook("mig-01", 0, 9, 600.0, 1320.0),)
    if not quick:
        faults += (MigNotebook("mig-02", 1, 2, 2400.0, 3600.0, user="dave"),)
    return Scenario(
        "mig-idle",
        "a notebook on a MIG slice at 0 % SM",
        fleet("migidle", pool, mig_jobs(pool), span),
        faults,
    )


def mig_layout(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    pool = mig_nodes(2, gpus)
    faults: tuple[Fault, ...] = (MigReconfigure("mig-02", 1, 900.0, MIG_2X3G),)
    if not quick:
        faults += (MigReconfigure("mig-01", 0, 3600.0, MIG_3G_2G_2X1G),)
    return Scenario(
        "mig-layout", "a GPU's MIG layout rebuilt", fleet("miglayout", pool, mig_jobs(pool), span), faults
    )


def silent_node(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    pool = nodes("serve", 4, gpus)
    group = () if quick else nodes("train", 4, gpus)
    jobs = serving(pool) + ((training("pretrain", group, -7200.0, FOREVER),) if group else ())
    faults: tuple[Fault, ...] = (Silent("serve-03", 600.0, 1200.0),)
    if not quick:
        faults += (Silent("train-02", 3000.0, 3900.0, spooled=True),)
    return Scenario(
        "silent-node", "a node crashes; a shipper cut off", fleet("silent", pool + group, jobs, span), faults
    )


def gpu_imbalance(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    dev = nodes("dev", 3 if quick else 4, gpus, group=None)
    jobs = tuple(j for j in dev_jobs(dev, 5, span) if not any(s[0] in ("dev-02", "dev-04") for s in j.slots))
    faults: tuple[Fault, ...] = (OneGpuWorks("dev-02", tuple(range(4)), 600.0, 1320.0),)
    if not quick:
        faults += (OneGpuWorks("dev-04", (4, 5, 6), 2400.0, 3600.0, user="frank"),)
    return Scenario(
        "gpu-imbalance",
        "one GPU of a job works, its others hold and idle",
        fleet("gpuimb", dev, jobs, span),
        faults,
    )


def hardware_errors(quick: bool) -> Scenario:
    gpus, span = _size(quick)
    pool = nodes("serve", 4, gpus)
    faults: tuple[Fault, ...] = (Xid("serve-02", 3, 900.0, 48), Xid("serve-04", 0, 1000.0, 79))
    return Scenario(
        "hardware-errors",
        "an XID 48 with a DBE; a GPU fallen off the bus",
        fleet("hw", pool, serving(pool), span),
        faults,
    )


def healthy_mixed(quick: bool) -> Scenario:
    """Every workload side by side: a training group with a job ending and the next starting,
    a serving pool, development nodes, MIG nodes, two nodes with noisy sensors."""
    gpus = 4 if quick else 8
    span = 3600.0 if quick else 6 * 3600.0
    train = nodes("train", 4, gpus, noisy=(1,))
    pool = nodes("serve", 3, gpus, noisy=(2,))
    dev = nodes("dev", 2 if quick else 3, gpus, group=None)
    mig = mig_nodes(1, gpus)
    jobs: tuple[Job, ...] = (
        training("run-1", train, 300.0, 2700.0, swing=27.5),
        training("run-2", train, 3000.0, 3000.0 + 2.5 * 3600, user="bob"),
    )
    if not quick:
        jobs += (training("run-3", train, 3000.0 + 2.5 * 3600 + 1200.0, FOREVER, swing=20.0),)
    jobs += serving(pool) + dev_jobs(dev, 7, span) + mig_jobs(mig)
    return Scenario(
        "healthy-mixed",
        healthy_mixed.__doc__ or "",
        fleet("mixed", train + pool + dev + mig, jobs, span),
        healthy=True,
    )


def healthy_train(quick: bool) -> Scenario:
    """Two training groups running jobs back to back with idle gaps: warm-ups, checkpoints, ends."""
    gpus = 4 if quick else 8
    span = 3600.0 if quick else 8 * 3600.0
    a = nodes("a", 6, gpus, group="train-a", noisy=(2,))
    b = nodes("b", 4, gpus, group="train-b")
    jobs: list[Job] = []
    rng = np.random.default_rng(_mix(21, "healthy-train"))
    for group, label in ((a, "a"), (b, "b")):
        t = -rng.uniform(0, 3600)
        while t < span:
            length = rng.uniform(1.5 * 3600, 3 * 3600)
            swing = float(rng.choice([0.0, 20.0, 27.5]))
            jobs.append(
                training(f"{label}-{len(jobs)}", group, t, t + length, swing=swing, user=USERS[len(jobs) % 6])
            )
            t += length + rng.uniform(5 * 60, 30 * 60)
    return Scenario(
        "healthy-train", healthy_train.__doc__ or "", fleet("train", a + b, tuple(jobs), span), healthy=True
    )


def healthy_serve(quick: bool) -> Scenario:
    """A serving pool and MIG nodes over a whole day: the load follows the hour."""
    gpus = 4 if quick else 8
    span = 3600.0 if quick else 24 * 3600.0
    pool = nodes("serve", 4, gpus, noisy=(3,))
    mig = mig_nodes(1, gpus)
    return Scenario(
        "healthy-serve",
        healthy_serve.__doc__ or "",
        fleet("serve", pool + mig, serving(pool, peak=0.4) + mig_jobs(mig), span),
        healthy=True,
    )


def healthy_shared(quick: bool) -> Scenario:
    """A shared cluster in one node group running a sweep of independent 1-GPU trials, each its
    own user and container, back to back: no trial is another's peer."""
    gpus = 4 if quick else 8
    span = 1500.0 if quick else 4 * 3600.0
    shared = nodes("gpu", 3 if quick else 6, gpus, group="shared")
    jobs: list[Job] = []
    rng = np.random.default_rng(_mix(31, "healthy-shared"))
    for n in shared:
        for g in range(n.gpus):
            t = -rng.uniform(0, 1800)
            while t < span:
                length = rng.uniform(10 * 60, 40 * 60)
                k = len(jobs)
                jobs.append(
                    Job(
                        "finetune",
                        f"trial-{k}",
                        ((n.name, g, None),),
                        t,
                        t + length,
                        f"u{k % 40:02d}",
                        20_000,
                    )
                )
                t += length + rng.uniform(10, 120)
    return Scenario(
        "healthy-shared",
        healthy_shared.__doc__ or "",
        fleet("shared", shared, tuple(jobs), span),
        healthy=True,
    )


def healthy_balancer(quick: bool) -> Scenario:
    """A 16-node serving fleet behind one balancer, busy: each replica's load its own."""
    gpus = 1 if quick else 2  # few GPUs a node: the burstiest node levels, and a cheap replay
    span = 1200.0 if quick else 4 * 3600.0
    pool = nodes("lb", 16, gpus, group="serve")
    return Scenario(
        "healthy-balancer",
        healthy_balancer.__doc__ or "",
        fleet("lb", pool, serving(pool, peak=0.85), span),
        healthy=True,
    )


QUICK_HEALTHY = (healthy_mixed, healthy_shared, healthy_balancer)
FAULTED = (
    imbalance_lost,
    imbalance_step,
    imbalance_slow,
    imbalance_stalled,
    idle_held,
    input_bound,
    memory_pressure,
    throttling,
    numa,
    network,
    mig_idle,
    mig_layout,
    silent_node,
    gpu_imbalance,
    hardware_errors,
)
HEALTHY = (healthy_mixed, healthy_train, healthy_serve, healthy_shared, healthy_balancer)


def suite(*, quick: bool) -> list[Scenario]:
    """The scenarios of the quick subset, or of the full suite."""
    healthy = QUICK_HEALTHY if quick else HEALTHY
    return [build(quick) for build in (*FAULTED, *healthy)]
