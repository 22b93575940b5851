"""What one sample of a node holds, independent of where it came from (NVML or the simulator).

A `Source` answers `inventory()` (the static facts: host, GPUs) and `sample(ts)` (one reading of
every metric at time `ts`). `BatchBuilder` turns a run of samples into a Batch v1 document.
Metric names are those of `gpulse_wire.metrics`; a value a device cannot report is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Value = float | None
EventType = Literal["xid", "mig_layout"]


@dataclass(frozen=True)
class HostInfo:
    cpu_count: int
    mem_total: int  # bytes
    numa_nodes: int | None = None


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    mem_total: int  # bytes
    name: str | None = None
    numa_node: int | None = None  # -1: the platform has no NUMA affinity for this device
    power_limit_w: float | None = None
    temp_slowdown_c: float | None = None
    mig_mode: bool = False


@dataclass(frozen=True)
class Inventory:
    """The node's static facts, read once at start (MIG mode may be re-read)."""

    host: HostInfo
    gpus: tuple[GpuInfo, ...]


@dataclass(frozen=True)
class MigInfo:
    gpu_index: int
    uuid: str
    gi_id: int
    ci_id: int
    mem_total: int
    profile: str | None = None  # "1g.10gb"


@dataclass(frozen=True)
class MigReading:
    """One MIG instance at one sample. `metrics` holds the MIG catalogue's other series (`util_sm`):
    a name present (even as None: no value this time) means the instance reports it; a name absent
    means it cannot, and the batch then leaves that series out instead of filling it with nulls."""

    info: MigInfo
    mem_used: Value
    metrics: Mapping[str, Value] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessInfo:
    """A compute process seen on a GPU at one sample."""

    gpu_index: int
    pid: int
    user: str | None = None
    container: str | None = None
    name: str | None = None
    mem_used: int | None = None
    cpu_affinity: tuple[int, ...] | None = None
    mig_uuid: str | None = None
    cpu_numa_nodes: tuple[int, ...] | None = None  # the NUMA nodes cpu_affinity spans, ascending
    job: str | None = None  # the scheduler's identity of its job: "slurm:<id>", "pod:<uid>"


@dataclass(frozen=True)
class Event:
    ts: float
    type: EventType
    gpu_index: int | None = None
    code: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class Sample:
    """Every reading of one node at one instant. Keys of `host` and `gpus[i]` are catalogue names."""

    ts: float
    host: Mapping[str, Value]
    gpus: Mapping[int, Mapping[str, Value]]
    mig: Sequence[MigReading] = ()
    processes: Sequence[ProcessInfo] = ()
    events: Sequence[Event] = field(default_factory=tuple)


class Source(Protocol):
    """Where samples come from: real NVML + psutil, or the simulator."""

    def inventory(self) -> Inventory:
        """The node's static facts as of the latest sample."""
        ...

    def sample(self, ts: float) -> Sample:
        """Read everything once; `ts` is the wall-clock time the sample is stamped with."""
        ...

    def close(self) -> None:
        """Release what the source holds (NVML)."""
        ...
