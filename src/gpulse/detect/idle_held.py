"""GPU held but idle: a GPU that someone holds (a process on it, or memory allocated) while it
computes nothing — a notebook kernel left open, a job waiting on input, a zombie allocation.

A GPU is held in a bin when a compute process was seen on it or its memory in use is at least
`held_mem_bytes`; it is idle when its mean util_gpu in the bin is at most `idle_util`. The
threshold sits above the idle baseline of a real 80 GB GPU (about 1 GiB in use with nothing
running, see /work/shared/traces/README.md) and below what any framework allocates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import Condition, ParamReader, Window, downsample, downsample_rows, trailing_run_start
from gpulse.detect.jobs import find_jobs
from gpulse.finding import Evidence, EvidenceRow, Severity

GIB = 1 << 30
EVIDENCE_POINTS = 30

ACTION = (
    "Release the GPU: end the notebook kernel or job, or free the allocation; "
    "if it is waiting for data, check the input pipeline."
)
# a rank of a job that spans nodes: "end the notebook kernel" is wrong advice for it
RANK_ACTION = (
    "A rank of a multi-node job holds this GPU idle: if its peers still compute, it is stalled "
    "(a hang before a collective: `py-spy dump --pid <pid>` on the rank, NCCL_DEBUG=INFO in its "
    "logs) — restart it or the job; if the whole job idles, it waits on input or storage."
)
ZOMBIE_ACTION = (
    "Find the owner: run `nvidia-smi --query-compute-apps=pid,used_memory --format=csv` and "
    "`fuser -v /dev/nvidia*` on the node and inside its containers (a process in another PID "
    "namespace shows only there); if none owns it, restart the container that last used the GPU, "
    "or reset the GPU once nothing runs on it."
)


@dataclass(frozen=True)
class HeldIdleParams:
    """The parameters of a held-but-idle rule (GPU or MIG slice)."""

    for_s: float
    severity: Severity
    idle_util: float
    held_mem_bytes: float


class IdleHeldDetector:
    """GPUs held by a process or by allocated memory while their utilisation stays at idle."""

    name: ClassVar[str] = "idle_held"
    title: ClassVar[str] = "GPU held but idle"
    description: ClassVar[str] = (
        "A GPU with a compute process on it, or with memory allocated above the idle baseline, "
        "whose utilisation stays at idle: a forgotten notebook, a job waiting on input, a zombie allocation."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("gpu.util_gpu", "gpu.mem_used", "processes")
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 300,
        "severity": "warning",
        "idle_util": 5.0,
        "held_mem_bytes": 2 * GIB,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        parse_held_idle(self.name, params, self.defaults)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per GPU held and idle in every bin of its trailing run up to `window.end`.

        A bin without utilisation data is not idle: it breaks the run.
        """
        p = parse_held_idle(self.name, params, self.defaults)
        util = window.gpu.get("util_gpu")
        if util is None or util.size == 0:
            return []
        mem = window.gpu.get("mem_used", np.full(util.shape, np.nan))
        with np.errstate(invalid="ignore"):  # NaN compares False: unknown is neither idle nor held
            idle = util <= p.idle_util
            held = window.gpu_has_process.astype(bool) | (mem >= p.held_mem_bytes)
        times = window.times
        starts = trailing_run_start(idle & held, times)
        found = np.flatnonzero(np.isfinite(starts))  # only the GPUs in a run, not every GPU
        ranks = _rank_nodes(window) if found.size else set()
        pictures = evidence_series(util[found], mem[found], window.gpu_mem_total[found])
        return [
            _condition(window, int(g), float(starts[g]), util[g], mem[g], p, ranks, picture)
            for g, picture in zip(found, pictures, strict=True)
        ]


def _rank_nodes(window: Window) -> set[int]:
    """The node rows whose processes make them ranks of a job spanning several nodes (detect.jobs)."""
    return {i for job in find_jobs(window) if job.from_processes and len(job.rows) > 1 for i in job.rows}


def _condition(
    window: Window,
    g: int,
    since: float,
    util: np.ndarray,
    mem: np.ndarray,
    p: HeldIdleParams,
    ranks: set[int] | frozenset[int] = frozenset(),
    picture: Series | None = None,
) -> Condition:
    node = window.nodes[int(window.gpu_node[g])]
    index = int(window.gpu_index[g])
    run = window.times >= since
    util_mean = float(util[run].mean())  # every bin of the run has data: NaN breaks a run
    mem_run = mem[run][np.isfinite(mem[run])]
    mem_now = float(mem[-1]) if np.isfinite(mem[-1]) else (float(mem_run.max()) if mem_run.size else None)
    procs = [q for q in window.gpu_processes[g] if q.last_seen >= since and q.first_seen <= window.end]
    had_process = bool(window.gpu_has_process[g][run].any()) or bool(procs)
    duration = float(window.end - since)

    with_mem = f"{mem_now / GIB:.1f} GiB at " if mem_now is not None else ""
    idle_text = f"{with_mem}{util_mean:.0f} % utilisation for {text.duration(duration)}"
    if had_process:
        summary = f"{node} GPU {index} held by {text.holders(procs)} with {idle_text}"
        action = RANK_ACTION if int(window.gpu_node[g]) in ranks and procs else ACTION
    else:
        summary = (
            f"{node} GPU {index}: memory held with no process ({idle_text}): "
            "a zombie allocation or a process in another PID namespace"
        )
        action = ZOMBIE_ACTION

    values: dict[str, float] = {
        "util": round(util_mean, 1),
        "idle_util": p.idle_util,
        "held_mem_bytes": p.held_mem_bytes,
        "duration_s": round(duration, 1),
    }
    if mem_now is not None:
        values["mem_used"] = mem_now
    total = float(window.gpu_mem_total[g])
    if np.isfinite(total) and total > 0:
        values["mem_total"] = total
    return Condition(
        rule=IdleHeldDetector.name,
        subject={"cluster": window.cluster, "node": node, "gpu": index},
        since=since,
        severity=p.severity,
        summary=summary,
        action=action,
        nodes=[node],
        gpus=[window.gpu_label(g)],
        users=sorted({q.user for q in procs if q.user}),
        containers=sorted({q.container for q in procs if q.container}),
        values=values,
        evidence=_evidence(window, g, util, mem, util_mean, mem_now, p, picture),
    )


def _evidence(
    window: Window,
    g: int,
    util: np.ndarray,
    mem: np.ndarray,
    util_mean: float,
    mem_now: float | None,
    p: HeldIdleParams,
    picture: Series | None = None,
) -> Evidence:
    return held_idle_evidence(
        window.gpu_label(g),
        "utilisation",
        util,
        mem,
        util_mean,
        mem_now,
        float(window.gpu_mem_total[g]),
        p.idle_util,
        text.duration(window.end - window.start),
        source=("gpu", window.gpu_label(g)),
        picture=picture,
    )


# a held-idle picture's two rows, downsampled: utilisation, and memory in use (% of the total or GiB)
Series = tuple[list[float | None], list[float | None]]


def evidence_series(util: np.ndarray, mem: np.ndarray, total: np.ndarray) -> list[Series]:
    """The downsampled rows of `held_idle_evidence` for many devices at once ((devices × T) util and
    memory, (devices,) totals): the same figures, in one pass instead of one per device."""
    total = np.asarray(total, dtype=np.float64)
    known = np.isfinite(total) & (total > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mem_values = np.where(known[:, None], mem / np.where(known, total, 1.0)[:, None] * 100, mem / GIB)
    return list(
        zip(downsample_rows(util, EVIDENCE_POINTS), downsample_rows(mem_values, EVIDENCE_POINTS), strict=True)
    )


def held_idle_evidence(
    label: str,
    util_name: str,
    util: np.ndarray,
    mem: np.ndarray,
    util_mean: float,
    mem_now: float | None,
    total: float,
    idle_util: float,
    span: str,
    source: tuple[str, str] | None = None,
    picture: Series | None = None,
) -> Evidence:
    """Two rows on one scale: utilisation in %, and memory in use as % of the device's memory (GiB
    when the total is unknown, with the scale widened to fit). For GPUs and MIG slices alike.
    `source`: ("gpu", "node/index") or ("mig", uuid), how a resolve draws it again. `picture`: the
    two rows already downsampled (`evidence_series`), else they are here."""
    kind, subject = source if source is not None else (None, None)
    if np.isfinite(total) and total > 0:
        mem_values = mem / total * 100
        mem_level = mem_now / total * 100 if mem_now is not None else 0.0
        title = f"{label}: {util_name} (%) and memory in use (% of {total / GIB:.1f} GiB), last {span}"
        scale = 100.0
        mem_series = f"{kind}.mem_pct" if kind else None
    else:
        mem_values = mem / GIB
        mem_level = mem_now / GIB if mem_now is not None else 0.0
        title = f"{label}: {util_name} (%) and memory in use (GiB), last {span}"
        finite = mem_values[np.isfinite(mem_values)]
        scale = max(100.0, float(finite.max()) if finite.size else 0.0)
        mem_series = f"{kind}.mem_gib" if kind else None
    util_series = {"gpu": "gpu.util_gpu", "mig": "mig.util_sm"}.get(kind or "")
    return Evidence(
        title=title,
        unit="%",
        rows=[
            EvidenceRow(
                util_name,
                picture[0] if picture is not None else downsample(util, EVIDENCE_POINTS),
                round(util_mean, 1),
                True,
                util_series,
                subject,
                "mean",
            ),
            EvidenceRow(
                "memory in use",
                picture[1] if picture is not None else downsample(mem_values, EVIDENCE_POINTS),
                round(mem_level, 1),
                False,
                mem_series,
                subject,
                "last",
            ),
        ],
        reference=idle_util,
        reference_label="idle threshold",
        scale_max=scale,
    )


def parse_held_idle(name: str, params: dict[str, Any], defaults: dict[str, Any]) -> HeldIdleParams:
    """Read a held-but-idle rule's parameters, refusing unknown names and out-of-range values."""
    r = ParamReader(name, params, defaults)
    return HeldIdleParams(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        idle_util=r.number("idle_util", 0, 100),
        held_mem_bytes=r.number("held_mem_bytes", 0, 1 << 50),
    )
