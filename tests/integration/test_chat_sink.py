"""Real HTTP on 127.0.0.1: the webhooks deliver to the chat sink, and the sink behaves like Slack
and Jandi (checks, status codes, Retry-After), records exactly what arrived and prints it."""

from __future__ import annotations

import io
import json
import socket
import traceback
from collections.abc import Iterator

import pytest
import requests

from devstack.chat_sink import ChatSink, render_record
from gpulse.finding import Evidence, EvidenceRow, Finding, with_state
from gpulse.notification import Notification, single
from gpulse.notify import (
    JandiWebhook,
    Pacer,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SlackWebhook,
    jandi,
    make_session,
    slack,
)

pytestmark = pytest.mark.integration

SINCE = 1714566720.0
SECRET_PATH = "T000-B000-XXXXSECRETXXXX"  # stands in for the secret part of a webhook URL


def finding() -> Finding:
    rows = [
        EvidenceRow(
            f"node-0{i}", [80.0, 81.0, 82.0] if i != 3 else [80.0, 20.0, 5.0], 81.0 if i != 3 else 5.0, i == 3
        )
        for i in range(1, 5)
    ]
    return Finding(
        rule="imbalance",
        title="Cross-node imbalance",
        severity="critical",
        state="firing",
        fingerprint="3f9c2a7d5e1b8c4a6d0e",
        cluster="a100-prod",
        since=SINCE,
        at=SINCE + 130,
        summary="1 of 4 nodes at 5% while the group median is 81%",
        action="py-spy dump the idle rank on node-03.",
        node_group="train-pool",
        nodes=["node-03"],
        users=["alice"],
        containers=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
        evidence=Evidence("GPU utilisation per node, last 10 min", "%", rows, 81.0, "group median"),
    )


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def sink(out: io.StringIO) -> Iterator[ChatSink]:
    with ChatSink(out=out, clock=lambda: SINCE + 131) as s:
        yield s


def no_pacing() -> Pacer:
    return Pacer(0.0)


def test_slack_delivery_is_recorded_exactly(sink: ChatSink, out: io.StringIO) -> None:
    channel = SlackWebhook("gpu-alerts", f"{sink.url}/slack/gpu-alerts", make_session(), pacer=no_pacing())
    channel.send(single(finding()))
    [msg] = sink.messages()
    assert {k: msg[k] for k in ("kind", "channel", "payload", "received_at")} == {
        "kind": "slack",
        "channel": "gpu-alerts",
        "payload": slack.render(single(finding())),
        "received_at": SINCE + 131,
    }
    assert msg["headers"]["Content-Type"] == "application/json"
    printed = out.getvalue()
    assert "\x1b[" not in printed  # not a terminal: no colour
    lines = printed.split("\n")
    assert lines[0].startswith("╭─ slack · #gpu-alerts ─") and lines[0].endswith(" 12:34:11 UTC ─")
    assert "│ 🔴 Cross-node imbalance" in lines
    assert "│ Where     cluster a100-prod · group train-pool" in lines
    assert "│ Who       user alice" in lines
    assert "│           container 9f86d081884c" in lines
    assert "│ Since     2024-05-01 12:32:00 UTC (for 2m 10s)" in lines
    assert "│   node-03       █                     5%  ▇▂▁  ◀" in lines
    assert "│   group median  ████████████████▎    81%" in lines
    assert "│ rule imbalance · fingerprint 3f9c2a7d5e1b8c4a6d0e · cluster a100-prod" in lines
    assert max(len(line) for line in lines) <= 100


def test_jandi_delivery_is_recorded_with_its_headers(sink: ChatSink, out: io.StringIO) -> None:
    resolved = with_state(finding(), "resolved", SINCE + 130)
    JandiWebhook("ops", f"{sink.url}/jandi/ops", make_session(), pacer=no_pacing()).send(single(resolved))
    [msg] = sink.messages()
    assert (msg["kind"], msg["channel"], msg["payload"]) == ("jandi", "ops", jandi.render(single(resolved)))
    assert msg["headers"]["Accept"] == "application/vnd.tosslab.jandi-v2+json"
    assert msg["headers"]["Content-Type"] == "application/json"
    lines = out.getvalue().split("\n")
    assert lines[0].startswith("╭─ jandi · #ops ─")
    assert f"│ [RESOLVED] Cross-node imbalance — was: {finding().summary}" in lines
    assert "│ Action    No action needed: resolved." in lines


def test_get_messages_returns_what_was_recorded(sink: ChatSink) -> None:
    SlackWebhook("a", f"{sink.url}/slack/a", make_session(), pacer=no_pacing()).send(single(finding()))
    answer = requests.get(f"{sink.url}/messages", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == sink.messages()


def test_500_twice_then_200_delivers_once(sink: ChatSink) -> None:
    sink.fail_next("slack", 500, count=2)
    SlackWebhook("c", f"{sink.url}/slack/c", make_session(backoff_factor=0.01), pacer=no_pacing()).send(
        single(finding())
    )
    assert [(m["kind"], m["channel"]) for m in sink.messages()] == [("slack", "c")]
    assert sink.attempts() == [("slack", "c", 500), ("slack", "c", 500), ("slack", "c", 200)]


def test_429_with_retry_after_is_honoured(sink: ChatSink) -> None:
    sink.fail_next("jandi", 429, count=1, retry_after=1)
    JandiWebhook("c", f"{sink.url}/jandi/c", make_session(), pacer=no_pacing()).send(single(finding()))
    assert len(sink.messages()) == 1
    assert sink.attempts() == [("jandi", "c", 429), ("jandi", "c", 200)]


def test_a_long_retry_after_is_capped_and_reported_uncapped(sink: ChatSink) -> None:
    sink.fail_next("slack", 429, count=2, retry_after=3600)
    session = make_session(total_retries=1, backoff_factor=0, max_retry_after_s=0)  # cap: no wait at all
    with pytest.raises(RetryableDeliveryError) as info:
        SlackWebhook("c", f"{sink.url}/slack/c", session, pacer=no_pacing()).send(single(finding()))
    assert (info.value.status, info.value.cause, info.value.retry_after) == (429, "rate_limited", 3600.0)
    assert sink.attempts() == [("slack", "c", 429), ("slack", "c", 429)]
    assert sink.messages() == []


def test_5xx_beyond_the_retries_is_retryable(sink: ChatSink) -> None:
    sink.fail_next("slack", 503, count=3)
    channel = SlackWebhook(
        "c",
        f"{sink.url}/slack/{SECRET_PATH}",
        make_session(total_retries=2, backoff_factor=0),
        pacer=no_pacing(),
    )
    with pytest.raises(RetryableDeliveryError) as info:
        channel.send(single(finding()))
    assert (info.value.status, info.value.cause) == (503, "server_error")
    assert sink.messages() == []
    assert len(sink.attempts()) == 3


def test_404_is_permanent_and_not_retried(sink: ChatSink) -> None:
    sink.fail_next("slack", 404, count=1)
    channel = SlackWebhook("gpu-alerts", f"{sink.url}/slack/{SECRET_PATH}", make_session(), pacer=no_pacing())
    with pytest.raises(PermanentDeliveryError) as info:
        channel.send(single(finding()))
    err = info.value
    assert (err.status, err.reason) == (404, "channel_not_found")
    assert sink.attempts() == [("slack", SECRET_PATH, 404)]  # exactly one request
    text = "".join(traceback.format_exception(err))
    assert SECRET_PATH not in text and sink.url not in text


def test_refused_connection_is_retryable_and_hides_the_url() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/slack/{SECRET_PATH}"
    with pytest.raises(RetryableDeliveryError) as info:
        SlackWebhook("c", url, make_session(total_retries=0), pacer=no_pacing()).send(single(finding()))
    err = info.value
    assert (err.status, err.cause) == (None, "connection")
    text = "".join(traceback.format_exception(err)) + repr(err)
    assert SECRET_PATH not in text and "127.0.0.1" not in text


def test_the_sink_checks_what_slack_checks(sink: ChatSink, out: io.StringIO) -> None:
    def post(payload: object) -> requests.Response:
        return requests.post(f"{sink.url}/slack/x", json=payload, timeout=5)

    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x"}}
    too_long = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    for bad in [
        {},
        {"text": ""},
        {"blocks": [section] * 51},
        {"blocks": [too_long]},
        {"blocks": [header]},
        [1],
    ]:
        answer = post(bad)
        assert (answer.status_code, answer.text) == (400, "invalid_payload")
    assert post({"text": "hello"}).text == "ok"
    assert post({"blocks": [section] * 50}).text == "ok"
    assert len(sink.messages()) == 2
    assert "✗ slack #x: refused, 51 blocks > 50" in out.getvalue()


def test_the_sink_checks_what_jandi_checks(sink: ChatSink) -> None:
    url = f"{sink.url}/jandi/ops"
    accept = {"Accept": "application/vnd.tosslab.jandi-v2+json"}
    assert requests.post(url, json={"body": "x"}, timeout=5).status_code == 400  # no Accept
    no_body = requests.post(url, json={"connectColor": "#FFFFFF"}, headers=accept, timeout=5)
    assert (no_body.status_code, no_body.json()) == (400, {"code": 400, "msg": "body is required"})
    as_form = requests.post(url, data={"body": "x"}, headers=accept, timeout=5)
    assert as_form.status_code == 400  # not application/json
    ok = requests.post(url, json={"body": "x"}, headers=accept, timeout=5)
    assert (ok.status_code, ok.json()) == (200, {})
    assert [m["payload"] for m in sink.messages()] == [{"body": "x"}]


def test_control_endpoint_injects_faults(sink: ChatSink) -> None:
    control = {"kind": "slack", "status": 503, "count": 2, "retry_after": 3}
    assert requests.post(f"{sink.url}/_control/fail", json=control, timeout=5).status_code == 200
    first = requests.post(f"{sink.url}/slack/x", json={"text": "a"}, timeout=5)
    assert (first.status_code, first.headers["Retry-After"]) == (503, "3")
    assert requests.post(f"{sink.url}/slack/x", json={"text": "a"}, timeout=5).status_code == 503
    assert requests.post(f"{sink.url}/slack/x", json={"text": "a"}, timeout=5).status_code == 200
    assert len(sink.messages()) == 1
    bad = requests.post(f"{sink.url}/_control/fail", json={"status": 500}, timeout=5)
    assert bad.status_code == 400
    assert requests.post(f"{sink.url}/teams/x", json={"text": "a"}, timeout=5).status_code == 404


def test_messages_is_a_copy(sink: ChatSink) -> None:
    requests.post(f"{sink.url}/slack/x", json={"text": "a"}, timeout=5)
    sink.messages()[0]["payload"]["text"] = "changed"
    assert sink.messages()[0]["payload"] == {"text": "a"}


def test_colour_only_on_a_terminal() -> None:
    record = {
        "kind": "jandi",
        "channel": "ops",
        "payload": jandi.render(single(finding())),
        "received_at": SINCE,
    }
    coloured = render_record(record, colour=True)
    assert "\x1b[38;2;224;30;90m╭─ jandi · #ops" in coloured  # the severity colour of the message
    assert "\x1b[" not in render_record(record, colour=False)
    assert json.loads(json.dumps(record)) == record  # records are plain JSON


def idle(i: int, *, minutes: int = 50) -> Finding:
    node, index = f"node-{i // 8:02d}", i % 8
    return Finding(
        rule="idle_held",
        title="GPU held but idle",
        severity="warning",
        state="firing",
        fingerprint=f"fp{i:018d}",
        cluster="a100-prod",
        since=SINCE + 10 * i,
        at=SINCE + 10 * i + minutes * 60,
        summary=f"{node}/{index} idle at 0% for {minutes}m",
        action=f"Ask user{i} to release {node}/{index}.",
        nodes=[node],
        gpus=[f"{node}/{index}"],
        users=[f"user{i}"],
    )


def held_group(count: int, mentions: list[str]) -> Notification:
    found = [idle(i) for i in range(count)]
    return Notification(
        id="grp-1",
        route="ml-team",
        group={"cluster": "a100-prod", "rule": "idle_held"},
        firing=found,
        new=[found[0].fingerprint],
        mentions=mentions,
    )


def test_a_group_is_delivered_and_printed_one_line_per_alert(sink: ChatSink, out: io.StringIO) -> None:
    n = held_group(3, ["<@U123>"])
    SlackWebhook("gpu-alerts", f"{sink.url}/slack/gpu-alerts", make_session(), pacer=no_pacing()).send(n)
    [msg] = sink.messages()
    assert msg["payload"] == slack.render(n)
    lines = out.getvalue().split("\n")
    body = lines[1 : lines.index("╰" + "─" * 95)]
    assert body == [
        "│ 🟠 3 firing — GPU held but idle",
        "│",
        "│ cluster a100-prod · rule idle_held",
        "│",
        "│ 🟠 NEW node-00/0 idle at 0% for 50m — node-00 GPU 0 · user user0 · for 50m",
        "│ 🟠 node-00/2 idle at 0% for 50m — node-00 GPU 2 · user user2 · for 50m",
        "│ 🟠 node-00/1 idle at 0% for 50m — node-00 GPU 1 · user user1 · for 50m",
        "│",
        "│ cc <@U123>",
    ]


def test_a_long_group_passes_the_sink_checks_and_reads_one_line_each(
    sink: ChatSink, out: io.StringIO
) -> None:
    n = held_group(60, ["<@U123>", "<http://evil|x>"])
    SlackWebhook("a", f"{sink.url}/slack/a", make_session(), pacer=no_pacing()).send(n)
    JandiWebhook("b", f"{sink.url}/jandi/b", make_session(), pacer=no_pacing()).send(n)
    assert [(m["kind"], m["payload"]) for m in sink.messages()] == [
        ("slack", slack.render(n)),
        ("jandi", jandi.render(n)),
    ]
    assert sink.attempts() == [("slack", "a", 200), ("jandi", "b", 200)]
    slack_box, jandi_box = (box.split("\n") for box in out.getvalue().split("╭─")[1:])
    assert slack_box[0].startswith(" slack · #a ") and jandi_box[0].startswith(" jandi · #b ")
    assert len([line for line in slack_box if line.startswith("│ 🟠 ")]) == 1 + slack.MAX_LISTED
    assert slack_box[5] == "│ 🟠 NEW node-00/0 idle at 0% for 50m — node-00 GPU 0 · user user0 · for 50m"
    assert slack_box[6] == "│ 🟠 node-07/3 idle at 0% for 50m — node-07 GPU 3 · user user59 · for 50m"
    assert (
        "│ …and 40 more (8 idle_held on node-04, 8 idle_held on node-03, 8 idle_held on node-02, 8"
        in slack_box
    )
    assert "│ cc <@U123> <http://evil|x>" in slack_box  # the escaped handle shows as its text
    assert len([line for line in jandi_box if line.startswith("│ 🟠 node-")]) == jandi.MAX_LISTED
    assert "│ 🟠 node-00 GPU 0 · NEW — node-00/0 idle at 0% for 50m · user user0 · for 50m" in jandi_box
    assert (
        "│ …and 50 more — 8 idle_held on node-05, 8 idle_held on node-04, 8 idle_held on node-03, 8"
        in jandi_box
    )
    assert max(len(line) for line in slack_box + jandi_box) <= 100


def test_the_sink_checks_block_ids_and_context_blocks(sink: ChatSink, out: io.StringIO) -> None:
    def post(blocks: list[dict[str, object]]) -> requests.Response:
        return requests.post(f"{sink.url}/slack/x", json={"blocks": blocks}, timeout=5)

    def section(block_id: str) -> dict[str, object]:
        return {"type": "section", "block_id": block_id, "text": {"type": "mrkdwn", "text": "x"}}

    def context(*texts: str) -> dict[str, object]:
        return {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in texts]}

    bad_blocks: list[list[dict[str, object]]] = [
        [section("alert-1"), section("alert-1")],
        [section("b" * 256)],
        [section("")],
        [context()],
        [context(*["x"] * 11)],
        [context("x" * 3001)],
        [{"type": "context", "elements": [{"type": "mrkdwn"}]}],
    ]
    for bad in bad_blocks:
        answer = post(bad)
        assert (answer.status_code, answer.text) == (400, "invalid_payload")
    assert post([section("alert-1"), section("alert-2"), context(*["x"] * 10)]).text == "ok"
    assert len(sink.messages()) == 1
    assert "✗ slack #x: refused, block 1: block_id 'alert-1' is not unique" in out.getvalue()


def test_a_post_under_another_sinks_path_is_404_and_not_recorded() -> None:
    # a process still posting to an earlier sink's webhook, whose port this sink now has
    with ChatSink(out=None) as sink:
        root = sink.url.rsplit("/", 1)[0]
        for path in ("/slack/ops", "/0123456789abcdef/slack/ops", f"/{sink.token}x/slack/ops"):
            assert requests.post(root + path, json={"text": "x"}, timeout=5).status_code == 404
        assert requests.get(root + "/messages", timeout=5).status_code == 404
        assert requests.post(f"{sink.url}/slack/ops", json={"text": "x"}, timeout=5).status_code == 200
        assert [m["channel"] for m in sink.messages()] == ["ops"]
