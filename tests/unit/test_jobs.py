"""Jobs: how nodes are grouped into the jobs the cross-node rules judge, and what imbalance makes
of them (independent jobs apart, slow nodes caught, serving pools left alone)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from gpulse.detect.base import Condition, ProcessSeen, Window
from gpulse.detect.catalogue import params_for
from gpulse.detect.idle_held import ACTION, RANK_ACTION, IdleHeldDetector
from gpulse.detect.imbalance import ImbalanceDetector
from gpulse.detect.jobs import Job, condition_nodes, find_jobs, job_of, node_identity, node_jobs, parse_mode

T0 = 1_770_000_000.0
STEP = 5.0
BINS = 120
GPUS = 2
IMBALANCE = ImbalanceDetector()

# (user, command, container, scheduler job) of the processes on each GPU of a node; None: no process
Proc = tuple[str | None, str | None, str | None, str | None]


def window(
    levels: np.ndarray,
    procs: Sequence[Proc | None],
    groups: list[str | None] | None = None,
    *,
    seen_until: float = 1e18,
) -> Window:
    """Nodes whose GPUs run at the node's level, each GPU with one process of the node's kind."""
    levels = np.asarray(levels, dtype=float)
    n, t = levels.shape
    g = n * GPUS
    end = T0 + STEP * t
    processes: list[list[ProcessSeen]] = []
    for i in range(n):
        for k in range(GPUS):
            p = procs[i]
            if p is None:
                processes.append([])
                continue
            user, name, container, job = p
            processes.append(
                [
                    ProcessSeen(
                        1000 + 10 * i + k, user, container, name, 2**30, T0, min(end, seen_until), job=job
                    )
                ]
            )
    return Window(
        cluster="c1",
        start=T0,
        step=STEP,
        end=end,
        nodes=[f"node-{i + 1:02d}" for i in range(n)],
        node_groups=list(groups) if groups is not None else [None] * n,
        node_last_seen=np.full(n, end),
        host={},
        cpu_count=np.full(n, 64.0),
        host_mem_total=np.full(n, 2.0**40),
        gpu_node=np.repeat(np.arange(n), GPUS),
        gpu_index=np.tile(np.arange(GPUS), n),
        gpu={"util_gpu": np.repeat(levels, GPUS, axis=0)},
        gpu_mem_total=np.full(g, 80.0 * 2**30),
        gpu_has_process=np.ones((g, t), dtype=bool),
        gpu_processes=processes,
    )


def ddp(user: str, node: int, job: str | None = None) -> Proc:
    """A rank of `user`'s training job: its container is the node's own, as in Kubernetes."""
    return (user, "python", f"{user}-ctr-{node}", job)


# --- recognising jobs ------------------------------------------------------------------------------


def test_slurm_job_ids_split_nodes_that_run_the_same_command() -> None:
    procs = [ddp("alice", i, "slurm:11" if i < 3 else "slurm:12") for i in range(6)]
    jobs = find_jobs(window(np.full((6, BINS), 90.0), procs))
    assert jobs == [Job("slurm:11", None, (0, 1, 2), True), Job("slurm:12", None, (3, 4, 5), True)]


def test_processes_join_nodes_by_user_and_command_not_by_container() -> None:
    procs = [ddp("alice", 0), ddp("alice", 1), ddp("bob", 2), ddp("bob", 3), ddp("alice", 4)]
    jobs = find_jobs(window(np.full((5, BINS), 90.0), procs))
    assert jobs == [
        Job("proc:alice/python", None, (0, 1, 4), True),
        Job("proc:bob/python", None, (2, 3), True),
    ]


def test_a_node_running_independent_containers_joins_nobody() -> None:
    # a sweep on one node: one user, one command, a container per trial
    w = window(np.full((3, BINS), 90.0), [ddp("alice", 0), ddp("alice", 1), ddp("alice", 2)])
    procs = [replace(q, container=f"trial-{g}") for g, ps in enumerate(w.gpu_processes) for q in ps]
    w = replace(w, gpu_processes=[[q] for q in procs])
    assert [j.key for j in find_jobs(w)] == ["node:node-01", "node:node-02", "node:node-03"]
    assert node_jobs(w) == [None, None, None]  # no job to name for a condition


def test_nodes_without_processes_join_their_groups_one_job_or_else_the_group() -> None:
    procs: list[Proc | None] = [ddp("alice", 0), ddp("alice", 1), None, None, None]
    groups: list[str | None] = ["a", "a", "a", "b", "b"]
    assert find_jobs(window(np.full((5, BINS), 90.0), procs, groups)) == [
        Job("proc:alice/python@a", "a", (0, 1, 2), True),
        Job("group:b", "b", (3, 4), False),
    ]


def test_a_job_never_spans_node_groups() -> None:
    # a development node (its own group) running the same user's `python` as the training group
    procs = [ddp("alice", i) for i in range(4)]
    groups: list[str | None] = ["train", "train", "train", "dev-01"]
    assert node_jobs(window(np.full((4, BINS), 90.0), procs, groups)) == [
        *["proc:alice/python@train"] * 3,
        "proc:alice/python@dev-01",
    ]


def test_node_group_mode_is_the_operators_override() -> None:
    procs = [ddp("alice", 0), ddp("bob", 1), ddp("carol", 2)]
    w = window(np.full((3, BINS), 90.0), procs, ["x", "x", None])
    assert find_jobs(w, parse_mode("imbalance", "node_group")) == [
        Job("group:x", "x", (0, 1), False),
        Job("cluster", None, (2,), False),
    ]
    with pytest.raises(ValueError, match="imbalance: jobs must be one of auto, node_group, not 'slurm'"):
        parse_mode("imbalance", "slurm")


def test_identity_reads_the_latest_processes_of_a_node() -> None:
    old = ProcessSeen(1, "bob", "b", "python", None, T0, T0 + 100)
    new = ProcessSeen(2, "alice", "a", "python", None, T0 + 200, T0 + 590)
    assert node_identity([[old, new], [replace(new, pid=3)]], "n") == "proc:alice/python"
    assert node_identity([[], []], "n") is None
    # processes on a minority of its GPUs (a notebook beside unlisted work) say nothing of the node
    assert node_identity([[new], [], []], "n") is None


def rank(pid: int, user: str, container: str) -> ProcessSeen:
    return ProcessSeen(pid, user, container, "python", None, T0, T0 + 590)


def test_a_node_is_a_rank_when_one_user_holds_most_of_its_gpus_in_one_container() -> None:
    ranks = [[rank(1, "alice", "a")], [rank(2, "alice", "a")], [rank(3, "alice", "a")]]
    side = [[rank(9, "pia", "p")]]  # a small job of someone else's on the fourth GPU
    assert node_identity(ranks + side, "n") == "proc:alice/python"
    # a shared node: two users, two GPUs each
    shared = [[rank(1, "ana", "1")], [rank(2, "ana", "1")], [rank(3, "ben", "2")], [rank(4, "ben", "2")]]
    assert node_identity(shared, "n") == "node:n"
    # one user's sweep: a container per trial
    trials = [[rank(i, "ana", f"trial-{i}")] for i in range(4)]
    assert node_identity(trials, "n") == "node:n"


def test_a_condition_gets_the_job_of_all_its_nodes_or_none() -> None:
    w = window(np.full((4, BINS), 90.0), [ddp("alice", 0), ddp("alice", 1), ddp("bob", 2), ddp("bob", 3)])
    keys = node_jobs(w)
    one = Condition("idle_held", {"cluster": "c1", "node": "node-01", "gpu": 0}, T0, "warning", "s", "a")
    two = replace(one, subject={"cluster": "c1"}, nodes=["node-02", "node-03"])
    assert condition_nodes(two) == ["node-02", "node-03"]
    assert job_of(w, ["node-01"], keys) == "proc:alice/python"
    assert job_of(w, ["node-02", "node-03"], keys) is None
    assert job_of(w, ["node-99"], keys) is None
    from gpulse.analyze.detection import with_jobs  # analyze's hook, over the same keys

    assert [c.job for c in with_jobs([one, two], w)] == ["proc:alice/python", None]


# --- imbalance within jobs ---------------------------------------------------------------------------


def imbalance(w: Window, **overrides: object) -> list[Condition]:
    return IMBALANCE.detect(w, params_for("imbalance", overrides))


def test_independent_jobs_sharing_a_cluster_are_not_compared() -> None:
    # alice's job runs at 92 %, bob's at 20 %: judged as one cluster, bob's nodes look far below
    levels = np.vstack([np.full((4, BINS), 92.0), np.full((3, BINS), 20.0)])
    procs = [ddp("alice", i) for i in range(4)] + [ddp("bob", i) for i in range(4, 7)]
    w = window(levels, procs)
    assert imbalance(w) == []
    [lumped] = imbalance(w, jobs="node_group")
    assert lumped.nodes == ["node-05", "node-06", "node-07"]


def test_a_one_node_job_is_not_judged_by_cross_node_rules() -> None:
    levels = np.vstack([np.full((3, BINS), 92.0), np.full((1, BINS), 5.0)])
    procs = [ddp("alice", i) for i in range(3)] + [ddp("bob", 3)]
    assert imbalance(window(levels, procs), min_nodes=2) == []


def paused_job(nodes: int, level: float, seed: int = 3) -> np.ndarray:
    """A job with a 10 s whole-job pause (checkpoint) every minute; ±2 points of noise."""
    rng = np.random.default_rng(seed)
    levels = level + rng.uniform(-2, 2, (nodes, BINS))
    levels[:, np.arange(BINS) % 12 >= 10] = 0.0
    return levels


def test_a_slow_node_fires_once_with_the_figures_the_rule_judged() -> None:
    levels = paused_job(8, 96.0)
    slow = np.arange(BINS) >= 40
    levels[4, slow] = np.where(levels[4, slow] > 0, 55.0, 0.0)  # node-05 at 57 % of its peers from bin 40
    procs = [ddp("alice", i) for i in range(8)]
    w = window(levels, procs)

    [cond] = imbalance(w)

    busy = (np.arange(BINS) >= BINS - 36) & (np.arange(BINS) % 12 < 10)  # the last 3 min, pauses left out
    peers = np.median(np.delete(levels, 4, axis=0)[:, busy], axis=0)
    peer_level = round(float(np.median(peers)), 1)
    # not the mean of the per-bin median over the last minute, which takes in a pause
    assert round(float(np.median(np.delete(levels, 4, axis=0)[:, -12:], axis=0).mean())) < peer_level - 10
    assert cond.summary == (
        f"1 of 8 nodes in c1 at 55 % GPU utilisation while their peers run at {peer_level:.0f} % "
        "(median over the last 3m, pauses left out) — node-05"
    )
    assert cond.values["level:node-05"] == 55.0
    assert cond.values["group_median"] == peer_level
    assert cond.values["ratio"] == round(55.0 / peer_level, 3)
    assert (cond.values["span_s"], cond.values["busy_s"]) == (180.0, 150.0)  # 30 busy bins of the last 36
    assert (cond.nodes, cond.users, cond.containers) == (["node-05"], ["alice"], ["alice-ctr-4"])
    assert cond.job == "proc:alice/python"
    assert cond.subject == {"cluster": "c1", "node_group": None, "job": "proc:alice/python"}
    # the same alert at every later run: `since` does not move while the slowdown lasts
    later = [imbalance(window(levels[:, : BINS - k], procs))[0].since for k in range(0, 40, 6)]
    assert later == [cond.since] * len(later)


def test_a_node_at_ninety_percent_of_its_peers_is_not_slow() -> None:
    levels = paused_job(8, 95.0)
    levels[2] *= 0.9  # a 10 % spread between ranks
    levels[6] *= 0.93
    assert imbalance(window(levels, [ddp("alice", i) for i in range(8)])) == []


def test_a_slow_node_with_alternating_bins_is_caught() -> None:
    levels = paused_job(6, 96.0)
    odd = (np.arange(BINS) >= 30) & (np.arange(BINS) % 2 == 1) & (levels[1] > 0)
    even = (np.arange(BINS) >= 30) & (np.arange(BINS) % 2 == 0) & (levels[1] > 0)
    levels[1, odd], levels[1, even] = (
        30.0,
        70.0,
    )  # half its bins stalled, half near its peers: 50 % on average
    [cond] = imbalance(window(levels, [ddp("alice", i) for i in range(6)]))
    assert cond.nodes == ["node-02"]
    assert cond.values["level:node-02"] == 50.0


def test_a_serving_pool_with_independent_load_is_not_out_of_step() -> None:
    # 16 replicas behind one balancer, each bursting on its own: busy, but no shared shape
    rng = np.random.default_rng(5)
    levels = np.clip(65 + rng.normal(0, 22, (16, BINS)), 0, 100)
    levels[3, 60:] = 0.0  # and one replica's traffic stopped: its own affair, not a lost rank
    w = window(levels, [("carol", "vllm", f"serve-{i}", None) for i in range(16)])
    assert imbalance(w) == []
    # judged as a synchronous job, most replicas would be out of step with the others
    assert imbalance(w, sync_corr=-1)[0].values["nodes_out"] > 8


def test_a_slow_node_is_let_go_when_it_recovers() -> None:
    levels = paused_job(8, 96.0)
    busy = levels[3] > 0
    levels[3, (np.arange(BINS) >= 20) & busy] = 50.0
    levels[3, (np.arange(BINS) >= 100) & busy] = 95.0  # back at its peers' pace 100 s before the end
    assert imbalance(window(levels, [ddp("alice", i) for i in range(8)])) == []


def test_an_idle_rank_of_a_multi_node_job_is_not_told_to_end_its_notebook() -> None:
    levels = np.full((3, BINS), 92.0)
    levels[1, 40:] = 0.0  # node-02's ranks stalled, holding their memory
    w = window(levels, [ddp("alice", i) for i in range(3)])
    w = replace(w, gpu={**w.gpu, "mem_used": np.full(w.gpu["util_gpu"].shape, 40.0 * 2**30)})
    held = IdleHeldDetector().detect(w, params_for("idle_held"))
    assert [(c.gpus, c.action) for c in held] == [(["node-02/0"], RANK_ACTION), (["node-02/1"], RANK_ACTION)]
    # the same GPU on a node of its own (a notebook): the notebook advice
    alone = window(levels[1:2], [("bob", "jupyter", "nb", None)])
    alone = replace(alone, gpu={**alone.gpu, "mem_used": np.full(alone.gpu["util_gpu"].shape, 40.0 * 2**30)})
    assert {c.action for c in IdleHeldDetector().detect(alone, params_for("idle_held"))} == {ACTION}
