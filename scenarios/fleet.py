"""A simulated GPU fleet, labelled and deterministic: N nodes × G GPUs as Batch v1 documents.

The signal model is node_shipper/simulate.py's, shaped after the one real trace we have
(/work/shared/traces/vector-1gpu-15s.csv): integer utilisation, memory in MiB steps, an idle
GPU at 0 % (now and then 1 %) holding about 1 GiB, bursty work; power, temperature, clocks,
throttle reasons, PCIe, network and host CPU follow the work the way an H100 SXM does. Its
constants and hardware defaults are imported from there; the model itself is evaluated here
vectorised over (GPUs × samples of a batch), so that a node-day takes seconds, not minutes.

Workloads (`Job.kind`): "train" (ranks on several nodes share one step pattern, with warm-up,
synchronous checkpoints every 20 min and optionally a slow swing of the level), "finetune"
(one node, bursty with evaluation passes), "inference" (independent bursts whose rate follows
the hour of day), "notebook" (a process holding memory at 0 %). Between jobs GPUs are released:
no process, memory at the idle baseline. Nodes may have MIG-mode GPUs (instances with util_sm,
as NVML GPM reports on Hopper) and noisy sensors (null samples, a stuck sensor, late batches).

Faults (`scenarios.faults`) plug in through the `Injector` hooks: `plan` edits the fleet before
anything is generated, `shape` edits a batch's drivers (utilisation, memory, processes) before
power, temperature and host metrics are derived from them, `finish` edits the readings after,
and `deliver` decides when (or whether) a batch reaches the API.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np

from node_shipper.simulate import (
    CHECKPOINT_EVERY_S,
    CHECKPOINT_S,
    IDLE_MEM_MIB,
    THROTTLE_GPU_IDLE,
    THROTTLE_SW_POWER_CAP,
    Scenario,
    _mix,
    _unit,
    shipper_info,
)

MIB = 1 << 20
GIB = 1 << 30
KIB = 1024
EPOCH = 1_767_571_200.0  # Monday 2026-01-05 00:00 UTC: a scenario's t=0 unless it says otherwise
DRIVER_MIB = 500  # of the idle baseline, what the driver keeps once a process has its own memory
MIG_EMPTY_MIB = 13  # what nvidia-smi shows in use on a MIG instance with nothing on it
MIG_PARENT_MIB = 390  # a MIG-mode GPU's memory in use beyond its instances'
_REF = Scenario.named("healthy")  # the simulator's H100 node: hardware defaults come from it

Kind = Literal["train", "finetune", "inference", "notebook"]
Pin = Literal["gpu", "other", "none", "cpuset"]
Slot = tuple[str, int, int | None]  # (node, GPU index, MIG gi_id or None for the whole GPU)


@dataclass(frozen=True)
class Hardware:
    """One node's hardware; defaults are the simulator's DGX H100-like node."""

    gpu_name: str = _REF.gpu_name
    gpu_mem_mib: int = _REF.gpu_mem_mib
    power_limit_w: float = _REF.power_limit_w
    idle_power_w: float = _REF.idle_power_w
    temp_slowdown_c: float = _REF.temp_slowdown_c
    cpu_count: int = _REF.cpu_count
    host_mem_gib: int = _REF.host_mem_gib
    numa_nodes: int = _REF.numa_nodes


@dataclass(frozen=True)
class MigSlice:
    """One MIG instance of a layout: its GPU instance id, profile and memory."""

    gi_id: int
    profile: str
    mem_mib: int
    ci_id: int = 0

    @property
    def slices(self) -> int:
        """Compute slices of the 7 (the leading digit of "3g.40gb")."""
        return int(self.profile.split("g.", 1)[0])


Layout = tuple[MigSlice, ...]
# H100 80GB profiles with the GPU instance ids nvidia-smi hands out for these layouts
MIG_7X1G: Layout = tuple(MigSlice(gi, "1g.10gb", 9_728) for gi in range(7, 14))
MIG_3G_2G_2X1G: Layout = (
    MigSlice(2, "3g.40gb", 40_320),
    MigSlice(3, "2g.20gb", 19_968),
    MigSlice(9, "1g.10gb", 9_728),
    MigSlice(10, "1g.10gb", 9_728),
)
MIG_2X3G: Layout = (MigSlice(1, "3g.40gb", 40_320), MigSlice(2, "3g.40gb", 40_320))


@dataclass(frozen=True)
class Node:
    """A node: its name, group, GPU count, hardware, MIG GPUs and whether its sensors are noisy.

    `mig` maps a GPU index to its layout at t=0 (the GPU is in MIG mode); `mig_changes` lists
    later layouts as (scenario time, GPU index, layout), an empty layout while it is rebuilt.
    """

    name: str
    group: str | None
    gpus: int = 8
    hw: Hardware = field(default_factory=Hardware)
    mig: Mapping[int, Layout] = field(default_factory=dict)
    mig_changes: tuple[tuple[float, int, Layout], ...] = ()
    noisy: bool = False


@dataclass(frozen=True)
class Job:
    """A workload on GPUs (or MIG instances) from `start` to `end`, in scenario seconds.

    Each slot runs one process. `warmup_s`: after the start, processes are present while the
    GPUs do little (loading data and weights) until every rank computes together. `swing`: the
    amplitude (points) of a slow shared wave in a training job's level (0: steady near 92 %).
    `cpus`: the process's affinity, that many CPUs of the NUMA node `pin` names ("gpu": the
    GPU's own, "other": the other one — a misconfiguration, "none": unpinned, every CPU;
    "cpuset": one set shared by all the job's processes, a container's `cpus` CPUs taken evenly
    from every NUMA node); None with "gpu" pins it to the whole NUMA node. `peak`: inference duty cycle at the
    afternoon peak (bursts take this share of the time). `pattern`: ranks of one distributed job
    that were split into several `Job`s (a node that left and rejoined) share their step pattern
    and checkpoint clock through it: the name of the job they belong to, its start at `epoch`.
    """

    kind: Kind
    name: str
    slots: tuple[Slot, ...]
    start: float
    end: float
    user: str
    mem_mib: int
    warmup_s: float = 20.0
    swing: float = 0.0
    cpus: int | None = None
    pin: Pin = "gpu"
    peak: float = 0.35
    proc_name: str | None = None
    pattern: str | None = None
    epoch: float | None = None

    @property
    def container(self) -> str:
        return hashlib.sha256(f"{self.user}:{self.pattern or self.name}".encode()).hexdigest()


@dataclass(frozen=True)
class Fleet:
    """What to simulate: a cluster's nodes and jobs over `duration_s` from `start` (unix s)."""

    name: str
    cluster: str
    seed: int
    duration_s: float
    nodes: tuple[Node, ...]
    jobs: tuple[Job, ...] = ()
    batch_s: float = 30.0
    interval_s: float = 1.0
    start: float = EPOCH

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"{self.name} has no node {name!r}")

    def with_node(self, node: Node) -> Fleet:
        """The fleet with the node of that name replaced."""
        return replace(self, nodes=tuple(node if n.name == node.name else n for n in self.nodes))

    def jobs_on(self, node: str, gpu: int | None = None) -> list[Job]:
        return [j for j in self.jobs if any(s[0] == node and gpu in (None, s[1]) for s in j.slots)]


@dataclass
class Proc:
    """A compute process seen on a GPU in a batch: the samples it was seen at, its memory."""

    gpu: int
    pid: int
    job: str
    user: str
    container: str
    name: str
    mask: np.ndarray  # (n,) bool
    mem_mib: np.ndarray  # (n,) float, its own memory
    affinity: tuple[int, ...] | None
    numa: tuple[int, ...] | None
    mig_uuid: str | None = None


@dataclass
class MigRow:
    """One MIG instance in a batch: the samples it existed at, its util_sm and memory."""

    gpu: int
    slice: MigSlice
    uuid: str
    present: np.ndarray  # (n,) bool
    util_sm: np.ndarray  # (n,)
    mem_mib: np.ndarray  # (n,)


@dataclass
class Frame:
    """One node's batch while it is made. Times are scenario seconds.

    Drivers, (GPUs × samples): `util`, `util_mem`, `mem_mib` and each GPU's share of the host's
    load (`cores`, `host_gib`, `disk_read`, `disk_write`, `net`); plus the host's own `base_cores`
    and `extra_gib`. `gpu` and `host` are the readings derived from them (catalogue names,
    SI units, NaN = null). `drop` set by a fault: the batch is never sent.
    """

    node: Node
    index: int
    seq: int
    t: np.ndarray
    util: np.ndarray
    util_mem: np.ndarray
    mem_mib: np.ndarray
    cores: np.ndarray
    host_gib: np.ndarray
    disk_read: np.ndarray
    disk_write: np.ndarray
    net: np.ndarray
    base_cores: np.ndarray
    extra_gib: np.ndarray
    checkpoint: np.ndarray
    procs: list[Proc] = field(default_factory=list)
    mig: list[MigRow] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    gpu: dict[str, np.ndarray] = field(default_factory=dict)
    host: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.t.size)

    def during(self, start: float, end: float) -> np.ndarray:
        """(n,) bool: the samples in [start, end)."""
        return (self.t >= start) & (self.t < end)


class Injector(Protocol):
    """What a fault may change; every hook but `plan` sees one node's batch at a time."""

    def plan(self, fleet: Fleet) -> Fleet: ...

    def shape(self, frame: Frame, rng: np.random.Generator) -> None: ...

    def finish(self, frame: Frame, rng: np.random.Generator) -> None: ...

    def deliver(self, node: str, first: float, last: float, at: float) -> float | None: ...


@dataclass(frozen=True)
class Delivery:
    """One batch as it reaches the API at `at` (unix seconds)."""

    at: float
    node: str
    doc: dict[str, Any]


# -- per-job schedules --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spans:
    """Sorted non-overlapping spans [starts, ends) with a value each; `at` evaluates them."""

    starts: np.ndarray
    ends: np.ndarray
    values: np.ndarray

    def at(self, t: np.ndarray, default: float) -> tuple[np.ndarray, np.ndarray]:
        """(inside, value) at each time of `t`."""
        if self.starts.size == 0:
            return np.zeros(t.shape, dtype=bool), np.full(t.shape, default)
        i = np.searchsorted(self.starts, t, side="right") - 1
        ok = i >= 0
        j = np.maximum(i, 0)
        inside = ok & (t < self.ends[j])
        return inside, np.where(inside, self.values[j], default)


def _spans(rows: list[tuple[float, float, float]]) -> _Spans:
    a = np.array(rows, dtype=float).reshape(-1, 3)
    return _Spans(a[:, 0], a[:, 1], a[:, 2])


def diurnal(unix: np.ndarray | float) -> np.ndarray:
    """Load factor by hour of day (UTC): 0.35 at 04:00, 1.0 at 16:00."""
    hour = (np.asarray(unix, dtype=float) / 3600.0) % 24.0
    return 0.35 + 0.65 * (0.5 - 0.5 * np.cos(2 * np.pi * (hour - 4.0) / 24.0))


def numa_cpus(hw: Hardware, numa: int) -> tuple[int, ...]:
    """The CPUs of one NUMA node, numbered as Linux does: every core's first thread, then siblings."""
    cores = hw.cpu_count // 2
    per = cores // hw.numa_nodes
    first = range(numa * per, (numa + 1) * per)
    return tuple(first) + tuple(c + cores for c in first)


def gpu_numa(node: Node, gpu: int) -> int:
    """The NUMA node of a GPU: the first half of the GPUs on node 0, the rest on node 1."""
    return gpu * node.hw.numa_nodes // node.gpus


def affinity(node: Node, gpu: int, job: Job) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """(cpu_affinity, cpu_numa_nodes) of the job's process on that GPU."""
    hw = node.hw
    if job.pin == "none":
        return tuple(range(hw.cpu_count)), tuple(range(hw.numa_nodes))
    if job.pin == "cpuset":
        share = max(2, (job.cpus or hw.cpu_count) // hw.numa_nodes)
        cpus = tuple(
            sorted(c for numa in range(hw.numa_nodes) for c in _whole_cores(numa_cpus(hw, numa), share))
        )
        return cpus, tuple(range(hw.numa_nodes))
    home = gpu_numa(node, gpu)
    numa = home if job.pin == "gpu" else (home + 1) % hw.numa_nodes
    cpus = numa_cpus(hw, numa)
    if job.cpus is not None:
        cpus = _whole_cores(cpus, job.cpus)
    return cpus, (numa,)


def _whole_cores(cpus: tuple[int, ...], n: int) -> tuple[int, ...]:
    """n of a NUMA node's CPUs as a cpuset of whole cores gives them: n/2 cores and their siblings."""
    half = max(1, n // 2)
    cores = len(cpus) // 2
    return tuple(sorted(cpus[:half] + cpus[cores : cores + half]))


def mig_uuid(cluster: str, node: str, gpu: int, s: MigSlice, since: float) -> str:
    """A MIG instance's UUID: a recreated instance gets a new one."""
    digest = hashlib.sha256(f"{cluster}/{node}/{gpu}/{s.gi_id}/{s.profile}/{since}".encode()).digest()
    return f"MIG-{uuid.UUID(bytes=digest[:16])}"


def layout_timeline(node: Node) -> dict[int, list[tuple[float, Layout]]]:
    """Per MIG GPU, its layouts in time order as (since, layout); the first since is -inf."""
    out = {g: [(-math.inf, layout)] for g, layout in node.mig.items()}
    for t, g, layout in sorted(node.mig_changes, key=lambda c: c[0]):
        out.setdefault(g, [(-math.inf, ())]).append((t, layout))
    return out


def instance_uuid(cluster: str, node: Node, gpu: int, gi: int, t: float) -> str:
    """The UUID of the MIG instance with GPU instance id `gi` on that GPU at time `t`."""
    since, layout = max(((s, lay) for s, lay in layout_timeline(node)[gpu] if s <= t), key=lambda x: x[0])
    for s in layout:
        if s.gi_id == gi:
            return mig_uuid(cluster, node.name, gpu, s, since)
    raise KeyError(f"{node.name} GPU {gpu} has no MIG instance {gi} at t={t}")


# -- one simulated node -------------------------------------------------------------------------


class NodeSim:
    """Generates one node's frames, batch after batch, in time order."""

    def __init__(self, fleet: Fleet, index: int) -> None:
        self.fleet, self.index = fleet, index
        self.node = fleet.nodes[index]
        self.rng = np.random.default_rng(_mix(fleet.seed, "node", self.node.name))
        self.temp: np.ndarray | None = None
        self.phase = _unit(fleet.seed, self.node.name, "phase")
        here = [(j, [s for s in j.slots if s[0] == self.node.name]) for j in fleet.jobs]
        self.jobs = [(j, slots) for j, slots in here if slots]
        self._schedules: dict[tuple[str, Slot, str], _Spans] = {}
        self._waves: dict[tuple[str, int], np.ndarray] = {}
        self.layouts = layout_timeline(self.node)
        self.stuck = self._stuck_sensor()
        self._frozen: dict[str, float] = {}
        self._affinities: dict[tuple[int, str], tuple[tuple[int, ...] | None, tuple[int, ...] | None]] = {}
        self._pids: dict[tuple[int, int | None, str], int] = {}
        hw = self.node.hw
        self.gpu_static = [
            {
                "index": g,
                "uuid": _gpu_uuid(fleet.cluster, self.node.name, g),
                "name": hw.gpu_name,
                "mem_total": hw.gpu_mem_mib * MIB,
                "numa_node": gpu_numa(self.node, g),
                "power_limit_w": hw.power_limit_w,
                "temp_slowdown_c": hw.temp_slowdown_c,
                "mig_mode": g in self.layouts,
            }
            for g in range(self.node.gpus)
        ]

    # -- schedules drawn once per job and slot --

    def _schedule(self, job: Job, slot: Slot, what: str) -> _Spans:
        key = (job.name, slot, what)
        cached = self._schedules.get(key)
        if cached is None:
            rng = np.random.default_rng(_mix(self.fleet.seed, job.name, slot, what))
            lo, hi = max(job.start, -900.0), min(job.end, self.fleet.duration_s + 900.0)
            cached = self._schedules[key] = {
                "bursts": self._bursts,
                "evals": self._evals,
                "mem": self._mem_steps,
            }[what](job, rng, lo, hi)
        return cached

    def _bursts(self, job: Job, rng: np.random.Generator, lo: float, hi: float) -> _Spans:
        """Inference: bursts of 5–60 s at 45–99 %; the gaps between them follow the hour of day.

        Gaps are capped at 4 min: a serving replica that sees no request for five minutes is
        what idle_held reports, not a healthy server."""
        rows, t = [], lo
        mean_burst = 32.5
        while t < hi:
            duty = job.peak * float(diurnal(self.fleet.start + t))
            gap = min(rng.exponential(mean_burst * (1 - duty) / duty), 240.0)
            start = t + gap
            length = rng.uniform(5, 60)
            rows.append((start, start + length, rng.uniform(45, 99)))
            t = start + length
        return _spans(rows)

    def _evals(self, job: Job, rng: np.random.Generator, lo: float, hi: float) -> _Spans:
        """Fine-tuning: an evaluation pass of 20–40 s about every 5 minutes."""
        rows, t = [], lo
        while t < hi:
            start = t + rng.exponential(300)
            rows.append((start, start + rng.uniform(20, 40), 1.0))
            t = rows[-1][1]
        return _spans(rows)

    def _mem_steps(self, job: Job, rng: np.random.Generator, lo: float, hi: float) -> _Spans:
        """The allocator grows or trims now and then: MiB steps, bigger ones when fine-tuning."""
        rows, t = [], lo
        while t < hi:
            nxt = t + rng.uniform(60, 240)
            offset = rng.uniform(-3000, 3000) if job.kind == "finetune" else 2 * rng.integers(0, 11)
            rows.append((t, nxt, float(int(offset))))
            t = nxt
        return _spans(rows)

    def _wave(self, job: Job, k: np.ndarray) -> np.ndarray:
        """A uniform number per (job, second), the same on every node: ranks share their steps."""
        out = np.empty(k.shape)
        blocks = k // 600
        for b in np.unique(blocks):
            key = (job.pattern or job.name, int(b))
            values = self._waves.get(key)
            if values is None:
                values = np.random.default_rng(_mix(self.fleet.seed, key[0], "wave", int(b))).random(600)
                self._waves[key] = values
            sel = blocks == b
            out[sel] = values[k[sel] - b * 600]
        return out

    def _stuck_sensor(self) -> tuple[int, float, float] | None:
        """Noisy nodes: one GPU whose temperature, power and clock readings freeze for 15 min."""
        if not self.node.noisy:
            return None
        g = int(_unit(self.fleet.seed, self.node.name, "stuck-gpu") * self.node.gpus)
        start = _unit(self.fleet.seed, self.node.name, "stuck-at") * max(self.fleet.duration_s - 900, 1)
        return g, start, start + 900.0

    # -- one batch --

    def frame(self, seq: int, k: np.ndarray) -> Frame:
        node, g_count, n = self.node, self.node.gpus, k.size
        jitter = self.rng.uniform(-0.02, 0.02, n)
        t = k + 0.1 + 0.8 * self.phase + jitter
        zeros = np.zeros((g_count, n))
        f = Frame(
            node=node,
            index=self.index,
            seq=seq,
            t=t,
            util=(self.rng.random((g_count, n)) < 0.01).astype(float),  # the trace's rare 1 % at idle
            util_mem=zeros.copy(),
            mem_mib=np.full((g_count, n), float(IDLE_MEM_MIB)),
            cores=zeros.copy(),
            host_gib=zeros.copy(),
            disk_read=zeros.copy(),
            disk_write=zeros.copy(),
            net=zeros.copy(),
            base_cores=np.full(n, 1.5),
            extra_gib=np.zeros(n),
            checkpoint=np.zeros(n, dtype=bool),
        )
        self._mig_rows(f)
        for job, slots in self.jobs:
            if job.end + 10 < t[0] or job.start > t[-1] + 10:
                continue
            self._run(f, job, slots, k)
        return f

    def _noise(self, spread: float, shape: tuple[int, ...] | int) -> np.ndarray:
        """Roughly normal noise of standard deviation ~spread/2 (sum of two uniforms), as simulate.py."""
        return (self.rng.random(shape) + self.rng.random(shape) - 1.0) * spread

    def _run(self, f: Frame, job: Job, slots: list[Slot], k: np.ndarray) -> None:
        """The job's processes on this node's slots, all rows at once: (rows × samples)."""
        node, seed, t = self.node, self.fleet.seed, f.t
        targets: list[tuple[int, MigRow | None, np.ndarray, float]] = []
        for _, g, gi in slots:
            appear = job.start + 3.0 * _unit(seed, job.name, node.name, g, gi, "start")  # ranks start apart
            leave = job.end + 4.0 * _unit(seed, job.name, node.name, g, gi, "end")
            present = (t >= appear) & (t < leave)
            if gi is None:
                targets.append((g, None, present, appear))
                continue
            for row in f.mig:  # on a MIG instance: only while an instance with that id exists
                if row.gpu == g and row.slice.gi_id == gi:
                    targets.append((g, row, present & row.present, appear))
        targets = [x for x in targets if x[2].any()]
        if not targets:
            return
        rows, n = len(targets), f.n
        present = np.stack([x[2] for x in targets])
        appeared = np.array([x[3] for x in targets])[:, None]
        tt = np.broadcast_to(t, (rows, n))
        warm = tt < job.start + job.warmup_s  # every rank computes once all are ready
        ramp = np.clip((tt - appeared) / 20.0, 0.0, 1.0)  # weights load in the first ~20 s
        shape = (rows, n)
        if job.kind == "train":
            u = self._wave(job, k)
            level = 92.5 + 1.5 * np.sin(2 * np.pi * k / 47) + 3.0 * (u - 0.5) - 2.0 * (k % 9 == 0)
            if job.swing:
                phase = 2 * np.pi * _unit(seed, job.pattern or job.name, "swing")
                wave = 0.7 * np.sin(2 * np.pi * k / 97 + phase) + 0.3 * np.sin(2 * np.pi * k / 41 + 2 * phase)
                level = level - 25.0 + job.swing * wave
            epoch = job.start if job.epoch is None else job.epoch
            ckpt = ((t - epoch) % CHECKPOINT_EVERY_S) >= CHECKPOINT_EVERY_S - CHECKPOINT_S
            level = np.where(ckpt, 25.0 + 10.0 * u, level)
            util = np.where(warm, 15.0 * ramp + self._noise(4, shape), level + self._noise(1, shape))
            f.checkpoint |= ckpt & (t >= job.start + job.warmup_s) & present.any(axis=0)
            util_mem = util * 0.42 + self._noise(2, shape)
            share = {"cores": 6.0, "host_gib": 48.0, "disk_read": 25e6, "net": 2.0e9 / node.gpus}
        elif job.kind == "finetune":
            in_eval = np.stack(
                [self._schedule(job, (node.name, g, None), "evals").at(t, 0.0)[0] for g, *_ in targets]
            )
            spike = self.rng.random(shape) < 0.02
            util = np.where(
                in_eval, 5 + self._noise(10, shape), np.where(spike, 99.0, 55 + self._noise(30, shape))
            )
            util = np.where(warm, 10.0 * ramp + self._noise(4, shape), util)
            util_mem = util * 0.35 + self._noise(2, shape)
            share = {"cores": 4.0, "host_gib": 24.0, "disk_read": 10e6, "net": 0.0}
        elif job.kind == "inference":
            bursts = [
                self._schedule(job, (node.name, g, row.slice.gi_id if row else None), "bursts").at(t, 0.0)
                for g, row, *_ in targets
            ]
            busy, lvl = np.stack([b[0] for b in bursts]), np.stack([b[1] for b in bursts])
            idle = 2.0 * (self.rng.random(shape) < 0.01)
            util = np.where(busy, lvl + self._noise(16, shape), idle)
            util = np.where(warm, 5.0 * ramp + self._noise(4, shape), util)
            util_mem = util * 0.5 + self._noise(2, shape)
            share = {"cores": 2.0, "host_gib": 16.0, "disk_read": 0.0, "net": 5e6}
        else:  # a notebook holding memory while nobody runs a kernel
            util = (self.rng.random(shape) < 0.01).astype(float)
            util_mem = np.zeros(shape)
            share = {"cores": 0.0, "host_gib": 6.0, "disk_read": 0.0, "net": 0.0}
        util = np.clip(np.round(util), 0, 100)
        util_mem = np.clip(np.round(util_mem), 0, 100)
        offset = np.stack(
            [self._schedule(job, (node.name, g, None), "mem").at(t, 0.0)[1] for g, *_ in targets]
        )
        proc_mib = np.maximum(64.0, np.floor(job.mem_mib * ramp) + offset)
        busy_share = util / 100.0
        idle_cores = 0.3 if job.kind == "inference" else 0.1
        disk_write = {"train": 2e5, "finetune": 1e5}.get(job.kind, 0.0)
        for r, (g, mig, seen, _) in enumerate(targets):
            if mig is not None:
                mib = np.minimum(proc_mib[r], mig.slice.mem_mib - 64)
                mig.util_sm[seen] = util[r, seen]
                mig.mem_mib[seen] = MIG_EMPTY_MIB + mib[seen]
                scale = mig.slice.slices / 7.0
            else:
                mib = proc_mib[r]
                f.util[g, seen] = util[r, seen]
                f.util_mem[g, seen] = util_mem[r, seen]
                f.mem_mib[g, seen] = IDLE_MEM_MIB - DRIVER_MIB + mib[seen]
                scale = 1.0
            b = busy_share[r, seen]
            f.cores[g, seen] += (idle_cores + share["cores"] * b) * scale
            f.host_gib[g, seen] += share["host_gib"] * scale
            f.disk_read[g, seen] += share["disk_read"] * b * scale
            f.disk_write[g, seen] += disk_write
            f.net[g, seen] += share["net"] * b * scale
            cpus, numa = self._affinity(g, job)
            f.procs.append(
                Proc(
                    gpu=g,
                    pid=self._pid(g, mig, job),
                    job=job.name,
                    user=job.user,
                    container=job.container,
                    name=job.proc_name or ("jupyter" if job.kind == "notebook" else "python"),
                    mask=seen.copy(),
                    mem_mib=np.where(seen, mib, 0.0),
                    affinity=cpus,
                    numa=numa,
                    mig_uuid=mig.uuid if mig is not None else None,
                )
            )

    def _affinity(self, g: int, job: Job) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
        key = (g, job.name)
        cached = self._affinities.get(key)
        if cached is None:
            cached = self._affinities[key] = affinity(self.node, g, job)
        return cached

    def _pid(self, g: int, mig: MigRow | None, job: Job) -> int:
        key = (g, mig.slice.gi_id if mig is not None else None, job.name)
        pid = self._pids.get(key)
        if pid is None:
            pid = self._pids[key] = 10_000 + _mix(self.fleet.seed, self.node.name, *key) % 3_000_000
        return pid

    def _mig_rows(self, f: Frame) -> None:
        """The instances present at each sample, from the GPU's layout timeline, with layout events."""
        for g, timeline in sorted(self.layouts.items()):
            starts = np.array([s for s, _ in timeline])
            idx = np.searchsorted(starts, f.t, side="right") - 1
            for i in np.unique(idx):
                since, layout = timeline[int(i)]
                present = idx == i
                for s in layout:
                    f.mig.append(
                        MigRow(
                            gpu=g,
                            slice=s,
                            uuid=mig_uuid(self.fleet.cluster, self.node.name, g, s, since),
                            present=present.copy(),
                            util_sm=np.zeros(f.n),
                            mem_mib=np.full(f.n, float(MIG_EMPTY_MIB)),
                        )
                    )
                first = float(f.t[present][0]) if present.any() else math.inf
                if 0.0 <= first - since < self.fleet.interval_s:
                    # the shipper's own event: the first sample that sees the new layout
                    profiles = ", ".join(sorted(s.profile for s in layout)) or "none"
                    f.events.append(
                        {
                            "ts": first,
                            "type": "mig_layout",
                            "gpu_index": g,
                            "code": None,
                            "message": f"MIG instances now: {profiles}",
                        }
                    )

    # -- readings derived from the drivers --

    def derive(self, f: Frame) -> None:
        """Power, temperature, clocks, throttle reasons, PCIe and the host's metrics, as simulate.py."""
        node, hw, rng = self.node, self.node.hw, self.rng
        g_count, n = node.gpus, f.n
        load = f.util.copy()
        for g in self.layouts:
            rows = [r for r in f.mig if r.gpu == g]
            load[g] = sum((r.util_sm * r.present * r.slice.slices / 7.0 for r in rows), np.zeros(n))
            f.mem_mib[g] = MIG_PARENT_MIB + sum((r.mem_mib * r.present for r in rows), np.zeros(n))
            f.util[g] = np.nan  # NVML has no utilisation for a GPU in MIG mode
            f.util_mem[g] = np.nan
        held = np.zeros((g_count, n), dtype=bool)
        for p in f.procs:
            held[p.gpu] |= p.mask
        limit, idle_w = hw.power_limit_w, hw.idle_power_w
        power = (
            idle_w
            + 10.0 * held
            + (limit * 0.92 - idle_w) * (load / 100.0) ** 1.3
            + self._noise(8, (g_count, n))
        )
        power = np.clip(power, idle_w * 0.8, limit)
        target = (
            30.0
            + (np.arange(g_count) % 4)[:, None]
            + 42.0 * (np.maximum(0.0, power - idle_w) / (limit - idle_w)) ** 0.8
        )
        temp = np.empty((g_count, n))
        state = target[:, 0].copy() if self.temp is None else self.temp
        decay = math.exp(-1.0 / 25.0)  # the heat sink lags ~25 s
        for i in range(n):
            state = target[:, i] + (state - target[:, i]) * decay
            temp[:, i] = state
        self.temp = state
        busy = load >= 3
        capped = power > 0.9 * limit
        clock = np.where(busy, np.where(capped, 1980 - 15 * rng.integers(0, 5, (g_count, n)), 1980), 345)
        throttle = np.where(busy, np.where(capped, THROTTLE_SW_POWER_CAP, 0), THROTTLE_GPU_IDLE)
        rx_kib = np.floor(2_200_000 * load / 100 * rng.uniform(0.8, 1.2, (g_count, n))) + rng.integers(
            20, 201, (g_count, n)
        )
        tx_kib = np.floor(350_000 * load / 100 * rng.uniform(0.8, 1.2, (g_count, n))) + rng.integers(
            10, 101, (g_count, n)
        )
        zero = np.zeros((g_count, n))
        f.gpu = {
            "util_gpu": f.util,
            "util_mem": f.util_mem,
            "mem_used": f.mem_mib * MIB,
            "power_w": np.round(power, 2),
            "temp_c": np.round(temp),
            "sm_clock_mhz": clock.astype(float),
            "throttle_reasons": throttle.astype(float),
            "ecc_sbe_volatile": zero.copy(),
            "ecc_dbe_volatile": zero.copy(),
            "pcie_tx_bps": tx_kib * KIB,
            "pcie_rx_bps": rx_kib * KIB,
            "remapped_rows_unc": zero.copy(),
            "remap_failure": zero.copy(),
        }
        cores = f.base_cores + f.cores.sum(axis=0) * (1 + self._noise(0.1, n))
        cores = np.minimum(cores, hw.cpu_count)
        host_gib = 24.0 + f.host_gib.sum(axis=0) + f.extra_gib
        net = f.net.sum(axis=0)
        f.host = {
            "cpu_util": np.round(100 * cores / hw.cpu_count, 1),
            "cpu_busy_cores": np.round(cores, 2),
            "mem_used": (np.floor(host_gib * 1024) + rng.integers(0, 65, n)) * MIB,
            "disk_read_bps": np.round(f.disk_read.sum(axis=0) * (1 + self._noise(0.2, n)) + 5e4),
            "disk_write_bps": np.round(f.disk_write.sum(axis=0) + 1.5e9 * f.checkpoint + 2e5 * rng.random(n)),
            "net_rx_bps": np.round(net * (1 + self._noise(0.1, n)) + rng.uniform(30e3, 80e3, n)),
            "net_tx_bps": np.round(net * (1 + self._noise(0.1, n)) + rng.uniform(20e3, 60e3, n)),
        }

    def sensor_noise(self, f: Frame) -> None:
        """Noisy nodes: one GPU whose temperature, power and clock readings freeze for 15 minutes,
        NVML calls that time out (every GPU series null for 1–3 samples), host CPU reads that fail."""
        if not self.node.noisy:
            return
        g_count, n, rng = self.node.gpus, f.n, self.rng
        if self.stuck is not None:
            g, start, end = self.stuck
            frozen = f.during(start, end)
            if frozen.any():
                for name in ("temp_c", "power_w", "sm_clock_mhz"):
                    f.gpu[name][g, frozen] = self._frozen.setdefault(name, float(f.gpu[name][g, frozen][0]))
        fail = rng.random((g_count, n)) < 0.003
        for extra in (1, 2):  # a failed read often takes the next one or two with it
            if n > extra:  # a batch of one or two samples (a short last batch) has no next
                fail[:, extra:] |= fail[:, :-extra] & (rng.random((g_count, n - extra)) < 0.5)
        for values in f.gpu.values():
            values[fail] = np.nan
        host_fail = rng.random(n) < 0.002
        for name in ("cpu_util", "cpu_busy_cores"):
            f.host[name][host_fail] = np.nan

    # -- the document --

    def doc(self, f: Frame, batch_id: str) -> dict[str, Any]:
        fleet, node, hw = self.fleet, self.node, self.node.hw
        ts = np.round(fleet.start + f.t, 3)
        doc: dict[str, Any] = {
            "version": 1,
            "batch_id": batch_id,
            "cluster": fleet.cluster,
            "node": node.name,
        }
        if node.group:
            doc["node_group"] = node.group
        doc["seq"] = f.seq
        doc["shipper"] = shipper_info(fleet.interval_s)
        doc["timestamps"] = ts.tolist()
        doc["host"] = {
            "cpu_count": hw.cpu_count,
            "mem_total": hw.host_mem_gib * GIB,
            "numa_nodes": hw.numa_nodes,
            "metrics": {name: _column(values) for name, values in f.host.items()},
        }
        columns = {name: _rows(values) for name, values in f.gpu.items()}
        doc["gpus"] = [
            {**static, "metrics": {name: rows[g] for name, rows in columns.items()}}
            for g, static in enumerate(self.gpu_static)
        ]
        mig = []
        for row in f.mig:
            if not row.present.any():
                continue
            mig.append(
                {
                    "gpu_index": row.gpu,
                    "uuid": row.uuid,
                    "gi_id": row.slice.gi_id,
                    "ci_id": row.slice.ci_id,
                    "profile": row.slice.profile,
                    "mem_total": row.slice.mem_mib * MIB,
                    "metrics": {
                        "mem_used": _column(np.where(row.present, row.mem_mib * MIB, np.nan)),
                        "util_sm": _column(np.where(row.present, row.util_sm, np.nan)),
                    },
                }
            )
        if mig:
            doc["mig"] = mig
        procs = []
        for p in f.procs:
            if not p.mask.any():
                continue
            seen = ts[p.mask]
            proc: dict[str, Any] = {
                "gpu_index": p.gpu,
                "mig_uuid": p.mig_uuid,
                "pid": p.pid,
                "user": p.user,
                "container": p.container,
                "name": p.name,
                "mem_used": int(p.mem_mib[p.mask][-1]) * MIB,
            }
            if p.affinity is not None:
                proc["cpu_affinity"] = list(p.affinity)
            if p.numa is not None:
                proc["cpu_numa_nodes"] = list(p.numa)
            proc["first_seen"] = float(seen[0])
            proc["last_seen"] = float(seen[-1])
            procs.append(proc)
        if procs:
            doc["processes"] = procs
        if f.events:
            doc["events"] = [
                {**e, "ts": round(fleet.start + e["ts"], 3)} for e in sorted(f.events, key=lambda e: e["ts"])
            ]
        return doc


def _rows(values: np.ndarray) -> list[list[float | None]]:
    """Each row of a (rows × samples) matrix as JSON numbers, None where NaN."""
    rows: list[list[float | None]] = values.tolist()
    for r in np.flatnonzero(np.isnan(values).any(axis=1)):
        rows[r] = _column(values[r])
    return rows


def _column(values: np.ndarray) -> list[float | None]:
    """A series as JSON numbers, None where NaN."""
    nan = np.isnan(values)
    if not nan.any():
        return values.tolist()
    return [None if missing else v for v, missing in zip(values.tolist(), nan.tolist(), strict=True)]


def _gpu_uuid(cluster: str, node: str, g: int) -> str:
    digest = hashlib.sha256(f"{cluster}/{node}/{g}".encode()).digest()
    return f"GPU-{uuid.UUID(bytes=digest[:16])}"


# -- the fleet's batches --------------------------------------------------------------------------


def _node_batches(fleet: Fleet, index: int, injectors: tuple[Injector, ...]) -> Iterator[Delivery]:
    sim = NodeSim(fleet, index)
    node = sim.node
    per = max(1, round(fleet.batch_s / fleet.interval_s))
    total = int(fleet.duration_s / fleet.interval_s + 1e-9)
    offset = int(_unit(fleet.seed, node.name, "batch-phase") * per)  # nodes do not batch in step
    edges = sorted({0, total, *range(offset or per, total, per)})
    latency = 0.3 + 1.2 * _unit(fleet.seed, node.name, "latency")
    late = np.random.default_rng(_mix(fleet.seed, node.name, "late"))
    pending: list[tuple[float, int, Delivery]] = []  # late batches wait here: yield in order of `at`
    for seq, (lo, hi) in enumerate(itertools.pairwise(edges)):
        k = np.arange(lo, hi, dtype=np.int64)
        f = sim.frame(seq, k)
        for inj in injectors:
            inj.shape(f, sim.rng)
        sim.derive(f)
        for inj in injectors:
            inj.finish(f, sim.rng)
        sim.sensor_noise(f)
        at: float | None = float(f.t[-1]) + latency
        if node.noisy and late.random() < 0.01:
            at = float(f.t[-1]) + late.uniform(60, 240)  # a network hiccup: sent later from the spool
        for inj in injectors:
            if at is not None:
                at = inj.deliver(node.name, float(f.t[0]), float(f.t[-1]), at)
        if at is not None:
            batch_id = f"{_mix(fleet.seed, node.name, seq):016x}{_mix(fleet.seed, node.name, seq, 'id'):016x}"
            heapq.heappush(pending, (at, seq, Delivery(fleet.start + at, node.name, sim.doc(f, batch_id))))
        # every later batch arrives after its own last sample, so anything due by now can go
        while pending and pending[0][0] <= float(f.t[-1]):
            yield heapq.heappop(pending)[2]
    while pending:
        yield heapq.heappop(pending)[2]


def planned(fleet: Fleet, injectors: Iterable[Injector]) -> Fleet:
    """The fleet after every injector's `plan`."""
    for inj in injectors:
        fleet = inj.plan(fleet)
    return fleet


def deliveries(fleet: Fleet, injectors: Iterable[Injector] = ()) -> Iterator[Delivery]:
    """Every batch of every node, in the order they reach the API (ties: node name).

    `fleet` is taken as planned already (see `planned`); the injectors' other hooks apply here.
    Deterministic: the same fleet and injectors give the same documents, byte for byte.
    """
    inj = tuple(injectors)
    streams = [_node_batches(fleet, i, inj) for i in range(len(fleet.nodes))]
    yield from heapq.merge(*streams, key=lambda d: (d.at, d.node))
