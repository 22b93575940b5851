"""Which job each node runs: the unit the cross-node rules judge (imbalance, network).

A distributed job runs in step on its own nodes; comparing it with an unrelated job that shares
the cluster (a sweep of 1-GPU trials, a serving pool, notebooks) raises alarms about nothing. So
the nodes of a window are split into jobs, from the best identity the window carries:

1. **the scheduler's**: a process's `job` field (Batch v1) when it names a job that spans nodes,
   `slurm:<SLURM_JOB_ID>`. (A Kubernetes pod, `pod:<uid>`, lives on one node: it tells
   independent jobs on a node apart but joins no nodes, so a node whose processes carry only pod
   ids is judged by its processes as below.)
2. **the processes'**: the (user, command) that holds more than half of the node's GPUs among
   the processes it ran last. Nodes with the same pair run the ranks of one job; container ids
   are per node in practice, so they do not join nodes, but a node where no pair holds more than
   half of its GPUs in one container (several users, or a sweep's trials each in its own
   container) runs independent jobs and joins nobody. A node with processes on at most half of
   its GPUs is as one with none (below).
3. **the node group** (the shipper's `--node-group`, else the cluster): for nodes that ran no
   process in the window, which join the one multi-node job their group runs (a rank that died
   while its peers wait is still that job's) or else the group.

A job never spans node groups: where the operator grouped nodes, a job is found inside each group.
Operators override it per rule with the parameter `jobs`: "auto" (the above) or "node_group"
(each node group is one job, the way gpulse judged before jobs).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Literal

from gpulse.detect.base import Condition, ProcessSeen, Window, shared

JobsMode = Literal["auto", "node_group"]
JOBS_MODES: tuple[str, ...] = ("auto", "node_group")
# the processes a node's identity is read from: those seen within this of its latest one. A node
# that switched jobs inside the window is the new job's; a rank that died is still its job's.
LATEST_S = 120.0
SLURM = "slurm:"


@dataclass(frozen=True)
class Job:
    """A set of nodes judged together. `key` is stable while the job runs: "slurm:<id>",
    "proc:<user>/<command>;…" (each with "@<node group>" when the nodes have one),
    "group:<node group>" or "cluster" (no process, no group)."""

    key: str
    node_group: str | None  # the group of its nodes when they share one, else None
    rows: tuple[int, ...]  # node rows of the window
    from_processes: bool  # recognised from the scheduler or the processes (not a group fallback)


def node_identity(gpus: list[list[ProcessSeen]], node: str) -> str | None:
    """The job key of a node from the processes seen on each of its GPUs; None when it ran none.

    The processes read are the latest (LATEST_S). A Slurm job id wins (the one on most GPUs).
    Else, when processes are seen on at most half of its GPUs, the node is as one that ran none
    (None: a notebook beside work whose processes are not listed says nothing of that work). Else
    it runs a rank of a distributed job when one (user, command) holds more than half of its GPUs,
    in one container: its key is that pair. Otherwise (several users, or one user's trials each in
    its own container: a shared node, a sweep) it joins nobody: "node:<name>".
    """
    flat = [q for procs in gpus for q in procs]
    if not flat:
        return None
    last = max(q.last_seen for q in flat)
    recent = [[q for q in procs if q.last_seen >= last - LATEST_S] for procs in gpus]
    recent = [procs for procs in recent if procs]
    slurm = Counter(q.job for procs in recent for q in procs if q.job and q.job.startswith(SLURM))
    if slurm:
        # the job on the most GPUs; ties by name, so the key is stable
        return min(slurm.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    holds: Counter[tuple[str, str]] = Counter()
    containers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for procs in recent:
        for sig in {(q.user or "?", q.name or "?") for q in procs}:
            holds[sig] += 1
        for q in procs:
            if q.container:
                containers[(q.user or "?", q.name or "?")].add(q.container)
    (top, count), *rest = holds.most_common() if holds else [(("?", "?"), 0)]
    if 2 * len(recent) <= len(gpus):
        return None  # processes on a few of its GPUs only (a notebook beside unlisted work): unknown
    if 2 * count <= len(gpus) or (rest and rest[0][1] == count) or len(containers[top]) > 1:
        return f"node:{node}"  # independent jobs side by side: comparable with nobody
    return f"proc:{top[0]}/{top[1]}"


def node_gpu_processes(window: Window) -> list[list[list[ProcessSeen]]]:
    """Per node row, the processes seen on each of its GPUs in the window (derived once per window:
    do not change it)."""
    return shared(window, "jobs.node_gpu_processes", lambda: _node_gpu_processes(window))


def _node_gpu_processes(window: Window) -> list[list[list[ProcessSeen]]]:
    out: list[list[list[ProcessSeen]]] = [[] for _ in window.nodes]
    for g, procs in enumerate(window.gpu_processes):
        out[int(window.gpu_node[g])].append(procs)
    return out


def node_processes(window: Window) -> list[list[ProcessSeen]]:
    """Per node row, the processes seen on its GPUs in the window (derived once per window: do not
    change it)."""
    return shared(
        window,
        "jobs.node_processes",
        lambda: [[q for procs in gpus for q in procs] for gpus in node_gpu_processes(window)],
    )


def find_jobs(window: Window, mode: JobsMode = "auto") -> list[Job]:
    """The window's nodes split into jobs (every node in exactly one), in order of first row.
    Several rules ask for them each tick: they are found once per window and mode."""
    return list(shared(window, ("jobs.find_jobs", mode), lambda: _find_jobs(window, mode)))


def _find_jobs(window: Window, mode: JobsMode) -> list[Job]:
    groups = window.node_groups
    if mode == "node_group":
        by_group: dict[str | None, list[int]] = defaultdict(list)
        for i, group in enumerate(groups):
            by_group[group].append(i)
        return [_job(_group_key(g), rows, groups, False) for g, rows in by_group.items()]
    # a job never spans node groups: the operator's groups are an upper bound (a development node,
    # its own group, running the same user's `python` as a training group is not one of its ranks)
    ident = [
        _within(groups[i], node_identity(p, window.nodes[i]))
        for i, p in enumerate(node_gpu_processes(window))
    ]
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(ident):
        if key is not None:
            members[key].append(i)
    # the multi-node jobs of each group, for the nodes that ran nothing
    multi: dict[str | None, set[str]] = defaultdict(set)
    for key, rows in members.items():
        if len(rows) > 1:
            for i in rows:
                multi[groups[i]].add(key)
    fallback: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(ident):
        if key is None:
            joined = multi.get(groups[i], set())
            if len(joined) == 1:
                members[next(iter(joined))].append(i)
            else:
                fallback[_group_key(groups[i])].append(i)
    jobs = [_job(k, sorted(r), groups, True) for k, r in members.items()]
    jobs += [_job(k, r, groups, False) for k, r in fallback.items()]
    return sorted(jobs, key=lambda j: j.rows[0])


def _within(group: str | None, key: str | None) -> str | None:
    return key if key is None or group is None else f"{key}@{group}"


def _group_key(group: str | None) -> str:
    return "cluster" if group is None else f"group:{group}"


def _job(key: str, rows: list[int], groups: list[str | None], from_processes: bool) -> Job:
    named = {groups[i] for i in rows}
    return Job(key, named.pop() if len(named) == 1 else None, tuple(rows), from_processes)


def node_jobs(window: Window, mode: JobsMode = "auto") -> list[str | None]:
    """Per node row, the key of its job when one was recognised (scheduler or processes); None
    for a node of a group fallback or one running independent jobs (no job to name)."""
    out: list[str | None] = [None] * len(window.nodes)
    for job in find_jobs(window, mode):
        for i in job.rows:
            out[i] = label_of(job)
    return out


def label_of(job: Job) -> str | None:
    """The job's key as a label (`Condition.job`): only for a job recognised from the scheduler or
    the processes; a node group or a node of independent jobs is not one job."""
    return job.key if job.from_processes and not job.key.startswith("node:") else None


def job_of(window: Window, nodes: list[str], keys: list[str | None]) -> str | None:
    """The one job all of `nodes` belong to (`keys` from `node_jobs`), or None: several, none, or
    a node not in the window."""
    row = shared(window, "jobs.node_rows", lambda: {n: i for i, n in enumerate(window.nodes)})
    if not nodes or not all(n in row for n in nodes):
        return None
    found = {keys[row[n]] for n in nodes}
    return found.pop() if len(found) == 1 else None


def parse_mode(detector: str, value: object) -> JobsMode:
    """The `jobs` parameter, or ValueError naming the rule and the allowed values."""
    if value not in JOBS_MODES:
        raise ValueError(f"{detector}: jobs must be one of {', '.join(JOBS_MODES)}, not {value!r}")
    return "auto" if value == "auto" else "node_group"


def who(window: Window, rows: list[int]) -> tuple[list[str], list[str]]:
    """The users and containers of the processes seen on the given node rows (sorted, distinct)."""
    procs = node_processes(window)
    users = sorted({q.user for i in rows for q in procs[i] if q.user})
    containers = sorted({q.container for i in rows for q in procs[i] if q.container})
    return users, containers


def condition_nodes(c: Condition) -> list[str]:
    """Every node a condition names (its list, and its subject's node), sorted."""
    node = c.subject.get("node")
    return sorted(set(c.nodes) | ({str(node)} if node is not None else set()))


def job_label(key: str) -> str | None:
    """The job in words for a summary ("Slurm job 4242", "alice's python job"), or None for a
    job that is only a node group or the cluster (the place already says it)."""
    key = key.rpartition("@")[0] or key  # the group is said by the place
    if key.startswith(SLURM):
        return f"Slurm job {key[len(SLURM) :]}"
    if key.startswith("proc:"):
        sigs = [part.split("/", 1) for part in key[len("proc:") :].split(";")]
        users = sorted({u for u, _ in sigs if u != "?"})
        names = sorted({n for _, n in sigs if n != "?"})
        owner = f"{', '.join(users)}'s" if users else "the"
        return f"{owner} {', '.join(names)} job".replace("  ", " ") if names else f"{owner} job"
    return None


def job_place(cluster: str, job: Job) -> str:
    """Where a job alert points: "c1/train-a" or "c1" (the job itself is in `Condition.job`, and
    its people in users and containers)."""
    return cluster if job.node_group is None else f"{cluster}/{job.node_group}"


def job_subject(cluster: str, job: Job) -> dict[str, str | int | None]:
    """The subject of a job alert: the cluster and node group, plus the job's key when it was
    recognised from processes (two jobs of one group are two alerts); a group fallback keeps the
    subject (and so the fingerprint) a node-group alert always had."""
    subject: dict[str, str | int | None] = {"cluster": cluster, "node_group": job.node_group}
    if job.from_processes:
        subject["job"] = job.key
    return subject
