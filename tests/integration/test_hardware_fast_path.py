"""An XID reaches the findings queue when ingest answers, and is announced once across paths."""

from __future__ import annotations

import base64
import time

import boto3
import pytest

from gpulse.finding import Finding
from tests.events import load_event
from tests.factories import batch_doc, signed_request
from tests.integration.lambdas import FakeContext, deploy, env_of, load_function
from tests.integration.test_analyze_handler import load_analyze

pytestmark = pytest.mark.integration
SECRET = "node-01-secret"


def drain(queue_url: str) -> list[Finding]:
    sqs = boto3.client("sqs")
    out = []
    while got := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for m in got:
            out.append(Finding.from_json(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return out


def test_xid_is_announced_at_ingest_once_even_after_replay_and_analyze(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deploy(moto_server, monkeypatch)
    prefix = env_of("IngestFunction", deployment)["GPULSE_NODE_SECRETS_PREFIX"]
    boto3.client("ssm").put_parameter(
        Name=f"{prefix}/c1/node-01", Value=SECRET, Type="SecureString", Overwrite=True
    )
    ingest = load_function("IngestFunction", deployment, monkeypatch)
    queue = deployment.queues["FindingsQueue"]["url"]

    t0 = time.time() - 30
    doc = batch_doc(t0=t0, n=20)
    doc["events"] = [
        {"ts": t0 + 12.25, "type": "xid", "gpu_index": 1, "code": 79, "message": "fallen off the bus"}
    ]
    body, headers = signed_request(doc, SECRET.encode(), int(time.time()))
    event = load_event("ingest_function_url")
    event["headers"] = headers
    event["body"] = base64.b64encode(body).decode()

    assert ingest.handler(event, FakeContext())["statusCode"] == 200
    [finding] = drain(queue)
    assert (finding.rule, finding.state, finding.severity, finding.gpus, finding.since) == (
        "hardware_errors",
        "firing",
        "critical",
        ["node-01/1"],
        t0 + 12.25,
    )
    assert finding.summary == "node-01 GPU 1 reported XID 79: fallen off the bus"

    assert ingest.handler(event, FakeContext())["statusCode"] == 200  # a replay
    analyze = load_analyze(deployment, monkeypatch)
    analyze.handler(load_event("analyze_schedule"), FakeContext())  # the slow path sees it too
    assert drain(queue) == []
