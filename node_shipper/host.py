"""Host metrics through psutil: CPU, memory, disk and network (loopback excluded); InfiniBand/RoCE
port counters from sysfs (infiniband.py) and the GPU processes' cgroup CPU quota (cgroup.py).

Rates (bytes/s) come from the difference of psutil's cumulative counters between two samples,
so the first sample after start has None for them; a counter that went backwards (device
reset) gives None for that sample, never a negative rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil as _psutil

from node_shipper.cgroup import CGROUPFS, PROC, cpu_quota_cores
from node_shipper.infiniband import SYSFS_INFINIBAND, ib_bytes
from node_shipper.model import HostInfo, Value

RATES = ("disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps", "ib_rx_bps", "ib_tx_bps")


def _node_dirs(sysfs: Path) -> list[Path]:
    """/sys/devices/system/node/node<N> (OSError when the kernel has no such folder)."""
    found = (sysfs / "devices/system/node").iterdir()
    return [p for p in found if p.name[:4] == "node" and p.name[4:].isdigit()]


def numa_node_count(sysfs: Path = Path("/sys")) -> int | None:
    """How many NUMA nodes the kernel lists under /sys/devices/system/node, or None if unknown."""
    try:
        count = len(_node_dirs(sysfs))
    except OSError:
        return None
    return count or None


def parse_cpulist(text: str) -> frozenset[int]:
    """The CPUs of a kernel cpulist ("0-55,112-167", "3", "" for a node without CPUs).

    ValueError on anything else: a format we misread would pin processes to the wrong node.
    """
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, sep, last = part.partition("-")
        lo, hi = int(first), int(last) if sep else int(first)
        if lo < 0 or hi < lo:
            raise ValueError(f"bad cpulist range {part!r}")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def numa_cpus(sysfs: Path = Path("/sys")) -> dict[int, frozenset[int]]:
    """NUMA node → its CPUs, from /sys/devices/system/node/node*/cpulist; {} when the kernel has none.

    A node whose cpulist cannot be read or parsed is left out (memory-only nodes have an empty one).
    """
    try:
        nodes = _node_dirs(sysfs)
    except OSError:
        return {}
    out: dict[int, frozenset[int]] = {}
    for node in nodes:
        try:
            out[int(node.name[4:])] = parse_cpulist((node / "cpulist").read_text())
        except (OSError, ValueError):
            continue
    return dict(sorted(out.items()))


def numa_nodes_of(cpus: Iterable[int], topology: Mapping[int, frozenset[int]]) -> tuple[int, ...] | None:
    """The NUMA nodes (ascending) holding any of `cpus`; None when the topology is unknown."""
    if not topology:
        return None
    wanted = frozenset(cpus)
    return tuple(node for node, members in topology.items() if members & wanted)


class HostCollector:
    """Samples host metrics; `psutil` and the monotonic clock are injected for tests."""

    def __init__(
        self,
        psutil: ModuleType = _psutil,
        *,
        sysfs: Path = Path("/sys"),
        monotonic: Callable[[], float] = time.monotonic,
        infiniband: Path = SYSFS_INFINIBAND,
        proc: Path = PROC,
        cgroupfs: Path = CGROUPFS,
    ) -> None:
        self._ps = psutil
        self._monotonic = monotonic
        self._infiniband = infiniband
        self._proc = proc
        self._cgroupfs = cgroupfs
        self._info = HostInfo(
            cpu_count=int(psutil.cpu_count(logical=True) or 1),
            mem_total=int(psutil.virtual_memory().total),
            numa_nodes=numa_node_count(sysfs),
        )
        self._loopback: dict[str, bool] = {}
        self._prev_t: float | None = None
        self._prev: dict[str, float] = {}
        psutil.cpu_percent(percpu=True)  # the first call only starts psutil's measuring interval

    def info(self) -> HostInfo:
        return self._info

    def _is_loopback(self, nic: str) -> bool:
        if nic not in self._loopback:
            stats = self._ps.net_if_stats()
            for name, st in stats.items():
                flags = getattr(st, "flags", "") or ""
                self._loopback[name] = name == "lo" or "loopback" in flags.split(",")
            self._loopback.setdefault(nic, nic == "lo")
        return self._loopback[nic]

    def _counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        disk: Any = self._ps.disk_io_counters()
        if disk is not None:  # None on machines without block devices psutil can read
            out["disk_read_bps"] = float(disk.read_bytes)
            out["disk_write_bps"] = float(disk.write_bytes)
        nics = self._ps.net_io_counters(pernic=True)
        real = [c for name, c in nics.items() if not self._is_loopback(name)]
        out["net_rx_bps"] = float(sum(c.bytes_recv for c in real))
        out["net_tx_bps"] = float(sum(c.bytes_sent for c in real))
        ib = ib_bytes(self._infiniband)
        if ib is not None:
            out["ib_rx_bps"], out["ib_tx_bps"] = float(ib[0]), float(ib[1])
        return out

    def sample(self, gpu_pids: Iterable[int] = ()) -> dict[str, Value]:
        """One reading of every host metric in the catalogue; `gpu_pids` (the GPU compute
        processes of this sample) give `cpu_quota_cores`. Optional metrics the node lacks are None."""
        per_core = list(self._ps.cpu_percent(percpu=True))
        mem = self._ps.virtual_memory()
        values: dict[str, Value] = {
            "cpu_util": sum(per_core) / len(per_core) if per_core else None,
            "cpu_busy_cores": sum(per_core) / 100.0 if per_core else None,
            "mem_used": float(mem.total - mem.available),
            "cpu_quota_cores": cpu_quota_cores(gpu_pids, proc=self._proc, cgroupfs=self._cgroupfs),
        }
        now = self._monotonic()
        counters = self._counters()
        dt = now - self._prev_t if self._prev_t is not None else 0.0
        for name in RATES:
            current, before = counters.get(name), self._prev.get(name)
            if current is None or before is None or dt <= 0 or current < before:
                values[name] = None
            else:
                values[name] = round((current - before) / dt)
        self._prev_t, self._prev = now, counters
        return values
