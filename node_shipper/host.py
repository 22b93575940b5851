"""Host metrics through psutil: CPU, memory, disk and network (loopback excluded).

Rates (bytes/s) come from the difference of psutil's cumulative counters between two samples,
so the first sample after start has None for them; a counter that went backwards (device
reset) gives None for that sample, never a negative rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil as _psutil

from node_shipper.model import HostInfo, Value


def numa_node_count(sysfs: Path = Path("/sys")) -> int | None:
    """How many NUMA nodes the kernel lists under /sys/devices/system/node, or None if unknown."""
    try:
        count = sum(
            1
            for p in (sysfs / "devices/system/node").iterdir()
            if p.name[4:].isdigit() and p.name[:4] == "node"
        )
    except OSError:
        return None
    return count or None


class HostCollector:
    """Samples host metrics; `psutil` and the monotonic clock are injected for tests."""

    def __init__(
        self,
        psutil: ModuleType = _psutil,
        *,
        sysfs: Path = Path("/sys"),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ps = psutil
        self._monotonic = monotonic
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
        return out

    def sample(self) -> dict[str, Value]:
        """One reading of every host metric in the catalogue."""
        per_core = list(self._ps.cpu_percent(percpu=True))
        mem = self._ps.virtual_memory()
        values: dict[str, Value] = {
            "cpu_util": sum(per_core) / len(per_core) if per_core else None,
            "cpu_busy_cores": sum(per_core) / 100.0 if per_core else None,
            "mem_used": float(mem.total - mem.available),
        }
        now = self._monotonic()
        counters = self._counters()
        dt = now - self._prev_t if self._prev_t is not None else 0.0
        for name in ("disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps"):
            current, before = counters.get(name), self._prev.get(name)
            if current is None or before is None or dt <= 0 or current < before:
                values[name] = None
            else:
                values[name] = round((current - before) / dt)
        self._prev_t, self._prev = now, counters
        return values
