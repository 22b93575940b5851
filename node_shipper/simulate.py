"""A simulated GPU fleet for demos, tests and benchmarks — clearly labelled, never passed off as real.

Shaped after the one real trace we have (/work/shared/traces/vector-1gpu-15s.csv: one 80 GB
GPU, nvidia-smi every 15 s): utilisation is an integer %, memory moves in MiB steps, an idle
GPU sits at 0 % (now and then 1 %) with about 1 GiB used, work is bursty, and a GPU can sit at
0 % while a process holds ~22 GiB. Power, temperature and clocks follow utilisation the way an
H100 SXM 80GB does (700 W limit, ~70 W idle, 30–75 °C, SM clock 1980 MHz busy / 345 MHz idle);
PCIe, network and host CPU grow with the work. Everything is a function of the scenario's seed
and of the sample times, so the same inputs give the same documents.

Scenarios: "demo" (a training fleet with faults, for the README), "healthy" (the same fleet, no
faults), "day" (one node's day: training jobs, fine-tuning, inference bursts, notebooks, idle).
Any of them can put the last `mig_gpus` GPUs of every node in MIG mode (7 × 1g.10gb, serving
inference and notebooks); those take no part in the scenario's jobs.

Memory health is that of a healthy GPU: on GPUs that remap rows (Ampere and later, the H100
default) `remapped_rows_unc` and `remap_failure` are 0 and `retired_pages` null, as NVML answers
NotSupported there; on older GPUs it is the other way round. Processes carry the NUMA nodes their
CPU affinity spans, taken from the same simulated topology as the affinity itself.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import uuid
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from node_shipper import __version__
from node_shipper.batch import BatchBuilder
from node_shipper.host import numa_nodes_of
from node_shipper.model import GpuInfo, HostInfo, Inventory, MigInfo, MigReading, ProcessInfo, Sample, Value

MIB = 1 << 20
GIB = 1 << 30
KIB = 1024

# Fixed container ids, so the demo's alerts name the same containers every run.
ALICE_CONTAINER = "861670f5c8b43567780a6497c47b0c05e2eb409e08dd7a6f68c805250c5efe58"
BOB_CONTAINER = "001547062189904b3372e0e600ae84ecd59d0721db3e999611e4dbbd67c198c1"

IDLE_MEM_MIB = 1047  # the idle baseline of the reference trace
TRAIN_MEM_MIB = 61_440  # ~60 GiB of 80 held by each training rank
HELD_IDLE_MEM_MIB = 22_058  # the reference trace's 25 minutes at 0 % holding ~22 GiB
CHECKPOINT_EVERY_S = 1200  # a synchronous checkpoint: every rank dips together for 15 s
CHECKPOINT_S = 15

THROTTLE_GPU_IDLE = 0x1
THROTTLE_SW_POWER_CAP = 0x4

SCENARIOS = ("demo", "healthy", "day")

MIG_PROFILE = "1g.10gb"  # the H100 80GB's smallest slice: 7 of them fill a GPU
MIG_SLICES = 7
MIG_MEM_MIB = 10_240  # the profile's nominal 10 GB
MIG_FIRST_GI = 7  # nvidia-smi numbers 1g GPU instances from 7 on an H100
MIG_EMPTY_MIB = 13  # what an instance without a process shows as used
# Before Ampere a GPU retires pages; from Ampere on it remaps rows and NVML refuses the other call.
_RETIRES_PAGES = re.compile(r"\b(K80|M40|M60|P4|P40|P100|V100|T4)\b")


@dataclass(frozen=True)
class Scenario:
    """What to simulate. `fault_start_s`/`fault_end_s` are seconds after the start (demo only)."""

    name: str
    nodes: int = 8
    gpus_per_node: int = 8
    cluster: str = "demo"
    seed: int = 7
    fault_start_s: float = 40.0
    fault_end_s: float = 130.0
    node_group: str | None = None
    gpu_name: str = "NVIDIA H100 80GB HBM3"
    gpu_mem_mib: int = 81_559  # what an H100 80GB reports as total
    power_limit_w: float = 700.0
    idle_power_w: float = 70.0
    temp_slowdown_c: float = 87.0
    cpu_count: int = 224  # 2 × 56 cores × 2 threads, DGX H100-like
    host_mem_gib: int = 2048
    numa_nodes: int = 2
    mig_gpus: int = 0  # the last N GPUs of every node run in MIG mode (7 × 1g.10gb)

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Scenario:
        """The named scenario ("demo", "healthy", "day") with any field overridden."""
        if name in ("demo", "healthy"):
            base = cls(name=name)
        elif name == "day":
            base = cls(name=name, nodes=1, gpus_per_node=8, cluster="day")
        else:
            raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
        scenario = replace(base, **overrides)
        if not 1 <= scenario.gpus_per_node <= 64:
            raise ValueError("gpus_per_node must be 1..64 (Batch v1 carries at most 64 GPUs)")
        if scenario.nodes < 1:
            raise ValueError("nodes must be at least 1")
        if scenario.fault_end_s <= scenario.fault_start_s:
            raise ValueError("fault_end_s must be after fault_start_s")
        if not 0 <= scenario.mig_gpus <= scenario.gpus_per_node:
            raise ValueError("mig_gpus must be 0..gpus_per_node")
        return scenario

    def node_names(self) -> list[str]:
        """node-01 … node-NN."""
        width = max(2, len(str(self.nodes)))
        return [f"node-{i + 1:0{width}d}" for i in range(self.nodes)]

    def faulty_nodes(self) -> tuple[int, ...]:
        """Demo: the node indexes that fall idle during the fault (node-03 and node-06)."""
        return tuple(i for i in (2, 5) if i < self.nodes)

    def is_mig(self, gpu: int) -> bool:
        """Whether GPU `gpu` of every node runs in MIG mode (the last `mig_gpus` do)."""
        return gpu >= self.gpus_per_node - self.mig_gpus

    def held_idle_gpu(self) -> tuple[int, int] | None:
        """Demo: (node index, GPU index) where bob's idle process takes a GPU (node-05 GPU 7)."""
        if self.nodes < 5:
            return None
        return (4, min(7, self.gpus_per_node - 1))


def _mix(*parts: object) -> int:
    """A stable 64-bit hash of the parts (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for the parts."""
    return _mix(*parts) / 2.0**64


@dataclass(frozen=True)
class Activity:
    """A process that holds a GPU from `start` to `end` (seconds after the scenario's start)."""

    kind: str  # "train", "finetune", "inference", "notebook"
    job: str
    start: float
    end: float
    user: str
    container: str
    name: str
    mem_mib: int


# -- workloads: which process holds which GPU when ----------------------------------------------


class _DemoFleet:
    """All nodes train one job; during the fault two nodes fall idle and bob holds node-05 GPU 7."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        forever = math.inf
        self._train_before = Activity(
            "train", "train-1", -3600.0, forever, "alice", ALICE_CONTAINER, "python", TRAIN_MEM_MIB
        )
        self._train_after = replace(self._train_before, job="train-2", start=scenario.fault_end_s)
        self._bob = Activity(
            "notebook",
            "bob-nb",
            scenario.fault_start_s,
            scenario.fault_end_s,
            "bob",
            BOB_CONTAINER,
            "jupyter",
            HELD_IDLE_MEM_MIB,
        )

    def activity(self, node: int, gpu: int, t: float) -> Activity | None:
        s = self.s
        faulted = s.name == "demo" and s.fault_start_s <= t < s.fault_end_s
        restarted = s.name == "demo" and t >= s.fault_end_s
        if faulted and node in s.faulty_nodes():
            return None
        if faulted and (node, gpu) == s.held_idle_gpu():
            return self._bob
        touched = node in s.faulty_nodes() or (node, gpu) == s.held_idle_gpu()
        if restarted and touched:
            return self._train_after  # a new process: new pid, memory and warm-up ramp again
        return self._train_before


_USERS = ("alice", "bob", "carol", "dave", "erin", "frank")


class _DaySchedule:
    """One node's day: jobs of 1–8 GPUs with idle gaps between them, drawn from a seeded RNG."""

    def __init__(self, scenario: Scenario, node: int) -> None:
        self.s = scenario
        self._rng = random.Random(f"{scenario.seed}:{node}:day")
        n = scenario.gpus_per_node
        self._free_at = [-3 * 3600.0 + self._rng.uniform(0, 1800) for _ in range(n)]  # start mid-stream
        self._by_gpu: list[list[Activity]] = [[] for _ in range(n)]
        self._starts: list[list[float]] = [[] for _ in range(n)]
        self._jobs = 0

    def _groups(self, width: int) -> list[list[int]]:
        n = self.s.gpus_per_node
        width = min(width, n)
        return [list(range(i, min(i + width, n))) for i in range(0, n, width)]

    def _draw_job(self) -> None:
        rng = self._rng
        kind = rng.choices(("train", "finetune", "inference", "notebook"), weights=(10, 35, 30, 25))[0]
        width = {
            "train": rng.choices((2, 4, 8), weights=(40, 40, 20))[0],
            "finetune": rng.choice((1, 1, 2)),
            "inference": 1,
            "notebook": 1,
        }[kind]
        group = min(self._groups(width), key=lambda g: max(self._free_at[i] for i in g))
        gap = rng.uniform(2 * 3600, 6 * 3600) if rng.random() < 0.08 else rng.expovariate(1 / 1500)
        start = max(self._free_at[i] for i in group) + gap
        length = {
            "train": rng.uniform(1.5 * 3600, 4 * 3600),
            "finetune": rng.uniform(20 * 60, 100 * 60),
            "inference": rng.uniform(30 * 60, 180 * 60),
            "notebook": rng.uniform(10 * 60, 45 * 60),
        }[kind]
        mem = {
            "train": rng.randint(50_000, 72_000),
            "finetune": rng.randint(17_000, 41_000),
            "inference": rng.randint(18_000, 40_000),
            "notebook": rng.randint(12_000, 30_000),
        }[kind]
        name = {"train": "python", "finetune": "python", "inference": "python3", "notebook": "jupyter"}[kind]
        user = rng.choice(_USERS)
        self._jobs += 1
        job = f"{kind}-{self._jobs}"
        container = hashlib.sha256(f"{self.s.seed}:{user}:{job}".encode()).hexdigest()
        act = Activity(kind, job, start, start + length, user, container, name, mem)
        for i in group:
            self._by_gpu[i].append(act)
            self._starts[i].append(start)
            self._free_at[i] = act.end

    def activity(self, node: int, gpu: int, t: float) -> Activity | None:
        while min(self._free_at) <= t:
            self._draw_job()
        at = bisect_right(self._starts[gpu], t) - 1
        if at >= 0 and self._by_gpu[gpu][at].end > t:
            return self._by_gpu[gpu][at]
        return None


# -- one simulated node --------------------------------------------------------------------------


@dataclass
class _GpuState:
    temp_c: float
    burst_until: float = -1.0
    burst_level: float = 0.0
    mem_offset_mib: int = 0
    next_mem_step: float = 0.0
    phase_until: float = -1.0
    last_t: float | None = None


@dataclass
class _Reading:
    metrics: dict[str, Value]
    process: ProcessInfo | None
    busy_cores: float
    host_mem_gib: float
    disk_read: float
    disk_write: float
    net: float
    train_util: float | None = None
    mig: list[MigReading] = field(default_factory=list)
    mig_processes: list[ProcessInfo] = field(default_factory=list)

    def processes(self) -> list[ProcessInfo]:
        return ([self.process] if self.process is not None else []) + self.mig_processes


_MIG_ROLES = ("inference", "inference", "inference", "inference", "notebook", "notebook", "empty")


@dataclass
class _MigState:
    info: MigInfo
    role: str  # one of _MIG_ROLES
    mem_mib: int
    user: str
    container: str
    burst_until: float = -1.0
    burst_level: float = 0.0


@dataclass
class SimulatedNode:
    """A `Source` for one virtual node; `start` is the wall-clock time the scenario's t=0 maps to."""

    scenario: Scenario
    index: int
    start: float
    name: str = field(init=False)

    def __post_init__(self) -> None:
        s = self.scenario
        self.name = s.node_names()[self.index]
        self._rng = random.Random(f"{s.seed}:{self.name}")
        self._work: _DemoFleet | _DaySchedule = (
            _DaySchedule(s, self.index) if s.name == "day" else _DemoFleet(s)
        )
        self._gpus = tuple(self._gpu_info(i) for i in range(s.gpus_per_node))
        self._state = [_GpuState(temp_c=31.0 + i % 4) for i in range(s.gpus_per_node)]
        self._host = HostInfo(cpu_count=s.cpu_count, mem_total=s.host_mem_gib * GIB, numa_nodes=s.numa_nodes)
        self._cpus: dict[int, tuple[int, ...]] = {}
        self._pids: dict[tuple[int, str], int] = {}
        self._topology = {n: frozenset(self._numa_cpus(n)) for n in range(s.numa_nodes)}
        pages = bool(_RETIRES_PAGES.search(s.gpu_name))
        self._health: dict[str, Value] = {
            "retired_pages": 0.0 if pages else None,
            "remapped_rows_unc": None if pages else 0.0,
            "remap_failure": None if pages else 0.0,
        }
        # The instances draw from their own stream: adding one leaves the others' draws as they were.
        self._mig_rng = random.Random(f"{s.seed}:{self.name}:mig")
        self._mig = {i: self._mig_instances(i) for i in range(s.gpus_per_node) if s.is_mig(i)}

    def _gpu_info(self, i: int) -> GpuInfo:
        s = self.scenario
        digest = hashlib.sha256(f"{s.cluster}/{self.name}/{i}".encode()).digest()
        return GpuInfo(
            index=i,
            uuid=f"GPU-{uuid.UUID(bytes=digest[:16])}",
            name=s.gpu_name,
            mem_total=s.gpu_mem_mib * MIB,
            numa_node=i * s.numa_nodes // s.gpus_per_node,
            power_limit_w=s.power_limit_w,
            temp_slowdown_c=s.temp_slowdown_c,
            mig_mode=s.is_mig(i),
        )

    def _numa_cpus(self, numa: int) -> tuple[int, ...]:
        # Linux numbers the first thread of every core first, then their siblings.
        cached = self._cpus.get(numa)
        if cached is None:
            s = self.scenario
            cores = s.cpu_count // 2
            per = cores // s.numa_nodes
            first = range(numa * per, (numa + 1) * per)
            cached = self._cpus[numa] = tuple(first) + tuple(c + cores for c in first)
        return cached

    def _pid(self, gpu: int, job: str) -> int:
        key = (gpu, job)
        pid = self._pids.get(key)
        if pid is None:
            pid = self._pids[key] = 10_000 + _mix(self.scenario.seed, self.name, gpu, job) % 3_000_000
        return pid

    def inventory(self) -> Inventory:
        return Inventory(host=self._host, gpus=self._gpus)

    def close(self) -> None:
        return None

    # -- per-GPU model --

    def _noise(self, spread: float) -> float:
        """Roughly normal noise of standard deviation ~spread/2 (sum of two uniforms)."""
        r = self._rng.random
        return (r() + r() - 1.0) * spread

    def _train_level(self, act: Activity, k: int, t: float) -> float:
        """The job's shared step pattern: every rank on every node sees the same wave and dips."""
        job = (self.scenario.seed, act.job)
        level = 92.5 + 1.5 * math.sin(2 * math.pi * k / 47) + 3.0 * (_unit(*job, k) - 0.5)
        if k % 9 == 0:
            level -= 2.0  # the gradient all-reduce at a step boundary
        if (t % CHECKPOINT_EVERY_S) >= CHECKPOINT_EVERY_S - CHECKPOINT_S:
            level = 25.0 + 10 * _unit(*job, "ckpt", k)
        return level

    def _gpu(self, gpu: int, t: float, k: int) -> _Reading:
        st = self._state[gpu]
        first = st.last_t is None
        dt = 1.0 if st.last_t is None else max(1e-3, t - st.last_t)
        st.last_t = t
        act = self._work.activity(self.index, gpu, t)
        idle_flicker = 1 if self._rng.random() < 0.01 else 0  # the trace's rare 1 % at idle
        process: ProcessInfo | None = None
        busy_cores = host_gib = disk_r = disk_w = net = 0.0
        train_util: float | None = None
        if act is None:
            util = float(idle_flicker)
            mem_mib = IDLE_MEM_MIB
            util_mem = 0.0
        else:
            age = t - act.start
            ramp = min(1.0, max(0.0, age / 20.0))  # weights load in the first ~20 s
            if act.kind == "train":
                # The first seconds of a (re)started rank load data and weights: little kernel time.
                util = (
                    (self._train_level(act, k, t) + self._noise(1.0))
                    if age >= 8
                    else (15 * ramp + self._noise(4))
                )
                util_mem = util * 0.42 + self._noise(2)
                busy_cores, host_gib = 6.0 * util / 100, 48.0
                disk_r, disk_w = 25e6 * util / 100, 2e5
                train_util = util
            elif act.kind == "finetune":
                if t >= st.phase_until and self._rng.random() < 1 - math.exp(-dt / 300):
                    st.phase_until = t + self._rng.uniform(20, 40)  # an evaluation pass
                if t < st.phase_until:
                    util = 5 + self._noise(10)
                else:
                    util = 99.0 if self._rng.random() < 0.02 else 55 + self._noise(30)
                util_mem = util * 0.35 + self._noise(2)
                busy_cores, host_gib = 4.0 * util / 100, 24.0
                disk_r, disk_w = 10e6 * util / 100, 1e5
            elif act.kind == "inference":
                if t >= st.burst_until and self._rng.random() < 1 - math.exp(-dt / 90):
                    st.burst_until = t + self._rng.uniform(5, 60)
                    st.burst_level = self._rng.uniform(45, 99)
                util = st.burst_level + self._noise(16) if t < st.burst_until else float(idle_flicker * 2)
                util_mem = util * 0.5 + self._noise(2)
                busy_cores, host_gib = 0.3 + 2.0 * util / 100, 16.0
                net = 5e6 * util / 100
            else:  # a notebook holding memory while nobody runs a kernel
                util = float(idle_flicker)
                util_mem = 0.0
                busy_cores, host_gib = 0.1, 6.0
            if t >= st.next_mem_step:
                # The allocator grows or trims now and then: small MiB steps, bigger ones when fine-tuning.
                big = act.kind == "finetune"
                st.mem_offset_mib = (
                    int(self._rng.uniform(-3000, 3000)) if big else 2 * self._rng.randint(0, 10)
                )
                st.next_mem_step = t + self._rng.uniform(60, 240)
            proc_mib = max(64, int(act.mem_mib * ramp) + st.mem_offset_mib) if ramp > 0 else 64
            mem_mib = IDLE_MEM_MIB - 500 + proc_mib  # the driver keeps ~0.5 GiB of the baseline
            # A training rank is pinned to its GPU's NUMA node (as torchrun with NUMA binding does).
            affinity = self._numa_cpus(self._gpus[gpu].numa_node or 0) if act.kind == "train" else None
            process = ProcessInfo(
                gpu_index=gpu,
                pid=self._pid(gpu, act.job),
                user=act.user,
                container=act.container,
                name=act.name,
                mem_used=proc_mib * MIB,
                cpu_affinity=affinity,
                cpu_numa_nodes=numa_nodes_of(affinity, self._topology) if affinity is not None else None,
            )
        util = float(min(100, max(0, round(util))))
        util_mem = float(min(100, max(0, round(util_mem))))
        metrics: dict[str, Value] = {
            "util_gpu": util,
            "util_mem": util_mem,
            "mem_used": float(mem_mib * MIB),
            **self._board(gpu, st, util, act is not None, dt, first),
        }
        return _Reading(metrics, process, busy_cores, host_gib, disk_r, disk_w, net, train_util)

    def _board(
        self, gpu: int, st: _GpuState, util: float, held: bool, dt: float, first: bool
    ) -> dict[str, Value]:
        """Power, temperature, clock, throttling, PCIe and memory health of a GPU `util` % busy."""
        s = self.scenario
        limit, idle_w = s.power_limit_w, s.idle_power_w
        held_w = 10.0 if held else 0.0  # a context on the GPU draws a little even at 0 %
        power = idle_w + held_w + (limit * 0.92 - idle_w) * (util / 100) ** 1.3 + self._noise(8)
        power = min(limit, max(idle_w * 0.8, power))
        target = 30.0 + gpu % 4 + 42.0 * (max(0.0, power - idle_w) / (limit - idle_w)) ** 0.8
        if first:
            st.temp_c = target  # the node has been running: start from its steady temperature
        st.temp_c += (target - st.temp_c) * (1 - math.exp(-dt / 25.0))  # the heat sink lags ~25 s
        busy = util >= 3
        capped = power > 0.9 * limit
        clock = (1980 - 15 * self._rng.randint(0, 4) if capped else 1980) if busy else 345
        throttle = (THROTTLE_SW_POWER_CAP if capped else 0) if busy else THROTTLE_GPU_IDLE
        rx_kib = int((2_200_000 * util / 100) * (0.8 + 0.4 * self._rng.random())) + self._rng.randint(20, 200)
        tx_kib = int((350_000 * util / 100) * (0.8 + 0.4 * self._rng.random())) + self._rng.randint(10, 100)
        return {
            "power_w": round(power, 2),
            "temp_c": float(round(st.temp_c)),
            "sm_clock_mhz": float(clock),
            "throttle_reasons": float(throttle),
            "ecc_sbe_volatile": 0.0,
            "ecc_dbe_volatile": 0.0,
            "pcie_tx_bps": float(tx_kib * KIB),
            "pcie_rx_bps": float(rx_kib * KIB),
            **self._health,
        }

    # -- a GPU in MIG mode --

    def _mig_instances(self, gpu: int) -> list[_MigState]:
        s = self.scenario
        out = []
        for j in range(MIG_SLICES):
            digest = hashlib.sha256(f"{s.cluster}/{self.name}/{gpu}/mig/{j}".encode()).digest()
            info = MigInfo(
                gpu_index=gpu,
                uuid=f"MIG-{uuid.UUID(bytes=digest[:16])}",
                gi_id=MIG_FIRST_GI + j,
                ci_id=0,
                mem_total=MIG_MEM_MIB * MIB,
                profile=MIG_PROFILE,
            )
            role = _MIG_ROLES[j % len(_MIG_ROLES)]
            low, high = {"inference": (4_000, 8_500), "notebook": (3_000, 7_000), "empty": (0, 0)}[role]
            mem = MIG_EMPTY_MIB if role == "empty" else low + int((high - low) * _unit(s.seed, info.uuid))
            user = _USERS[(gpu + j) % len(_USERS)]
            container = hashlib.sha256(f"{s.seed}:{user}:{info.uuid}".encode()).hexdigest()
            out.append(_MigState(info, role, mem, user, container))
        return out

    def _mig_gpu(self, gpu: int, t: float) -> _Reading:
        """A MIG GPU: its instances serve inference (bursts) or hold notebooks idle, one sits empty.

        As NVML does in MIG mode, the GPU itself reports no utilisation; each instance's SM
        utilisation is null at the node's first sample, as GPM has no earlier sample then.
        """
        st = self._state[gpu]
        first = st.last_t is None
        dt = 1.0 if st.last_t is None else max(1e-3, t - st.last_t)
        st.last_t = t
        rng = self._mig_rng
        readings: list[MigReading] = []
        processes: list[ProcessInfo] = []
        utils: list[float] = []
        busy_cores = host_gib = net = 0.0
        for m in self._mig[gpu]:
            flicker = 1.0 if rng.random() < 0.01 else 0.0
            if m.role == "inference":
                if t >= m.burst_until and rng.random() < 1 - math.exp(-dt / 60):
                    m.burst_until = t + rng.uniform(5, 40)
                    m.burst_level = rng.uniform(30, 95)
                util = m.burst_level + (rng.random() - 0.5) * 12 if t < m.burst_until else flicker
            else:
                util = flicker if m.role == "notebook" else 0.0
            util = min(100.0, max(0.0, util))
            utils.append(util)
            readings.append(
                MigReading(m.info, float(m.mem_mib * MIB), {"util_sm": None if first else round(util, 1)})
            )
            if m.role != "empty":
                inference = m.role == "inference"
                processes.append(
                    ProcessInfo(
                        gpu_index=gpu,
                        pid=self._pid(gpu, m.info.uuid),
                        user=m.user,
                        container=m.container,
                        name="python3" if inference else "jupyter",
                        mem_used=max(0, m.mem_mib - 500) * MIB,
                        mig_uuid=m.info.uuid,
                    )
                )
                busy_cores += 0.3 + util / 100 if inference else 0.1
                host_gib += 8.0 if inference else 6.0
                net += 5e6 * util / 100
        # The board's power and heat follow the work of all seven slices together.
        overall = sum(utils) / MIG_SLICES
        metrics: dict[str, Value] = {
            "util_gpu": None,
            "util_mem": None,
            "mem_used": float(sum(m.mem_mib for m in self._mig[gpu]) * MIB),
            **self._board(gpu, st, overall, bool(processes), dt, first),
        }
        return _Reading(
            metrics, None, busy_cores, host_gib, 0.0, 0.0, net, mig=readings, mig_processes=processes
        )

    def sample(self, ts: float) -> Sample:
        """Every reading of this virtual node at wall-clock time `ts`."""
        s = self.scenario
        t = ts - self.start
        k = math.floor(t)
        readings = [
            self._mig_gpu(i, t) if s.is_mig(i) else self._gpu(i, t, k) for i in range(s.gpus_per_node)
        ]
        busy = 1.5 + sum(r.busy_cores for r in readings) * (1 + self._noise(0.1))
        train = [r.train_util for r in readings if r.train_util is not None]
        # Gradient all-reduce between nodes: traffic follows the work of the training ranks.
        # a rank's utilisation may dip below 0 before it is clipped for NVML; host rates never do
        net = max(
            0.0,
            sum(r.net for r in readings) + (2.0e9 * (sum(train) / 100) / s.gpus_per_node if train else 0.0),
        )
        net_rx = net * (1 + self._noise(0.1)) + self._rng.uniform(30e3, 80e3)
        net_tx = net * (1 + self._noise(0.1)) + self._rng.uniform(20e3, 60e3)
        host_gib = 24.0 + sum(r.host_mem_gib for r in readings)
        checkpoint = train and (t % CHECKPOINT_EVERY_S) >= CHECKPOINT_EVERY_S - CHECKPOINT_S
        disk_write = sum(r.disk_write for r in readings) + (1.5e9 if checkpoint else 0.0)
        host: dict[str, Value] = {
            "cpu_util": round(100 * min(busy, s.cpu_count) / s.cpu_count, 1),
            "cpu_busy_cores": round(min(busy, s.cpu_count), 2),
            "mem_used": float(int(host_gib * 1024 + self._rng.randint(0, 64)) * MIB),
            "disk_read_bps": float(
                round(max(0.0, sum(r.disk_read for r in readings)) * (1 + self._noise(0.2)) + 5e4)
            ),
            "disk_write_bps": float(round(disk_write + 2e5 * self._rng.random())),
            "net_rx_bps": float(round(net_rx)),
            "net_tx_bps": float(round(net_tx)),
        }
        return Sample(
            ts=ts,
            host=host,
            gpus={i: r.metrics for i, r in enumerate(readings)},
            mig=tuple(m for r in readings for m in r.mig),
            processes=tuple(p for r in readings for p in r.processes()),
        )


def shipper_info(interval_s: float) -> dict[str, Any]:
    """The `shipper` object of a simulated batch."""
    return {"version": __version__, "simulated": True, "sample_interval_s": interval_s}


def simulate_batches(
    scenario: Scenario, start: float, duration_s: float, batch_s: float, interval_s: float = 1.0
) -> Iterator[dict[str, Any]]:
    """Unsigned Batch v1 documents of every node, in time order, without waiting for the clock.

    Samples are at `start + k * interval_s` for k < duration_s / interval_s; each node's batch
    holds `round(batch_s / interval_s)` of them (the last may hold fewer). Within one batch
    window the nodes come in name order; `seq` counts from 0 per node; batch ids are uuid4-shaped
    and drawn from the scenario's seed, so two runs give the same documents.
    """
    if interval_s <= 0 or batch_s < interval_s:
        raise ValueError("need 0 < interval_s <= batch_s")
    nodes = [SimulatedNode(scenario, i, start) for i in range(scenario.nodes)]
    builders = [
        BatchBuilder(
            cluster=scenario.cluster,
            node=n.name,
            node_group=scenario.node_group,
            shipper=shipper_info(interval_s),
        )
        for n in nodes
    ]
    ids = random.Random(f"{scenario.seed}:batch-ids")
    total = int(duration_s / interval_s + 1e-9)
    per_batch = max(1, round(batch_s / interval_s))
    for seq, first in enumerate(range(0, total, per_batch)):
        for node, builder in zip(nodes, builders, strict=True):
            for k in range(first, min(first + per_batch, total)):
                builder.add(node.sample(start + k * interval_s))
            batch_id = uuid.UUID(int=ids.getrandbits(128), version=4).hex
            yield builder.build(inventory=node.inventory(), seq=seq, batch_id=batch_id)
