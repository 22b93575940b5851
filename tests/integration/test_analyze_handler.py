"""The analyze Lambdas against moto: chunks in, exact findings out on the queue, once each.

Analyze is a dispatcher on the schedule and a worker fed from the analyze queue
(gpulse.analyze.fanout); `AnalyzeTick` runs one tick of both, as AWS would.
"""

from __future__ import annotations

import json
import time
from types import ModuleType
from typing import Any

import boto3
import pytest

from devstack.template import LocalDeployment
from gpulse.config.store import ConfigStore
from gpulse.finding import Finding
from gpulse.store import SeriesStore
from gpulse.wire.batch import Batch
from tests.events import load_event
from tests.factories import GIB, batch_doc
from tests.integration.lambdas import FakeContext, deploy, load_function

pytestmark = pytest.mark.integration
NODES = [f"node-{i:02d}" for i in range(1, 9)]
GPUS = 4
BOB = {"user": "bob", "container": "c0ffee" * 10 + "abcd", "name": "jupyter", "pid": 4242}


def ship(store: SeriesStore, start: float, seconds: int, *, faulty: bool) -> None:
    """`seconds` of 1 Hz samples from 8 nodes, in 30-sample batches; with `faulty`, node-03 and
    node-06 idle with their memory freed, and bob holding node-05 GPU 3 idle."""
    for t0 in range(int(start), int(start) + seconds, 30):
        for node in NODES:
            idle = faulty and node in ("node-03", "node-06")
            util = [[1.0 if idle else 90.0] * 30 for _ in range(GPUS)]
            mem = [[0.5 * GIB if idle else 60 * GIB] * 30 for _ in range(GPUS)]
            procs: list[dict[str, Any]] = []
            if faulty and node == "node-05":
                util[3], mem[3] = [0.0] * 30, [22 * GIB] * 30
                procs = [
                    {**BOB, "gpu_index": 3, "mem_used": 22 * GIB, "first_seen": t0, "last_seen": t0 + 29}
                ]
            store.put_batch(
                Batch(batch_doc(node=node, t0=t0, n=30, gpus=GPUS, util=util, mem_used=mem, processes=procs))
            )


def findings(queue_url: str) -> list[Finding]:
    sqs = boto3.client("sqs")
    out: list[Finding] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not got:
            return sorted(out, key=lambda f: (f.rule, f.state))
        for m in got:
            out.append(Finding.from_json(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


class AnalyzeTick:
    """The dispatcher and the worker from the template, one tick at a time: the dispatcher's
    handler on the schedule event, then the worker's record handler on every task it enqueued
    (one tick a minute here: the delayed second tick has tests of its own in
    test_analyze_fanout.py). Both share the dispatcher's analyzer, so a test that moves its clock
    moves the worker's, as one container's would."""

    def __init__(self, dispatcher: ModuleType, worker: ModuleType, queue_url: str) -> None:
        self.dispatcher, self.worker, self.queue_url = dispatcher, worker, queue_url
        setattr(dispatcher, "TICKS_PER_MINUTE", 1)  # noqa: B010 (a module's global, set as a test would)
        shared = worker.Wiring(analyzer=dispatcher.analyzer, claims=worker.claims, crash=dispatcher.crash)
        setattr(worker, "wired", lambda: shared)  # noqa: B010

    @property
    def analyzer(self) -> Any:
        return self.dispatcher.analyzer

    @property
    def heartbeat(self) -> Any:
        return self.dispatcher.heartbeat

    def handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

        sent: dict[str, Any] = self.dispatcher.handler(event, context)
        sqs = boto3.client("sqs")
        reports = []
        while got := sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for m in got:
                reports.append(
                    self.worker.record_handler(SQSRecord({"body": m["Body"], "messageId": m["MessageId"]}))
                )
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        done = [r for r in reports if r is not None]
        return {
            "clusters": sent["clusters"],
            "published": sent["published"] + sum(len(r.published) for r in done),
            "failures": sent["failures"] + sum(r.failures for r in done),
            "heartbeat": sent["heartbeat"],
        }


def load_analyze(deployment: LocalDeployment, monkeypatch: pytest.MonkeyPatch) -> AnalyzeTick:
    """Both analyze functions loaded with the template's environment (the worker first: loading
    sets the environment of the last one loaded, the dispatcher's)."""
    worker = load_function("AnalyzeWorkerFunction", deployment, monkeypatch)
    dispatcher = load_function("AnalyzeFunction", deployment, monkeypatch)
    return AnalyzeTick(dispatcher, worker, deployment.queues["AnalyzeQueue"]["url"])


def invoke(analyze: AnalyzeTick) -> dict[str, Any]:
    return analyze.handler(load_event("analyze_schedule"), FakeContext())


# for_s 60 and no hold-down before resolve (keep_firing_for_s): these recoveries are a minute long
NO_HOLD_DOWN = {"for_s": 60, "keep_firing_for_s": 0}


def analyze_stack(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[LocalDeployment, SeriesStore, str, AnalyzeTick]:
    """The template's tables and queues on moto, imbalance and idle_held at `for_s` 60 (no
    hold-down), and the analyze function loaded: (deployment, series store, findings queue URL,
    module)."""
    deployment = deploy(moto_server, monkeypatch)
    store = SeriesStore(deployment.tables["SeriesTable"])
    queue = deployment.queues["FindingsQueue"]["url"]
    for rule in ("imbalance", "idle_held"):
        ConfigStore(deployment.tables["ConfigTable"]).put(
            "rule", rule, {"params": NO_HOLD_DOWN}, who="test", expected_version=None
        )
    analyze = load_analyze(deployment, monkeypatch)
    return deployment, store, queue, analyze


def test_imbalance_and_idle_held_fire_once_then_resolve(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, store, queue, analyze = analyze_stack(moto_server, monkeypatch)

    now = time.time()
    start = now - now % 30 - 240  # 240 s: 90 s healthy, then 150 s of faults
    ship(store, start, 90, faulty=False)
    ship(store, start + 90, 150, faulty=True)

    assert invoke(analyze) == {"clusters": 1, "published": 2, "failures": 0, "heartbeat": None}
    idle, imbalance = findings(queue)  # sorted by rule name
    assert (imbalance.rule, imbalance.state, imbalance.cluster) == ("imbalance", "firing", "c1")
    assert imbalance.nodes == ["node-03", "node-06"]
    assert imbalance.since == start + 90
    assert imbalance.summary.startswith(
        "2 of 8 nodes in c1 at 1 % GPU utilisation while their peers run at 90 %"
    )
    assert [r.label for r in imbalance.evidence.rows if r.flagged] == ["node-03", "node-06"]  # type: ignore[union-attr]
    assert (idle.rule, idle.state, idle.gpus, idle.users, idle.containers) == (
        "idle_held",
        "firing",
        ["node-05/3"],
        ["bob"],
        [BOB["container"]],
    )
    assert idle.since == start + 90

    # still firing: nothing new to say
    assert invoke(analyze) == {"clusters": 1, "published": 0, "failures": 0, "heartbeat": None}
    assert findings(queue) == []

    ship(store, start + 240, 60, faulty=False)  # recovery
    # analyze's clock moves past it (a chunk whose samples lie in its future waits for that time)
    monkeypatch.setattr(analyze.analyzer, "clock", lambda: start + 300 + 5)
    assert invoke(analyze) == {"clusters": 1, "published": 2, "failures": 0, "heartbeat": None}
    resolved = findings(queue)
    assert sorted((f.rule, f.state, f.fingerprint, f.since) for f in resolved) == sorted(
        [
            ("idle_held", "resolved", idle.fingerprint, idle.since),
            ("imbalance", "resolved", imbalance.fingerprint, imbalance.since),
        ]
    )
    # each resolve shows the recovery, drawn from the window of the run that resolved it
    assert [(f.ended, f.evidence and f.evidence.recovery) for f in resolved] == [(start + 235, True)] * 2
    ev = next(f for f in resolved if f.rule == "imbalance").evidence
    assert ev is not None and (ev.start, ev.end, ev.reference) == (start - 305, start + 295, 90.0)
    assert [(r.label, r.level, r.flagged) for r in ev.rows] == [
        (n, 90.0, n in ("node-03", "node-06")) for n in NODES
    ]
    assert ev.rows[2].values[15:] == [90.0] * 4 + [67.8] + [1.0] * 7 + [67.8, 90.0, 90.0]  # node-03 is back
    state_items = boto3.client("dynamodb").scan(TableName=deployment.tables["StateTable"])["Items"]
    assert [
        json.loads(i["finding"]["S"])["rule"] for i in state_items if i["pk"]["S"].startswith("alert#")
    ] == []


def test_most_of_the_cluster_going_silent_is_one_alert_and_holds_the_ones_under_it(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, store, queue, analyze = analyze_stack(moto_server, monkeypatch)
    now = time.time()
    start = now - now % 30 - 240
    ship(store, start, 90, faulty=False)
    ship(store, start + 90, 150, faulty=True)
    assert invoke(analyze) == {"clusters": 1, "published": 2, "failures": 0, "heartbeat": None}
    idle, imbalance = findings(queue)

    # node-03 … node-08 stop at start + 240 (the site's uplink); node-01 and node-02 go on
    quiet_from = start + 240
    for t0 in range(int(quiet_from), int(quiet_from) + 300, 30):
        for node in NODES[:2]:
            store.put_batch(Batch(batch_doc(node=node, t0=t0, n=30, gpus=GPUS, util=[[90.0] * 30] * GPUS)))
    monkeypatch.setattr(analyze.analyzer, "clock", lambda: quiet_from + 300 + 5)  # silence: wall clock
    assert invoke(analyze) == {"clusters": 1, "published": 1, "failures": 0, "heartbeat": None}
    [silent] = findings(queue)
    assert (silent.rule, silent.state, silent.nodes) == ("silent_node", "firing", NODES[2:])
    assert silent.summary.startswith("6 of 8 nodes of c1 have sent nothing for 5m 6s or more")
    # the six per-node silences are muted; idle_held on node-05 and the imbalance on node-03/06
    # were announced firing and are held (no resolve while their nodes cannot be seen)
    state = {
        json.loads(i["finding"]["S"])["fingerprint"]: i["state"]["S"]
        for i in boto3.client("dynamodb").scan(TableName=deployment.tables["StateTable"])["Items"]
        if i["pk"]["S"].startswith("alert#")
    }
    assert state == {
        idle.fingerprint: "firing",
        imbalance.fingerprint: "firing",
        silent.fingerprint: "firing",
    }

    # the site comes back, every node healthy: the cluster alert and the held ones resolve, once each
    back = quiet_from + 300
    ship(store, back, 60, faulty=False)
    monkeypatch.setattr(analyze.analyzer, "clock", lambda: back + 60 + 5)
    assert invoke(analyze) == {"clusters": 1, "published": 3, "failures": 0, "heartbeat": None}
    assert sorted((f.rule, f.state, f.fingerprint) for f in findings(queue)) == [
        ("idle_held", "resolved", idle.fingerprint),
        ("imbalance", "resolved", imbalance.fingerprint),
        ("silent_node", "resolved", silent.fingerprint),
    ]
