"""The alert Lambda against moto and a real chat sink on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from devstack.chat_sink import ChatSink
from gpulse.finding import Finding
from gpulse.notify import jandi, slack
from tests.events import load_event
from tests.integration.lambdas import FakeContext, deploy, env_of, load_function

pytestmark = pytest.mark.integration


@pytest.fixture
def alert(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ChatSink, str]]:
    deployment = deploy(moto_server, monkeypatch)
    env = env_of("AlertFunction", deployment)
    with ChatSink(out=None) as sink:
        ssm = boto3.client("ssm")
        ssm.put_parameter(
            Name=env["GPULSE_SLACK_WEBHOOK_PARAM"],
            Value=f"{sink.url}/slack/ops",
            Type="SecureString",
            Overwrite=True,
        )
        ssm.put_parameter(
            Name=env["GPULSE_JANDI_WEBHOOK_PARAM"],
            Value=f"{sink.url}/jandi/ops",
            Type="SecureString",
            Overwrite=True,
        )
        yield (
            load_function("AlertFunction", deployment, monkeypatch),
            sink,
            deployment.queues["FindingsDLQ"]["url"],
        )


def sqs_event(*bodies: str) -> dict[str, Any]:
    event = load_event("alert_sqs")
    template = event["Records"][0]
    event["Records"] = [{**template, "messageId": f"m{i}", "body": b} for i, b in enumerate(bodies)]
    return event


def finding() -> Finding:
    return Finding.from_json(load_event("alert_sqs")["Records"][0]["body"])


def dead_letters(url: str) -> list[dict[str, Any]]:
    got = boto3.client("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
    )
    return got.get("Messages", [])


def test_a_finding_reaches_slack_and_jandi_exactly_once(alert: tuple[ModuleType, ChatSink, str]) -> None:
    module, sink, _ = alert
    f = finding()
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    assert [(m["kind"], m["channel"], m["payload"]) for m in sink.messages()] == [
        ("slack", "ops", slack.render(f)),
        ("jandi", "ops", jandi.render(f)),
    ]
    jandi_headers = {k.lower(): v for k, v in sink.messages()[1]["headers"].items()}
    assert jandi_headers["accept"] == "application/vnd.tosslab.jandi-v2+json"
    # SQS delivers at least once: the same transition again sends nothing
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    assert len(sink.messages()) == 2


def test_a_5xx_that_outlasts_retries_fails_the_record_and_the_retry_skips_done_channels(
    alert: tuple[ModuleType, ChatSink, str],
) -> None:
    module, sink, _ = alert
    f = finding()
    sink.fail_next("jandi", 503, count=4)  # the first try and all three retries
    # the only record failed: Powertools fails the invocation, so SQS returns the whole batch
    with pytest.raises(BatchProcessingError):
        module.handler(sqs_event(f.to_json()), FakeContext())
    assert [m["kind"] for m in sink.messages()] == ["slack"]
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    assert [m["kind"] for m in sink.messages()] == ["slack", "jandi"]


def test_a_4xx_is_not_retried_and_goes_to_the_dlq(alert: tuple[ModuleType, ChatSink, str]) -> None:
    module, sink, dlq = alert
    f = finding()
    sink.fail_next("slack", 404, count=1)
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    assert sink.attempts() == [("slack", "ops", 404), ("jandi", "ops", 200)]
    [dead] = dead_letters(dlq)
    assert json.loads(dead["Body"])["fingerprint"] == f.fingerprint
    assert dead["MessageAttributes"]["channel"]["StringValue"] == "slack-default"
    assert dead["MessageAttributes"]["reason"]["StringValue"].startswith("slack answered 404")
    assert sink.url not in json.dumps(dead)


def test_an_unreadable_message_is_dead_lettered_not_retried(alert: tuple[ModuleType, ChatSink, str]) -> None:
    module, sink, dlq = alert
    assert module.handler(sqs_event("{not json"), FakeContext()) == {"batchItemFailures": []}
    [dead] = dead_letters(dlq)
    assert dead["Body"] == "{not json"
    assert dead["MessageAttributes"]["reason"]["StringValue"].startswith(
        "unreadable finding: finding is not JSON"
    )
    assert sink.messages() == []


def test_only_the_failing_record_of_a_batch_comes_back(alert: tuple[ModuleType, ChatSink, str]) -> None:
    module, sink, _ = alert
    done = finding()
    assert module.handler(sqs_event(done.to_json()), FakeContext()) == {"batchItemFailures": []}
    other = Finding.from_json(done.to_json().replace(done.fingerprint, "f" * 20))
    sink.fail_next("jandi", 503, count=4)
    # m0 is a redelivery (both channels already took it); m1 is new: Slack takes it, Jandi fails every retry
    result = module.handler(sqs_event(done.to_json(), other.to_json()), FakeContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert [m["kind"] for m in sink.messages()] == ["slack", "jandi", "slack"]
