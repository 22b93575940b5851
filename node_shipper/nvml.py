"""GPU readings through NVML (the `pynvml` module of the nvidia-ml-py distribution).

The module is injected (`nvml=`), so tests pass a fake with pynvml's own signatures. A value
a device cannot report (NVMLError_NotSupported and friends) is None, never a crash; a field
that answers NotSupported once is not asked again (it is a property of the device).

NVML calls are kept down: the slow-moving values (retired pages, remapped rows) and PCIe
throughput (each nvmlDeviceGetPcieThroughput call blocks ~20 ms while it measures) are read on
every `slow_every`-th sample only and carried between reads. MIG instances' SM utilisation
comes from GPM (Hopper and later): one GPM sample per GPU instance per tick, the utilisation
computed from the last two, the sample buffers allocated once per instance and freed on close.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pynvml as _pynvml

from node_shipper.errors import DriverNotLoaded, NoGpuError, ShipperError
from node_shipper.model import Event, GpuInfo, MigInfo, MigReading, ProcessInfo, Value
from node_shipper.procfs import ProcReader

log = logging.getLogger(__name__)

KIB = 1024  # nvmlDeviceGetPcieThroughput reports KB/s; NVIDIA's KB is 1024 bytes
MAX_EVENTS_PER_SAMPLE = 64  # an XID storm must not stall sampling
_MIG_PROFILE = re.compile(r"\bMIG\s+(\S+)")
_NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId of a process on a GPU without MIG
DEFAULT_SLOW_EVERY = 10
SLOW_METRICS = (
    *("pcie_tx_bps", "pcie_rx_bps", "retired_pages", "remapped_rows_unc", "remap_failure"),
    "mem_temp_c",  # HBM warms over minutes: every slow read (10 s) is plenty
)


def mig_profile(device_name: str) -> str | None:
    """The profile in a MIG device name: "NVIDIA H100 80GB HBM3 MIG 1g.10gb" → "1g.10gb"."""
    found = _MIG_PROFILE.search(device_name)
    return found.group(1) if found else None


def sysfs_bus_id(nvml_bus_id: str) -> str:
    """NVML's "00000000:17:00.0" as sysfs names it: lowercase, domain trimmed to 4 hex digits."""
    bus_id = nvml_bus_id.strip().lower()
    domain, sep, rest = bus_id.partition(":")
    if sep and len(domain) == 8:
        domain = domain[4:]
    return f"{domain}{sep}{rest}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _GpmPair:
    """The two GPM sample buffers of one GPU instance, used in turn: one holds the last tick's
    reading, the other takes this tick's. `uuids` are the instance's MIG devices when it was
    last read: a different set is a recreated instance, whose old reading is no baseline."""

    buffers: tuple[Any, Any]
    uuids: frozenset[str]
    previous: int | None = None  # which buffer holds the last reading; None: no baseline yet


# nvmlFieldValue_t.value is a union: valueType says which member holds it (NVML_VALUE_TYPE_*)
_FIELD_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class _Unsupported(Exception):
    """GPM answered NotSupported: this GPU has no per-instance SM utilisation."""


class NvmlCollector:
    """Owns the NVML session: `open()` once per process, `sample()` each second, `close()` on exit."""

    def __init__(
        self,
        nvml: ModuleType = _pynvml,
        *,
        proc: ProcReader | None = None,
        sysfs: Path = Path("/sys"),
        slow_every: int = DEFAULT_SLOW_EVERY,
    ) -> None:
        if slow_every < 1:
            raise ValueError(f"slow_every must be at least 1, got {slow_every}")
        self._nvml = nvml
        self._proc = proc or ProcReader(sysfs=sysfs)
        self._sysfs = sysfs
        self._slow_every = slow_every
        self._ticks = 0
        self._slow: dict[int, dict[str, Value]] = {}  # the last slow reading of each GPU
        self._gpm: dict[tuple[int, int], _GpmPair] = {}  # (GPU index, gpu instance id)
        self._gpm_ok: dict[int, bool] = {}
        self._handles: list[Any] = []
        self._infos: list[GpuInfo] = []
        self._unsupported: set[tuple[int, str]] = set()
        self._event_set: Any = None
        self._mig_layout: dict[int, tuple[tuple[str, str | None], ...]] = {}
        self._open = False
        self._procs_v2 = False  # the driver has no nvmlDeviceGetComputeRunningProcesses_v3

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> tuple[GpuInfo, ...]:
        """nvmlInit, enumerate GPUs, register for XID events. NoGpuError when there is nothing to watch."""
        nv = self._nvml
        try:
            nv.nvmlInit()
        except (nv.NVMLError_LibraryNotFound, nv.NVMLError_DriverNotLoaded) as e:
            raise DriverNotLoaded(f"no GPU/NVML found: {e}") from None  # may still come: driver.py
        except nv.NVMLError as e:
            raise ShipperError(f"NVML failed to initialise: {e}") from None
        self._open = True
        try:
            count = nv.nvmlDeviceGetCount()
            self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except nv.NVMLError as e:
            self.close()
            raise ShipperError(f"NVML cannot list the GPUs: {e}") from None
        if count == 0:
            self.close()
            raise NoGpuError("no GPU/NVML found: NVML sees 0 devices")
        self._infos = [self._static(i, h) for i, h in enumerate(self._handles)]
        self._register_events()
        return tuple(self._infos)

    def close(self) -> None:
        """Free the event set and GPM samples and shut NVML down; safe to call twice."""
        if not self._open:
            return
        nv = self._nvml
        for key in list(self._gpm):
            self._free_gpm(key)
        if self._event_set is not None:
            with contextlib.suppress(nv.NVMLError):  # freeing is best effort; nvmlShutdown frees it anyway
                nv.nvmlEventSetFree(self._event_set)
            self._event_set = None
        try:
            nv.nvmlShutdown()
        except nv.NVMLError as e:
            log.warning("nvmlShutdown failed", extra={"error": str(e)})
        self._open = False

    # -- helpers -------------------------------------------------------------------------

    def _get(self, index: int, field: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args), or None when the device cannot answer; NotSupported is remembered."""
        if (index, field) in self._unsupported:
            return None
        nv = self._nvml
        try:
            return fn(*args)
        except (nv.NVMLError_NotSupported, nv.NVMLError_FunctionNotFound):
            self._unsupported.add((index, field))
            log.debug("not supported", extra={"gpu": index, "field": field})
            return None
        except nv.NVMLError as e:
            # NoPermission, GpuIsLost, Unknown...: this sample has no value; the next one may.
            log.debug("nvml error", extra={"gpu": index, "field": field, "error": str(e)})
            return None

    def _numa_node(self, index: int, handle: Any) -> int | None:
        pci = self._get(index, "pci", self._nvml.nvmlDeviceGetPciInfo, handle)
        if pci is None:
            return None
        path = self._sysfs / "bus/pci/devices" / sysfs_bus_id(_text(pci.busId)) / "numa_node"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _static(self, index: int, handle: Any) -> GpuInfo:
        nv = self._nvml
        uuid = self._get(index, "uuid", nv.nvmlDeviceGetUUID, handle)
        name = self._get(index, "name", nv.nvmlDeviceGetName, handle)
        mem = self._get(index, "memory", nv.nvmlDeviceGetMemoryInfo, handle)
        limit_mw = self._get(index, "power_limit", nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        if limit_mw is None:
            limit_mw = self._get(index, "power_limit_mgmt", nv.nvmlDeviceGetPowerManagementLimit, handle)
        slowdown = self._get(
            index,
            "temp_slowdown",
            nv.nvmlDeviceGetTemperatureThreshold,
            handle,
            nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
        )
        return GpuInfo(
            index=index,
            uuid=_text(uuid) if uuid is not None else f"GPU-index-{index}",
            name=_text(name) if name is not None else None,
            mem_total=int(mem.total) if mem is not None else 0,
            numa_node=self._numa_node(index, handle),
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            temp_slowdown_c=float(slowdown) if slowdown is not None else None,
            mig_mode=self._mig_enabled(index, handle),
        )

    def _mig_enabled(self, index: int, handle: Any) -> bool:
        modes = self._get(index, "mig_mode", self._nvml.nvmlDeviceGetMigMode, handle)
        return bool(modes) and modes[0] == self._nvml.NVML_DEVICE_MIG_ENABLE

    def _register_events(self) -> None:
        nv = self._nvml
        try:
            self._event_set = nv.nvmlEventSetCreate()
        except nv.NVMLError as e:
            log.warning("XID events unavailable", extra={"error": str(e)})
            return
        for index, handle in enumerate(self._handles):
            try:
                nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, self._event_set)
            except nv.NVMLError as e:
                log.warning("XID events not registered", extra={"gpu": index, "error": str(e)})

    # -- sampling ------------------------------------------------------------------------

    def infos(self) -> tuple[GpuInfo, ...]:
        return tuple(self._infos)

    def _throttle(self, index: int, handle: Any) -> Any:
        nv = self._nvml
        current = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if current is not None:
            value = self._get(index, "clocks_event", current, handle)
            if value is not None or (index, "clocks_event") not in self._unsupported:
                return value
        # Drivers before 535 (and older nvidia-ml-py) know only the older name of the same bitmask.
        return self._get(index, "throttle", nv.nvmlDeviceGetCurrentClocksThrottleReasons, handle)

    def gpu_metrics(self, index: int, handle: Any, *, slow: bool = True) -> dict[str, Value]:
        """Every per-GPU series value of one sample (catalogue names, SI units).

        With `slow=False` the SLOW_METRICS are the values of the last slow read (read now if
        this GPU has none yet) instead of new NVML calls.
        """
        nv = self._nvml
        util = self._get(index, "util", nv.nvmlDeviceGetUtilizationRates, handle)
        mem = self._get(index, "memory", nv.nvmlDeviceGetMemoryInfo, handle)
        power = self._get(index, "power", nv.nvmlDeviceGetPowerUsage, handle)
        temp = self._get(index, "temp", nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
        clock = self._get(index, "sm_clock", nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM)
        sbe = self._get(
            index,
            "ecc_sbe",
            nv.nvmlDeviceGetTotalEccErrors,
            handle,
            nv.NVML_MEMORY_ERROR_TYPE_CORRECTED,
            nv.NVML_VOLATILE_ECC,
        )
        dbe = self._get(
            index,
            "ecc_dbe",
            nv.nvmlDeviceGetTotalEccErrors,
            handle,
            nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nv.NVML_VOLATILE_ECC,
        )
        throttle = self._throttle(index, handle)
        if slow or index not in self._slow:
            self._slow[index] = self._slow_metrics(index, handle)
        return {
            "util_gpu": float(util.gpu) if util is not None else None,
            "util_mem": float(util.memory) if util is not None else None,
            "mem_used": float(mem.used) if mem is not None else None,
            "power_w": power / 1000.0 if power is not None else None,
            "temp_c": float(temp) if temp is not None else None,
            "sm_clock_mhz": float(clock) if clock is not None else None,
            "throttle_reasons": float(throttle) if throttle is not None else None,
            "ecc_sbe_volatile": float(sbe) if sbe is not None else None,
            "ecc_dbe_volatile": float(dbe) if dbe is not None else None,
            **self._slow[index],
        }

    def _slow_metrics(self, index: int, handle: Any) -> dict[str, Value]:
        nv = self._nvml
        tx = self._get(index, "pcie_tx", nv.nvmlDeviceGetPcieThroughput, handle, nv.NVML_PCIE_UTIL_TX_BYTES)
        rx = self._get(index, "pcie_rx", nv.nvmlDeviceGetPcieThroughput, handle, nv.NVML_PCIE_UTIL_RX_BYTES)
        # Page retirement is pre-Ampere: each call lists the retired pages of one cause.
        sbe_pages = self._get(
            index,
            "retired_sbe",
            nv.nvmlDeviceGetRetiredPages,
            handle,
            nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
        )
        dbe_pages = self._get(
            index,
            "retired_dbe",
            nv.nvmlDeviceGetRetiredPages,
            handle,
            nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
        )
        # Row remapping replaced it on Ampere: (corrRows, uncRows, isPending, failureOccurred).
        rows = self._get(index, "remapped_rows", nv.nvmlDeviceGetRemappedRows, handle)
        retired = None if sbe_pages is None or dbe_pages is None else len(sbe_pages) + len(dbe_pages)
        return {
            "pcie_tx_bps": float(tx * KIB) if tx is not None else None,
            "pcie_rx_bps": float(rx * KIB) if rx is not None else None,
            "retired_pages": float(retired) if retired is not None else None,
            "remapped_rows_unc": float(rows[1]) if rows is not None else None,
            "remap_failure": (1.0 if rows[3] else 0.0) if rows is not None else None,
            "mem_temp_c": self._mem_temp(index, handle),
        }

    def _mem_temp(self, index: int, handle: Any) -> Value:
        """HBM/memory temperature (°C) where the GPU has the sensor: NVML's field MEMORY_TEMP (the
        temperature call knows only the GPU core's). A field answered NotSupported is remembered."""
        nv = self._nvml
        wanted = [nv.NVML_FI_DEV_MEMORY_TEMP]
        fields = self._get(index, "mem_temp", nv.nvmlDeviceGetFieldValues, handle, wanted)
        if not fields:
            return None
        field = fields[0]
        if field.nvmlReturn != nv.NVML_SUCCESS:
            if field.nvmlReturn == nv.NVML_ERROR_NOT_SUPPORTED:
                self._unsupported.add((index, "mem_temp"))
            return None
        member = _FIELD_MEMBERS.get(int(field.valueType))
        return float(getattr(field.value, member)) if member is not None else None

    def _mig_instances(self, index: int, handle: Any) -> list[MigReading]:
        nv = self._nvml
        count = self._get(index, "mig_count", nv.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        found: list[MigReading] = []
        for slot in range(int(count)):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                uuid = _text(nv.nvmlDeviceGetUUID(mig))
                gi_id = int(nv.nvmlDeviceGetGpuInstanceId(mig))
                ci_id = int(nv.nvmlDeviceGetComputeInstanceId(mig))
            except nv.NVMLError:  # NotFound: an empty slot
                continue
            name = self._get(index, f"mig_name:{uuid}", nv.nvmlDeviceGetName, mig)
            mem = self._get(index, f"mig_mem:{uuid}", nv.nvmlDeviceGetMemoryInfo, mig)
            info = MigInfo(
                gpu_index=index,
                uuid=uuid,
                gi_id=gi_id,
                ci_id=ci_id,
                mem_total=int(mem.total) if mem is not None else 0,
                profile=mig_profile(_text(name)) if name is not None else None,
            )
            found.append(MigReading(info, float(mem.used) if mem is not None else None))
        return found

    # -- MIG SM utilisation through GPM ----------------------------------------------------

    def _gpm_supported(self, index: int, handle: Any) -> bool:
        known = self._gpm_ok.get(index)
        if known is not None:
            return known
        support = self._get(index, "gpm", self._nvml.nvmlGpmQueryDeviceSupport, handle)
        if support is None:
            # NotSupported (remembered by _get) means never; another error: ask again next tick.
            if (index, "gpm") in self._unsupported:
                self._gpm_ok[index] = False
            return False
        self._gpm_ok[index] = bool(support.isSupportedDevice)
        return self._gpm_ok[index]

    def _free_gpm(self, key: tuple[int, int]) -> None:
        pair = self._gpm.pop(key)
        for buffer in pair.buffers:
            with contextlib.suppress(self._nvml.NVMLError):  # best effort: nvmlShutdown frees them too
                self._nvml.nvmlGpmSampleFree(buffer)

    def _forget_gpm(self, index: int, keep: set[int]) -> None:
        """Free the GPM buffers of `index`'s instances that no longer exist."""
        for key in [k for k in self._gpm if k[0] == index and k[1] not in keep]:
            self._free_gpm(key)

    def _gpm_pair(self, index: int, gi_id: int, uuids: frozenset[str]) -> _GpmPair:
        nv = self._nvml
        pair = self._gpm.get((index, gi_id))
        if pair is None:
            first = nv.nvmlGpmSampleAlloc()
            try:
                second = nv.nvmlGpmSampleAlloc()
            except nv.NVMLError:
                with contextlib.suppress(nv.NVMLError):
                    nv.nvmlGpmSampleFree(first)
                raise
            pair = self._gpm[(index, gi_id)] = _GpmPair((first, second), uuids)
        elif pair.uuids != uuids:
            pair.uuids, pair.previous = uuids, None  # a recreated instance: start a new baseline
        return pair

    def _instance_sm_util(self, index: int, handle: Any, gi_id: int, uuids: frozenset[str]) -> Value:
        """This tick's SM utilisation of one GPU instance, from its previous GPM sample to a new one.

        None on the first tick (no baseline yet) and after a failed read; _Unsupported when the
        GPU has no GPM for MIG.
        """
        nv = self._nvml
        try:
            pair = self._gpm_pair(index, gi_id, uuids)
            current = 0 if pair.previous is None else 1 - pair.previous
            nv.nvmlGpmMigSampleGet(handle, gi_id, pair.buffers[current])
        except (nv.NVMLError_NotSupported, nv.NVMLError_FunctionNotFound):
            raise _Unsupported() from None
        except nv.NVMLError as e:
            log.debug("GPM sample failed", extra={"gpu": index, "gi": gi_id, "error": str(e)})
            if (index, gi_id) in self._gpm:
                self._gpm[(index, gi_id)].previous = None
            return None
        before, pair.previous = pair.previous, current
        if before is None:
            return None
        request = nv.c_nvmlGpmMetricsGet_t()
        request.version = nv.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 1
        request.sample1 = pair.buffers[before]
        request.sample2 = pair.buffers[current]
        request.metrics[0].metricId = nv.NVML_GPM_METRIC_SM_UTIL
        try:
            nv.nvmlGpmMetricsGet(request)
        except (nv.NVMLError_NotSupported, nv.NVMLError_FunctionNotFound):
            raise _Unsupported() from None
        except nv.NVMLError as e:
            log.debug("GPM metrics failed", extra={"gpu": index, "gi": gi_id, "error": str(e)})
            return None
        metric = request.metrics[0]
        if metric.nvmlReturn == nv.NVML_ERROR_NOT_SUPPORTED:
            raise _Unsupported()
        if metric.nvmlReturn != nv.NVML_SUCCESS or not math.isfinite(metric.value):
            return None
        return min(100.0, max(0.0, float(metric.value)))

    def _with_sm_util(self, index: int, handle: Any, readings: list[MigReading]) -> list[MigReading]:
        """The readings with `util_sm` added, one GPM reading per GPU instance (its compute
        instances share it); unchanged when the GPU has no GPM for MIG."""
        by_gi: dict[int, set[str]] = {}
        for r in readings:
            by_gi.setdefault(r.info.gi_id, set()).add(r.info.uuid)
        self._forget_gpm(index, set(by_gi))
        if not readings or not self._gpm_supported(index, handle):
            return readings
        util: dict[int, Value] = {}
        try:
            for gi_id, uuids in sorted(by_gi.items()):
                util[gi_id] = self._instance_sm_util(index, handle, gi_id, frozenset(uuids))
        except _Unsupported:
            log.info("no MIG SM utilisation: GPM not supported", extra={"gpu": index})
            self._unsupported.add((index, "gpm"))
            self._gpm_ok[index] = False
            self._forget_gpm(index, set())
            return readings
        return [replace(r, metrics={**r.metrics, "util_sm": util[r.info.gi_id]}) for r in readings]

    def _running_processes(self, handle: Any) -> Any:
        """The compute processes: pynvml's unversioned call (the _v3 function), or _v2 on drivers
        before R510, which have no _v3. pynvml reports a missing _v3 as NVMLLibraryMismatchError,
        which is no NVMLError: uncaught, it failed every sample there (seen only through real ctypes)."""
        nv = self._nvml
        if not self._procs_v2:
            try:
                return nv.nvmlDeviceGetComputeRunningProcesses(handle)
            except _pynvml.NVMLLibraryMismatchError:
                self._procs_v2 = True
        return nv.nvmlDeviceGetComputeRunningProcesses_v2(handle)  # FunctionNotFound: _get says unsupported

    def _processes(
        self, index: int, handle: Any, by_instance: dict[tuple[int, int], str]
    ) -> list[ProcessInfo]:
        running = self._get(index, "processes", self._running_processes, handle)
        out = []
        for p in running or ():
            pid = int(p.pid)
            facts = self._proc.facts(pid)
            gi = getattr(p, "gpuInstanceId", _NO_INSTANCE)
            ci = getattr(p, "computeInstanceId", _NO_INSTANCE)
            used = getattr(p, "usedGpuMemory", None)
            out.append(
                ProcessInfo(
                    gpu_index=index,
                    pid=pid,
                    user=facts.user,
                    container=facts.container,
                    name=facts.name,
                    mem_used=int(used) if used is not None else None,
                    cpu_affinity=facts.cpu_affinity,
                    mig_uuid=by_instance.get((gi, ci)),
                    cpu_numa_nodes=facts.cpu_numa_nodes,
                    job=facts.job,
                )
            )
        return out

    def _xid_events(self, ts: float) -> list[Event]:
        nv = self._nvml
        if self._event_set is None:
            return []
        events: list[Event] = []
        for _ in range(MAX_EVENTS_PER_SAMPLE):
            try:
                data = nv.nvmlEventSetWait(self._event_set, 0)  # 0 ms: never block the sample
            except nv.NVMLError_Timeout:
                break
            except nv.NVMLError as e:
                log.warning("XID event read failed", extra={"error": str(e)})
                break
            if not int(data.eventType) & nv.nvmlEventTypeXidCriticalError:
                continue
            try:
                gpu_index: int | None = int(nv.nvmlDeviceGetIndex(data.device))
            except nv.NVMLError:
                gpu_index = None
            code = int(data.eventData)
            log.warning("XID event", extra={"gpu": gpu_index, "xid": code})
            events.append(Event(ts=ts, type="xid", gpu_index=gpu_index, code=code, message=f"Xid {code}"))
        return events

    def sample(
        self, ts: float
    ) -> tuple[dict[int, dict[str, Value]], list[MigReading], list[ProcessInfo], list[Event]]:
        """One reading of every GPU: per-GPU metrics, MIG memory and SM use, compute processes, new events."""
        gpus: dict[int, dict[str, Value]] = {}
        mig_readings: list[MigReading] = []
        processes: list[ProcessInfo] = []
        events = self._xid_events(ts)
        slow = self._ticks % self._slow_every == 0
        self._ticks += 1
        for index, handle in enumerate(self._handles):
            enabled = self._mig_enabled(index, handle)
            if enabled != self._infos[index].mig_mode:
                # What a GPU supports differs in and out of MIG mode (utilisation, for one): ask again.
                self._unsupported = {
                    key for key in self._unsupported if key[0] != index or key[1] == "mig_mode"
                }
                self._slow.pop(index, None)
                self._gpm_ok.pop(index, None)
                self._infos[index] = replace(self._infos[index], mig_mode=enabled)
            gpus[index] = self.gpu_metrics(index, handle, slow=slow)
            by_instance: dict[tuple[int, int], str] = {}
            layout: list[tuple[str, str | None]] = []
            instances = self._mig_instances(index, handle) if enabled else []
            for reading in self._with_sm_util(index, handle, instances):
                mig_readings.append(reading)
                by_instance[(reading.info.gi_id, reading.info.ci_id)] = reading.info.uuid
                layout.append((reading.info.uuid, reading.info.profile))
            events += self._layout_event(ts, index, tuple(sorted(layout)))
            processes += self._processes(index, handle, by_instance)
        self._proc.forget_except({p.pid for p in processes})
        return gpus, mig_readings, processes, events

    def _layout_event(self, ts: float, index: int, layout: tuple[tuple[str, str | None], ...]) -> list[Event]:
        before = self._mig_layout.get(index)
        self._mig_layout[index] = layout
        if before is None or before == layout:
            return []  # the first look is the starting layout, not a change
        profiles = ", ".join(sorted(p or "?" for _, p in layout)) or "none"
        return [Event(ts=ts, type="mig_layout", gpu_index=index, message=f"MIG instances now: {profiles}")]
