"""Analyze fanned out on AWS itself, against moto: the dispatcher's tasks (one per cluster and
shard, the later ticks of the minute delayed), the worker's analysis, two workers on one cluster
at once, and a stale task dropped. Tables and queues come from template.yaml."""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

import boto3
import pytest

from devstack.template import TEMPLATE_PATH, LocalDeployment, load_template
from gpulse.analyze.fanout import MAX_TICK_AGE_S, AnalyzeTask, TickClaims, plan
from gpulse.config.store import ConfigStore
from gpulse.store import NodeInfo, SeriesStore
from gpulse.wire.batch import Batch
from tests.events import load_event
from tests.factories import batch_doc
from tests.integration.lambdas import FakeContext, deploy, load_function
from tests.integration.test_analyze_handler import NO_HOLD_DOWN, findings, ship

pytestmark = pytest.mark.integration


def receive(queue_url: str, wait_s: int = 0) -> list[dict[str, Any]]:
    """Every message now visible on the queue (deleted as read)."""
    sqs, out = boto3.client("sqs"), list[Any]()
    while got := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s).get(
        "Messages", []
    ):
        for m in got:
            out.append(m)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        wait_s = 0
    return out


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:AnalyzeQueue",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def stack(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalDeployment, SeriesStore]:
    deployment = deploy(moto_server, monkeypatch)
    for rule in ("imbalance", "idle_held"):
        ConfigStore(deployment.tables["ConfigTable"]).put(
            "rule", rule, {"params": NO_HOLD_DOWN}, who="test", expected_version=None
        )
    return deployment, SeriesStore(deployment.tables["SeriesTable"])


def dispatcher(deployment: LocalDeployment, monkeypatch: pytest.MonkeyPatch, **settings: int) -> ModuleType:
    module = load_function("AnalyzeFunction", deployment, monkeypatch)
    for name, value in settings.items():
        monkeypatch.setattr(module, name, value)
    return module


def faulty_cluster(store: SeriesStore) -> None:
    """c1: 8 nodes, 90 s healthy then 150 s with two nodes idle and bob's GPU held idle."""
    now = time.time()
    start = now - now % 30 - 240
    ship(store, start, 90, faulty=False)
    ship(store, start + 90, 150, faulty=True)


def test_shards_are_whole_node_groups_of_at_most_n_nodes() -> None:
    nodes = [NodeInfo("big", f"{g}-{i}", g, 1.0) for g, n in (("c", 2), ("a", 3), ("b", 2)) for i in range(n)]
    tasks = plan({"big": nodes, "small": [NodeInfo("small", "s-0", None, 1.0)]}, 100.0, max_nodes=4)
    assert [(t.cluster, t.now, t.shard, t.shards, [n.node for n in t.nodes]) for t in tasks] == [
        ("big", 100.0, 0, 2, ["a-0", "a-1", "a-2"]),  # a (3) and b (2) would be 5 > 4
        ("big", 100.0, 1, 2, ["b-0", "b-1", "c-0", "c-1"]),
        ("small", 100.0, 0, 1, ["s-0"]),
    ]
    first, second, small = tasks
    assert (first.other_groups, first.other_nodes) == (["b", "c"], ["b-0", "b-1", "c-0", "c-1"])
    assert (second.other_groups, second.other_nodes, small.other_nodes) == ([], [], [])
    # who settles which alert: a group's alert goes with its group; the first shard takes what
    # no other shard claims (the whole cluster, nodes that left it); unsharded, one task takes all
    assert [
        first.owns("a", []),
        second.owns("a", []),
        first.owns(None, ["c-1"]),
        second.owns(None, ["c-1"]),
    ] == [
        True,
        False,
        False,
        True,
    ]
    assert [
        first.owns(None, []),
        second.owns(None, []),
        first.owns("gone", ["x-9"]),
        small.owns("z", []),
    ] == [
        True,
        False,
        True,
        True,
    ]
    assert AnalyzeTask.from_json(first.to_json()) == first


def test_the_dispatcher_sends_one_task_per_cluster_and_shard_with_its_nodes(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, store = stack(moto_server, monkeypatch)
    t0 = time.time() - 60
    layout = {("big", "g1"): 3, ("big", "g2"): 2, ("big", "g3"): 2, ("small", None): 2}
    for (cluster, group), n in layout.items():
        for i in range(n):
            node = f"{group or 'n'}-{i}"
            store.put_batch(Batch(batch_doc(cluster=cluster, node=node, node_group=group, t0=t0, n=10)))
    analyze = dispatcher(deployment, monkeypatch, SHARD_NODES=4, TICKS_PER_MINUTE=1)
    result = analyze.handler(load_event("analyze_schedule"), FakeContext())
    assert result == {"tasks": 3, "clusters": 2, "published": 0, "failures": 0, "heartbeat": None}
    tasks = [AnalyzeTask.from_json(m["Body"]) for m in receive(deployment.queues["AnalyzeQueue"]["url"])]
    got = sorted(
        (t.cluster, t.shard, t.shards, sorted((n.node, n.node_group) for n in t.nodes)) for t in tasks
    )
    assert got == [
        ("big", 0, 2, [("g1-0", "g1"), ("g1-1", "g1"), ("g1-2", "g1")]),
        ("big", 1, 2, [("g2-0", "g2"), ("g2-1", "g2"), ("g3-0", "g3"), ("g3-1", "g3")]),
        ("small", 0, 1, [("n-0", None), ("n-1", None)]),
    ]
    assert len({t.now for t in tasks}) == 1  # one tick, judged at one instant


def test_six_ticks_a_minute_send_each_later_tick_delayed_and_judged_that_much_later(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, store = stack(moto_server, monkeypatch)
    store.put_batch(Batch(batch_doc(cluster="c1", node="node-01", t0=time.time() - 30, n=10)))
    # a 6 s "minute" (as the local stack's time scale would make it): a tick every second
    analyze = dispatcher(deployment, monkeypatch, MINUTE_S=6)
    params = load_template(TEMPLATE_PATH)["Parameters"]["AnalyzeTicksPerMinute"]
    assert analyze.TICKS_PER_MINUTE == params["Default"] == 6  # the template's default reaches it
    assert list(analyze.TICKS_ALLOWED) == params["AllowedValues"]
    assert analyze.handler(load_event("analyze_schedule"), FakeContext())["tasks"] == 6
    queue = deployment.queues["AnalyzeQueue"]["url"]
    counts = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    # the first now, the other five delayed 1 to 5 s
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesDelayed"]) == ("1", "5")
    [first] = [AnalyzeTask.from_json(m["Body"]) for m in receive(queue)]  # the delayed: not yet visible
    # the earliest of what became visible next (a slow poll may see the 2 s one too)
    second = min((AnalyzeTask.from_json(m["Body"]) for m in receive(queue, wait_s=2)), key=lambda t: t.now)
    assert (first.cluster, second.cluster, second.now - first.now) == ("c1", "c1", 1.0)


def test_the_worker_analyses_its_task_and_publishes_each_transition(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, store = stack(moto_server, monkeypatch)
    faulty_cluster(store)
    worker = load_function("AnalyzeWorkerFunction", deployment, monkeypatch)
    analyze = dispatcher(deployment, monkeypatch, TICKS_PER_MINUTE=1)
    analyze.handler(load_event("analyze_schedule"), FakeContext())
    tasks = receive(deployment.queues["AnalyzeQueue"]["url"])
    assert worker.handler(sqs_event(tasks), FakeContext()) == {"batchItemFailures": []}
    published = findings(deployment.queues["FindingsQueue"]["url"])
    assert [(f.rule, f.state, f.cluster) for f in published] == [
        ("idle_held", "firing", "c1"),
        ("imbalance", "firing", "c1"),
    ]
    # the same task again (SQS delivers at least once): its tick is taken, nothing is done twice
    assert worker.handler(sqs_event(tasks), FakeContext()) == {"batchItemFailures": []}
    assert findings(deployment.queues["FindingsQueue"]["url"]) == []


def test_a_task_whose_tick_is_too_old_is_dropped(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment, store = stack(moto_server, monkeypatch)
    faulty_cluster(store)
    worker = load_function("AnalyzeWorkerFunction", deployment, monkeypatch)
    nodes = store.nodes()
    old = AnalyzeTask("c1", time.time() - MAX_TICK_AGE_S - 5, nodes)
    record = {"MessageId": "m1", "ReceiptHandle": "r1", "Body": old.to_json(), "MD5OfBody": ""}
    assert worker.handler(sqs_event([record]), FakeContext()) == {"batchItemFailures": []}
    assert findings(deployment.queues["FindingsQueue"]["url"]) == []
    assert worker.record_handler(worker.SQSRecord({"body": old.to_json(), "messageId": "m1"})) is None


def run_at_once(workers: list[ModuleType], bodies: list[str]) -> list[Any]:
    """Each worker's record handler on its body, all started together (threads: one container each)."""
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    start, results = threading.Barrier(len(workers)), [None] * len(workers)

    def go(i: int) -> None:
        start.wait()
        results[i] = workers[i].record_handler(SQSRecord({"body": bodies[i], "messageId": f"m{i}"}))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_workers_given_one_task_at_once_analyse_it_once(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, store = stack(moto_server, monkeypatch)
    faulty_cluster(store)
    workers = [load_function("AnalyzeWorkerFunction", deployment, monkeypatch) for _ in range(2)]
    task = AnalyzeTask("c1", time.time(), store.nodes()).to_json()
    reports = run_at_once(workers, [task, task])
    done = [r for r in reports if r is not None]
    assert len(done) == 1 and done[0].failures == 0  # the other found the tick taken
    published = findings(deployment.queues["FindingsQueue"]["url"])
    assert [(f.rule, f.state) for f in published] == [("idle_held", "firing"), ("imbalance", "firing")]


class Held(TickClaims):
    """Claims that always hold: which of two ticks claims first is the threads' race, not this test's."""

    def claim(self, task: AnalyzeTask) -> bool:
        return True


def test_two_workers_on_two_ticks_of_one_cluster_at_once_race_only_on_conditional_writes(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, store = stack(moto_server, monkeypatch)
    faulty_cluster(store)
    workers = [load_function("AnalyzeWorkerFunction", deployment, monkeypatch) for _ in range(2)]
    for worker in workers:  # each holds its tick, as tick t and then t + 30 would (claimed in order)
        held = worker.wired()._replace(claims=Held(deployment.tables["StateTable"]))
        monkeypatch.setattr(worker, "wired", lambda held=held: held)
    now, nodes = time.time(), store.nodes()
    reports = run_at_once(
        workers, [AnalyzeTask("c1", now, nodes).to_json(), AnalyzeTask("c1", now + 1, nodes).to_json()]
    )
    # both ran (two ticks); the loser of each alert's first write left it alone: not a failure
    assert [(r.error, r.failed_rules) for r in reports] == [(None, []), (None, [])]
    published = findings(deployment.queues["FindingsQueue"]["url"])
    # each transition decided once; an outbox both saw may be queued twice with the same
    # transition_id, which the alert side tells once per channel
    assert sorted({(f.rule, f.state) for f in published}) == [
        ("idle_held", "firing"),
        ("imbalance", "firing"),
    ]
    assert len({f.transition_id for f in published}) == 2


def test_a_shard_settles_only_its_own_alerts(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment, store = stack(moto_server, monkeypatch)
    faulty_cluster(store)
    worker = load_function("AnalyzeWorkerFunction", deployment, monkeypatch)
    queue = deployment.queues["FindingsQueue"]["url"]
    nodes = {n.node: n for n in store.nodes()}
    now = time.time()
    assert worker.record_handler(
        worker.SQSRecord({"body": AnalyzeTask("c1", now, list(nodes.values())).to_json()})
    )
    assert [(f.rule, f.state, f.nodes) for f in findings(queue)] == [
        ("idle_held", "firing", ["node-05"]),
        ("imbalance", "firing", ["node-03", "node-06"]),
    ]
    healthy = [nodes["node-07"], nodes["node-08"]]
    others = sorted(set(nodes) - {"node-07", "node-08"})
    # the second shard (nodes 7 and 8, both healthy) says nothing of the first shard's alerts
    second = AnalyzeTask("c1", now + 30, healthy, shard=1, shards=2)
    report = worker.record_handler(worker.SQSRecord({"body": second.to_json()}))
    # its window holds its own nodes only: nothing wrong there, and nothing resolved elsewhere
    assert (report.error, report.conditions, report.published, findings(queue)) == (None, 0, [], [])
    # the first shard still holds them firing
    first = AnalyzeTask(
        "c1", now + 31, [nodes[n] for n in others], shard=0, shards=2, other_nodes=["node-07", "node-08"]
    )
    report = worker.record_handler(worker.SQSRecord({"body": first.to_json()}))
    assert (report.error, report.conditions, report.published, findings(queue)) == (None, 2, [], [])
