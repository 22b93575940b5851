"""The real shipper process, unmodified, reading GPUs through the real pynvml and its ctypes layer
from the stand-in `libnvidia-ml.so.1` (standin_nvml/), and shipping to the real ingest handler
(devstack.runtime over moto, all on 127.0.0.1). What the series table holds is decoded and
compared with the scenario: values in Batch v1's units, MIG slices and their GPM SM utilisation,
processes v3, an XID event, throttle reasons, NotSupported as null, FUNCTION_NOT_FOUND degrading,
and a driver that loads late.

The autospec tests (tests/unit/test_shipper_nvml.py) stay: they pin call sequences and error
paths one by one; these pin the struct layouts, versions and symbol look-ups they cannot.
"""

from __future__ import annotations

import ctypes
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pynvml
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, multiple, rule

from devstack.stack import free_port
from devstack.template import deploy_local, function_specs, load_template
from gpulse import codec
from standin_nvml.build import BuildError, build, exports, missing_in
from tests.integration.lambdas import start_ingest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAGE = "standin"
MIB = 1 << 20
INTERVAL_S = 0.4
RUN_S = 2.0  # --duration: the shipper stops by itself and flushes its one partial batch
H100_MIB = 81559  # an H100 80GB's memory in MiB
WAVE = (50.0, 40.0, 4.0)  # util_gpu of GPU 2: base, amplitude, period (s)


def _scenario(sleeper_pid: int) -> str:
    """Three H100s: one training (throttled, an XID, a process), one in MIG mode with two slices
    (GPM SM utilisation, a process in a slice), one whose utilisation moves with wall time and
    whose power reading NVML does not support."""
    return f"""\
# read by standin_nvml/nvml_standin.c
gpu
uuid GPU-5f2b2a3c-0d1e-4f50-8a9b-0c1d2e3f4a5b
pci 00000000:17:00.0
mem_total {H100_MIB * MIB}
mem_used {62000 * MIB}
util_gpu 93
util_mem 41
power_mw 612340
temp 68
mem_temp 71
sm_clock 1755
throttle 0x24
ecc 2 0
pcie_kbs 350000 2100000
remapped_rows 1 2 0 1
unsupported nvmlDeviceGetRetiredPages
process {sleeper_pid} {30000 * MIB}
xid 0.2 79
gpu
uuid GPU-00000000-0000-4000-8000-00000000a100
pci 00000000:2A:00.0
mem_total {H100_MIB * MIB}
gpm 1
mig 1 0 3g.40gb {40448 * MIB} {20000 * MIB} | 55
mig 2 0 3g.40gb {40448 * MIB} {1024 * MIB} | 0
unsupported nvmlDeviceGetRetiredPages
process {sleeper_pid} {19000 * MIB} 1 0
gpu
uuid GPU-00000000-0000-4000-8000-0000000000c3
pci 00000000:3B:00.0
mem_total {H100_MIB * MIB}
util_gpu {WAVE[0]} {WAVE[1]} {WAVE[2]}
unsupported nvmlDeviceGetPowerUsage
unsupported nvmlDeviceGetRetiredPages
"""


def _wave(t: float) -> float:
    base, amp, period = WAVE
    return base + amp * math.sin(2 * math.pi * t / period)


# -- the library alone --------------------------------------------------------------------------


def test_build_exports_exactly_what_is_asked() -> None:
    full = build()
    lib = ctypes.CDLL(str(full / "libnvidia-ml.so.1"))
    assert all(hasattr(lib, name) for name in exports())
    assert len(exports()) == 44 and "nvmlDeviceGetComputeRunningProcesses_v3" in exports()
    assert build() == full  # cached: same source, same flags
    lean = build(["nvmlGpmQueryDeviceSupport", "nvmlDeviceGetComputeRunningProcesses_v3"])
    assert lean != full
    lean_lib = ctypes.CDLL(str(lean / "libnvidia-ml.so.1"))
    assert not hasattr(lean_lib, "nvmlGpmQueryDeviceSupport")
    assert not hasattr(lean_lib, "nvmlDeviceGetComputeRunningProcesses_v3")
    assert hasattr(lean_lib, "nvmlDeviceGetComputeRunningProcesses_v2")
    assert not hasattr(lean_lib, "load")  # its own helpers stay local
    with pytest.raises(BuildError, match="not a function of the stand-in: nvmlNoSuchThing"):
        build(["nvmlNoSuchThing"])


def test_versions_and_initialisation_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Straight through ctypes with pynvml's own structs: what the real library refuses, it refuses."""
    path = tmp_path / "one.nvml"
    path.write_text("gpu\nmem_total 1000\nmem_used 250\n")
    monkeypatch.setenv("GPULSE_NVML_SCENARIO", str(path))
    lib = ctypes.CDLL(str(build() / "libnvidia-ml.so.1"))
    count = ctypes.c_uint()
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == pynvml.NVML_ERROR_UNINITIALIZED
    assert lib.nvmlInitWithFlags(0) == pynvml.NVML_SUCCESS
    try:
        assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == pynvml.NVML_SUCCESS and count.value == 1
        handle = pynvml.c_nvmlDevice_t()
        assert lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == pynvml.NVML_SUCCESS
        assert (
            lib.nvmlDeviceGetHandleByIndex_v2(1, ctypes.byref(handle)) == pynvml.NVML_ERROR_INVALID_ARGUMENT
        )
        mem = pynvml.c_nvmlMemory_v2_t()
        mem.version = 1
        mismatch = pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        assert lib.nvmlDeviceGetMemoryInfo_v2(handle, ctypes.byref(mem)) == mismatch
        mem.version = pynvml.nvmlMemory_v2
        assert lib.nvmlDeviceGetMemoryInfo_v2(handle, ctypes.byref(mem)) == pynvml.NVML_SUCCESS
        assert (mem.total, mem.used, mem.free) == (1000, 250, 750)
        support = pynvml.c_nvmlGpmSupport_t()
        support.version = 2
        assert lib.nvmlGpmQueryDeviceSupport(handle, ctypes.byref(support)) == mismatch
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION + 1
        assert lib.nvmlGpmMetricsGet(ctypes.byref(request)) == mismatch
        procs = ctypes.c_uint(0)
        no_list = lib.nvmlDeviceGetComputeRunningProcesses_v3(handle, ctypes.byref(procs), None)
        assert no_list == pynvml.NVML_SUCCESS and procs.value == 0
    finally:
        assert lib.nvmlShutdown() == pynvml.NVML_SUCCESS
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == pynvml.NVML_ERROR_UNINITIALIZED


# The stand-in's own state (nvmlInit's reference count, event sets and what each has delivered,
# GPM sample buffers), against a small reference model, straight through ctypes.
XIDS = ((0, 31), (0, 79), (1, 43), (1, 48))  # (GPU, code) in the scenario's order, all due at once


@dataclass
class _Set:
    pointer: int
    registered: set[int]
    delivered: int = 0  # the scenario's XIDs looked at so far


class StandinModel(RuleBasedStateMachine):
    sets = Bundle("sets")
    samples = Bundle("samples")

    def __init__(self) -> None:
        super().__init__()
        self.scenario = Path(tempfile.mkdtemp()) / "model.nvml"
        # an `xid` line belongs to the GPU of the `gpu` line above it
        self.scenario.write_text(
            "".join("gpu\n" + "".join(f"xid 0 {code}\n" for g, code in XIDS if g == gpu) for gpu in (0, 1))
        )
        self.previous = os.environ.get("GPULSE_NVML_SCENARIO")
        os.environ["GPULSE_NVML_SCENARIO"] = str(self.scenario)
        self.lib = ctypes.CDLL(str(build() / "libnvidia-ml.so.1"))
        self.lib.nvmlEventSetFree.argtypes = [ctypes.c_void_p]
        self.lib.nvmlGpmSampleFree.argtypes = [ctypes.c_void_p]
        self.inits = 0
        self.live: list[_Set] = []
        self.live_samples: set[int] = set()

    def _expect_uninit_or(self, code: int) -> int:
        return code if self.inits else pynvml.NVML_ERROR_UNINITIALIZED

    @rule()
    def init(self) -> None:
        assert self.lib.nvmlInitWithFlags(0) == pynvml.NVML_SUCCESS
        self.inits += 1

    @rule()
    def shutdown(self) -> None:
        assert self.lib.nvmlShutdown() == self._expect_uninit_or(pynvml.NVML_SUCCESS)
        self.inits = max(0, self.inits - 1)

    @rule()
    def count(self) -> None:
        n = ctypes.c_uint(7)
        assert self.lib.nvmlDeviceGetCount_v2(ctypes.byref(n)) == self._expect_uninit_or(pynvml.NVML_SUCCESS)
        assert n.value == (2 if self.inits else 7)

    @rule(target=sets)
    def create(self) -> _Set | Any:
        pointer = ctypes.c_void_p()
        assert self.lib.nvmlEventSetCreate(ctypes.byref(pointer)) == self._expect_uninit_or(
            pynvml.NVML_SUCCESS
        )
        if not self.inits:
            return multiple()
        made = _Set(int(pointer.value or 0), set())
        self.live.append(made)
        return made

    @rule(target=samples)
    def alloc(self) -> int | Any:
        pointer = ctypes.c_void_p()
        assert self.lib.nvmlGpmSampleAlloc(ctypes.byref(pointer)) == self._expect_uninit_or(
            pynvml.NVML_SUCCESS
        )
        if not self.inits:
            return multiple()
        self.live_samples.add(int(pointer.value or 0))
        return int(pointer.value or 0)

    @rule(sample=consumes(samples))
    def free_sample(self, sample: int) -> None:
        assert self.lib.nvmlGpmSampleFree(sample) == pynvml.NVML_SUCCESS
        self.live_samples.discard(sample)

    @rule(event_set=sets, gpu=st.integers(0, 1))
    def register(self, event_set: _Set, gpu: int) -> None:
        handle = self._handle(gpu)
        code = self.lib.nvmlDeviceRegisterEvents(
            handle,
            ctypes.c_ulonglong(pynvml.nvmlEventTypeXidCriticalError),
            ctypes.c_void_p(event_set.pointer),
        )
        assert code == self._expect_uninit_or(pynvml.NVML_SUCCESS)
        if self.inits:
            event_set.registered.add(gpu)

    @rule(event_set=sets)
    def wait(self, event_set: _Set) -> None:
        data = pynvml.c_nvmlEventData_t()
        code = self.lib.nvmlEventSetWait_v2(ctypes.c_void_p(event_set.pointer), ctypes.byref(data), 0)
        if not self.inits:
            assert code == pynvml.NVML_ERROR_UNINITIALIZED
            return
        # the model: the next XID of a registered GPU, each delivered once per set, in scenario order
        while event_set.delivered < len(XIDS) and XIDS[event_set.delivered][0] not in event_set.registered:
            event_set.delivered += 1
        if event_set.delivered == len(XIDS):
            assert code == pynvml.NVML_ERROR_TIMEOUT
            return
        gpu, xid = XIDS[event_set.delivered]
        event_set.delivered += 1
        assert code == pynvml.NVML_SUCCESS
        assert (data.eventType, data.eventData) == (pynvml.nvmlEventTypeXidCriticalError, xid)
        assert ctypes.cast(data.device, ctypes.c_void_p).value == self._handle(gpu).value

    @rule(event_set=consumes(sets))
    def free(self, event_set: _Set) -> None:
        assert self.lib.nvmlEventSetFree(ctypes.c_void_p(event_set.pointer)) == pynvml.NVML_SUCCESS
        self.live.remove(event_set)

    def _handle(self, gpu: int) -> ctypes.c_void_p:
        # handles are the same addresses in and out of a session; fetch one inside a session
        if not self.inits:
            assert self.lib.nvmlInitWithFlags(0) == pynvml.NVML_SUCCESS
        handle = ctypes.c_void_p()
        assert self.lib.nvmlDeviceGetHandleByIndex_v2(gpu, ctypes.byref(handle)) == pynvml.NVML_SUCCESS
        if not self.inits:
            assert self.lib.nvmlShutdown() == pynvml.NVML_SUCCESS
        return handle

    def teardown(self) -> None:
        for event_set in self.live:
            self.lib.nvmlEventSetFree(ctypes.c_void_p(event_set.pointer))
        for sample in self.live_samples:
            self.lib.nvmlGpmSampleFree(sample)
        for _ in range(self.inits):
            assert self.lib.nvmlShutdown() == pynvml.NVML_SUCCESS
        assert self.lib.nvmlShutdown() == pynvml.NVML_ERROR_UNINITIALIZED
        shutil.rmtree(self.scenario.parent)
        if self.previous is None:
            os.environ.pop("GPULSE_NVML_SCENARIO", None)
        else:
            os.environ["GPULSE_NVML_SCENARIO"] = self.previous


StandinModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_standin_state_machine = StandinModel.TestCase


def test_missing_lines_of_a_scenario(tmp_path: Path) -> None:
    path = tmp_path / "s.nvml"
    path.write_text("missing nvmlGpmMetricsGet\ngpu\nmissing nvmlEventSetCreate\n# missing nvmlInit\n")
    assert missing_in(path) == ("nvmlGpmMetricsGet", "nvmlEventSetCreate")


# -- the shipper through the library, to ingest ------------------------------------------------


@dataclass
class Stack:
    moto: str
    tmp: Path
    cluster: str
    series_table: str
    endpoint: str
    secrets: Path

    def register(self, node: str, prefix: str) -> Path:
        secret = os.urandom(16).hex()
        boto3.client("ssm").put_parameter(
            Name=f"{prefix}/{self.cluster}/{node}", Value=secret, Type="SecureString", Overwrite=True
        )
        path = self.secrets / node
        path.write_text(secret)
        path.chmod(0o600)
        return path

    def shipper(
        self, node: str, secret: Path, scenario: Path, library: Path, *extra: str, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """The shipper process for `node`; its stderr is piped, or written to `log`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GPULSE_"))}
        env |= {"LD_LIBRARY_PATH": str(library), "GPULSE_NVML_SCENARIO": str(scenario)}
        cmd = [sys.executable, "-m", "node_shipper", "--endpoint", self.endpoint, "--cluster", self.cluster]
        cmd += ["--node", node, "--secret-file", str(secret), "--spool-dir", str(self.tmp / f"spool-{node}")]
        cmd += ["--interval", str(INTERVAL_S), "--batch-seconds", "10", "--slow-every", "1"]
        cmd += ["--log-level", "DEBUG", *extra]
        if log is None:
            return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with log.open("wb") as err:
            return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)

    def stored(self, node: str) -> list[codec.Chunk]:
        items = boto3.client("dynamodb").scan(TableName=self.series_table)["Items"]
        chunks = [codec.decode(i["data"]["B"]) for i in items if i["pk"]["S"].startswith(f"{self.cluster}#")]
        return sorted((c for c in chunks if c.node == node), key=lambda c: c.seq)


@pytest.fixture(scope="module")
def stack(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    tmp = tmp_path_factory.mktemp("standin")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", moto_server)
        template = load_template(REPO / "template.yaml")
        deployment = deploy_local(
            template, dynamodb=boto3.client("dynamodb"), sqs=boto3.client("sqs"), parameters={"Stage": STAGE}
        )
        prefix = function_specs(template, deployment)["IngestFunction"].environment[
            "GPULSE_NODE_SECRETS_PREFIX"
        ]
        port = free_port()
        log = tmp / "ingest.log"
        ingest = start_ingest(moto_server, port, STAGE, log)
        try:
            secrets = tmp / "secrets"
            secrets.mkdir(mode=0o700)
            cluster = f"standin-{os.urandom(4).hex()}"
            yield (
                Stack(
                    moto_server,
                    tmp,
                    cluster,
                    deployment.tables["SeriesTable"],
                    f"http://127.0.0.1:{port}",
                    secrets,
                ),
                prefix,
            )
        finally:
            ingest.send_signal(signal.SIGTERM)
            try:
                ingest.wait(timeout=15)
            except subprocess.TimeoutExpired:
                ingest.kill()
                ingest.wait()


def _finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), err.decode() if err is not None else ""


def _metric(chunk: codec.Chunk, gpu: int, name: str) -> list[float | None]:
    values = chunk.gpus[gpu].metrics[name].tolist()
    return [None if math.isnan(v) else v for v in values]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process for NVML to list, so /proc has a user and a name for it."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_shipper_reads_the_standin_through_pynvml(
    stack: tuple[Stack, str], sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    s, prefix = stack
    scenario = tmp_path / "h100x3.nvml"
    scenario.write_text(_scenario(sleeper.pid))
    # A driver before R535/R510: no ClocksEventReasons, no processes _v3, no GPM at all.
    old_driver = [
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlGpmQueryDeviceSupport",
    ]
    runs = {
        "full": s.shipper("full", s.register("full", prefix), scenario, build(), "--duration", str(RUN_S)),
        "old": s.shipper(
            "old", s.register("old", prefix), scenario, build(old_driver), "--duration", str(RUN_S)
        ),
    }
    results = {node: _finish(proc) for node, proc in runs.items()}
    for node, (rc, out, err) in results.items():
        assert rc == 0, f"{node}: {err[-3000:]}"
        assert f"REAL: node {node}, 3 GPUs (NVIDIA H100 80GB HBM3) through NVML" in out

    (full,) = s.stored("full")
    n = len(full.timestamps)
    assert n >= 4 and not full.simulated
    ts = full.timestamps.tolist()

    # static facts, from nvmlDeviceGetUUID / Name / MemoryInfo / EnforcedPowerLimit / PciInfo_v3
    assert [
        (g.index, g.uuid, g.name, g.mem_total, g.power_limit_w, g.temp_slowdown_c, g.mig_mode)
        for g in full.gpus
    ] == [
        (
            0,
            "GPU-5f2b2a3c-0d1e-4f50-8a9b-0c1d2e3f4a5b",
            "NVIDIA H100 80GB HBM3",
            H100_MIB * MIB,
            700.0,
            87.0,
            False,
        ),
        (
            1,
            "GPU-00000000-0000-4000-8000-00000000a100",
            "NVIDIA H100 80GB HBM3",
            H100_MIB * MIB,
            700.0,
            87.0,
            True,
        ),
        (
            2,
            "GPU-00000000-0000-4000-8000-0000000000c3",
            "NVIDIA H100 80GB HBM3",
            H100_MIB * MIB,
            700.0,
            87.0,
            False,
        ),
    ]
    # GPU 0, in Batch v1's units: %, bytes, W (NVML: mW), °C, MHz, bytes/s (NVML: KB/s), counts
    expected = {
        "util_gpu": 93.0,
        "util_mem": 41.0,
        "mem_used": 62000.0 * MIB,
        "power_w": 612.34,
        "temp_c": 68.0,
        "sm_clock_mhz": 1755.0,
        "throttle_reasons": float(0x24),
        "ecc_sbe_volatile": 2.0,
        "ecc_dbe_volatile": 0.0,
        "pcie_tx_bps": 350000.0 * 1024,
        "pcie_rx_bps": 2100000.0 * 1024,
        "remapped_rows_unc": 2.0,
        "remap_failure": 1.0,
        "mem_temp_c": 71.0,  # HBM temperature: nvmlDeviceGetFieldValues, NVML_FI_DEV_MEMORY_TEMP
    }
    for name, value in expected.items():
        stored = full.gpus[0].metrics[
            name
        ]  # within half the codec's step (0.01 W for power) of the sent value
        np.testing.assert_allclose(stored, np.full(n, value), rtol=0, atol=0.005, err_msg=name)
    # NotSupported is null: retired pages everywhere (Hopper), power on GPU 2, utilisation on a MIG-mode GPU
    assert _metric(full, 0, "retired_pages") == [None] * n
    assert _metric(full, 2, "power_w") == [None] * n
    # an optional series that is null throughout is left out (the field's own nvmlReturn: NotSupported)
    assert "mem_temp_c" not in full.gpus[2].metrics
    assert _metric(full, 1, "util_gpu") == [None] * n
    # GPU 2's utilisation moves with wall time, as the scenario's wave says
    moving = _metric(full, 2, "util_gpu")
    assert all(v is not None and abs(v - _wave(t)) <= 1.0 for v, t in zip(moving, ts, strict=True))
    assert len(set(moving)) >= 3

    # MIG slices through nvmlDeviceGetMigDeviceHandleByIndex; SM utilisation from two GPM samples
    assert [(m.gpu_index, m.uuid, m.gi_id, m.ci_id, m.profile, m.mem_total) for m in full.mig] == [
        (1, "MIG-00000001-0000-4000-8000-000100000000", 1, 0, "3g.40gb", 40448 * MIB),
        (1, "MIG-00000001-0000-4000-8000-000200000000", 2, 0, "3g.40gb", 40448 * MIB),
    ]
    assert full.mig[0].metrics["mem_used"].tolist() == [20000.0 * MIB] * n
    assert full.mig[1].metrics["mem_used"].tolist() == [1024.0 * MIB] * n
    sm = [[None if math.isnan(v) else v for v in m.metrics["util_sm"].tolist()] for m in full.mig]
    assert sm == [[None] + [55.0] * (n - 1), [None] + [0.0] * (n - 1)]  # no baseline on the first tick

    # processes v3: the pid and memory NVML lists, the user and name /proc has, the slice by (gi, ci)
    procs = sorted(
        (p["gpu_index"], p["pid"], p["name"], p["mem_used"], p["mig_uuid"]) for p in full.processes
    )
    assert procs == [
        (0, sleeper.pid, "sleep", 30000 * MIB, None),
        (1, sleeper.pid, "sleep", 19000 * MIB, "MIG-00000001-0000-4000-8000-000100000000"),
    ]
    assert {p["user"] for p in full.processes} == {_user()}

    # the XID, through nvmlEventSetCreate / RegisterEvents / EventSetWait_v2 / GetIndex
    assert [(e["type"], e["gpu_index"], e["code"], e["message"]) for e in full.events] == [
        ("xid", 0, 79, "Xid 79")
    ]
    assert ts[0] <= full.events[0]["ts"] <= ts[-1]

    # The older driver: throttle reasons through the older name, processes through _v2, no MIG SM
    # utilisation (GPM unexported: FUNCTION_NOT_FOUND), everything else as before.
    (old,) = s.stored("old")
    m = len(old.timestamps)
    assert _metric(old, 0, "throttle_reasons") == [float(0x24)] * m
    assert sorted((p["gpu_index"], p["pid"], p["mig_uuid"]) for p in old.processes) == [
        (0, sleeper.pid, None),
        (1, sleeper.pid, "MIG-00000001-0000-4000-8000-000100000000"),
    ]
    assert [sorted(mig.metrics) for mig in old.mig] == [["mem_used"], ["mem_used"]]
    assert [(e["gpu_index"], e["code"]) for e in old.events] == [(0, 79)]
    _, _, old_err = results["old"]
    assert "Traceback" not in old_err


def test_driver_that_loads_late(
    stack: tuple[Stack, str], sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """nvmlInit answers DRIVER_NOT_LOADED until the driver's file exists. By default the shipper
    exits 2 with the reason (a clear line, no traceback); with --wait-for-driver it tries nvmlInit
    again until the driver comes, then ships."""
    s, prefix = stack
    driver = tmp_path / "driver-loaded"
    scenario = tmp_path / "late.nvml"
    scenario.write_text(f"driver_loads_when {driver}\n" + _scenario(sleeper.pid))
    secret = s.register("late", prefix)
    rc, out, err = _finish(s.shipper("late", secret, scenario, build(), "--duration", "1"))
    assert rc == 2 and out == ""
    assert "gpulse-shipper: no GPU/NVML found: Driver Not Loaded:" in err and "Traceback" not in err
    assert s.stored("late") == []

    log = tmp_path / "waiting.log"
    proc = s.shipper("late", secret, scenario, build(), "--duration", "1", "--wait-for-driver", "60", log=log)
    try:
        deadline = time.monotonic() + 30
        while b'msg="NVIDIA driver not loaded yet: waiting for it"' not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the shipper did not say it waits"
            time.sleep(0.1)
        driver.touch()  # the driver loads while it waits
        rc, out, _ = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert 'msg="NVIDIA driver loaded"' in text and "Traceback" not in text
    assert out.startswith("REAL: node late, 3 GPUs")
    (chunk,) = s.stored("late")
    assert chunk.gpus[0].uuid == "GPU-5f2b2a3c-0d1e-4f50-8a9b-0c1d2e3f4a5b"


def test_a_broken_scenario_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "bad.nvml"
    scenario.write_text("gpu\nutil_gpu lots\n")
    monkeypatch.setenv("GPULSE_NVML_SCENARIO", str(scenario))
    lib = ctypes.CDLL(str(build() / "libnvidia-ml.so.1"))
    assert lib.nvmlInitWithFlags(0) == pynvml.NVML_ERROR_UNKNOWN  # pynvml: NVMLError_Unknown
    assert capfd.readouterr().err == f"nvml-standin: {scenario} line 2: cannot read 'util_gpu lots'\n"
    assert lib.nvmlShutdown() == pynvml.NVML_ERROR_UNINITIALIZED


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name
