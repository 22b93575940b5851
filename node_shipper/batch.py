"""Turn a run of samples into one Batch v1 document (src/gpulse_wire/batch-v1.schema.json).

Columnar: one series per catalogue metric per device, one value per timestamp, None where the
device could not report it. Every catalogue metric is present for every GPU and for the host,
so the emitted set is exactly the catalogue (`gpulse_wire.metrics`), except that an optional
metric (InfiniBand, CPU quota, memory temperature) is sent only when some sample reported it.
A MIG instance always has `mem_used`; its other series (`util_sm`) only when some sample of the
batch reported them, since most MIG-capable GPUs (Ampere) cannot.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from gpulse_wire.metrics import GPU_METRICS, HOST_METRICS, MIG_METRICS
from node_shipper.model import Event, Inventory, MigInfo, ProcessInfo, Sample, Value

log = logging.getLogger(__name__)

VERSION = 1
MAX_SAMPLES = 3600  # schema: maxItems of a series
MAX_PROCESSES = 4096
MAX_EVENTS = 1024
GPU_NAMES = tuple(m.name for m in GPU_METRICS)
HOST_NAMES = tuple(m.name for m in HOST_METRICS)
MIG_NAMES = tuple(m.name for m in MIG_METRICS)
_GPU_SET = frozenset(GPU_NAMES)
_MIG_MORE = frozenset(MIG_NAMES) - {"mem_used"}  # what MigReading.metrics may hold
MAX_NUMA_NODES = 64  # schema: maxItems of a process's cpu_numa_nodes
# Rounding to the catalogue's resolution keeps the JSON short without losing what the codec keeps.
_DIGITS = {"power_w": 2, "cpu_util": 1, "cpu_busy_cores": 2, "util_sm": 1}


def _clip(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


# A metric name means one unit in every device kind (mem_used is bytes for GPU, host and MIG).
_BOUNDS = {m.name: m.bounds for m in (*GPU_METRICS, *HOST_METRICS, *MIG_METRICS)}
_OPTIONAL = frozenset(m.name for m in (*GPU_METRICS, *HOST_METRICS) if m.optional)


def _reported(series: dict[str, list[Value]]) -> dict[str, list[Value]]:
    """Every series, but an optional one (InfiniBand, a CPU quota, memory temperature) only when
    some sample of the batch has a value: a node without the hardware sends no column of nulls."""
    return {
        name: values
        for name, values in series.items()
        if name not in _OPTIONAL or any(v is not None for v in values)
    }


_WARNED: set[str] = set()  # metrics already said to read out of range (once per process each)


def _num(name: str, value: Value) -> Value:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):  # NaN and infinity are not JSON: a reading we cannot trust is null
        return None
    lo, hi = _BOUNDS.get(name, (-math.inf, math.inf))
    if not lo <= number <= hi:
        # a glitched sensor: the contract refuses the whole batch for one such value, so send null
        if name not in _WARNED:
            _WARNED.add(name)
            log.warning("reading out of range sent as null", extra={"metric": name, "value": number})
        return None
    digits = _DIGITS.get(name)
    if digits is not None:
        return round(number, digits)
    return int(number) if number.is_integer() else round(number, 3)


@dataclass
class _Proc:
    info: ProcessInfo
    first_seen: float
    last_seen: float


class BatchBuilder:
    """Accumulates one node's samples; `build` returns the document and starts a new batch."""

    def __init__(
        self,
        *,
        cluster: str,
        node: str,
        node_group: str | None = None,
        shipper: dict[str, Any] | None = None,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.node_group = node_group
        self.shipper = dict(shipper or {})
        self._reset()

    def _reset(self) -> None:
        self._ts: list[float] = []
        self._host: dict[str, list[Value]] = {name: [] for name in HOST_NAMES}
        self._gpus: dict[int, dict[str, list[Value]]] = {}
        # uuid → (latest facts, metric name → {sample position: value})
        self._mig: dict[str, tuple[MigInfo, dict[str, dict[int, Value]]]] = {}
        self._procs: dict[tuple[int, int, str | None], _Proc] = {}
        self._events: list[Event] = []

    def __len__(self) -> int:
        return len(self._ts)

    @property
    def first_ts(self) -> float | None:
        return self._ts[0] if self._ts else None

    def add(self, sample: Sample) -> bool:
        """Append one sample; False (and nothing added) if its time is not after the previous one."""
        if self._ts and sample.ts <= self._ts[-1]:
            # The wall clock stepped back (NTP): timestamps must strictly increase in a batch.
            log.warning(
                "sample skipped: clock went back", extra={"node": self.node, "by_s": self._ts[-1] - sample.ts}
            )
            return False
        if len(self._ts) >= MAX_SAMPLES:
            raise ValueError(f"a batch holds at most {MAX_SAMPLES} samples; build() it first")
        # Checked before anything is appended: a refused sample leaves the batch as it was.
        for metrics in sample.gpus.values():
            unknown = metrics.keys() - _GPU_SET
            if unknown:
                raise ValueError(f"metrics {sorted(unknown)} are not in the Batch v1 catalogue")
        for reading in sample.mig:
            unknown = reading.metrics.keys() - _MIG_MORE
            if unknown:
                raise ValueError(f"MIG metrics {sorted(unknown)} are not in the Batch v1 catalogue")
        i = len(self._ts)
        self._ts.append(round(sample.ts, 3))
        for name in HOST_NAMES:
            self._host[name].append(_num(name, sample.host.get(name)))
        for index, metrics in sample.gpus.items():
            series = self._gpus.setdefault(index, {name: [None] * i for name in GPU_NAMES})
            for name in GPU_NAMES:
                series[name].append(_num(name, metrics.get(name)))
        for index, series in self._gpus.items():
            if index not in sample.gpus:  # a GPU that fell off the bus: its series go on, null
                for values in series.values():
                    values.append(None)
        for reading in sample.mig:
            by_name = self._mig[reading.info.uuid][1] if reading.info.uuid in self._mig else {"mem_used": {}}
            self._mig[reading.info.uuid] = (reading.info, by_name)  # the latest layout facts win
            by_name["mem_used"][i] = _num("mem_used", reading.mem_used)
            for name, value in reading.metrics.items():
                by_name.setdefault(name, {})[i] = _num(name, value)
        for proc in sample.processes:
            key = (proc.gpu_index, proc.pid, proc.mig_uuid)
            seen = self._procs.get(key)
            if seen is None:
                self._procs[key] = _Proc(proc, sample.ts, sample.ts)
            else:
                seen.info, seen.last_seen = proc, sample.ts
        self._events.extend(sample.events)
        return True

    def build(
        self, *, inventory: Inventory, seq: int, batch_id: str, agent: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The Batch v1 document of the samples added since the last build; then starts afresh.

        `agent` is the shipper's own health as the batch leaves (`{"spool": "ok"}`…), so that
        analyze can see a node that ships without a spool."""
        if not self._ts:
            raise ValueError("no samples to build a batch from")
        n = len(self._ts)
        doc: dict[str, Any] = {
            "version": VERSION,
            "batch_id": batch_id,
            "cluster": self.cluster,
            "node": self.node,
        }
        if self.node_group:
            doc["node_group"] = self.node_group
        doc["seq"] = seq
        if self.shipper:
            doc["shipper"] = dict(self.shipper)
        if agent:
            doc["agent"] = dict(agent)
        doc["timestamps"] = list(self._ts)
        host: dict[str, Any] = {"cpu_count": inventory.host.cpu_count, "mem_total": inventory.host.mem_total}
        if inventory.host.numa_nodes:
            host["numa_nodes"] = inventory.host.numa_nodes
        host["metrics"] = _reported(self._host)
        doc["host"] = host
        gpu_indexes = set()
        gpus = []
        for info in inventory.gpus:
            gpu_indexes.add(info.index)
            series = self._gpus.get(info.index) or {name: [None] * n for name in GPU_NAMES}
            gpu: dict[str, Any] = {"index": info.index, "uuid": info.uuid[:96]}
            if info.name is not None:
                gpu["name"] = info.name[:96]
            gpu["mem_total"] = info.mem_total
            gpu["numa_node"] = info.numa_node
            gpu["power_limit_w"] = _num("power_w", info.power_limit_w)
            gpu["temp_slowdown_c"] = info.temp_slowdown_c
            gpu["mig_mode"] = info.mig_mode
            gpu["metrics"] = _reported(series)
            gpus.append(gpu)
        doc["gpus"] = gpus
        mig = [
            {
                "gpu_index": info.gpu_index,
                "uuid": info.uuid[:96],
                "gi_id": info.gi_id,
                "ci_id": info.ci_id,
                **({"profile": info.profile[:32]} if info.profile else {}),
                "mem_total": info.mem_total,
                "metrics": {
                    name: [by_name[name].get(i) for i in range(n)] for name in MIG_NAMES if name in by_name
                },
            }
            for info, by_name in self._mig.values()
            if info.gpu_index in gpu_indexes
        ]
        if mig:
            doc["mig"] = mig
        procs = [p for p in self._procs.values() if p.info.gpu_index in gpu_indexes]
        if len(procs) > MAX_PROCESSES:
            log.warning(
                "processes truncated", extra={"node": self.node, "seen": len(procs), "kept": MAX_PROCESSES}
            )
            procs = procs[:MAX_PROCESSES]
        if procs:
            doc["processes"] = [self._process(p) for p in procs]
        events = [e for e in self._events if e.gpu_index is None or e.gpu_index in gpu_indexes]
        if len(events) > MAX_EVENTS:
            log.warning(
                "events truncated", extra={"node": self.node, "seen": len(events), "kept": MAX_EVENTS}
            )
            events = events[:MAX_EVENTS]
        if events:
            doc["events"] = [
                {
                    "ts": round(e.ts, 3),
                    "type": e.type,
                    "gpu_index": e.gpu_index,
                    "code": e.code,
                    "message": _clip(e.message, 1024),
                }
                for e in events
            ]
        self._reset()
        return doc

    @staticmethod
    def _process(p: _Proc) -> dict[str, Any]:
        info = p.info
        out: dict[str, Any] = {
            "gpu_index": info.gpu_index,
            "mig_uuid": _clip(info.mig_uuid, 96),
            "pid": info.pid,
            "user": _clip(info.user, 64),
            "container": _clip(info.container, 128),
            "name": _clip(info.name, 256),
            "mem_used": info.mem_used,
        }
        if info.cpu_affinity is not None:
            out["cpu_affinity"] = list(info.cpu_affinity[:4096])
        if info.cpu_numa_nodes is not None:
            out["cpu_numa_nodes"] = list(info.cpu_numa_nodes[:MAX_NUMA_NODES])
        if info.job is not None:  # optional: only where a scheduler names the job
            out["job"] = _clip(info.job, 128)
        out["first_seen"] = round(p.first_seen, 3)
        out["last_seen"] = round(p.last_seen, 3)
        return out


def encode(doc: dict[str, Any]) -> bytes:
    """The request body: compact JSON (NaN refused: it is not JSON), gzip-compressed."""
    raw = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    # mtime=0: the same document always gives the same bytes.
    return gzip.compress(raw, compresslevel=6, mtime=0)
