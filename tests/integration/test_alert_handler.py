"""The alert Lambda against moto and a real chat sink on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from devstack.chat_sink import ChatSink
from gpulse.alerting.dispatch import Flushed
from gpulse.errors import StoreError
from gpulse.finding import Finding
from gpulse.notification import single
from gpulse.notify import jandi, slack
from tests.events import load_event
from tests.integration.lambdas import FakeContext, chat_webhooks, deploy, load_function

pytestmark = pytest.mark.integration


@pytest.fixture
def alert(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ChatSink, str]]:
    deployment = deploy(moto_server, monkeypatch)
    with ChatSink(out=None) as sink:
        chat_webhooks(deployment, sink.url)
        module = load_function("AlertFunction", deployment, monkeypatch)
        module.dispatcher.wake_queue = None  # no self-addressed wake-ups: the tests flush by hand
        yield module, sink, deployment.queues["FindingsDLQ"]["url"]


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
    return [dict(m) for m in got.get("Messages", [])]


def expire_leases(module: ModuleType) -> None:
    """Let a retry come due now instead of in RETRY_MIN_S (the tests do not sleep)."""
    store = module.dispatcher.groups
    for key in store.list_keys():
        group = store.load(key)
        store.save(dataclasses.replace(group, lease_until=0.0), group.version, time.time())


def test_a_finding_reaches_slack_and_jandi_exactly_once(alert: tuple[ModuleType, ChatSink, str]) -> None:
    module, sink, _ = alert
    f = finding()
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    n = single(f, route="default")
    assert [(m["kind"], m["channel"], m["payload"]) for m in sink.messages()] == [
        ("slack", "ops", slack.render(n)),
        ("jandi", "ops", jandi.render(n)),
    ]
    jandi_headers = {k.lower(): v for k, v in sink.messages()[1]["headers"].items()}
    assert jandi_headers["accept"] == "application/vnd.tosslab.jandi-v2+json"
    # SQS delivers at least once: the same transition again sends nothing
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    assert len(sink.messages()) == 2


def test_429_and_500_for_a_while_every_message_arrives_once(alert: tuple[ModuleType, ChatSink, str]) -> None:
    module, sink, _ = alert
    f = finding()
    # Slack rate-limits (Retry-After 1) then fails, more times than the session retries in one go
    sink.fail_next("slack", 429, count=2, retry_after=1)
    sink.fail_next("slack", 500, count=3)
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    assert [m["kind"] for m in sink.messages()] == ["jandi"]  # Jandi was not held up by Slack
    for _ in range(3):  # what the wake-up or the minute tick does once the retry is due
        expire_leases(module)
        module.handler(load_event("analyze_schedule"), FakeContext())
    assert sorted(m["kind"] for m in sink.messages()) == ["jandi", "slack"]
    assert [a[2] for a in sink.attempts() if a[0] == "slack"] == [429, 429, 500, 500, 500, 200]
    # a redelivery of the finding, and more ticks, send nothing again
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    module.handler(load_event("analyze_schedule"), FakeContext())
    assert len(sink.messages()) == 2


def test_two_invocations_at_once_announce_each_transition_once(
    alert: tuple[ModuleType, ChatSink, str],
) -> None:
    module, sink, _ = alert
    firing = finding()
    other = Finding.from_json(firing.to_json().replace(firing.fingerprint, "f" * 20))

    def twice_at_once(event: dict[str, Any]) -> list[Any]:
        results: list[Any] = []
        start = threading.Barrier(2)

        def invoke() -> None:
            start.wait()
            results.append(module.handler(event, FakeContext()))

        threads = [threading.Thread(target=invoke) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    results = twice_at_once(sqs_event(firing.to_json(), other.to_json()))
    assert results == [{"batchItemFailures": []}] * 2
    # one group (same cluster and rule): its first flush went out once per channel, whoever won
    assert sorted(m["kind"] for m in sink.messages()) == ["jandi", "slack"]
    # an alert that joined after that flush waits group_interval; let that pass, tick twice at once
    store = module.dispatcher.groups
    [key] = store.list_keys()
    group = store.load(key)
    store.save(dataclasses.replace(group, last_flush_at=time.time() - 301), group.version, time.time())
    twice_at_once(load_event("analyze_schedule"))
    group = store.load(key)
    assert {fp: m.told for fp, m in group.members.items()} == {
        firing.fingerprint: True,
        other.fingerprint: True,
    }
    assert group.outbox is None
    # each channel got one message per flush that had news: two if the first flush held one alert
    per_kind = len(sink.messages()) // 2
    assert sorted(m["kind"] for m in sink.messages()) == ["jandi"] * per_kind + ["slack"] * per_kind
    assert group.seq == per_kind


def test_a_group_the_store_fails_on_does_not_hold_back_the_tick(
    alert: tuple[ModuleType, ChatSink, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, sink, _ = alert
    module.handler(sqs_event(finding().to_json()), FakeContext())
    dispatcher = module.dispatcher
    [key] = dispatcher.groups.list_keys()
    flush = dispatcher.flush

    def throttled(k: str) -> Flushed:
        if k == "broken":
            raise StoreError("DynamoDB ProvisionedThroughputExceededException")
        return flush(k)

    monkeypatch.setattr(dispatcher, "flush", throttled)
    monkeypatch.setattr(dispatcher.groups, "list_keys", lambda: ["broken", key])
    assert dispatcher.tick() == [
        Flushed("broken", skipped="store error: DynamoDB ProvisionedThroughputExceededException"),
        Flushed(key, skipped="not due"),
    ]
    assert len(sink.messages()) == 2  # the first flush only: nothing sent twice


def test_a_4xx_is_not_retried_and_goes_to_the_dlq(alert: tuple[ModuleType, ChatSink, str]) -> None:
    module, sink, dlq = alert
    f = finding()
    sink.fail_next("slack", 404, count=1)
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    assert sink.attempts() == [("slack", "ops", 404), ("jandi", "ops", 200)]
    [dead] = dead_letters(dlq)
    assert json.loads(dead["Body"])["firing"][0]["fingerprint"] == f.fingerprint
    assert dead["MessageAttributes"]["channel"]["StringValue"] == "default/slack:slack"
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


def test_a_finding_with_no_route_fails_its_record_only(
    alert: tuple[ModuleType, ChatSink, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, sink, _ = alert
    monkeypatch.setattr(module.config, "routes", list)  # no route in the table, no webhook in SSM
    result = module.handler(sqs_event("{not json", finding().to_json()), FakeContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert sink.messages() == []
