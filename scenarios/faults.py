"""Fault injectors with their ground truth: one or more per rule of the detector catalogue.

An injector is a frozen dataclass of where and when (node names, GPU indexes, scenario seconds);
it edits the fleet (`plan`) and the batches (`shape`, `finish`, `deliver`: see
`scenarios.fleet.Injector`), and `truth` states what a detector should report: the rule, the
subject labels {node, gpu?, mig?}, and the span [start, end] in unix seconds. Other rules the
fault rightly sets off as well (a stalled rank's idle GPUs, a lost rank's silent network) are not
listed here: scenarios.run counts such an alarm as correct when it rides in the incident of the
fault's own alarm (same job or node, while that alarm fires). `allow_s` is latency the fault itself imposes
before any rule could see it, beyond the rule's `for_s` (a flat node inside its group's swing is
seen only once the correlation window has slid past the change).

Every fault lasts longer than its rule's default `for_s` plus two analyze periods.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from gpulse.detect.catalogue import CATALOGUE, params_for
from node_shipper.simulate import HELD_IDLE_MEM_MIB
from scenarios.fleet import (
    DRIVER_MIB,
    IDLE_MEM_MIB,
    Fleet,
    Frame,
    Job,
    Layout,
    Slot,
    instance_uuid,
)

THERMAL_SW = 0x20  # SW thermal slowdown
THERMAL_HW = 0x08  # HW slowdown (thermal or power brake assertion)
POWER_BRAKE = 0x80  # HW power brake slowdown


@dataclass(frozen=True)
class GroundTruth:
    """What a detector should report about one injected fault. Times are unix seconds."""

    scenario: str
    rule: str
    subject: dict[str, Any]  # node, and gpu / mig where the fault has them
    start: float
    end: float
    what: str
    allow_s: float = 0.0


def default(rule: str, key: str, fallback: float) -> float:
    """A registered rule's default parameter, or `fallback` while the rule is not registered."""
    if rule in CATALOGUE:
        return float(params_for(rule).get(key, fallback))
    return fallback


@dataclass(frozen=True)
class Fault:
    """No-op hooks; each injector overrides the ones it needs."""

    rule: ClassVar[str] = ""

    def plan(self, fleet: Fleet) -> Fleet:
        return fleet

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        return None

    def finish(self, frame: Frame, rng: np.random.Generator) -> None:
        return None

    def deliver(self, node: str, first: float, last: float, at: float) -> float | None:
        return at

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        raise NotImplementedError


def _truth(
    fault: Fault,
    fleet: Fleet,
    scenario: str,
    subject: dict[str, Any],
    start: float,
    end: float,
    what: str,
    **kw: Any,
) -> GroundTruth:
    return GroundTruth(scenario, fault.rule, subject, fleet.start + start, fleet.start + end, what, **kw)


def _cut(fleet: Fleet, slots: set[Slot], start: float, end: float, restart: str | None = None) -> Fleet:
    """The fleet with every job's processes on `slots` gone over [start, end): the job keeps its
    other slots; the cut slots rejoin at `end` as a new job of the same pattern (with `restart`
    as its name suffix), warming up again, or never when `restart` is None."""
    jobs: list[Job] = []
    for job in fleet.jobs:
        cut = tuple(s for s in job.slots if s in slots)
        if not cut or job.end <= start or job.start >= end:
            jobs.append(job)
            continue
        kept = tuple(s for s in job.slots if s not in slots)
        if kept:
            jobs.append(replace(job, slots=kept))
        pattern, epoch = job.pattern or job.name, job.start if job.epoch is None else job.epoch
        if job.start < start:
            jobs.append(
                replace(job, name=f"{job.name}.a", slots=cut, end=start, pattern=pattern, epoch=epoch)
            )
        if restart is not None and job.end > end:
            jobs.append(
                replace(job, name=f"{job.name}.{restart}", slots=cut, start=end, pattern=pattern, epoch=epoch)
            )
    return replace(fleet, jobs=tuple(jobs))


# -- imbalance ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RanksLost(Fault):
    """Nodes of a training group lose their ranks (the processes exit, memory is freed) while the
    others go on; the ranks rejoin at `end` and warm up again. Their traffic stops too."""

    rule: ClassVar[str] = "imbalance"
    nodes: tuple[str, ...]
    start: float
    end: float

    def plan(self, fleet: Fleet) -> Fleet:
        slots = {s for job in fleet.jobs for s in job.slots if s[0] in self.nodes and job.kind == "train"}
        return _cut(fleet, slots, self.start, self.end, restart="rejoin")

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        return [
            _truth(
                self,
                fleet,
                scenario,
                {"node": n},
                self.start,
                self.end,
                "rank exited: node idle",
            )
            for n in self.nodes
        ]


@dataclass(frozen=True)
class OutOfStep(Fault):
    """A node that stops following its group: its GPUs run flat at `level` % while the group's
    level swings (the job must have `swing`), e.g. a rank fed its own data at its own pace."""

    rule: ClassVar[str] = "imbalance"
    node: str
    start: float
    end: float
    level: float = 60.0

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        mask = frame.during(self.start, self.end)
        if mask.any():
            busy = ~np.isnan(frame.util[:, mask]) & (frame.util[:, mask] > 20)
            flat = np.round(self.level + rng.uniform(-3, 3, busy.shape))
            frame.util[:, mask] = np.where(busy, flat, frame.util[:, mask])

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        # a level inside the group's swing is seen only by the correlation test, once its window
        # has slid past the change: the rule's own latency for this case
        allow = default("imbalance", "corr_window_s", 120.0)
        what = f"flat at {self.level:.0f} %"
        return [_truth(self, fleet, scenario, {"node": self.node}, self.start, self.end, what, allow_s=allow)]


@dataclass(frozen=True)
class SlowNode(Fault):
    """A node whose ranks run at `ratio` of their pace (a slow disk, a throttled CPU, a noisy
    neighbour): its busy samples scaled down, its pauses (the job's checkpoints) the job's own.
    Below the rule's `slow_ratio` it is a fault; above, a spread between ranks the rule must
    leave alone (`truth` is then empty, and any alarm on it is a false one)."""

    rule: ClassVar[str] = "imbalance"
    node: str
    start: float
    end: float
    ratio: float = 0.57

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        mask = frame.during(self.start, self.end)
        if mask.any():
            u = frame.util[:, mask]
            busy = ~np.isnan(u) & (u > 20)
            frame.util[:, mask] = np.where(busy, np.round(u * self.ratio), u)

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        if self.ratio > default("imbalance", "slow_ratio", 0.7):
            return []
        # the node's median over the smoothing window crosses the line when half of it is slow
        allow = default("imbalance", "slow_window_s", 180.0) / 2
        what = f"ranks at {self.ratio:.0%} of their pace"
        return [_truth(self, fleet, scenario, {"node": self.node}, self.start, self.end, what, allow_s=allow)]


@dataclass(frozen=True)
class StalledRanks(Fault):
    """Ranks of a distributed job stalled on some nodes (a hang before a collective): the
    processes stay and hold their memory, their GPUs sit at 0 % while the peers go on. One
    fault: the imbalance alert is its root; idle GPUs and quiet links are its symptoms."""

    rule: ClassVar[str] = "imbalance"
    nodes: tuple[str, ...]
    start: float
    end: float

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name not in self.nodes:
            return
        mask = frame.during(self.start, self.end)
        if mask.any():
            frame.util[:, mask] = np.where(np.isnan(frame.util[:, mask]), np.nan, 0.0)
            frame.util_mem[:, mask] = np.where(np.isnan(frame.util_mem[:, mask]), np.nan, 0.0)
            frame.net[:, mask] *= 0.01

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        return [
            _truth(
                self,
                fleet,
                scenario,
                {"node": n},
                self.start,
                self.end,
                "rank stalled, memory held",
            )
            for n in self.nodes
        ]


# -- idle_held ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notebook(Fault):
    """A notebook kernel opened on a free GPU that holds memory and never runs a kernel."""

    rule: ClassVar[str] = "idle_held"
    node: str
    gpu: int
    start: float
    end: float
    user: str = "bob"
    mem_mib: int = HELD_IDLE_MEM_MIB

    def plan(self, fleet: Fleet) -> Fleet:
        job = Job(
            "notebook",
            f"nb-{self.node}-{self.gpu}",
            ((self.node, self.gpu, None),),
            self.start,
            self.end,
            self.user,
            self.mem_mib,
        )
        return replace(fleet, jobs=(*fleet.jobs, job))

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        subject = {"node": self.node, "gpu": self.gpu}
        return [_truth(self, fleet, scenario, subject, self.start, self.end, "notebook holds 22 GiB at 0 %")]


@dataclass(frozen=True)
class Zombie(Fault):
    """The job on a GPU exits at `start` but its memory stays allocated, with no process listed
    (a process in another PID namespace, a leaked context), until `end`."""

    rule: ClassVar[str] = "idle_held"
    node: str
    gpu: int
    start: float
    end: float
    mem_mib: int = 38_000

    def plan(self, fleet: Fleet) -> Fleet:
        return _cut(fleet, {(self.node, self.gpu, None)}, self.start, self.end)

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name == self.node:
            mask = frame.during(self.start, self.end)
            frame.mem_mib[self.gpu, mask] = IDLE_MEM_MIB - DRIVER_MIB + self.mem_mib

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        subject = {"node": self.node, "gpu": self.gpu}
        return [_truth(self, fleet, scenario, subject, self.start, self.end, "memory held, no process")]


# -- input_bound ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Starved(Fault):
    """A job whose input pipeline cannot keep up: its GPUs idle between short bursts while the
    `cpus` CPUs its container may use are all busy decoding data."""

    rule: ClassVar[str] = "input_bound"
    node: str
    gpus: tuple[int, ...]
    start: float
    end: float
    cpus: int = 32
    user: str = "erin"
    warmup_s: float = 30.0

    @property
    def job(self) -> Job:
        return Job(
            "finetune",
            f"starved-{self.node}",
            tuple((self.node, g, None) for g in self.gpus),
            self.start - self.warmup_s,
            self.end,
            self.user,
            30_000,
            warmup_s=self.warmup_s,
            cpus=self.cpus,
            pin="cpuset" if len(self.gpus) > 1 else "gpu",
        )

    def plan(self, fleet: Fleet) -> Fleet:
        return replace(fleet, jobs=(*fleet.jobs, self.job))

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        mask = frame.during(self.start, self.end)
        if not mask.any():
            return
        rows = np.array(self.gpus)[:, None]
        cols = np.flatnonzero(mask)[None, :]
        shape = (len(self.gpus), int(mask.sum()))
        burst = rng.random(shape) < 0.18  # a batch arrives: a second of work, then the wait
        frame.util[rows, cols] = np.where(burst, rng.integers(70, 96, shape), rng.integers(0, 4, shape))
        frame.util_mem[rows, cols] = np.round(frame.util[rows, cols] * 0.35)
        # the data loaders of every GPU share the container's CPUs, and use all of them
        frame.cores[rows, cols] = self.cpus * rng.uniform(0.95, 1.0, shape) / len(self.gpus)
        frame.disk_read[rows, cols] = 180e6 / len(self.gpus)

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        what = f"{len(self.gpus)} GPUs ~18 % busy, {self.cpus} pinned CPUs saturated"
        return [_truth(self, fleet, scenario, {"node": self.node}, self.start, self.end, what)]


# -- memory_pressure ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuLeak(Fault):
    """A serving process whose GPU memory grows linearly (a cache that never evicts) from `start`
    until it reaches `to_ratio` of the GPU at `end` and dies of OOM; its supervisor restarts it
    a minute later."""

    rule: ClassVar[str] = "memory_pressure"
    node: str
    gpu: int
    start: float
    end: float
    to_ratio: float = 0.99

    def plan(self, fleet: Fleet) -> Fleet:
        return _cut(fleet, {(self.node, self.gpu, None)}, self.end, self.end + 60.0, restart="restarted")

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        mask = frame.during(self.start, self.end)
        if not mask.any():
            return
        current = frame.mem_mib[self.gpu, mask]
        target = self.to_ratio * frame.node.hw.gpu_mem_mib
        progress = (frame.t[mask] - self.start) / (self.end - self.start)
        added = np.floor(np.maximum(target - current, 0.0) * progress)  # a straight line from where it was
        frame.mem_mib[self.gpu, mask] += added
        for p in frame.procs:
            if p.gpu == self.gpu:
                p.mem_mib[mask] += added

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        # news once it will fill the GPU within the rule's horizon: a slower leak only from then
        allow = max(0.0, (self.end - self.start) - default(self.rule, "horizon_s", 900.0))
        subject = {"node": self.node, "gpu": self.gpu}
        what = f"GPU memory climbs linearly to {self.to_ratio:.0%}, then OOM"
        return [_truth(self, fleet, scenario, subject, self.start, self.end, what, allow_s=allow)]


@dataclass(frozen=True)
class HostFill(Fault):
    """Host memory climbing linearly (data loaders copying a dataset each) to `ratio` of the total
    by `full_at`, held there until `end`, then freed when the job is killed."""

    rule: ClassVar[str] = "memory_pressure"
    node: str
    start: float
    full_at: float
    end: float
    ratio: float = 0.97

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        mask = frame.during(self.start, self.end)
        if not mask.any():
            return
        total_gib = frame.node.hw.host_mem_gib
        used = 24.0 + frame.host_gib[:, mask].sum(axis=0)
        progress = np.clip((frame.t[mask] - self.start) / (self.full_at - self.start), 0.0, 1.0)
        frame.extra_gib[mask] = np.maximum(self.ratio * total_gib - used, 0.0) * progress

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        allow = max(0.0, (self.full_at - self.start) - default(self.rule, "horizon_s", 900.0))
        what = f"host memory climbs to {self.ratio:.0%} of {fleet.node(self.node).hw.host_mem_gib} GiB"
        return [_truth(self, fleet, scenario, {"node": self.node}, self.start, self.end, what, allow_s=allow)]


# -- throttling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overheat(Fault):
    """A busy GPU whose cooling fails: its temperature climbs over `rise_s` to its slowdown
    temperature, where the driver holds it by throttling (SW thermal slowdown, with HW slowdown
    at the peaks) and the clock and power fall."""

    rule: ClassVar[str] = "throttling"
    node: str
    gpu: int
    start: float
    end: float
    rise_s: float = 120.0

    def finish(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        g = self.gpu
        hot = frame.node.hw.temp_slowdown_c
        rising = frame.during(self.start - self.rise_s, self.start)
        if rising.any():
            frac = (frame.t[rising] - (self.start - self.rise_s)) / self.rise_s
            temp = frame.gpu["temp_c"][g, rising]
            frame.gpu["temp_c"][g, rising] = np.round(temp + (hot - 2 - temp) * frac)
        mask = frame.during(self.start, self.end)
        if not mask.any():
            return
        m = int(mask.sum())
        frame.gpu["temp_c"][g, mask] = hot + rng.integers(-1, 2, m)
        bits = THERMAL_SW | np.where(rng.random(m) < 0.2, THERMAL_HW, 0)
        reasons = frame.gpu["throttle_reasons"][g, mask].astype(np.int64) & ~1  # busy: not idle
        frame.gpu["throttle_reasons"][g, mask] = (reasons | bits).astype(float)
        frame.gpu["sm_clock_mhz"][g, mask] = 1410 + 15 * rng.integers(0, 13, m)
        frame.gpu["power_w"][g, mask] = np.round(frame.gpu["power_w"][g, mask] * 0.78, 2)

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        subject = {"node": self.node, "gpu": self.gpu}
        what = "at the slowdown temperature, SW thermal throttling"
        return [_truth(self, fleet, scenario, subject, self.start, self.end, what)]


@dataclass(frozen=True)
class CoolingPauses(Overheat):
    """An overheating GPU of a job that checkpoints: in each `pause_s` pause every `every_s` its
    GPU rests, cools by `cool_c` and stops throttling; the fault goes on between them. One fault,
    one alert: a rule that resolves in every pause pages the on-call person each time."""

    every_s: float = 300.0
    pause_s: float = 40.0
    cool_c: float = 9.0

    def finish(self, frame: Frame, rng: np.random.Generator) -> None:
        super().finish(frame, rng)
        if frame.node.name != self.node:
            return
        inside = frame.during(self.start, self.end)
        phase = (frame.t - self.start) % self.every_s
        pause = inside & (phase >= self.every_s - self.pause_s)
        if not pause.any():
            return
        g = self.gpu
        cooled = self.cool_c * (phase[pause] - (self.every_s - self.pause_s)) / self.pause_s
        frame.gpu["temp_c"][g, pause] = np.round(frame.gpu["temp_c"][g, pause] - cooled)
        reasons = frame.gpu["throttle_reasons"][g, pause].astype(np.int64)
        frame.gpu["throttle_reasons"][g, pause] = (reasons & ~(THERMAL_SW | THERMAL_HW)).astype(float)
        frame.gpu["util_gpu"][g, pause] = 0.0

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        subject = {"node": self.node, "gpu": self.gpu}
        what = f"at the slowdown temperature, cooling {self.cool_c:.0f} °C in each {self.pause_s:.0f} s pause"
        return [_truth(self, fleet, scenario, subject, self.start, self.end, what)]


@dataclass(frozen=True)
class PowerBrake(Fault):
    """The board's power brake asserted (a PSU or external signal): clocks pinned low while busy."""

    rule: ClassVar[str] = "throttling"
    node: str
    gpu: int
    start: float
    end: float

    def finish(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        mask = frame.during(self.start, self.end)
        if not mask.any():
            return
        g, m = self.gpu, int(mask.sum())
        reasons = frame.gpu["throttle_reasons"][g, mask].astype(np.int64) & ~1
        frame.gpu["throttle_reasons"][g, mask] = (reasons | POWER_BRAKE | THERMAL_HW).astype(float)
        frame.gpu["sm_clock_mhz"][g, mask] = 600 + 15 * rng.integers(0, 10, m)
        frame.gpu["power_w"][g, mask] = np.round(rng.uniform(150, 220, m), 2)

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        subject = {"node": self.node, "gpu": self.gpu}
        return [
            _truth(self, fleet, scenario, subject, self.start, self.end, "HW power brake, clock ~650 MHz")
        ]


# -- numa -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrongNuma(Fault):
    """A single-node training job launched with every rank bound to the wrong NUMA node (a
    launcher that binds rank i to socket i % 2 in the reverse order): each busy GPU's process
    runs on the CPUs of the other socket, across the inter-socket link."""

    rule: ClassVar[str] = "numa"
    node: str
    gpus: tuple[int, ...]
    start: float
    end: float
    user: str = "dave"
    warmup_s: float = 30.0

    def plan(self, fleet: Fleet) -> Fleet:
        job = Job(
            "train",
            f"numa-{self.node}",
            tuple((self.node, g, None) for g in self.gpus),
            self.start - self.warmup_s,
            self.end,
            self.user,
            52_000,
            warmup_s=self.warmup_s,
            pin="other",
        )
        return replace(fleet, jobs=(*fleet.jobs, job))

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        return [
            _truth(
                self,
                fleet,
                scenario,
                {"node": self.node, "gpu": g},
                self.start,
                self.end,
                "process on the other socket",
            )
            for g in self.gpus
        ]


# -- network --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetCollapse(Fault):
    """The fast fabric of some nodes of a busy training group goes down: their traffic falls to a
    trickle on the slow path while their GPUs keep computing."""

    rule: ClassVar[str] = "network"
    nodes: tuple[str, ...]
    start: float
    end: float
    factor: float = 0.01

    def finish(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name not in self.nodes:
            return
        mask = frame.during(self.start, self.end)
        for name in ("net_rx_bps", "net_tx_bps"):
            frame.host[name][mask] = np.round(frame.host[name][mask] * self.factor)

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        what = f"traffic at {self.factor:.0%} while the GPUs compute"
        return [_truth(self, fleet, scenario, {"node": n}, self.start, self.end, what) for n in self.nodes]


# -- MIG ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigNotebook(Fault):
    """A notebook on a MIG instance: a process holding the slice's memory at 0 % SM utilisation."""

    rule: ClassVar[str] = "mig_idle"
    node: str
    gpu: int
    gi: int
    start: float
    end: float
    user: str = "frank"

    def plan(self, fleet: Fleet) -> Fleet:
        slot = (self.node, self.gpu, self.gi)
        fleet = _cut(fleet, {slot}, self.start - 60.0, self.end + 60.0, restart="back")
        job = Job(
            "notebook",
            f"mignb-{self.node}-{self.gpu}-{self.gi}",
            (slot,),
            self.start,
            self.end,
            self.user,
            6_000,
        )
        return replace(fleet, jobs=(*fleet.jobs, job))

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        mig = instance_uuid(fleet.cluster, fleet.node(self.node), self.gpu, self.gi, self.start)
        subject = {"node": self.node, "gpu": self.gpu, "mig": mig}
        return [
            _truth(self, fleet, scenario, subject, self.start, self.end, "notebook on a MIG slice at 0 % SM")
        ]


@dataclass(frozen=True)
class MigReconfigure(Fault):
    """An operator rebuilds a GPU's MIG layout at `at`: the instances' jobs are drained a minute
    before, the GPU has no instance for `gap_s`, then the new ones appear and get new jobs."""

    rule: ClassVar[str] = "mig_layout"
    node: str
    gpu: int
    at: float
    layout: Layout
    gap_s: float = 8.0
    hold_s: float = 60.0

    def plan(self, fleet: Fleet) -> Fleet:
        node = fleet.node(self.node)
        changes = (*node.mig_changes, (self.at, self.gpu, ()), (self.at + self.gap_s, self.gpu, self.layout))
        fleet = fleet.with_node(replace(node, mig_changes=changes))
        on_gpu = {s for job in fleet.jobs for s in job.slots if s[0] == self.node and s[1] == self.gpu}
        fleet = _cut(fleet, on_gpu, self.at - 60.0, fleet.duration_s + 3600.0)
        new = Job(
            "inference",
            f"mig-{self.node}-{self.gpu}-new",
            tuple((self.node, self.gpu, s.gi_id) for s in self.layout),
            self.at + self.gap_s + 60.0,
            fleet.duration_s + 3600.0,
            "carol",
            8_000,
        )
        return replace(fleet, jobs=(*fleet.jobs, new))

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        subject = {"node": self.node, "gpu": self.gpu}
        profiles = " + ".join(s.profile for s in self.layout)
        return [
            _truth(self, fleet, scenario, subject, self.at, self.at + self.hold_s, f"layout now {profiles}")
        ]


# -- silent_node ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Silent(Fault):
    """A node whose batches stop reaching the API from `start` to `end`.

    `spooled`: the node runs on and its shipper's spool sends the held batches when the path is
    back (they arrive at `end`); otherwise the node crashed: nothing is sent, its jobs are lost
    and come back two minutes after it does."""

    rule: ClassVar[str] = "silent_node"
    node: str
    start: float
    end: float
    spooled: bool = False

    def plan(self, fleet: Fleet) -> Fleet:
        if self.spooled:
            return fleet
        slots = {s for job in fleet.jobs for s in job.slots if s[0] == self.node}
        return _cut(fleet, slots, self.start, self.end + 120.0, restart="after-reboot")

    def deliver(self, node: str, first: float, last: float, at: float) -> float | None:
        if node != self.node or last < self.start or first >= self.end:
            return at
        return max(at, self.end + 2.0) if self.spooled else None

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        # the rule's for_s is the silence it waits for: no latency beyond it
        what = "shipper cut off, spool sent later" if self.spooled else "node crashed"
        return [_truth(self, fleet, scenario, {"node": self.node}, self.start, self.end, what)]


# -- gpu_imbalance --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneGpuWorks(Fault):
    """A multi-GPU job on one node where only the first GPU computes: the others hold the job's
    processes and memory at 0 % (a model left on cuda:0, ranks waiting for it)."""

    rule: ClassVar[str] = "gpu_imbalance"
    node: str
    gpus: tuple[int, ...]
    start: float
    end: float
    user: str = "alice"
    warmup_s: float = 30.0

    def plan(self, fleet: Fleet) -> Fleet:
        job = Job(
            "train",
            f"onegpu-{self.node}",
            tuple((self.node, g, None) for g in self.gpus),
            self.start - self.warmup_s,
            self.end,
            self.user,
            46_000,
            warmup_s=self.warmup_s,
        )
        return replace(fleet, jobs=(*fleet.jobs, job))

    def shape(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        mask = frame.during(self.start, self.end)
        for g in self.gpus[1:]:
            m = int(mask.sum())
            frame.util[g, mask] = (rng.random(m) < 0.01).astype(float)
            frame.util_mem[g, mask] = 0.0
            frame.mem_mib[g, mask] = np.minimum(frame.mem_mib[g, mask], IDLE_MEM_MIB + 3_500)
            frame.cores[g, mask] = 0.1
            frame.disk_read[g, mask] = 0.0
            for p in frame.procs:
                if p.gpu == g:
                    p.mem_mib[mask] = np.minimum(p.mem_mib[mask], 4_000)

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        what = f"GPU {self.gpus[0]} busy, GPUs {list(self.gpus[1:])} held at 0 %"
        return [_truth(self, fleet, scenario, {"node": self.node}, self.start, self.end, what)]


# -- hardware_errors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Xid(Fault):
    """An XID event on a GPU at `at`. Code 48 (double-bit ECC) also raises the GPU's volatile DBE
    counter; code 79 (fallen off the bus) leaves the GPU unreadable (every series null) and kills
    the process on it."""

    rule: ClassVar[str] = "hardware_errors"
    node: str
    gpu: int
    at: float
    code: int = 48
    hold_s: float = 60.0

    def plan(self, fleet: Fleet) -> Fleet:
        if self.code != 79:
            return fleet
        return _cut(fleet, {(self.node, self.gpu, None)}, self.at, fleet.duration_s + 3600.0)

    def finish(self, frame: Frame, rng: np.random.Generator) -> None:
        if frame.node.name != self.node:
            return
        if frame.during(self.at, self.at + 1.0).any():
            message = {48: "Xid 48: DBE (double bit error)", 79: "Xid 79: GPU has fallen off the bus"}
            frame.events.append(
                {
                    "ts": self.at,
                    "type": "xid",
                    "gpu_index": self.gpu,
                    "code": self.code,
                    "message": message.get(self.code),
                }
            )
        after = frame.t >= self.at
        if self.code == 48:
            frame.gpu["ecc_dbe_volatile"][self.gpu, after] = 1.0
        elif self.code == 79:
            for values in frame.gpu.values():
                values[self.gpu, after] = np.nan

    def truth(self, fleet: Fleet, scenario: str) -> list[GroundTruth]:
        subject = {"node": self.node, "gpu": self.gpu}
        return [_truth(self, fleet, scenario, subject, self.at, self.at + self.hold_s, f"XID {self.code}")]


INJECTORS: dict[str, tuple[type[Fault], ...]] = {}
for _cls in (
    RanksLost,
    OutOfStep,
    Notebook,
    Zombie,
    Starved,
    GpuLeak,
    HostFill,
    Overheat,
    PowerBrake,
    WrongNuma,
    NetCollapse,
    MigNotebook,
    MigReconfigure,
    Silent,
    OneGpuWorks,
    Xid,
):
    INJECTORS[_cls.rule] = (*INJECTORS.get(_cls.rule, ()), _cls)
