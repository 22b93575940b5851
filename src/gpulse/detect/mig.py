"""MIG: instances held but idle, and layout changes.

A MIG instance is a slice of one GPU with its own memory and SMs; on a shared A100/H100 it is
the unit people are handed, and the unit they forget. Two detectors:

- `MigIdleDetector`: an instance with a process on it (or memory allocated) whose SM
  utilisation stays at idle. NVML reports no util_gpu for a GPU in MIG mode; the per-instance
  SM utilisation comes from GPM, which exists only on Hopper and later. Where util_sm is absent
  or NaN (Ampere, an old driver) the instance cannot be judged and nothing fires: memory alone
  says "held", never "idle".
- `MigLayoutDetector`: the set of instances on a GPU changed inside the window. Jobs pinned to
  a MIG UUID that no longer exists lost their GPU; a change nobody planned is worth a line.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import (
    Condition,
    MigInstance,
    ParamReader,
    Window,
    trailing_run_start,
)
from gpulse.detect.idle_held import ACTION as IDLE_HELD_ACTION
from gpulse.detect.idle_held import (
    HeldIdleParams,
    Series,
    evidence_series,
    held_idle_evidence,
    parse_held_idle,
)
from gpulse.finding import Evidence, Severity

GIB = 1 << 30
EVIDENCE_POINTS = 30
_SLICES = re.compile(r"(\d+)g\.")  # "1g.10gb", "1c.3g.40gb": the GPU-instance size in compute slices

IDLE_ACTION = IDLE_HELD_ACTION
ZOMBIE_ACTION = (
    "Find the owner: run `nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv` on the "
    "node and inside its containers (a process in another PID namespace shows only there); if none owns "
    "it, restart the container that last used the instance, or destroy and recreate the instance "
    "(`nvidia-smi mig -dci` / `-dgi`, then `-cgi` / `-cci`): the GPU's other instances are not touched."
)
LAYOUT_ACTION = (
    "Confirm it was planned: jobs pinned to the old instances lost their GPU (their MIG UUIDs no longer "
    "exist) and must be restarted on the new ones; check the scheduler's view of the GPU "
    "(e.g. the Kubernetes device plugin or Slurm gres) matches `nvidia-smi -L`."
)


class MigIdleDetector:
    """MIG instances held by a process or by allocated memory while their SM utilisation stays idle."""

    name: ClassVar[str] = "mig_idle"
    title: ClassVar[str] = "MIG slice held but idle"
    description: ClassVar[str] = (
        "A MIG instance with a compute process on it, or memory allocated, whose SM utilisation "
        "(NVML GPM, Hopper and later) stays at idle: a slice someone holds and nobody uses."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("mig.util_sm", "mig.mem_used", "processes")
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 300,
        "severity": "warning",
        "idle_util": 5.0,
        "held_mem_bytes": GIB,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        parse_held_idle(self.name, params, self.defaults)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per MIG instance held and idle in every bin of its trailing run up to
        `window.end`. A bin without util_sm is not idle: it breaks the run (and an instance with
        no util_sm at all never fires)."""
        p = parse_held_idle(self.name, params, self.defaults)
        util = window.mig_metrics.get("util_sm")
        if util is None or util.size == 0 or not window.mig:
            return []
        mem = window.mig_metrics.get("mem_used", np.full(util.shape, np.nan))
        has_process = window.mig_has_process.astype(bool)
        if has_process.shape != util.shape:  # a window built without process data: memory alone says held
            has_process = np.zeros(util.shape, dtype=bool)
        with np.errstate(invalid="ignore"):  # NaN compares False: unknown is neither idle nor held
            idle = util <= p.idle_util
            held = has_process | (mem >= p.held_mem_bytes)
        starts = trailing_run_start(idle & held, window.times)
        found = np.flatnonzero(np.isfinite(starts))  # only the instances in a run
        totals = np.array([window.mig[int(m)].mem_total for m in found], dtype=np.float64)
        pictures = evidence_series(util[found], mem[found], totals)
        return [
            _idle_condition(window, int(m), float(starts[m]), util[m], mem[m], has_process[m], p, picture)
            for m, picture in zip(found, pictures, strict=True)
        ]


def mig_name(inst: MigInstance) -> str:
    """'MIG 1g.10gb (GI 3)': how an operator finds the instance in `nvidia-smi` (CI named when not 0)."""
    ids = f"GI {inst.gi_id}" + (f", CI {inst.ci_id}" if inst.ci_id else "")
    return f"MIG {inst.profile} ({ids})" if inst.profile else f"MIG ({ids})"


def _idle_condition(
    window: Window,
    m: int,
    since: float,
    util: np.ndarray,
    mem: np.ndarray,
    has_process: np.ndarray,
    p: HeldIdleParams,
    picture: Series | None = None,
) -> Condition:
    inst = window.mig[m]
    g = inst.gpu_row
    node = window.nodes[int(window.gpu_node[g])]
    index = int(window.gpu_index[g])
    run = window.times >= since
    util_mean = float(util[run].mean())  # every bin of the run has data: NaN breaks a run
    mem_run = mem[run][np.isfinite(mem[run])]
    mem_now = float(mem[-1]) if np.isfinite(mem[-1]) else (float(mem_run.max()) if mem_run.size else None)
    procs = [
        q
        for q in window.gpu_processes[g]
        if q.mig_uuid == inst.uuid and q.last_seen >= since and q.first_seen <= window.end
    ]
    had_process = bool(procs) or bool(has_process[run].any())
    duration = float(window.end - since)

    where = f"{node} GPU {index} {mig_name(inst)}"
    with_mem = f"{mem_now / GIB:.1f} GiB at " if mem_now is not None else ""
    idle_text = f"{with_mem}{util_mean:.0f} % SM utilisation"
    if had_process:
        summary = f"{where} held by {text.holders(procs)} with {idle_text}"
        action = IDLE_ACTION
    else:
        summary = (
            f"{where}: memory held with no process ({idle_text}): "
            "a zombie allocation or a process in another PID namespace"
        )
        action = ZOMBIE_ACTION

    values: dict[str, float] = {
        "util_sm": round(util_mean, 1),
        "idle_util": p.idle_util,
        "held_mem_bytes": p.held_mem_bytes,
        "duration_s": round(duration, 1),
    }
    if mem_now is not None:
        values["mem_used"] = mem_now
    if np.isfinite(inst.mem_total) and inst.mem_total > 0:
        values["mem_total"] = float(inst.mem_total)
    return Condition(
        rule=MigIdleDetector.name,
        subject={"cluster": window.cluster, "node": node, "gpu": index, "mig": inst.uuid},
        since=since,
        severity=p.severity,
        summary=summary,
        action=action,
        nodes=[node],
        gpus=[window.gpu_label(g)],
        users=sorted({q.user for q in procs if q.user}),
        containers=sorted({q.container for q in procs if q.container}),
        values=values,
        evidence=_idle_evidence(window, inst, util, mem, util_mean, mem_now, p, picture),
    )


def _idle_evidence(
    window: Window,
    inst: MigInstance,
    util: np.ndarray,
    mem: np.ndarray,
    util_mean: float,
    mem_now: float | None,
    p: HeldIdleParams,
    picture: Series | None = None,
) -> Evidence:
    return held_idle_evidence(
        f"{window.gpu_label(inst.gpu_row)} {mig_name(inst)}",
        "SM utilisation",
        util,
        mem,
        util_mean,
        mem_now,
        float(inst.mem_total),
        p.idle_util,
        text.duration(window.end - window.start),
        source=("mig", inst.uuid),
        picture=picture,
    )


# --- layout changes --------------------------------------------------------------------------

Layout = frozenset[tuple[str, int, int]]


@dataclass(frozen=True)
class _LayoutParams:
    for_s: float
    severity: Severity


class MigLayoutDetector:
    """GPUs whose set of MIG instances changed inside the window: an event, announced once."""

    name: ClassVar[str] = "mig_layout"
    title: ClassVar[str] = "MIG layout changed"
    description: ClassVar[str] = (
        "The MIG instances of a GPU changed (profiles or instance ids): jobs pinned to the old "
        "instances lost their GPU."
    )
    one_shot: ClassVar[bool] = True
    reads: ClassVar[tuple[str, ...]] = ("mig.layout", "processes")
    defaults: ClassVar[dict[str, Any]] = {"for_s": 0, "severity": "info"}

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse_layout(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per GPU with more than one layout first seen before `window.end`, about its
        latest change (since = the first time the current layout was seen)."""
        p = _parse_layout(params)
        out = []
        for g, layouts in sorted(window.mig_layouts.items()):  # GPUs in MIG mode, not bins
            # a chunk of a fast node can start after the window's end: its layout is judged next run
            seen = [entry for entry in layouts if entry[0] < window.end]
            if len(seen) > 1 and 0 <= g < len(window.gpu_node):
                out.append(_layout_condition(window, g, seen, p))
        return out


def layout_text(layout: Layout) -> str:
    """'1×3g.40gb + 2×2g.20gb': instances counted by profile, largest slices first."""
    if not layout:
        return "no instances"
    counts = Counter(profile or "?" for profile, _gi, _ci in layout)

    def size(profile: str) -> int:
        m = _SLICES.search(profile)
        return int(m.group(1)) if m else 0

    ordered = sorted(counts, key=lambda prof: (-size(prof), prof))
    return " + ".join(f"{counts[prof]}×{prof}" for prof in ordered)


def _layout_condition(
    window: Window, g: int, layouts: list[tuple[float, Layout]], p: _LayoutParams
) -> Condition:
    (_, before), (since, after) = layouts[-2], layouts[-1]
    node = window.nodes[int(window.gpu_node[g])]
    index = int(window.gpu_index[g])
    removed = before - after
    # who lost a GPU: the processes seen on the instances that are gone
    gone = {m.uuid for m in window.mig if m.gpu_row == g and (m.profile or "", m.gi_id, m.ci_id) in removed}
    procs = [q for q in window.gpu_processes[g] if q.mig_uuid in gone]
    users = text.unique(q.user for q in procs)
    containers = text.unique(text.short_container(q.container) for q in procs)

    change = f"{layout_text(before)} → {layout_text(after)}"
    if layout_text(before) == layout_text(after):
        change += " (instances recreated)"
    summary = f"{node} GPU {index} MIG layout changed: {change}"
    if users:
        summary += f"; {text.listed(users)} had processes on the removed instances"
    elif containers:
        noun = "container" if len(containers) == 1 else "containers"
        summary += f"; {noun} {text.listed(containers)} had processes on the removed instances"
    return Condition(
        rule=MigLayoutDetector.name,
        # the change time is part of the subject: each change is its own event, so a second change
        # inside the window is announced too instead of merging into the first one's alert
        subject={"cluster": window.cluster, "node": node, "gpu": index, "changed_at": int(since)},
        since=since,
        severity=p.severity,
        summary=summary,
        action=LAYOUT_ACTION,
        nodes=[node],
        gpus=[window.gpu_label(g)],
        users=sorted({q.user for q in procs if q.user}),
        containers=sorted({q.container for q in procs if q.container}),
        values={
            "instances_before": float(len(before)),
            "instances_after": float(len(after)),
            "changes_in_window": float(len(layouts) - 1),
        },
    )


def _parse_layout(params: dict[str, Any]) -> _LayoutParams:
    r = ParamReader(MigLayoutDetector.name, params, MigLayoutDetector.defaults)
    return _LayoutParams(for_s=r.number("for_s", 0, 86_400), severity=r.severity())
