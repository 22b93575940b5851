"""NvmlCollector against a fake NVML: `create_autospec(pynvml)`, so every call is checked against
pynvml's real signatures, returning pynvml's own structs and raising its own error classes."""

from __future__ import annotations

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
from node_shipper.nvml import NvmlCollector, mig_profile, sysfs_bus_id
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
        "processes": [],
        "mig": [],
    }
    gpu.update(overrides)
    return gpu


class FakeNvml:
    """Builds the autospecced module; `gpus` is a list of dicts like h100(); values may be exceptions."""

    def __init__(self, gpus: list[dict[str, Any]], *, init_error: BaseException | None = None) -> None:
        self.gpus = gpus
        self.events: list[Any] = []
        self.handles = [f"gpu-handle-{i}" for i in range(len(gpus))]
        self.mig_handles: dict[str, dict[str, Any]] = {}
        nv = mock.create_autospec(pynvml)
        for name in dir(pynvml):  # constants and error classes stay real: `except nv.NVMLError` must work
            if name.startswith(("NVML_", "NVMLError", "nvmlClocks", "nvmlEventType")):
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
        nv.nvmlEventSetCreate.return_value = "event-set"
        nv.nvmlEventSetWait.side_effect = self._wait
        self.nv = nv

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
        super().__init__(Path("/nonexistent"))
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
    collector = NvmlCollector(fake.nv, sysfs=sysfs)
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
    facts = {4242: ProcFacts("alice", container, "python", (0, 1, 2, 3))}
    fake = FakeNvml([h100(processes=procs)])
    collector = NvmlCollector(fake.nv, sysfs=sysfs, proc=FixedProc(facts))
    collector.open()
    _, _, seen, _ = collector.sample(1.0)
    assert [(p.pid, p.user, p.container, p.name, p.mem_used, p.cpu_affinity, p.mig_uuid) for p in seen] == [
        (4242, "alice", container, "python", 60 * GIB, (0, 1, 2, 3), None),
        (777, None, None, None, None, None, None),
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
