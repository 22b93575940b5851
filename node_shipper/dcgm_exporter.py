"""GPU readings from a node's existing dcgm-exporter (`--source dcgm-exporter=URL`), as one `Source`.

Each sample GETs the exporter's `/metrics` page (Prometheus text format, parsed by
prometheus_client's parser) and maps the DCGM fields to the names the NVML source fills, so a
batch from here reads like one from NVML. Host metrics still come from psutil (`HostCollector`).

What Batch v1 cannot carry from dcgm-exporter, and what dcgm-exporter cannot give Batch v1, is
listed in `NOT_IN_BATCH_V1` / `NOT_FROM_DCGM` and logged once at start (Batch v1 has no field
for it: its `shipper` object admits only version, simulated and sample_interval_s).

- XID: `DCGM_FI_DEV_XID_ERRORS` is a gauge holding the *last* XID seen. A change to a non-zero
  value becomes one `xid` event; the value found at start is history, not news, and is only logged.
- MIG: rows labelled `GPU_I_ID` are GPU instances. dcgm-exporter names no MIG device UUID and no
  compute instance, so the instance's uuid is `<GPU UUID>/gi<GPU_I_ID>` and `ci_id` is 0.
- Attribution: rows labelled with a non-empty `pod` (Kubernetes mode, `-k`) become processes
  with pid 0 (Batch v1 requires a pid; dcgm-exporter has none), user = namespace,
  container = namespace/pod/container, name = pod.
- DCGM's "blank" sentinels (no value, not supported: 2^63-16.. for integers, 2^47.. for
  floats) are None, never a reading.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import requests
from prometheus_client.parser import text_string_to_metric_families

from node_shipper.errors import NoGpuError, ShipperError
from node_shipper.host import HostCollector
from node_shipper.model import (
    Event,
    GpuInfo,
    Inventory,
    MigInfo,
    MigReading,
    ProcessInfo,
    Sample,
    Value,
)

log = logging.getLogger(__name__)

MIB = 1 << 20
KIB = 1024
DEFAULT_TIMEOUT_S = 2.0
# DCGM marks "no value" in-band: DCGM_INT64_BLANK = 0x7ffffffffffffff0 and up (not found, not
# supported, no permission); DCGM_FP64_BLANK = 140737488355328.0 (2^47) and up.
_INT64_BLANK = 0x7FFFFFFFFFFFFFF0
_FP64_BLANK = 140737488355328.0

# Batch v1 GPU metric ← the DCGM field(s) that give it, first present wins, and a scale to SI units.
GPU_FIELDS: dict[str, tuple[tuple[str, float], ...]] = {
    "util_gpu": (("DCGM_FI_DEV_GPU_UTIL", 1.0),),
    "util_mem": (("DCGM_FI_DEV_MEM_COPY_UTIL", 1.0),),
    "mem_used": (("DCGM_FI_DEV_FB_USED", MIB),),
    "power_w": (("DCGM_FI_DEV_POWER_USAGE", 1.0),),
    "temp_c": (("DCGM_FI_DEV_GPU_TEMP", 1.0),),
    "sm_clock_mhz": (("DCGM_FI_DEV_SM_CLOCK", 1.0),),
    # Renamed in DCGM 3.3 (as NVML did in driver 535); the same bitmask.
    "throttle_reasons": (
        ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 1.0),
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", 1.0),
    ),
    "ecc_sbe_volatile": (("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 1.0),),
    "ecc_dbe_volatile": (("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 1.0),),
    # The profiling field is a rate in bytes/s; the older NVML-backed one is KB/s (NVIDIA's KB = 1024).
    "pcie_tx_bps": (("DCGM_FI_PROF_PCIE_TX_BYTES", 1.0), ("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", KIB)),
    "pcie_rx_bps": (("DCGM_FI_PROF_PCIE_RX_BYTES", 1.0), ("DCGM_FI_DEV_PCIE_RX_THROUGHPUT", KIB)),
    "remapped_rows_unc": (("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 1.0),),
    "remap_failure": (("DCGM_FI_DEV_ROW_REMAP_FAILURE", 1.0),),
}
RETIRED = ("DCGM_FI_DEV_RETIRED_SBE", "DCGM_FI_DEV_RETIRED_DBE")  # summed into retired_pages
XID = "DCGM_FI_DEV_XID_ERRORS"
FB = ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_RESERVED")  # their sum: mem_total
FB_TOTAL = "DCGM_FI_DEV_FB_TOTAL"
POWER_LIMIT = ("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "DCGM_FI_DEV_POWER_MGMT_LIMIT")
SLOWDOWN_TEMP = "DCGM_FI_DEV_SLOWDOWN_TEMP"
# A MIG instance's SM utilisation: SM_ACTIVE where profiled, else the graphics engine's activity
# (the per-instance busy figure dcgm-exporter documents for MIG); both are ratios 0..1.
MIG_UTIL = ("DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE")

# Read from the page but with no Batch v1 series to go to (said once at start when present).
NOT_IN_BATCH_V1 = (
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_PROF_SM_OCCUPANCY",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_PROF_NVLINK_TX_BYTES",
    "DCGM_FI_PROF_NVLINK_RX_BYTES",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
)
# Batch v1 fields dcgm-exporter never gives, whatever its configuration.
NOT_FROM_DCGM = (
    "processes[].pid (0: dcgm-exporter names pods, not processes)",
    "processes[].mem_used",
    "processes[].cpu_affinity",
    "processes[].cpu_numa_nodes",
    "gpus[].numa_node",
    "mig[].uuid (made from the GPU UUID and GPU_I_ID)",
    "mig[].ci_id (0: dcgm-exporter reports GPU instances)",
)


class ScrapeError(ShipperError):
    """The exporter could not be read or its page parsed (this sample has no GPU readings)."""

    retryable = True


@dataclass(frozen=True)
class Row:
    """One device's readings on one page: a whole GPU (gi_id None) or one MIG GPU instance."""

    gpu: int
    uuid: str
    gi_id: int | None = None
    profile: str | None = None
    model: str | None = None
    hostname: str | None = None
    values: dict[str, float] = field(default_factory=dict)
    pods: frozenset[tuple[str, str, str]] = frozenset()  # (namespace, pod, container)


@dataclass(frozen=True)
class Page:
    """A parsed /metrics page: whole GPUs by index, MIG instances by (GPU index, GPU_I_ID)."""

    gpus: dict[int, Row]
    mig: dict[tuple[int, int], Row]

    def fields(self) -> set[str]:
        """Every DCGM field name with a value on the page."""
        return {name for row in (*self.gpus.values(), *self.mig.values()) for name in row.values}


def _number(value: float) -> float | None:
    v = float(value)
    if not math.isfinite(v) or v >= _INT64_BLANK or _FP64_BLANK <= v < _FP64_BLANK + 16:
        return None
    return v


def _int_label(labels: Mapping[str, str], name: str) -> int | None:
    text = labels.get(name, "").strip()
    return int(text) if text.isdigit() else None


@dataclass
class _Acc:
    """A row being gathered from the page's samples."""

    uuid: str
    labels: dict[str, str] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    pods: set[tuple[str, str, str]] = field(default_factory=set)


def parse_page(text: str) -> Page:
    """The DCGM rows of a /metrics page. Rows without a numeric `gpu` label (NVSwitch, CPU
    entities) are skipped; a DCGM blank value is left out. ValueError on text that is not
    Prometheus exposition format."""
    rows: dict[tuple[int, int | None], _Acc] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.startswith("DCGM_FI_"):
                continue
            gpu = _int_label(s.labels, "gpu")
            if gpu is None:
                continue
            acc = rows.setdefault((gpu, _int_label(s.labels, "GPU_I_ID")), _Acc(s.labels.get("UUID", "")))
            acc.labels.update(
                {k: s.labels[k] for k in ("GPU_I_PROFILE", "modelName", "Hostname") if s.labels.get(k)}
            )
            if s.labels.get("pod"):
                acc.pods.add((s.labels.get("namespace", ""), s.labels["pod"], s.labels.get("container", "")))
            value = _number(s.value)
            if value is not None:
                acc.values[s.name] = value
    gpus: dict[int, Row] = {}
    mig: dict[tuple[int, int], Row] = {}
    for (gpu, gi_id), acc in rows.items():
        row = Row(
            gpu=gpu,
            uuid=acc.uuid or f"GPU-index-{gpu}",
            gi_id=gi_id,
            profile=acc.labels.get("GPU_I_PROFILE"),
            model=acc.labels.get("modelName"),
            hostname=acc.labels.get("Hostname"),
            values=acc.values,
            pods=frozenset(acc.pods),
        )
        if gi_id is None:
            gpus[gpu] = row
        else:
            mig[(gpu, gi_id)] = row
    for (gpu, _), row in mig.items():
        gpus.setdefault(gpu, Row(gpu=gpu, uuid=row.uuid, model=row.model, hostname=row.hostname))
    return Page(gpus=dict(sorted(gpus.items())), mig=dict(sorted(mig.items())))


def _first(values: Mapping[str, float], sources: Iterable[tuple[str, float]]) -> Value:
    for name, scale in sources:
        if name in values:
            return values[name] * scale
    return None


def gpu_metrics(row: Row) -> dict[str, Value]:
    """The Batch v1 GPU series values of one whole-GPU row (None where the page has no field)."""
    v = row.values
    out = {name: _first(v, sources) for name, sources in GPU_FIELDS.items()}
    out["retired_pages"] = sum(v[n] for n in RETIRED) if all(n in v for n in RETIRED) else None
    return out


def mem_total(row: Row) -> int:
    """Bytes of framebuffer: FB_TOTAL, else used + free (+ reserved, DCGM 3.x); 0 when unknown."""
    if FB_TOTAL in row.values:
        return int(row.values[FB_TOTAL] * MIB)
    if FB[0] in row.values and FB[1] in row.values:
        return int(sum(row.values.get(n, 0.0) for n in FB) * MIB)
    return 0


def gpu_info(row: Row, mig_mode: bool) -> GpuInfo:
    limit = _first(row.values, ((n, 1.0) for n in POWER_LIMIT))
    return GpuInfo(
        index=row.gpu,
        uuid=row.uuid,
        mem_total=mem_total(row),
        name=row.model,
        numa_node=None,
        power_limit_w=limit,
        temp_slowdown_c=row.values.get(SLOWDOWN_TEMP),
        mig_mode=mig_mode,
    )


def mig_reading(row: Row) -> MigReading:
    """One GPU instance: memory from its FB_USED where the page has it, SM use where profiled."""
    assert row.gi_id is not None
    info = MigInfo(
        gpu_index=row.gpu,
        uuid=f"{row.uuid}/gi{row.gi_id}",
        gi_id=row.gi_id,
        ci_id=0,
        mem_total=mem_total(row),
        profile=row.profile,
    )
    used = row.values.get(FB[0])
    util = _first(row.values, ((n, 100.0) for n in MIG_UTIL))
    metrics: dict[str, Value] = {} if util is None else {"util_sm": min(100.0, max(0.0, util))}
    return MigReading(info, used * MIB if used is not None else None, metrics)


def processes(page: Page) -> list[ProcessInfo]:
    """The pods dcgm-exporter attributes each GPU (or MIG instance) to, as pid-0 processes."""
    out: list[ProcessInfo] = []
    for row in (*page.gpus.values(), *page.mig.values()):
        mig_uuid = f"{row.uuid}/gi{row.gi_id}" if row.gi_id is not None else None
        for namespace, pod, container in sorted(row.pods):
            out.append(
                ProcessInfo(
                    gpu_index=row.gpu,
                    pid=0,
                    user=namespace or None,
                    container="/".join(p for p in (namespace, pod, container) if p),
                    name=pod,
                    mig_uuid=mig_uuid,
                )
            )
    return out


class XidTracker:
    """Turns the last-XID gauge of each GPU into events: one per change to a non-zero value."""

    def __init__(self) -> None:
        self._last: dict[int, int] = {}

    def events(self, ts: float, page: Page) -> list[Event]:
        found: list[Event] = []
        for index, row in page.gpus.items():
            value = row.values.get(XID)
            if value is None:
                continue
            code = int(value)
            before = self._last.get(index)
            self._last[index] = code
            if before is None:
                if code:
                    log.info("last XID before start", extra={"gpu": index, "xid": code})
                continue
            if code and code != before:
                log.warning("XID event", extra={"gpu": index, "xid": code})
                found.append(Event(ts=ts, type="xid", gpu_index=index, code=code, message=f"Xid {code}"))
        return found


class DcgmExporterSource:
    """Samples a node through its dcgm-exporter and psutil. `open()` once before sampling."""

    def __init__(
        self,
        url: str,
        host: HostCollector,
        *,
        session: requests.Session,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._url = url
        self._host = host
        self._session = session
        self._timeout = timeout_s
        self._xid = XidTracker()
        self._gpus: dict[int, GpuInfo] = {}
        self._failing = False

    def scrape(self) -> Page:
        """GET and parse the page once; ScrapeError says why not."""
        try:
            response = self._session.get(self._url, timeout=self._timeout)
        except requests.RequestException as e:
            raise ScrapeError(f"cannot read dcgm-exporter at {self._url}: {type(e).__name__}") from None
        if response.status_code != 200:
            raise ScrapeError(f"dcgm-exporter at {self._url} answered HTTP {response.status_code}")
        try:
            return parse_page(response.text)
        except ValueError as e:
            raise ScrapeError(
                f"dcgm-exporter at {self._url} sent a page that is not Prometheus text: {e}"
            ) from None

    def open(self) -> Page:
        """The first scrape: NoGpuError when the page has no GPU, ScrapeError when it cannot be read.
        Logs once what this source cannot fill."""
        page = self.scrape()
        if not page.gpus:
            raise NoGpuError(f"dcgm-exporter at {self._url} lists no GPU (no DCGM_FI_* row with a gpu label)")
        self._remember(page)
        self._xid.events(0.0, page)  # the starting XID values are the baseline
        fields = page.fields()
        unfilled = sorted(
            name for name, sources in GPU_FIELDS.items() if not any(src in fields for src, _ in sources)
        )
        if not all(n in fields for n in RETIRED):
            unfilled.append("retired_pages")
        log.warning(
            "dcgm-exporter source: Batch v1 fields left empty",
            extra={
                "url": self._url,
                "gpus": len(page.gpus),
                "mig_instances": len(page.mig),
                "not_on_page": ",".join(unfilled) or "none",
                "never_from_dcgm": "; ".join(NOT_FROM_DCGM),
                "read_not_shipped": ",".join(sorted(fields & set(NOT_IN_BATCH_V1))) or "none",
                "profiling": any(f.startswith("DCGM_FI_PROF_") for f in fields),
                "exporter_hostname": ",".join(sorted({r.hostname for r in page.gpus.values() if r.hostname})),
            },
        )
        return page

    def _remember(self, page: Page) -> None:
        with_mig = {gpu for gpu, _ in page.mig}
        for index, row in page.gpus.items():
            info = gpu_info(row, index in with_mig)
            known = self._gpus.get(index)
            # Keep what an earlier page knew and this one does not (a momentarily missing field).
            if known is not None and info.mem_total == 0:
                info = replace(info, mem_total=known.mem_total)
            self._gpus[index] = info

    def inventory(self) -> Inventory:
        return Inventory(host=self._host.info(), gpus=tuple(self._gpus[i] for i in sorted(self._gpus)))

    def sample(self, ts: float) -> Sample:
        host = self._host.sample()
        try:
            page = self.scrape()
        except ScrapeError as e:
            # The GPUs' series go on as nulls for this sample; host metrics still ship.
            if not self._failing:
                log.warning(
                    "dcgm-exporter unreadable; GPU readings are null until it answers",
                    extra={"error": str(e)},
                )
            self._failing = True
            return Sample(ts=ts, host=host, gpus={})
        if self._failing:
            log.info("dcgm-exporter readable again", extra={"url": self._url})
            self._failing = False
        self._remember(page)
        return Sample(
            ts=ts,
            host=host,
            gpus={index: gpu_metrics(row) for index, row in page.gpus.items()},
            mig=[mig_reading(row) for row in page.mig.values()],
            processes=processes(page),
            events=self._xid.events(ts, page),
        )

    def close(self) -> None:
        """Nothing to release: the HTTP session belongs to the caller."""
