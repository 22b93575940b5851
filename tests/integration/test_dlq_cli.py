"""`gpulse dlq list|show|redrive|purge` against queues deployed from template.yaml into moto,
and the way back: a refused notification, redriven, reaches the one channel that refused it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from devstack.chat_sink import ChatSink
from devstack.template import LocalDeployment
from gpulse.alerting.deliver import DeadLetters
from gpulse.cli import main
from gpulse.finding import Finding
from gpulse.notification import single
from gpulse.notify import jandi, slack
from tests.events import load_event
from tests.integration.lambdas import FakeContext, chat_webhooks, deploy, load_function

pytestmark = pytest.mark.integration
REFUSED = "slack answered 400: invalid_payload"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


@dataclass
class Dlq:
    """The deployed queues and `gpulse … --local=RUN_DIR` pointed at them."""

    deployment: LocalDeployment
    run_dir: Path

    @property
    def url(self) -> str:
        return str(self.deployment.queues["FindingsDLQ"]["url"])

    @property
    def findings_url(self) -> str:
        return str(self.deployment.queues["FindingsQueue"]["url"])

    def gpulse(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main([*argv, f"--local={self.run_dir}"], out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())

    def park(self, body: str, reason: str, channel: str | None) -> None:
        """Dead-letter `body` the way the dispatcher does."""
        DeadLetters(self.url).put(body, reason, channel)

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.gpulse("dlq", "list", "--json").out)
        return rows

    def ids(self) -> list[str]:
        return [row["id"] for row in self.rows()]

    def take(self, url: str) -> list[dict[str, Any]]:
        """Every message of `url`, received (as Lambda's poller would) and deleted."""
        sqs = boto3.client("sqs")
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return [dict(m) for m in got]


def write_outputs(deployment: LocalDeployment, endpoint: str, run_dir: Path) -> None:
    """An outputs.json like the local stack's, for `gpulse --local=run_dir`."""
    outputs = {
        "ConfigTableName": deployment.tables["ConfigTable"],
        "StateTableName": deployment.tables["StateTable"],
        "FindingsQueueUrl": deployment.queues["FindingsQueue"]["url"],
        "FindingsDlqUrl": deployment.queues["FindingsDLQ"]["url"],
    }
    doc = {"endpoint": endpoint, "region": "us-east-1", "outputs": outputs}
    (run_dir / "outputs.json").write_text(json.dumps(doc))


@pytest.fixture
def dlq(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Dlq:
    d = deploy(moto_server, monkeypatch)
    write_outputs(d, moto_server, tmp_path)
    return Dlq(d, tmp_path)


def lambda_record(m: dict[str, Any]) -> dict[str, Any]:
    """An SQS message as the alert function's event source hands it over."""
    record = load_event("alert_sqs")["Records"][0]
    return {
        **record,
        "messageId": m["MessageId"],
        "body": m["Body"],
        "messageAttributes": {
            k: {"stringValue": v["StringValue"], "dataType": v["DataType"]}
            for k, v in m.get("MessageAttributes", {}).items()
        },
    }


def finding() -> Finding:
    return Finding.from_json(load_event("alert_sqs")["Records"][0]["body"])


def test_list_show_and_purge_what_the_dispatcher_parked(dlq: Dlq) -> None:
    assert dlq.gpulse("dlq", "list").lines == ["the dead-letter queue is empty"]
    n = single(finding(), route="default")
    dlq.park(n.to_json(), REFUSED, "default/slack:slack-webhook")
    dlq.park("{not json", "unreadable finding: finding is not JSON", None)

    rows = dlq.rows()
    assert [r["sent_at"] for r in rows] == sorted(r["sent_at"] for r in rows)  # oldest first
    by_channel = {r["channel"]: {k: v for k, v in r.items() if k not in ("sent_at", "id")} for r in rows}
    assert by_channel == {
        "default/slack:slack-webhook": {
            "receives": 1,  # list peeks: each message is received, then made visible again
            "channel": "default/slack:slack-webhook",
            "reason": REFUSED,
            "what": f"notification {n.id}: 1 firing, 0 resolved (imbalance)",
        },
        None: {
            "receives": 1,
            "channel": None,
            "reason": "unreadable finding: finding is not JSON",
            "what": "unreadable (not JSON)",
        },
    }
    refused, garbage = (
        next(r["id"] for r in rows if r["channel"] == c) for c in ("default/slack:slack-webhook", None)
    )
    text = dlq.gpulse("dlq", "list")
    assert text.code == 0
    assert text.lines[0].split() == ["ID", "SENT", "CHANNEL", "REASON", "WHAT"]
    assert [line.split()[0] for line in text.lines[1:]] == [r["id"] for r in rows]
    line = {line.split()[0]: line for line in text.lines[1:]}
    assert line[refused].split()[2:] == (
        f"default/slack:slack-webhook {REFUSED} notification {n.id}: 1 firing, 0 resolved (imbalance)".split()
    )
    unreadable = "- unreadable finding: finding is not JSON unreadable (not JSON)"
    assert " ".join(line[garbage].split()[2:]) == unreadable

    shown = dlq.gpulse("dlq", "show", refused)
    assert shown.code == 0
    assert shown.lines[0] == f"id:       {refused}"
    assert shown.lines[2:7] == [
        "receives: 3",  # two lists before, and this show
        "channel:  default/slack:slack-webhook",
        f"reason:   {REFUSED}",
        f"what:     notification {n.id}: 1 firing, 0 resolved (imbalance)",
        "body:",
    ]
    assert json.loads("\n".join(shown.lines[7:])) == json.loads(n.to_json())
    assert dlq.gpulse("dlq", "show", garbage).lines[-1] == "{not json"
    as_json = json.loads(dlq.gpulse("dlq", "show", refused, "--json").out)
    assert (as_json["reason"], as_json["body"]) == (REFUSED, json.loads(n.to_json()))

    missing = dlq.gpulse("dlq", "show", "no-such-id")
    assert (missing.code, missing.err) == (
        2,
        "error: no message 'no-such-id' in the dead-letter queue (`gpulse dlq list`)\n",
    )

    # purge asks first; what it saw stays visible for the next command
    assert dlq.gpulse("dlq", "purge").lines == ["would delete 2 message(s); pass --yes to delete them"]
    assert sorted(dlq.ids()) == sorted([refused, garbage])
    assert dlq.gpulse("dlq", "purge", "--yes").lines == ["deleted 2 message(s)"]
    assert dlq.gpulse("dlq", "list").lines == ["the dead-letter queue is empty"]


def test_redrive_sends_back_what_is_named_with_its_attributes(dlq: Dlq) -> None:
    n = single(finding(), route="default")
    dlq.park(n.to_json(), REFUSED, "default/slack:slack-webhook")
    dlq.park(finding().to_json(), "parked by hand", None)
    rows = dlq.rows()
    refused, other = (
        next(r["id"] for r in rows if r["reason"] == why) for why in (REFUSED, "parked by hand")
    )

    r = dlq.gpulse("dlq", "redrive")
    assert (r.code, r.err) == (
        2,
        "error: name the messages to redrive (IDs from `gpulse dlq list`), or pass --all\n",
    )
    r = dlq.gpulse("dlq", "redrive", refused, "no-such-id")
    assert (r.code, r.out, r.err) == (
        2,
        "",
        "error: not in the dead-letter queue: no-such-id (`gpulse dlq list`)\n",
    )
    assert sorted(dlq.ids()) == sorted([refused, other])  # a mistyped ID moved nothing

    r = dlq.gpulse("dlq", "redrive", refused)
    assert (r.code, r.lines) == (0, [f"redriven {refused}", "1 message(s) sent back to the findings queue"])
    assert dlq.ids() == [other]
    [back] = dlq.take(dlq.findings_url)
    assert back["Body"] == n.to_json()
    assert {k: v["StringValue"] for k, v in back["MessageAttributes"].items()} == {
        "channel": "default/slack:slack-webhook",
        "reason": REFUSED,
    }

    r = dlq.gpulse("dlq", "redrive", "--all")
    assert r.lines == [f"redriven {other}", "1 message(s) sent back to the findings queue"]
    assert dlq.ids() == []
    [back] = dlq.take(dlq.findings_url)
    assert back["Body"] == finding().to_json()


@pytest.fixture
def alert(dlq: Dlq, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ChatSink]]:
    with ChatSink(out=None) as sink:
        chat_webhooks(dlq.deployment, sink.url)
        module = load_function("AlertFunction", dlq.deployment, monkeypatch)
        module.dispatcher.wake_queue = None  # no self-addressed wake-ups: nothing else in the queue
        yield module, sink


def test_a_redriven_notification_reaches_the_channel_that_refused_it_once(
    dlq: Dlq, alert: tuple[ModuleType, ChatSink]
) -> None:
    module, sink = alert
    f = finding()
    sink.fail_next("slack", 400)  # Slack refuses it (invalid_payload); Jandi takes it
    event = load_event("alert_sqs")
    assert module.handler(event, FakeContext()) == {"batchItemFailures": []}
    assert sink.attempts() == [("slack", "ops", 400), ("jandi", "ops", 200)]
    [parked] = dlq.rows()
    channel = parked["channel"]
    assert channel.startswith("default/slack:") and parked["reason"] == REFUSED

    # fixed on Slack's side: the operator sends it back, the alert function takes it from the queue
    assert dlq.gpulse("dlq", "redrive", parked["id"]).code == 0
    [back] = dlq.take(dlq.findings_url)
    redriven = {"Records": [lambda_record(back)]}
    assert module.handler(redriven, FakeContext()) == {"batchItemFailures": []}
    n = single(f, route="default")
    assert [(m["kind"], m["payload"]) for m in sink.messages()] == [
        ("jandi", jandi.render(n)),
        ("slack", slack.render(n)),  # Slack only: Jandi had it
    ]
    # SQS delivers at least once: the same redriven copy again, and a tick, send nothing
    assert module.handler(redriven, FakeContext()) == {"batchItemFailures": []}
    module.handler(load_event("analyze_schedule"), FakeContext())
    assert len(sink.messages()) == 2
    assert dlq.ids() == []


def test_a_redriven_notification_refused_again_is_parked_again(
    dlq: Dlq, alert: tuple[ModuleType, ChatSink]
) -> None:
    module, sink = alert
    sink.fail_next("slack", 400)
    module.handler(load_event("alert_sqs"), FakeContext())
    [first] = dlq.rows()
    dlq.gpulse("dlq", "redrive", "--all")
    sink.fail_next("slack", 410)  # the channel was archived meanwhile
    [back] = dlq.take(dlq.findings_url)
    assert module.handler({"Records": [lambda_record(back)]}, FakeContext()) == {"batchItemFailures": []}
    [again] = dlq.rows()
    assert (again["channel"], again["what"]) == (first["channel"], first["what"])
    assert again["reason"] == "slack answered 410: channel_is_archived"
    assert [m["kind"] for m in sink.messages()] == ["jandi"]


def test_a_redriven_notification_for_a_channel_no_route_has_is_parked_with_why(
    dlq: Dlq, alert: tuple[ModuleType, ChatSink]
) -> None:
    module, sink = alert
    n = single(finding(), route="default")
    dlq.park(n.to_json(), REFUSED, "default/slack:gone")
    dlq.gpulse("dlq", "redrive", "--all")
    [back] = dlq.take(dlq.findings_url)
    assert module.handler({"Records": [lambda_record(back)]}, FakeContext()) == {"batchItemFailures": []}
    [parked] = dlq.rows()
    assert parked["reason"] == "redriven notification: route default has no channel default/slack:gone"
    assert sink.attempts() == []
