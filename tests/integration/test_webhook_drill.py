"""The webhook drill, through the real alert handler to the chat sink on 127.0.0.1: a webhook that
answers 429 (Retry-After 1), then 500, then 200 gets the message exactly once; a permanent 400
is dead-lettered once, with the reason `gpulse dlq show` prints, and never retried."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from devstack.chat_sink import ChatSink
from gpulse.finding import Finding
from gpulse.notification import single
from gpulse.notify import jandi, slack
from tests.events import load_event
from tests.integration.lambdas import FakeContext, chat_webhooks, deploy, load_function
from tests.integration.test_alert_handler import expire_leases, sqs_event
from tests.integration.test_dlq_cli import Dlq, write_outputs

pytestmark = pytest.mark.integration
RENDER = {"slack": slack.render, "jandi": jandi.render}
OTHER = {"slack": "jandi", "jandi": "slack"}


@pytest.fixture
def drill(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[ModuleType, ChatSink, Dlq]]:
    deployment = deploy(moto_server, monkeypatch)
    write_outputs(deployment, moto_server, tmp_path)
    with ChatSink(out=None) as sink:
        chat_webhooks(deployment, sink.url)
        module = load_function("AlertFunction", deployment, monkeypatch)
        module.dispatcher.wake_queue = None  # the drill drives retries itself: no wake-ups queued
        yield module, sink, Dlq(deployment, tmp_path)


def finding() -> Finding:
    return Finding.from_json(load_event("alert_sqs")["Records"][0]["body"])


def settle(module: ModuleType) -> None:
    """What SQS and the minute tick do afterwards: the finding delivered again, retries come due."""
    assert module.handler(sqs_event(finding().to_json()), FakeContext()) == {"batchItemFailures": []}
    for _ in range(2):
        expire_leases(module)
        module.handler(load_event("analyze_schedule"), FakeContext())


@pytest.mark.parametrize("kind", ["slack", "jandi"])
def test_429_then_500_then_200_delivers_exactly_once(
    kind: str, drill: tuple[ModuleType, ChatSink, Dlq]
) -> None:
    module, sink, dlq = drill
    sink.fail_next(kind, 429, retry_after=1)
    sink.fail_next(kind, 500)
    assert module.handler(sqs_event(finding().to_json()), FakeContext()) == {"batchItemFailures": []}
    # the session's retries (Retry-After honoured) carried it within the one invocation
    assert [a[2] for a in sink.attempts() if a[0] == kind] == [429, 500, 200]
    settle(module)
    n = single(finding(), route="default")
    assert sorted((m["kind"], json.dumps(m["payload"])) for m in sink.messages()) == sorted(
        (k, json.dumps(RENDER[k](n))) for k in ("slack", "jandi")
    )
    assert [a for a in sink.attempts() if a[0] == kind][-1] == (kind, "ops", 200)
    assert len(sink.attempts()) == 4  # 3 to the drilled webhook, 1 to the other: nothing repeated
    assert dlq.rows() == []


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("slack", "slack answered 400: invalid_payload"),
        ("jandi", 'jandi answered 400: {"code": 400, "msg": '),
    ],
)
def test_a_permanent_400_is_dead_lettered_once_with_its_reason(
    kind: str, reason: str, drill: tuple[ModuleType, ChatSink, Dlq]
) -> None:
    module, sink, dlq = drill
    sink.fail_next(kind, 400)
    assert module.handler(sqs_event(finding().to_json()), FakeContext()) == {"batchItemFailures": []}
    settle(module)
    # one request to the refusing webhook: a 4xx is never retried, by the session or a tick
    assert sink.attempts() == sorted(
        [(kind, "ops", 400), (OTHER[kind], "ops", 200)], key=lambda a: a[0] != "slack"
    )
    assert [m["kind"] for m in sink.messages()] == [OTHER[kind]]
    [parked] = dlq.rows()
    assert parked["channel"] == f"default/{kind}:{kind}"
    assert parked["reason"].startswith(reason)
    shown = dlq.gpulse("dlq", "show", parked["id"])
    assert shown.code == 0
    assert f"reason:   {parked['reason']}" in shown.lines
    body = json.loads("\n".join(shown.lines[shown.lines.index("body:") + 1 :]))
    assert (body["route"], body["firing"], body["resolved"]) == (
        "default",
        [json.loads(finding().to_json())],
        [],
    )
    assert sink.url not in shown.out  # the webhook's URL (its secret) is not in what was parked
