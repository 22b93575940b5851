"""One incident, one message, end to end on the local stack: two ranks of a training job stall
with their memory held (scenarios.faults.StalledRanks). Their batches go through the ingest
Lambda (signed, as a shipper sends them), analyze runs every minute of the fleet's clock, its
findings reach the alert Lambda through the findings queue, and the alert Lambda posts to a real
local webhook server (devstack's chat sink). The channels get exactly one firing message, the
imbalance root cause with the idle GPUs and quiet links listed under it, and one resolve.

The default suite runs analyze at the minutes where something changes (before the stall, as it
is seen, fires, holds, ends and resolves: 7 runs); `make incident-e2e` (GPULSE_INCIDENT_E2E=1,
marker `incident`) runs it every minute of the fleet's 19, as the schedule does."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devstack.chat_sink import ChatSink
from scenarios.faults import StalledRanks
from scenarios.fleet import Delivery, Fleet, deliveries, planned
from scenarios.suite import FOREVER, nodes, training
from tests.events import load_event
from tests.factories import signed_request
from tests.integration.lambdas import FakeContext, chat_webhooks, deploy, env_of, load_function
from tests.integration.test_analyze_handler import load_analyze

pytestmark = pytest.mark.integration

GROUP = nodes("train", 5, 2)
STALL = StalledRanks(("train-02", "train-04"), 300.0, 780.0)
FLEET = planned(
    Fleet(
        name="e2e",
        cluster="e2e",
        seed=5,
        duration_s=1140.0,
        nodes=GROUP,
        jobs=(training("pretrain", GROUP, -7200.0, FOREVER),),
        batch_s=60.0,
    ),
    (STALL,),
)
EVERY_MINUTE = tuple(240.0 + 60.0 * i for i in range(16))  # from before the stall to its resolve
# before it; the stall seen (pending), fired (for_s 60); held; gone, inside the hold-down; resolved
SPARSE = (240.0, 360.0, 420.0, 540.0, 840.0, 1080.0, 1140.0)
LONG = os.environ.get("GPULSE_INCIDENT_E2E") == "1"


class Stack:
    """Ingest, analyze and alert from the template, each Lambda's clock the fleet's."""

    def __init__(self, moto: str, monkeypatch: pytest.MonkeyPatch, sink: ChatSink) -> None:
        deployment = deploy(moto, monkeypatch)
        prefix = env_of("IngestFunction", deployment)["GPULSE_NODE_SECRETS_PREFIX"]
        ssm = boto3.client("ssm")
        for n in GROUP:
            ssm.put_parameter(
                Name=f"{prefix}/{FLEET.cluster}/{n.name}", Value=f"{n.name}-secret", Type="SecureString"
            )
        chat_webhooks(deployment, sink.url)
        self.now = FLEET.start
        self.ingest = load_function("IngestFunction", deployment, monkeypatch)
        self.analyze = load_analyze(deployment, monkeypatch)
        self.alert = load_function("AlertFunction", deployment, monkeypatch)
        clock = lambda: self.now  # noqa: E731
        monkeypatch.setattr(self.ingest, "clock", clock)
        monkeypatch.setattr(self.analyze.analyzer, "clock", clock)
        self.alert.dispatcher.clock = clock
        self.alert.dispatcher.wake_queue = None  # flushed by the schedule's tick below
        self.findings = deployment.queues["FindingsQueue"]["url"]

    def post(self, d: Delivery) -> None:
        body, headers = signed_request(d.doc, f"{d.node}-secret".encode(), int(self.now))
        event = load_event("ingest_function_url")
        event["headers"] = {
            k: v
            for k, v in event["headers"].items()
            if not k.startswith("x-gpulse") and k != "content-encoding"
        } | headers
        event["headers"]["content-length"] = str(len(body))
        event["body"] = base64.b64encode(body).decode()
        resp = self.ingest.handler(event, FakeContext())
        assert resp["statusCode"] == 200, resp["body"]

    def minute(self) -> None:
        """Analyze's tick, then the alert Lambda on what it published and on the schedule."""
        self.analyze.handler(load_event("analyze_schedule"), FakeContext())
        sqs = boto3.client("sqs")
        while got := sqs.receive_message(QueueUrl=self.findings, MaxNumberOfMessages=10).get("Messages", []):
            event = load_event("alert_sqs")
            event["Records"] = [
                {**event["Records"][0], "messageId": m["MessageId"], "body": m["Body"]} for m in got
            ]
            assert self.alert.handler(event, FakeContext()) == {"batchItemFailures": []}
            for m in got:
                sqs.delete_message(QueueUrl=self.findings, ReceiptHandle=m["ReceiptHandle"])
        self.alert.handler(load_event("analyze_schedule"), FakeContext())


@pytest.fixture
def sink() -> Iterator[ChatSink]:
    with ChatSink(out=None) as s:
        yield s


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(SPARSE, id="sparse"),
        pytest.param(
            EVERY_MINUTE,
            id="every-minute",
            marks=[
                pytest.mark.incident,
                pytest.mark.skipif(not LONG, reason="long form: run with `make incident-e2e`"),
            ],
        ),
    ],
)
def test_two_stalled_ranks_are_one_message_and_one_resolve(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, sink: ChatSink, schedule: tuple[float, ...]
) -> None:
    stack = Stack(moto_server, monkeypatch, sink)
    runs = [FLEET.start + s for s in schedule]
    for d in deliveries(FLEET, (STALL,)):
        while runs and d.at > runs[0]:
            stack.now = runs.pop(0)
            stack.minute()
        stack.now = d.at
        stack.post(d)
    for at in runs:
        stack.now = at
        stack.minute()
    messages = sink.messages()
    said = [(m["kind"], headline(m)) for m in messages]
    where = "2 of 5 nodes in e2e/train"
    assert [(kind, text.split(" at ")[0]) for kind, text in said] == [
        ("slack", f"🟠 [FIRING] Cross-node imbalance — {where}"),
        ("jandi", f"[FIRING] Cross-node imbalance — {where}"),
        ("slack", f"✅ [RESOLVED] Cross-node imbalance — was: {where}"),
        ("jandi", f"[RESOLVED] Cross-node imbalance — was: {where}"),
    ], said
    for m in messages[:2]:  # the firing, in both formats: its symptoms under it, advice for the cause
        text = json.dumps(m["payload"], ensure_ascii=False)
        assert "5 symptoms of this cause, not told apart:" in text
        for gpu in ("train-02/0", "train-02/1", "train-04/0", "train-04/1"):
            assert f"• idle_held · {gpu} · {gpu.replace('/', ' GPU ')} held by alice" in text
        assert "• network · train-02, train-04 · 2 of 5 nodes in e2e/train at " in text
        assert "ranks of the job are stalled" in text and "notebook kernel" not in text


def headline(message: dict[str, Any]) -> str:
    payload = message["payload"]
    return str(payload["text"] if message["kind"] == "slack" else payload["body"]).split("\n")[0]
