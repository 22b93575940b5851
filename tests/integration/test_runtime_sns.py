"""The local stack's SNS event source (devstack.runtime.run_sns): a CloudWatch alarm published to
the template's HealthTopic in moto reaches the alert function as Lambda's SNS event, and its
message reaches the chat sink once."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

import boto3
import pytest

from devstack.chat_sink import ChatSink
from devstack.runtime import Function, run_sns
from devstack.template import SnsEvent, function_specs, load_template
from tests.events import load_event
from tests.integration.lambdas import ROOT, chat_webhooks, deploy

pytestmark = pytest.mark.integration


def until(check: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Poll `check` until true (or the timeout): the runtime works in its own thread."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_an_alarm_published_to_the_health_topic_reaches_chat(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deploy(moto_server, monkeypatch)
    spec = function_specs(load_template(ROOT / "template.yaml"), deployment)["AlertFunction"]
    [ev] = [e for e in spec.events if isinstance(e, SnsEvent)]
    assert (ev.topic_logical_id, ev.topic_arn) == ("HealthTopic", deployment.topics["HealthTopic"])
    for k in [k for k in os.environ if k.startswith("GPULSE_")]:
        monkeypatch.delenv(k)
    for k, v in spec.environment.items():  # what the runtime's process gets
        monkeypatch.setenv(k, v)
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    stop = threading.Event()
    with ChatSink(out=None) as sink:
        chat_webhooks(deployment, sink.url)
        fn = Function(spec, deployment.region, deployment.account_id)
        worker = threading.Thread(target=run_sns, args=(fn, ev, stop), daemon=True)
        worker.start()
        try:
            assert until(
                lambda: bool(sns.list_subscriptions_by_topic(TopicArn=ev.topic_arn)["Subscriptions"])
            )
            [sub] = sns.list_subscriptions_by_topic(TopicArn=ev.topic_arn)["Subscriptions"]
            assert sub["Protocol"] == "sqs"
            # what CloudWatch publishes: the alarm's JSON as the message, a subject line
            sample = load_event("alert_sns_alarm")["Records"][0]["Sns"]
            sns.publish(TopicArn=ev.topic_arn, Message=sample["Message"], Subject=sample["Subject"])
            messages = sink.wait_for(2)
            assert [m["kind"] for m in messages] == ["slack", "jandi"]
            text = json.dumps(messages[0]["payload"])
            assert "gpulse's analyze function failed 3 times in 5 minutes" in text
            # the notification was taken off the topic's queue: not handed over again
            queue = sqs.get_queue_url(QueueName=sub["Endpoint"].rsplit(":", 1)[1])["QueueUrl"]

            def drained() -> bool:
                attrs = sqs.get_queue_attributes(
                    QueueUrl=queue,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                return set(attrs.values()) == {"0"}

            assert until(drained)
        finally:
            stop.set()
            worker.join(timeout=10)
        assert not worker.is_alive()
        assert len(sink.messages()) == 2
