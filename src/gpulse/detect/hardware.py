"""Hardware errors: XID events and ECC damage — announced at ingest, rechecked by analyze.

Ingest runs this detector on each batch it stores (the fast path: an alert within seconds of the
batch, not at the next analyze run); analyze runs it over the window too, which catches what a
failed fast path missed. Both write through the same alert records, so the two paths announce a
given error once. Everything here is an event (one_shot): announced, never "resolved".

What fires:
- an XID event whose code is a hardware or driver fault (`CRITICAL_XIDS`: critical; other codes
  not known to be the application's own: warning). XIDs that report the application's own bugs
  (illegal memory access, MMU fault from the app, the app stopped) are left to its logs;
- a rise of the uncorrectable (double-bit) ECC counter, of retired pages, or of rows remapped for
  uncorrectable errors, and a row remapping failure: the GPU needs a reset or service.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from gpulse.detect.base import Condition, ParamReader, Window

# NVIDIA's XID catalogue: hardware, memory, interconnect and firmware faults
CRITICAL_XIDS = {48, 54, 56, 57, 58, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 121, 140}
# errors of the application itself (its logs say more): 13 graphics engine exception, 31 MMU
# fault, 43 the app stopped, 45 preemptive cleanup, 68 video decoder exception, 69 graphics class error
APPLICATION_XIDS = {13, 31, 43, 45, 68, 69}
# XIDs that report the memory damage the counters also show: with one in the window, the
# counters of that GPU stay quiet (one incident, one message)
MEMORY_XIDS = {48, 63, 64, 92, 94, 95, 140}
COUNTERS = {
    "ecc_dbe_volatile": "uncorrectable (double-bit) ECC errors",
    "retired_pages": "retired memory pages",
    "remapped_rows_unc": "rows remapped for uncorrectable errors",
}
XID_ACTION = (
    "Drain the node (cordon it / set it DRAIN in Slurm), check `nvidia-smi -q` and `dmesg | grep -i xid`, "
    "then reset the GPU (nvidia-smi -r) or reboot; a repeat after reset means an RMA."
)
ECC_ACTION = (
    "Drain the node and reset the GPU to apply pending page retirements or row remaps "
    "(nvidia-smi -r, or reboot); if remapping failed or errors keep rising, the GPU needs service (RMA)."
)


class HardwareErrorsDetector:
    """XID hardware faults and rising uncorrectable-ECC damage, per GPU, as events."""

    name: ClassVar[str] = "hardware_errors"
    title: ClassVar[str] = "GPU hardware error"
    description: ClassVar[str] = (
        "XID events of hardware, memory, NVLink or firmware faults, and rises of uncorrectable ECC errors, "
        "retired pages or remapped rows (or a failed remap); announced at ingest, rechecked by analyze."
    )
    one_shot: ClassVar[bool] = True
    reads: ClassVar[tuple[str, ...]] = (
        "events.xid",
        "gpu.ecc_dbe_volatile",
        "gpu.retired_pages",
        "gpu.remapped_rows_unc",
        "gpu.remap_failure",
    )
    defaults: ClassVar[dict[str, Any]] = {"for_s": 0, "severity": "critical"}

    def validate(self, params: dict[str, Any]) -> None:
        reader = ParamReader(self.name, params, self.defaults)
        reader.number("for_s", 0, 3600)
        reader.severity()

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One condition per (GPU, fault) seen in the window."""
        reader = ParamReader(self.name, params, self.defaults)
        severity = reader.severity()
        out = self._xids(window, severity)
        told = {
            (c.subject["node"], c.subject["gpu"])
            for c in out
            if int(c.values["xid"]) in MEMORY_XIDS and c.subject.get("gpu") is not None
        }
        out.extend(
            c for c in self._counters(window, severity) if (c.subject["node"], c.subject["gpu"]) not in told
        )
        return out

    def _xids(self, window: Window, severity: Any) -> list[Condition]:
        out: list[Condition] = []
        seen: set[tuple[str, Any, int]] = set()
        for e in window.events:  # events are few: a loop over them is no hot path
            code = e.get("code")
            if e.get("type") != "xid" or code is None or code in APPLICATION_XIDS:
                continue
            if not window.start <= e["ts"] <= window.end:
                continue
            key = (e["node"], e.get("gpu_index"), int(code))
            if key in seen:  # the first occurrence in the window is the one announced
                continue
            seen.add(key)
            gpu = e.get("gpu_index")
            where = f"{e['node']} GPU {gpu}" if gpu is not None else e["node"]
            detail = f": {e['message']}" if e.get("message") else ""
            out.append(
                Condition(
                    rule=self.name,
                    subject={
                        "cluster": window.cluster,
                        "node": e["node"],
                        "gpu": gpu,
                        "fault": f"xid-{code}",
                    },
                    since=float(e["ts"]),
                    severity=severity if code in CRITICAL_XIDS else "warning",
                    summary=f"{where} reported XID {code}{detail}",
                    action=XID_ACTION,
                    nodes=[e["node"]],
                    gpus=[f"{e['node']}/{gpu}"] if gpu is not None else [],
                    values={"xid": float(code)},
                )
            )
        return out

    def _counters(self, window: Window, severity: Any) -> list[Condition]:
        out: list[Condition] = []
        times = window.times
        for metric, what in COUNTERS.items():
            series = window.gpu.get(metric)
            if series is None or series.shape[1] == 0:
                continue
            # only a GPU whose counter took two values can have risen: the others need no more work
            with np.errstate(invalid="ignore"):  # a row without data: NaN, no rise
                moved = np.flatnonzero(np.fmax.reduce(series, axis=1) > np.fmin.reduce(series, axis=1))
            # a counter's first rise in the window: compare each bin with the running max before it
            filled = np.where(np.isfinite(series[moved]), series[moved], -np.inf)
            before = np.maximum.accumulate(filled, axis=1)
            rose = np.zeros_like(filled, dtype=bool)
            rose[:, 1:] = (filled[:, 1:] > before[:, :-1]) & np.isfinite(before[:, :-1])
            for k in np.flatnonzero(rose.any(axis=1)):
                g = moved[k]
                first = int(np.argmax(rose[k]))
                start_v = float(before[k, first - 1])
                end_v = float(np.nanmax(series[g]))
                out.append(
                    self._gpu_condition(
                        window,
                        int(g),
                        metric,
                        times[first],
                        severity,
                        f"{end_v - start_v:.0f} new {what} (now {end_v:.0f})",
                        {"before": start_v, "after": end_v},
                    )
                )
        failure = window.gpu.get("remap_failure")
        if failure is not None and failure.shape[1]:
            hit = np.nan_to_num(failure) > 0
            for g in np.flatnonzero(hit.any(axis=1)):
                first = int(np.argmax(hit[g]))
                out.append(
                    self._gpu_condition(
                        window,
                        int(g),
                        "remap_failure",
                        times[first],
                        severity,
                        "row remapping failed: the GPU cannot repair its memory",
                        {"remap_failure": 1.0},
                    )
                )
        return out

    def _gpu_condition(
        self,
        window: Window,
        g: int,
        fault: str,
        since: float,
        severity: Any,
        what: str,
        values: dict[str, float],
    ) -> Condition:
        node = window.nodes[int(window.gpu_node[g])]
        gpu = int(window.gpu_index[g])
        return Condition(
            rule=self.name,
            subject={"cluster": window.cluster, "node": node, "gpu": gpu, "fault": fault},
            since=float(since),
            severity=severity,
            summary=f"{node} GPU {gpu}: {what}",
            action=ECC_ACTION,
            nodes=[node],
            gpus=[f"{node}/{gpu}"],
            values=values,
        )
