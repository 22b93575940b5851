"""NvmlCollector against a fake NVML: `create_autospec(pynvml)`, so every call is checked against
pynvml's real signatures, returning pynvml's own structs and raising its own error classes."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pynvml
import pytest

from gpulse.wire.batch import parse
from node_shipper.batch import BatchBuilder, encode
from node_shipper.errors import NoGpuError, ShipperError
from node_shipper.host import HostCollector
from node_shipper.model import Event, GpuInfo, Inventory
from node_shipper.nvml import SLOW_METRICS, NvmlCollector, mig_profile, sysfs_bus_id
from node_shipper.procfs import ProcFacts, ProcReader
from node_shipper.source import RealSource

GIB = 1 << 30
NOT_SUPPORTED = pynvml.NVMLError_NotSupported()


def _pci(bus_id: str) -> Any:
    info = pynvml.nvmlPciInfo_t()
    info.busId = bus_id
    return info


def _proc(pid: int, used: int | None, gi: int = 0xFFFFFFFF, ci: int = 0xFFFFFFFF) -> Any:
    return pynvml.nvmlFriendlyObject(
        {"pid": pid, "usedGpuMemory": used, "gpuInstanceId": gi, "computeInstanceId": ci}
    )


def h100(**overrides: Any) -> dict[str, Any]:
    """What an H100 SXM answers while training (NVML units: mW, KB/s, bytes)."""
    gpu: dict[str, Any] = {
        "uuid": "GPU-5f2b2a3c-0d1e-4f50-8a9b-0c1d2e3f4a5b",
        "name": "NVIDIA H100 80GB HBM3",
        "memory": pynvml.c_nvmlMemory_t(
            total=81559 * (1 << 20), free=19559 * (1 << 20), used=62000 * (1 << 20)
        ),
        "pci": _pci("00000000:17:00.0"),
        "enforced_limit": 700000,
        "mgmt_limit": 700000,
        "slowdown": 87,
        "mig_mode": [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE],
        "util": pynvml.c_nvmlUtilization_t(gpu=93, memory=41),
        "power": 612345,
        "temp": 68,
        "clock": 1980,
        "clocks_event": 0,
        "throttle": 0,
        "ecc": {pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED: 2, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED: 0},
        "pcie": {pynvml.NVML_PCIE_UTIL_TX_BYTES: 350_000, pynvml.NVML_PCIE_UTIL_RX_BYTES: 2_100_000},
        # Hopper has no page retirement (row remapping replaced it on Ampere).
        "retired": {
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS: NOT_SUPPORTED,
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: NOT_SUPPORTED,
        },
        "remapped": (0, 0, 0, 0),  # corrRows, uncRows, isPending, failureOccurred
        "mem_temp": 52,  # HBM3's sensor (field NVML_FI_DEV_MEMORY_TEMP), °C
        "gpm": True,  # nvmlGpmQueryDeviceSupport's isSupportedDevice (Hopper and later)
        "processes": [],
        "mig": [],
    }
    gpu.update(overrides)
    return gpu


def _address(sample: Any) -> int:
    """The address a GPM sample pointer holds (the fake hands out made-up ones)."""
    return int(ctypes.cast(sample, ctypes.c_void_p).value or 0)


class FakeNvml:
    """Builds the autospecced module; `gpus` is a list of dicts like h100(); values may be exceptions.

    GPM samples are real `c_nvmlGpmSample_t` pointers at made-up addresses, and nvmlGpmMetricsGet
    receives the real `c_nvmlGpmMetricsGet_t`, so the collector must fill pynvml's own struct.
    """

    def __init__(self, gpus: list[dict[str, Any]], *, init_error: BaseException | None = None) -> None:
        self.gpus = gpus
        self.events: list[Any] = []
        self.handles = [f"gpu-handle-{i}" for i in range(len(gpus))]
        self.mig_handles: dict[str, dict[str, Any]] = {}
        self.gpm_live: set[int] = set()  # addresses allocated and not yet freed
        self.gpm_taken: dict[int, tuple[str, int, float]] = {}  # address → (gpu handle, gi, sm_util)
        self._next_gpm = 0x1000
        nv = mock.create_autospec(pynvml)
        # Constants, error classes and ctypes structs stay real: `except nv.NVMLError` must work.
        for name in dir(pynvml):
            if name.startswith(("NVML_", "NVMLError", "nvmlClocks", "nvmlEventType", "c_nvml")):
                setattr(nv, name, getattr(pynvml, name))
        if init_error is not None:
            nv.nvmlInit.side_effect = init_error
        nv.nvmlDeviceGetCount.side_effect = lambda: len(self.gpus)
        nv.nvmlDeviceGetHandleByIndex.side_effect = lambda i: self.handles[i]
        nv.nvmlDeviceGetIndex.side_effect = lambda h: self.handles.index(h)
        nv.nvmlDeviceGetUUID.side_effect = self._answer("uuid")
        nv.nvmlDeviceGetName.side_effect = self._answer("name")
        nv.nvmlDeviceGetMemoryInfo.side_effect = self._answer("memory")
        nv.nvmlDeviceGetPciInfo.side_effect = self._answer("pci")
        nv.nvmlDeviceGetEnforcedPowerLimit.side_effect = self._answer("enforced_limit")
        nv.nvmlDeviceGetPowerManagementLimit.side_effect = self._answer("mgmt_limit")
        nv.nvmlDeviceGetTemperatureThreshold.side_effect = self._answer("slowdown")
        nv.nvmlDeviceGetMigMode.side_effect = self._answer("mig_mode")
        nv.nvmlDeviceGetUtilizationRates.side_effect = self._answer("util")
        nv.nvmlDeviceGetPowerUsage.side_effect = self._answer("power")
        nv.nvmlDeviceGetTemperature.side_effect = self._answer("temp")
        nv.nvmlDeviceGetClockInfo.side_effect = self._answer("clock")
        nv.nvmlDeviceGetCurrentClocksEventReasons.side_effect = self._answer("clocks_event")
        nv.nvmlDeviceGetCurrentClocksThrottleReasons.side_effect = self._answer("throttle")
        nv.nvmlDeviceGetTotalEccErrors.side_effect = lambda h, kind, counter: self._get(h, "ecc", kind)
        nv.nvmlDeviceGetPcieThroughput.side_effect = lambda h, counter: self._get(h, "pcie", counter)
        nv.nvmlDeviceGetComputeRunningProcesses.side_effect = self._answer("processes")
        nv.nvmlDeviceGetMaxMigDeviceCount.side_effect = lambda h: 7
        nv.nvmlDeviceGetMigDeviceHandleByIndex.side_effect = self._mig_handle
        nv.nvmlDeviceGetGpuInstanceId.side_effect = lambda m: self.mig_handles[m]["gi"]
        nv.nvmlDeviceGetComputeInstanceId.side_effect = lambda m: self.mig_handles[m]["ci"]
        nv.nvmlDeviceGetRetiredPages.side_effect = lambda h, cause: self._get(h, "retired", cause)
        nv.nvmlDeviceGetRemappedRows.side_effect = self._answer("remapped")
        nv.nvmlDeviceGetFieldValues.side_effect = self._field_values
        nv.nvmlGpmQueryDeviceSupport.side_effect = self._gpm_support
        nv.nvmlGpmSampleAlloc.side_effect = self._gpm_alloc
        nv.nvmlGpmSampleFree.side_effect = self._gpm_free
        nv.nvmlGpmMigSampleGet.side_effect = self._gpm_mig_sample
        nv.nvmlGpmMetricsGet.side_effect = self._gpm_metrics
        nv.nvmlEventSetCreate.return_value = "event-set"
        nv.nvmlEventSetWait.side_effect = self._wait
        self.nv = nv

    def calls(self, name: str) -> int:
        return int(getattr(self.nv, name).call_count)

    def _field_values(self, handle: str, field_ids: list[int]) -> Any:
        """pynvml's own c_nvmlFieldValue_t array; a field the GPU lacks answers NOT_SUPPORTED in it."""
        assert field_ids == [pynvml.NVML_FI_DEV_MEMORY_TEMP]
        values = (pynvml.c_nvmlFieldValue_t * 1)()
        values[0].fieldId = field_ids[0]
        temp = self._get(handle, "mem_temp")
        if temp is None:
            values[0].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        else:
            values[0].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            values[0].value.uiVal = temp
        return values

    def _gpm_support(self, handle: str) -> Any:
        support = pynvml.c_nvmlGpmSupport_t()
        support.version = pynvml.NVML_GPM_SUPPORT_VERSION
        support.isSupportedDevice = int(self._get(handle, "gpm"))
        return support

    def _gpm_alloc(self) -> Any:
        self._next_gpm += 0x100
        self.gpm_live.add(self._next_gpm)
        return ctypes.cast(ctypes.c_void_p(self._next_gpm), pynvml.c_nvmlGpmSample_t)

    def _gpm_free(self, sample: Any) -> None:
        self.gpm_live.remove(_address(sample))  # KeyError: freed twice, or never allocated

    def _gpm_mig_sample(self, handle: str, gpu_instance_id: int, sample: Any) -> Any:
        assert handle in self.handles, "GPM MIG samples are taken on the parent GPU's handle"
        assert _address(sample) in self.gpm_live
        instance = next((m for m in self._record(handle)["mig"] if m["gi"] == gpu_instance_id), None)
        if instance is None:
            raise pynvml.NVMLError_InvalidArgument()
        util = instance.get("sm_util", 0.0)
        if isinstance(util, BaseException):
            raise util
        self.gpm_taken[_address(sample)] = (handle, gpu_instance_id, util)
        return sample

    def _gpm_metrics(self, request: Any) -> Any:
        assert isinstance(request, pynvml.c_nvmlGpmMetricsGet_t)
        assert (request.version, request.numMetrics) == (pynvml.NVML_GPM_METRICS_GET_VERSION, 1)
        first, second = _address(request.sample1), _address(request.sample2)
        assert first != second and {first, second} <= self.gpm_live
        assert self.gpm_taken[first][:2] == self.gpm_taken[second][:2], "both samples of one instance"
        metric = request.metrics[0]
        assert metric.metricId == pynvml.NVML_GPM_METRIC_SM_UTIL
        metric.nvmlReturn = pynvml.NVML_SUCCESS
        metric.value = self.gpm_taken[second][2]  # the fake's utilisation over the interval
        return request

    def _record(self, handle: str) -> dict[str, Any]:
        if handle in self.mig_handles:
            return self.mig_handles[handle]
        return self.gpus[self.handles.index(handle)]

    def _get(self, handle: str, key: str, sub: Any = None) -> Any:
        value = self._record(handle)[key]
        if sub is not None and isinstance(value, dict):
            value = value[sub]
        if isinstance(value, BaseException):
            raise value
        return value

    def _answer(self, key: str) -> Any:
        return lambda handle, *args: self._get(handle, key)

    def _mig_handle(self, handle: str, slot: int) -> str:
        instances = self._record(handle)["mig"]
        if slot >= len(instances):
            raise pynvml.NVMLError_NotFound()
        name = f"{handle}-mig-{slot}"
        self.mig_handles[name] = instances[slot]
        return name

    def _wait(self, event_set: Any, timeout_ms: int) -> Any:
        assert timeout_ms == 0  # a sample must never block on events
        if not self.events:
            raise pynvml.NVMLError_Timeout()
        return self.events.pop(0)


class FixedProc(ProcReader):
    """ProcReader answering fixed facts (its /proc parsing has its own tests)."""

    def __init__(self, facts: dict[int, ProcFacts]) -> None:
        super().__init__(Path("/nonexistent"), sysfs=Path("/nonexistent"))
        self._facts = facts

    def facts(self, pid: int) -> ProcFacts:
        return self._facts.get(pid, ProcFacts(None, None, None, None))


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    dev = root / "bus/pci/devices/0000:17:00.0"
    dev.mkdir(parents=True)
    (dev / "numa_node").write_text("1\n")
    return root


def test_sysfs_bus_id_trims_domain_and_lowercases() -> None:
    assert sysfs_bus_id("00000000:1A:00.0") == "0000:1a:00.0"
    assert sysfs_bus_id("0000:17:00.0") == "0000:17:00.0"


def test_mig_profile_from_device_name() -> None:
    assert mig_profile("NVIDIA H100 80GB HBM3 MIG 1g.10gb") == "1g.10gb"
    assert mig_profile("NVIDIA A100-SXM4-40GB MIG 3g.20gb") == "3g.20gb"
    assert mig_profile("NVIDIA H100 80GB HBM3") is None


def test_static_facts_of_an_h100(sysfs: Path) -> None:
    fake = FakeNvml([h100()])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    (info,) = collector.open()
    assert info == GpuInfo(
        index=0,
        uuid="GPU-5f2b2a3c-0d1e-4f50-8a9b-0c1d2e3f4a5b",
        mem_total=81559 * (1 << 20),
        name="NVIDIA H100 80GB HBM3",
        numa_node=1,
        power_limit_w=700.0,
        temp_slowdown_c=87.0,
        mig_mode=False,
    )
    fake.nv.nvmlInit.assert_called_once_with()
    fake.nv.nvmlDeviceRegisterEvents.assert_called_once_with(
        "gpu-handle-0", pynvml.nvmlEventTypeXidCriticalError, "event-set"
    )


def test_sample_converts_units(sysfs: Path) -> None:
    fake = FakeNvml([h100()])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    gpus, mig, procs, events = collector.sample(1_770_000_000.0)
    assert gpus == {
        0: {
            "util_gpu": 93.0,
            "util_mem": 41.0,
            "mem_used": 62000.0 * (1 << 20),
            "power_w": 612.345,
            "temp_c": 68.0,
            "sm_clock_mhz": 1980.0,
            "throttle_reasons": 0.0,
            "ecc_sbe_volatile": 2.0,
            "ecc_dbe_volatile": 0.0,
            "pcie_tx_bps": 350_000.0 * 1024,
            "pcie_rx_bps": 2_100_000.0 * 1024,
            "retired_pages": None,  # Hopper: NotSupported
            "remapped_rows_unc": 0.0,
            "remap_failure": 0.0,
            "mem_temp_c": 52.0,
        }
    }
    assert (mig, procs, events) == ([], [], [])


def test_unsupported_values_are_null_and_not_asked_again(sysfs: Path) -> None:
    gpu = h100(
        power=NOT_SUPPORTED,
        ecc={
            pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED: NOT_SUPPORTED,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED: NOT_SUPPORTED,
        },
        pcie={pynvml.NVML_PCIE_UTIL_TX_BYTES: NOT_SUPPORTED, pynvml.NVML_PCIE_UTIL_RX_BYTES: NOT_SUPPORTED},
        slowdown=NOT_SUPPORTED,
        enforced_limit=NOT_SUPPORTED,
        mgmt_limit=NOT_SUPPORTED,
        mig_mode=NOT_SUPPORTED,
        pci=NOT_SUPPORTED,
    )
    fake = FakeNvml([gpu])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, slow_every=1)  # slow values asked every sample too
    (info,) = collector.open()
    assert (info.power_limit_w, info.temp_slowdown_c, info.numa_node, info.mig_mode) == (
        None,
        None,
        None,
        False,
    )
    for _ in range(3):
        gpus, _, _, _ = collector.sample(1_770_000_000.0)
        values = gpus[0]
        assert values["power_w"] is None
        assert values["ecc_sbe_volatile"] is None and values["ecc_dbe_volatile"] is None
        assert values["pcie_tx_bps"] is None and values["pcie_rx_bps"] is None
        assert values["util_gpu"] == 93.0
    assert fake.nv.nvmlDeviceGetPowerUsage.call_count == 1
    assert fake.nv.nvmlDeviceGetTotalEccErrors.call_count == 2  # once per error type
    assert fake.nv.nvmlDeviceGetPcieThroughput.call_count == 2  # once per direction
    assert fake.nv.nvmlDeviceGetRetiredPages.call_count == 2  # once per cause


def test_transient_errors_are_null_but_asked_again(sysfs: Path) -> None:
    fake = FakeNvml([h100(temp=pynvml.NVMLError_Unknown())])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    assert collector.sample(1.0)[0][0]["temp_c"] is None
    fake.gpus[0]["temp"] = 70
    assert collector.sample(2.0)[0][0]["temp_c"] == 70.0


def test_throttle_reasons_fall_back_to_the_older_call(sysfs: Path) -> None:
    fake = FakeNvml([h100(clocks_event=pynvml.NVMLError_FunctionNotFound(), throttle=0x4)])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    assert collector.sample(1.0)[0][0]["throttle_reasons"] == 4.0
    assert collector.sample(2.0)[0][0]["throttle_reasons"] == 4.0
    assert fake.nv.nvmlDeviceGetCurrentClocksEventReasons.call_count == 1


def test_processes_carry_who_and_where(sysfs: Path) -> None:
    container = "a" * 64
    procs = [_proc(4242, 60 * GIB), _proc(777, None)]
    facts = {4242: ProcFacts("alice", container, "python", (0, 1, 2, 3), (0,))}
    fake = FakeNvml([h100(processes=procs)])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, proc=FixedProc(facts))
    collector.open()
    _, _, seen, _ = collector.sample(1.0)
    assert [
        (p.pid, p.user, p.container, p.name, p.mem_used, p.cpu_affinity, p.mig_uuid, p.cpu_numa_nodes)
        for p in seen
    ] == [
        (4242, "alice", container, "python", 60 * GIB, (0, 1, 2, 3), None, (0,)),
        (777, None, None, None, None, None, None, None),
    ]


def test_xid_events_are_read_without_blocking(sysfs: Path) -> None:
    fake = FakeNvml([h100(), h100(uuid="GPU-second")])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    fake.events.append(
        SimpleNamespace(
            device="gpu-handle-1",
            eventType=pynvml.nvmlEventTypeXidCriticalError,
            eventData=79,
            gpuInstanceId=0,
            computeInstanceId=0,
        )
    )
    _, _, _, events = collector.sample(1_770_000_000.5)
    assert events == [Event(ts=1_770_000_000.5, type="xid", gpu_index=1, code=79, message="Xid 79")]
    assert collector.sample(1_770_000_001.5)[3] == []


def test_mig_instances_memory_processes_and_layout_change(sysfs: Path) -> None:
    def instance(uuid: str, gi: int, profile: str, used_gib: int) -> dict[str, Any]:
        return {
            "uuid": uuid,
            "name": f"NVIDIA H100 80GB HBM3 MIG {profile}",
            "memory": pynvml.c_nvmlMemory_t(total=10 * GIB, free=(10 - used_gib) * GIB, used=used_gib * GIB),
            "gi": gi,
            "ci": 0,
        }

    gpu = h100(
        mig_mode=[pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE],
        util=NOT_SUPPORTED,  # NVML reports no utilisation for a GPU in MIG mode
        mig=[instance("MIG-aaa", 7, "1g.10gb", 3), instance("MIG-bbb", 8, "1g.10gb", 0)],
        processes=[_proc(99, 3 * GIB, gi=7, ci=0)],
    )
    fake = FakeNvml([gpu])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    (info,) = collector.open()
    assert info.mig_mode is True
    gpus, mig, procs, events = collector.sample(1.0)
    assert gpus[0]["util_gpu"] is None
    assert [
        (m.info.uuid, m.info.gi_id, m.info.ci_id, m.info.profile, m.info.mem_total, m.mem_used) for m in mig
    ] == [
        ("MIG-aaa", 7, 0, "1g.10gb", 10 * GIB, 3.0 * GIB),
        ("MIG-bbb", 8, 0, "1g.10gb", 10 * GIB, 0.0),
    ]
    assert [(p.pid, p.mig_uuid) for p in procs] == [(99, "MIG-aaa")]
    assert events == []  # the first look is the starting layout
    fake.gpus[0]["mig"] = [instance("MIG-aaa", 7, "1g.10gb", 3)]
    _, _, _, events = collector.sample(2.0)
    assert events == [Event(ts=2.0, type="mig_layout", gpu_index=0, message="MIG instances now: 1g.10gb")]


@pytest.mark.parametrize("error", [pynvml.NVMLError_LibraryNotFound(), pynvml.NVMLError_DriverNotLoaded()])
def test_no_nvml_is_no_gpu(error: Exception) -> None:
    fake = FakeNvml([], init_error=error)
    with pytest.raises(NoGpuError, match="no GPU/NVML found"):
        NvmlCollector(fake.nv).open()


def test_zero_devices_is_no_gpu_and_shuts_nvml_down() -> None:
    fake = FakeNvml([])
    with pytest.raises(NoGpuError, match="0 devices"):
        NvmlCollector(fake.nv).open()
    fake.nv.nvmlShutdown.assert_called_once_with()


def test_other_init_failures_are_shipper_errors() -> None:
    fake = FakeNvml([], init_error=pynvml.NVMLError_NoPermission())
    with pytest.raises(ShipperError, match="Insufficient Permissions") as caught:
        NvmlCollector(fake.nv).open()
    assert not isinstance(caught.value, NoGpuError)


def test_close_frees_events_and_shuts_down_once(sysfs: Path) -> None:
    fake = FakeNvml([h100()])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    collector.close()
    collector.close()
    fake.nv.nvmlEventSetFree.assert_called_once_with("event-set")
    fake.nv.nvmlShutdown.assert_called_once_with()


def test_real_source_batch_passes_the_contract(sysfs: Path) -> None:
    fake = FakeNvml([h100(processes=[_proc(4242, 60 * GIB)]), h100(uuid="GPU-2", power=NOT_SUPPORTED)])
    facts = {4242: ProcFacts("alice", "b" * 64, "python", (0, 1))}
    collector = NvmlCollector(fake.nv, sysfs=sysfs, proc=FixedProc(facts))
    collector.open()
    source = RealSource(collector, HostCollector())  # the real psutil of this machine
    builder = BatchBuilder(cluster="c1", node="gpu-node-7", shipper={"version": "0.1.0", "simulated": False})
    start = 1_770_000_000.0
    for k in range(3):
        builder.add(source.sample(start + k))
    inventory = source.inventory()
    assert isinstance(inventory, Inventory)
    doc = builder.build(inventory=inventory, seq=0, batch_id="0123456789abcdef0123456789abcdef")
    parsed = parse(json.dumps(doc).encode(), now=start + 3)
    assert parsed.samples == 3
    assert doc["gpus"][1]["metrics"]["power_w"] == [None, None, None]
    assert doc["gpus"][0]["metrics"]["power_w"] == [612.35, 612.35, 612.35]
    assert doc["processes"][0]["first_seen"] == start and doc["processes"][0]["last_seen"] == start + 2
    assert encode(doc)[:2] == b"\x1f\x8b"


def test_leaving_mig_mode_asks_again_what_was_unsupported(sysfs: Path) -> None:
    enabled = [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]
    fake = FakeNvml([h100(mig_mode=enabled, util=NOT_SUPPORTED)])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    assert collector.sample(1.0)[0][0]["util_gpu"] is None
    fake.gpus[0]["mig_mode"] = [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
    fake.gpus[0]["util"] = pynvml.c_nvmlUtilization_t(gpu=12, memory=3)
    assert collector.sample(2.0)[0][0]["util_gpu"] == 12.0
    assert collector.infos()[0].mig_mode is False


def test_device_listing_failure_is_a_shipper_error() -> None:
    fake = FakeNvml([h100()])
    fake.nv.nvmlDeviceGetCount.side_effect = pynvml.NVMLError_Unknown()
    with pytest.raises(ShipperError, match="cannot list the GPUs"):
        NvmlCollector(fake.nv).open()
    fake.nv.nvmlShutdown.assert_called_once_with()


# -- slow cadence: PCIe throughput, retired pages, remapped rows ---------------------------------


def _pcie(tx_kb: int, rx_kb: int) -> dict[int, int]:
    return {pynvml.NVML_PCIE_UTIL_TX_BYTES: tx_kb, pynvml.NVML_PCIE_UTIL_RX_BYTES: rx_kb}


def test_slow_metrics_are_read_every_nth_sample_and_carried_between(sysfs: Path) -> None:
    fake = FakeNvml([h100(), h100(uuid="GPU-2")])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, slow_every=10)
    collector.open()
    pcie_seen, unc_seen, slow_seen = [], [], []
    for k in range(25):
        if k == 3:  # the device changes between reads: seen only from the next slow read (k=10)
            fake.gpus[0]["pcie"] = _pcie(1, 2)
            fake.gpus[0]["remapped"] = (0, 3, 0, 1)
        gpus, _, _, _ = collector.sample(1_770_000_000.0 + k)
        slow_seen.append(tuple(gpus[0][name] for name in SLOW_METRICS))
        pcie_seen.append(gpus[0]["pcie_tx_bps"])
        unc_seen.append(gpus[0]["remapped_rows_unc"])
        assert gpus[1]["pcie_rx_bps"] == 2_100_000.0 * 1024  # carried, never null between reads
    assert pcie_seen == [350_000.0 * 1024] * 10 + [1024.0] * 15
    assert unc_seen == [0.0] * 10 + [3.0] * 15
    assert len(set(slow_seen[:10])) == len(set(slow_seen[10:20])) == 1  # all of them carried
    # 25 samples, 2 GPUs, reads at samples 0, 10 and 20: 3 × 2 GPUs × 2 directions.
    assert fake.calls("nvmlDeviceGetPcieThroughput") == 12
    assert fake.calls("nvmlDeviceGetRemappedRows") == 6
    # Retired pages answered NotSupported at the first read: never asked again.
    assert fake.calls("nvmlDeviceGetRetiredPages") == 4
    assert fake.calls("nvmlDeviceGetUtilizationRates") == 50  # the fast metrics: every sample


def _device_calls(fake: FakeNvml) -> int:
    """NVML calls made on a device (event polling, set-up and shutdown are not per GPU)."""
    return sum(1 for c in fake.nv.mock_calls if c[0].startswith(("nvmlDevice", "nvmlGpm")))


@pytest.mark.parametrize(
    ("slow_every", "calls", "pcie_calls"),
    [
        # Every sample: MIG mode, utilisation, memory, power, temperature, SM clock, 2 × ECC,
        # clocks-event reasons, processes (10); then 2 × PCIe, remapped rows and the memory
        # temperature field (4) per slow read.
        (1, 100 * 14, 200),
        (10, 100 * 10 + 10 * 4, 20),
    ],
)
def test_nvml_calls_per_gpu_per_sample(sysfs: Path, slow_every: int, calls: int, pcie_calls: int) -> None:
    """What the cadence buys on an H100 over 100 samples (retired pages: NotSupported, asked once)."""
    fake = FakeNvml([h100()])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, slow_every=slow_every)
    collector.open()
    collector.sample(0.0)  # the first sample learns what is unsupported
    before, pcie_before = _device_calls(fake), fake.calls("nvmlDeviceGetPcieThroughput")
    for k in range(1, 101):
        collector.sample(float(k))
    assert _device_calls(fake) - before == calls
    assert fake.calls("nvmlDeviceGetPcieThroughput") - pcie_before == pcie_calls


def test_pre_ampere_retired_pages_and_no_row_remapping(sysfs: Path) -> None:
    v100 = h100(
        name="Tesla V100-SXM2-32GB",
        retired={
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS: [0x1A000, 0x2B000],
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: [0x3C000],
        },
        remapped=NOT_SUPPORTED,
        gpm=False,
    )
    fake = FakeNvml([v100])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, slow_every=1)
    collector.open()
    for k in range(3):
        values = collector.sample(float(k))[0][0]
        assert (values["retired_pages"], values["remapped_rows_unc"], values["remap_failure"]) == (
            3.0,
            None,
            None,
        )
    assert fake.calls("nvmlDeviceGetRemappedRows") == 1
    assert fake.calls("nvmlDeviceGetRetiredPages") == 6


def test_a_failed_row_remapping_is_reported(sysfs: Path) -> None:
    fake = FakeNvml([h100(remapped=(12, 2, 1, 1))])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    values = collector.sample(1.0)[0][0]
    assert (values["remapped_rows_unc"], values["remap_failure"]) == (2.0, 1.0)


def test_a_mig_mode_change_reads_the_slow_metrics_at_once(sysfs: Path) -> None:
    fake = FakeNvml([h100()])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, slow_every=10)
    collector.open()
    collector.sample(0.0)
    fake.gpus[0]["mig_mode"] = [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]
    fake.gpus[0]["pcie"] = _pcie(5, 6)
    assert collector.sample(1.0)[0][0]["pcie_rx_bps"] == 6.0 * 1024
    assert fake.calls("nvmlDeviceGetPcieThroughput") == 4


def test_slow_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slow_every must be at least 1"):
        NvmlCollector(FakeNvml([]).nv, slow_every=0)


# -- MIG SM utilisation through GPM -------------------------------------------------------------


def _instance(
    uuid: str, gi: int, *, ci: int = 0, sm_util: Any = 0.0, profile: str = "1g.10gb"
) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "name": f"NVIDIA H100 80GB HBM3 MIG {profile}",
        "memory": pynvml.c_nvmlMemory_t(total=10 * GIB, free=8 * GIB, used=2 * GIB),
        "gi": gi,
        "ci": ci,
        "sm_util": sm_util,
    }


def _mig_h100(instances: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    enabled = [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]
    return h100(mig_mode=enabled, util=NOT_SUPPORTED, mig=instances, **overrides)


def _util_sm(readings: list[Any]) -> dict[str, Any]:
    return {r.info.uuid: r.metrics.get("util_sm", "absent") for r in readings}


def test_mig_sm_util_from_consecutive_gpm_samples(sysfs: Path) -> None:
    # gi 9 holds two compute instances: GPM samples a GPU instance, so both get its value.
    instances = [
        _instance("MIG-a", 7, sm_util=41.25),
        _instance("MIG-b", 8, sm_util=0.0),
        _instance("MIG-c0", 9, ci=0, sm_util=77.0),
        _instance("MIG-c1", 9, ci=1, sm_util=77.0),
    ]
    fake = FakeNvml([_mig_h100(instances)])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    first = collector.sample(1.0)[1]
    assert _util_sm(first) == {"MIG-a": None, "MIG-b": None, "MIG-c0": None, "MIG-c1": None}  # no baseline
    assert fake.calls("nvmlGpmMetricsGet") == 0
    fake.gpus[0]["mig"][0]["sm_util"] = 63.5
    second = collector.sample(2.0)[1]
    assert _util_sm(second) == {"MIG-a": 63.5, "MIG-b": 0.0, "MIG-c0": 77.0, "MIG-c1": 77.0}
    collector.sample(3.0)
    # One GPM sample per GPU instance per tick, buffers allocated once (two per instance).
    assert fake.calls("nvmlGpmQueryDeviceSupport") == 1
    assert fake.calls("nvmlGpmSampleAlloc") == 6
    assert fake.calls("nvmlGpmMigSampleGet") == 9
    assert fake.calls("nvmlGpmMetricsGet") == 6
    assert len(fake.gpm_live) == 6
    collector.close()
    assert fake.gpm_live == set()  # every buffer freed, each once
    names = [c[0] for c in fake.nv.mock_calls]
    assert max(i for i, n in enumerate(names) if n == "nvmlGpmSampleFree") < names.index("nvmlShutdown")


def test_mig_without_gpm_has_no_util_sm_series(sysfs: Path) -> None:
    a100 = _mig_h100([_instance("MIG-a", 1)], name="NVIDIA A100-SXM4-40GB", gpm=False)
    fake = FakeNvml([a100])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    for k in range(3):
        assert _util_sm(collector.sample(float(k))[1]) == {"MIG-a": "absent"}
    assert fake.calls("nvmlGpmQueryDeviceSupport") == 1
    assert fake.calls("nvmlGpmSampleAlloc") == 0


def test_gpm_not_supported_for_mig_drops_the_series_and_frees(sysfs: Path) -> None:
    fake = FakeNvml([_mig_h100([_instance("MIG-a", 1, sm_util=NOT_SUPPORTED)])])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    assert _util_sm(collector.sample(1.0)[1]) == {"MIG-a": "absent"}
    assert _util_sm(collector.sample(2.0)[1]) == {"MIG-a": "absent"}
    assert fake.calls("nvmlGpmMigSampleGet") == 1  # not asked again
    assert fake.gpm_live == set()


def test_gpm_transient_failure_restarts_the_baseline(sysfs: Path) -> None:
    fake = FakeNvml([_mig_h100([_instance("MIG-a", 1, sm_util=10.0)])])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    collector.sample(1.0)
    fake.gpus[0]["mig"][0]["sm_util"] = pynvml.NVMLError_Unknown()
    assert _util_sm(collector.sample(2.0)[1]) == {"MIG-a": None}
    fake.gpus[0]["mig"][0]["sm_util"] = 20.0
    assert _util_sm(collector.sample(3.0)[1]) == {"MIG-a": None}  # a new baseline first
    assert _util_sm(collector.sample(4.0)[1]) == {"MIG-a": 20.0}


def test_vanished_instances_are_freed_and_recreated_ones_start_afresh(sysfs: Path) -> None:
    fake = FakeNvml([_mig_h100([_instance("MIG-a", 1, sm_util=10.0), _instance("MIG-b", 2, sm_util=30.0)])])
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
    collector.open()
    collector.sample(1.0)
    collector.sample(2.0)
    assert len(fake.gpm_live) == 4
    fake.gpus[0]["mig"] = [_instance("MIG-a", 1, sm_util=10.0)]
    assert _util_sm(collector.sample(3.0)[1]) == {"MIG-a": 10.0}
    assert len(fake.gpm_live) == 2  # gi 2's buffers went back
    # gi 1 destroyed and created again (a new uuid): its old sample is no baseline.
    fake.gpus[0]["mig"] = [_instance("MIG-a2", 1, sm_util=50.0, profile="2g.20gb")]
    assert _util_sm(collector.sample(4.0)[1]) == {"MIG-a2": None}
    assert _util_sm(collector.sample(5.0)[1]) == {"MIG-a2": 50.0}
    assert fake.calls("nvmlGpmSampleAlloc") == 4
    fake.gpus[0]["mig_mode"] = [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
    collector.sample(6.0)
    assert fake.gpm_live == set()  # out of MIG mode: nothing left to sample


def test_mig_batch_carries_util_sm_and_passes_the_contract(sysfs: Path) -> None:
    fake = FakeNvml([_mig_h100([_instance("MIG-a", 1, sm_util=42.0)]), h100(uuid="GPU-2")])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, proc=FixedProc({}))
    collector.open()
    source = RealSource(collector, HostCollector())
    builder = BatchBuilder(cluster="c1", node="gpu-node-7")
    start = 1_770_000_000.0
    for k in range(3):
        builder.add(source.sample(start + k))
    doc = builder.build(inventory=source.inventory(), seq=0, batch_id="0123456789abcdef0123456789abcdef")
    parse(json.dumps(doc).encode(), now=start + 3)
    (mig,) = doc["mig"]
    assert mig["metrics"] == {"mem_used": [2 * GIB] * 3, "util_sm": [None, 42.0, 42.0]}
    assert doc["gpus"][0]["metrics"]["remapped_rows_unc"] == [0, 0, 0]
    assert doc["gpus"][0]["metrics"]["retired_pages"] == [None, None, None]


def test_memory_temperature_where_the_gpu_has_the_sensor(sysfs: Path) -> None:
    """HBM temperature is a field value; a GPU without the sensor answers NOT_SUPPORTED inside the
    array (not as an exception): None, and the field is not asked for again."""
    fake = FakeNvml([h100(), h100(uuid="GPU-2", mem_temp=None)])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, slow_every=1)
    collector.open()
    for ts in (1_770_000_000.0, 1_770_000_001.0):
        gpus, *_ = collector.sample(ts)
        assert (gpus[0]["mem_temp_c"], gpus[1]["mem_temp_c"]) == (52.0, None)
    assert fake.calls("nvmlDeviceGetFieldValues") == 3  # GPU 0 twice, GPU 1 once
