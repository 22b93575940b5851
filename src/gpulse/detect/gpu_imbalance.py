"""GPU imbalance inside a node: one job holds several GPUs of a node, uses one (or a few), and
leaves the rest idle.

The classic cause is a job given N GPUs that computes on one: a script with no
DistributedDataParallel launcher runs on cuda:0 while a CUDA context (a stray
`torch.cuda.device_count()` loop, `nn.DataParallel` misused, a library initialising every visible
device) holds the others. The GPUs are allocated to it, so nobody else can use them.

A job is the set of processes of one container on one node, or of one user when the container is
unknown. A GPU is held by the job in a bin when one of its processes was seen on it then. Other
users' GPUs, and free ones, are not the job's and never count: on a shared node one user holding
one idle GPU is normal (idle_held covers that).

The condition is judged over a run, not bin by bin, because the same GPUs must stay idle:

- each of the job's GPUs has its own idle run, the trailing run of bins in which the job holds it
  at util ≤ `idle_util` (a bin without data ends it);
- the run starts (`since`) where the `min_idle_gpus`-th longest idle run starts: from then on at
  least `min_idle_gpus` GPUs were idle in every bin, and those are the idle GPUs;
- a GPU the job holds now is busy when its mean util over the bins of the run in which the job
  held it is ≥ `busy_util` (a mean: a computing GPU dips for a bin at a checkpoint);
- the condition holds when at least one GPU is busy.

Counting busy and idle GPUs per bin instead would match a serving container with one replica
per GPU, each bursting on its own: in almost every bin some GPU is busy and two others are idle,
never the same ones. Here every idle run of such a replica ends at its next request, so the run
never lasts `for_s`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gpulse.detect import text
from gpulse.detect.base import (
    Condition,
    ParamReader,
    ProcessSeen,
    Window,
    downsample_rows,
    trailing_run_start,
)
from gpulse.finding import Evidence, EvidenceRow, Severity

EVIDENCE_POINTS = 30

ACTION = (
    "Use all the GPUs or ask for fewer: launch with DistributedDataParallel "
    "(`torchrun --nproc_per_node=<gpus> train.py`, one process per GPU) instead of nn.DataParallel or a "
    "single process, or request 1 GPU; check CUDA_VISIBLE_DEVICES inside the job and that the code does "
    "not pin everything to cuda:0."
)

# (node row, "container" or "user", its value): one job
JobKey = tuple[int, str, str]


@dataclass(frozen=True)
class _Params:
    for_s: float
    severity: Severity
    busy_util: float
    idle_util: float
    min_idle_gpus: int


class GpuImbalanceDetector:
    """Jobs that hold several GPUs of a node but keep only one or a few of them busy."""

    name: ClassVar[str] = "gpu_imbalance"
    title: ClassVar[str] = "GPUs unevenly used inside a node"
    description: ClassVar[str] = (
        "On one node, a job (a container, or a user) keeps one or a few of its GPUs busy while its "
        "other GPUs sit idle: the single-GPU DataParallel mistake, or a launcher that started one rank."
    )
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("gpu.util_gpu", "processes")
    defaults: ClassVar[dict[str, Any]] = {
        "for_s": 300,
        "severity": "warning",
        "busy_util": 50.0,
        "idle_util": 10.0,
        "min_idle_gpus": 2,
    }

    def validate(self, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter that is missing, unknown or out of range."""
        _parse(params)

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        """One Condition per (node, job) with at least `min_idle_gpus` of its GPUs idle in every bin
        since `since` and one busy on average over that run, up to `window.end`. A GPU without data
        in a bin is not idle in it, and its mean leaves the bin out."""
        p = _parse(params)
        util = window.gpu.get("util_gpu")
        if util is None or util.size == 0:
            return []
        out = []
        procs = [q for on_gpu in window.gpu_processes for q in on_gpu]
        first_bin, last_bin = _bins(window, procs)
        bins = np.arange(window.bins)
        # an idle run must reach the last bin: held and idle there (the busy GPU is held there
        # too); most jobs fail this, and it takes no (GPUs × bins) matrix to see
        now = bins.size - 1
        held_now = ((first_bin <= now) & (last_bin >= now)).tolist()
        with np.errstate(invalid="ignore"):  # NaN compares False: a bin without data is not idle
            idle_now = (util[:, -1] <= p.idle_util).tolist()
        for key, by_gpu in sorted(_jobs(window).items()):  # a few jobs per node, not bins
            if len(by_gpu) < p.min_idle_gpus + 1:  # too few GPUs to have one busy and enough idle
                continue
            if (
                sum(1 for g, ks in by_gpu.items() if idle_now[g] and any(held_now[k] for k in ks))
                < p.min_idle_gpus
            ):
                continue
            rows = np.array(sorted(by_gpu))
            ks = [by_gpu[int(r)] for r in rows]
            flat = np.array([k for gpu in ks for k in gpu])
            # held in a bin: one of the job's processes on the GPU seen in it (between the bins of its
            # first and last sample, as the window builder marks gpu_has_process)
            seen = (bins[None, :] >= first_bin[flat][:, None]) & (bins[None, :] <= last_bin[flat][:, None])
            held = np.logical_or.reduceat(seen, np.cumsum([0] + [len(gpu) for gpu in ks[:-1]]), axis=0)
            u = util[rows]
            with np.errstate(invalid="ignore"):  # NaN compares False: a bin without data is not idle
                idle_since = trailing_run_start(held & (u <= p.idle_util), window.times)  # (gpus,)
            starts = np.sort(idle_since[np.isfinite(idle_since)])
            if starts.size < p.min_idle_gpus:
                continue
            since = float(starts[p.min_idle_gpus - 1])  # the min_idle_gpus-th longest idle run
            run = window.times >= since
            level = _span_mean(u, held & run[None, :])
            with np.errstate(invalid="ignore"):  # NaN compares False: not idle now, or no data to be busy
                idle = idle_since <= since
                busy = held[:, -1] & (level >= p.busy_util)
            if busy.any():
                job = {g: [procs[k] for k in gpu] for g, gpu in by_gpu.items()}
                out.append(_condition(window, key, rows, job, held, busy, idle, since, p))
        return out


def _jobs(window: Window) -> dict[JobKey, dict[int, list[int]]]:
    """Each job's processes (positions in the window's processes, GPU after GPU), by GPU row.
    Processes with neither container nor user belong to no job."""
    jobs: dict[JobKey, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    k = 0
    for g, procs in enumerate(window.gpu_processes):
        node = int(window.gpu_node[g])
        for q in procs:
            if q.container:
                jobs[(node, "container", q.container)][g].append(k)
            elif q.user:
                jobs[(node, "user", q.user)][g].append(k)
            k += 1
    return jobs


def _bins(window: Window, procs: list[ProcessSeen]) -> tuple[np.ndarray, np.ndarray]:
    """The bins of the first and the last sample of each process."""
    first = np.floor((np.array([q.first_seen for q in procs], dtype=np.float64) - window.start) / window.step)
    last = np.floor((np.array([q.last_seen for q in procs], dtype=np.float64) - window.start) / window.step)
    return first, last


def _condition(
    window: Window,
    key: JobKey,
    rows: np.ndarray,
    by_gpu: dict[int, list[ProcessSeen]],
    held: np.ndarray,
    busy: np.ndarray,
    idle: np.ndarray,
    since: float,
    p: _Params,
) -> Condition:
    """`held` is (gpus × T) for the job's GPU `rows`; `busy` and `idle` (gpus,) mark the GPUs busy
    on average over the run and idle through it."""
    node_row, kind, ident = key
    node = window.nodes[node_row]
    util = window.gpu["util_gpu"]
    run = window.times >= since
    now_held = held[:, -1]
    u = util[rows]
    busy_level = _mean(u[busy][held[busy] & run[None, :]])
    idle_level = _mean(u[idle][:, run])
    procs = [q for r in rows for q in by_gpu[int(r)] if q.last_seen >= since and q.first_seen <= window.end]
    users = text.unique(q.user for q in sorted(procs, key=lambda q: q.first_seen))
    job = _job_phrase(kind, ident, users)
    n_held, n_busy, n_idle = int(now_held.sum()), int(busy.sum()), int(idle.sum())
    summary = (
        f"{node}: {n_busy} of {n_held} GPUs of {job} busy at {busy_level:.0f} %, "
        f"{n_idle} idle at {idle_level:.0f} %"
    )
    return Condition(
        rule=GpuImbalanceDetector.name,
        subject={"cluster": window.cluster, "node": node, kind: ident},
        since=since,
        severity=p.severity,
        summary=summary,
        action=ACTION,
        nodes=[node],
        gpus=[window.gpu_label(int(r)) for r in rows[now_held]],
        users=sorted(set(users)),
        containers=[ident] if kind == "container" else [],
        values={
            "gpus": float(n_held),
            "busy_gpus": float(n_busy),
            "idle_gpus": float(n_idle),
            "busy_level": round(busy_level, 1),
            "idle_level": round(idle_level, 1),
            "busy_util": p.busy_util,
            "idle_util": p.idle_util,
            "min_idle_gpus": float(p.min_idle_gpus),
            "duration_s": round(float(window.end - since), 1),
        },
        evidence=_evidence(window, node_row, set(rows[idle].tolist()), run, job, p),
    )


def _job_phrase(kind: str, ident: str, users: list[str]) -> str:
    """The job in words: "alice's job (container 3f2a1b9c8d7e)", "bob's job", "the job in container x"."""
    if kind == "user":
        return f"{ident}'s job"
    where = f"container {text.short_container(ident)}"
    if len(users) == 1:
        return f"{users[0]}'s job ({where})"
    if users:
        return f"the job of {text.listed(users)} ({where})"
    return f"the job in {where}"


def _evidence(
    window: Window, node_row: int, flagged: set[int], run: np.ndarray, job: str, p: _Params
) -> Evidence:
    """One row per GPU of the node, the job's idle GPUs flagged; a row's level is its mean over the run."""
    util = window.gpu["util_gpu"]
    rows = np.flatnonzero(window.gpu_node == node_row)
    rows = rows[np.argsort(window.gpu_index[rows], kind="stable")]
    node = window.nodes[node_row]
    pictures = downsample_rows(util[rows], EVIDENCE_POINTS)
    return Evidence(
        title=(
            f"{node}: GPU utilisation per GPU, last {text.duration(window.end - window.start)}; "
            f"flagged: the idle GPUs of {job}"
        ),
        unit="%",
        rows=[
            EvidenceRow(
                label=window.gpu_label(int(g)),
                values=picture,
                level=round(_mean(util[g][run]), 1),
                flagged=int(g) in flagged,
                series="gpu.util_gpu",  # how a resolve draws it again (gpulse.analyze.recovery)
                subject=window.gpu_label(int(g)),
                reduce="mean",
            )
            for g, picture in zip(rows, pictures, strict=True)
        ],
        reference=p.idle_util,
        reference_label="idle threshold",
    )


def _span_mean(x: np.ndarray, span: np.ndarray) -> np.ndarray:
    """(rows,) mean of each row of x over the bins where `span` (rows × T) is True, ignoring NaN;
    NaN where no such bin has data."""
    take = span & np.isfinite(x)
    count = take.sum(axis=1)
    total = np.where(take, x, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _mean(a: np.ndarray) -> float:
    """Mean of the finite values; 0.0 when there are none (a figure for text, never NaN)."""
    finite = a[np.isfinite(a)]
    return float(finite.mean()) if finite.size else 0.0


def _parse(params: dict[str, Any]) -> _Params:
    r = ParamReader(GpuImbalanceDetector.name, params, GpuImbalanceDetector.defaults)
    p = _Params(
        for_s=r.number("for_s", 0, 86_400),
        severity=r.severity(),
        busy_util=r.number("busy_util", 0, 100),
        idle_util=r.number("idle_util", 0, 100),
        min_idle_gpus=int(r.number("min_idle_gpus", 1, 64, integer=True)),
    )
    if p.idle_util >= p.busy_util:
        raise ValueError(
            f"gpu_imbalance: idle_util must be below busy_util ({p.busy_util:g}), not {p.idle_util:g}"
        )
    return p
