"""Process on the wrong NUMA node: a busy GPU driven from CPUs far from it.

On a two-socket GPU server each GPU hangs off one socket's PCIe root. A process pinned to the
other socket's CPUs (a cpuset, `taskset`, a container's cpuset, a scheduler's binding) copies
every batch across the inter-socket link and allocates its pinned host memory on the wrong
node: data loading and host-to-device copies slow down, often by a third, with nothing in the
job's logs to say so.

The shipper reports each GPU's NUMA node (`Window.gpu_numa`, from sysfs) and each process's CPU
affinity folded into the NUMA nodes it covers (`ProcessSeen.cpu_numa_nodes`). A process is
misplaced when its affinity does not include its GPU's node; a process spanning both nodes is
not (the kernel may well run it near its GPU). Unknown topology on either side is no evidence.
The GPU's condition holds in a bin while a misplaced process is on it and it is busy
(util_gpu over the last minute ≥ `min_util`, so a checkpoint's pause does not restart the wait):
an idle misplaced process costs nothing. One condition per GPU.

Defaults: severity info, because the job runs, only slower, and the fix is a launch option;
`for_s` 300 s, so a process that starts anywhere and is moved by its launcher, and short tests,
stay quiet; `min_util` 20 %, under which the GPU waits on something else and the copies that
cross the link cost little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import (
    Condition,
    ParamReader,
    ProcessSeen,
    Window,
    downsample,
    rolling_mean,
    trailing_run_start,
)

# the same "3m 10s" wording as the held-but-idle detector; belongs in a shared helper (see report)
from gpulse.finding import Evidence, EvidenceRow, Severity

EVIDENCE_POINTS = 30
# "busy" is the GPU's mean over the last minute: a synchronous checkpoint or an evaluation pass
# idles it for a few tens of seconds, and the process is just as misplaced after it
BUSY_S = 60.0
MAX_LISTED = 3  # processes named in the one-line summary; the condition lists every user and container

ACTION = (
    "Pin the process to the GPU's NUMA node {numa}: start it under `numactl --cpunodebind={numa} "
    "--membind={numa}`, or set its container's cpuset to NUMA node {numa}'s CPUs "
    "(`nvidia-smi topo -m` shows each GPU's CPU affinity). On Kubernetes, give the kubelet the "
    "topology manager policy `single-numa-node` (with the static CPU manager); on Slurm, bind "
    "CPUs to the GPU (`--cpu-bind=cores` with `--gres-flags=enforce-binding`, Cores= in gres.conf)."
)


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    min_util: float


class NumaDetector:
    """Busy GPUs driven by a process whose CPU affinity excludes the GPU's NUMA node."""

    name: ClassVar[str] = "numa"
    title: ClassVar[str] = "Process on the wrong NUMA node"
    description: ClassVar[str] = (
        "A busy GPU driven by a process pinned to CPUs of another NUMA node than the GPU's own: "
        "every host-to-device copy crosses the inter-socket link."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("gpu.util_gpu", "processes")
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 300,
        "severity": "info",
        "min_util": 20.0,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per GPU that, in every bin of its trailing run up to `window.end`, is busy
        with a misplaced process on it; it names the misplaced processes present in the last bin."""
        p = _parse(params)
        util = window.gpu.get("util_gpu")
        if util is None or util.size == 0:
            return []
        n_gpus, t = util.shape
        gpu_numa = np.asarray(window.gpu_numa, dtype=float)
        if gpu_numa.shape != (n_gpus,):  # the window carries no topology
            return []
        rows, misplaced = [], []
        for g in np.flatnonzero(np.isfinite(gpu_numa) & (gpu_numa >= 0)):  # -1: no NUMA affinity
            for q in window.gpu_processes[g]:  # a few processes per GPU, not samples
                if q.cpu_numa_nodes and int(gpu_numa[g]) not in q.cpu_numa_nodes:
                    rows.append(int(g))
                    misplaced.append(q)
        if not misplaced:
            return []
        # the bins each misplaced process was seen in, as the window builder bins process lifetimes
        first = np.floor((np.array([q.first_seen for q in misplaced]) - window.start) / window.step)
        last = np.floor((np.array([q.last_seen for q in misplaced]) - window.start) / window.step)
        bins = np.arange(t)
        present = (bins[None, :] >= first[:, None]) & (bins[None, :] <= last[:, None])  # (processes × bins)
        on_gpu = np.zeros((n_gpus, t), dtype=bool)
        np.logical_or.at(on_gpu, np.asarray(rows), present)
        smooth = rolling_mean(util, max(1, round(BUSY_S / window.step)))
        with np.errstate(invalid="ignore"):  # NaN compares False: a bin without data is not busy
            busy = (smooth >= p.min_util) & np.isfinite(util)
        out = on_gpu & busy & window.gpu_has_process.astype(bool)
        starts = trailing_run_start(out, window.times)
        now = present[:, -1]
        return [
            _condition(
                window,
                int(g),
                float(starts[g]),
                int(gpu_numa[g]),
                [q for q, r, n in zip(misplaced, rows, now, strict=True) if r == g and n],
                p,
            )
            for g in np.flatnonzero(np.isfinite(starts))  # only the GPUs in a run, not every GPU
        ]


def _condition(
    window: Window, g: int, since: float, numa: int, procs: list[ProcessSeen], p: _Params
) -> Condition:
    node = window.nodes[int(window.gpu_node[g])]
    index = int(window.gpu_index[g])
    util = window.gpu["util_gpu"][g]
    run = window.times >= since
    util_mean = float(util[run].mean())  # every bin of the run has data: NaN breaks a run
    duration = float(window.end - since)
    procs = sorted(procs, key=lambda q: (q.first_seen, q.pid))
    span = text.duration(window.end - window.start)
    summary = (
        f"{node} GPU {index} (NUMA {numa}) driven by {_drivers(procs)}, "
        f"at {util_mean:.0f} % utilisation for {text.duration(duration)}"
    )
    return Condition(
        rule=NumaDetector.name,
        subject={"cluster": window.cluster, "node": node, "gpu": index},
        since=since,
        severity=p.severity,
        summary=summary,
        action=ACTION.format(numa=numa),
        nodes=[node],
        gpus=[window.gpu_label(g)],
        users=sorted({q.user for q in procs if q.user}),
        containers=sorted({q.container for q in procs if q.container}),
        values={
            "gpu_numa": float(numa),
            "processes": float(len(procs)),
            "util": round(util_mean, 1),
            "min_util": p.min_util,
            "duration_s": round(duration, 1),
        },
        evidence=Evidence(
            title=f"{window.gpu_label(g)} (NUMA {numa}): utilisation, last {span}",
            unit="%",
            rows=[
                EvidenceRow(  # series, subject, reduce: how a resolve draws it again (analyze.recovery)
                    "utilisation",
                    downsample(util, EVIDENCE_POINTS),
                    round(util_mean, 1),
                    True,
                    "gpu.util_gpu",
                    window.gpu_label(g),
                    "mean",
                )
            ],
            reference=p.min_util,
            reference_label="busy threshold",
        ),
    )


def _drivers(procs: list[ProcessSeen]) -> str:
    """'pid 4242 (alice) pinned to NUMA 0 CPUs': the processes grouped by where they are pinned."""
    shown = procs[:MAX_LISTED]
    by_nodes: dict[tuple[int, ...], list[str]] = {}
    for q in shown:
        who = q.user or q.container
        by_nodes.setdefault(tuple(sorted(q.cpu_numa_nodes or ())), []).append(
            f"pid {q.pid} ({who})" if who else f"pid {q.pid}"
        )
    text = " and ".join(
        f"{', '.join(pids)} pinned to NUMA {', '.join(map(str, nodes))} CPUs"
        for nodes, pids in by_nodes.items()
    )
    return text if len(procs) <= MAX_LISTED else f"{text} +{len(procs) - MAX_LISTED} more"


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader("numa", params, NumaDetector.defaults)
    return _Params(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        min_util=r.number("min_util", 0, 100),
    )
