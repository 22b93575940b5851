"""Charts in alert messages, over moto: the alert function stores each firing message's PNG in
the template's charts bucket, links it with a presigned URL that moto serves, and the chat sink
fetches exactly those bytes; a chart that cannot be stored never holds up the message."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests

from devstack.chat_sink import ChatSink
from devstack.template import LocalDeployment
from gpulse.finding import Finding
from gpulse.notification import single
from gpulse.notify import jandi, slack
from gpulse.notify.alertmanager import PICTURE_ANNOTATION, AlertmanagerWebhook
from gpulse.notify.chart import render_png
from tests.events import load_event
from tests.integration.lambdas import FakeContext, chat_webhooks, check_private_bucket, deploy, load_function

pytestmark = pytest.mark.integration


@pytest.fixture
def alert(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, ChatSink, LocalDeployment]]:
    deployment = deploy(moto_server, monkeypatch)
    with ChatSink(out=None) as sink:
        chat_webhooks(deployment, sink.url)
        module = load_function("AlertFunction", deployment, monkeypatch)
        module.dispatcher.wake_queue = None  # the tests flush by hand
        yield module, sink, deployment


def firing() -> Finding:
    """The sample imbalance finding, with the time axis analyze now gives its evidence."""
    f = Finding.from_json(load_event("alert_sqs")["Records"][0]["body"])
    assert f.evidence is not None
    return replace(f, evidence=replace(f.evidence, start=f.at - 600, end=f.at))


def sqs_event(body: str) -> dict[str, Any]:
    event = load_event("alert_sqs")
    event["Records"] = [{**event["Records"][0], "messageId": "m0", "body": body}]
    return event


def bucket_objects(bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_a_firing_message_carries_its_chart_stored_once_and_served_by_the_presigned_url(
    alert: tuple[ModuleType, ChatSink, LocalDeployment],
) -> None:
    module, sink, deployment = alert
    check_private_bucket(deployment.buckets["ChartsBucket"], rule="ExpireCharts", prefix="charts/", days=8)
    f = firing()
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    n = single(f, route="default")
    messages = sink.messages()
    assert [(m["kind"], m["payload"]) for m in messages] == [
        ("slack", slack.render(n)),
        ("jandi", jandi.render(n)),
    ]  # the text is whole without the picture
    png = render_png(f)
    stored = bucket_objects(deployment.buckets["ChartsBucket"])
    store = module.channels.pictures.store
    slack_raw, jandi_raw = messages[0]["raw"], messages[1]["raw"]
    image = slack_raw["blocks"][-1]
    key = urlsplit(image["image_url"]).path.removeprefix(f"/{store.bucket}/")
    # keyed by the notification (the group's flush) and the alert: charts/<digest>/<fingerprint>.png
    assert key.startswith("charts/") and key.endswith(f"/{f.fingerprint}.png")
    assert stored == {key: png}  # one object for both channels, the chart's exact bytes
    assert slack_raw["blocks"][:-1] == slack.render(n)["blocks"]
    assert image["type"] == "image" and image["alt_text"].startswith("Heatmap: GPU utilisation per node")
    chart = jandi_raw["connectInfo"][-1]
    assert chart["title"] == jandi.CHART_TITLE and chart["description"] == image["alt_text"]
    for url in (image["image_url"], chart["imageUrl"]):
        parts = urlsplit(url)
        assert (parts.hostname, parts.path) == ("127.0.0.1", f"/{store.bucket}/{key}")
        assert "X-Amz-Expires=604800" in parts.query
        got = requests.get(url, timeout=5)
        assert (got.status_code, got.content) == (200, png)
    for m in messages:
        (p,) = m["pictures"]
        assert (p["ok"], p["status"], p["width"], p["height"], p["bytes"]) == (True, 200, 800, 400, len(png))
    # Alertmanager gets the same chart as an annotation on the firing alert
    am = AlertmanagerWebhook(
        "am", "http://127.0.0.1:9", requests.Session(), resend_s=60, pictures=module.channels.pictures
    )
    url = am.render(n)[0]["annotations"][PICTURE_ANNOTATION]
    assert urlsplit(url).path == f"/{store.bucket}/{store.key(n.id, f.fingerprint)}"
    assert requests.get(url, timeout=5).content == png
    # the handler reported its chart (ChartsStored); this one is counted until the next report
    assert module.channels.pictures.take_counts() == (1, 0)


def test_a_retried_send_reuses_the_same_object(alert: tuple[ModuleType, ChatSink, LocalDeployment]) -> None:
    module, sink, deployment = alert
    f = firing()
    # more than the session's retries (no wait between them): the send is retried later
    sink.fail_next("slack", 429, count=4, retry_after=0)
    module.handler(sqs_event(f.to_json()), FakeContext())
    assert [m["kind"] for m in sink.messages()] == ["jandi"]
    module.channels.pictures._made.clear()  # as if a fresh container took the retry over
    store = module.dispatcher.groups
    for key in store.list_keys():
        group = store.load(key)
        store.save(dataclasses.replace(group, lease_until=0.0), group.version, time.time())
    module.handler(load_event("analyze_schedule"), FakeContext())
    jandi_msg, slack_msg = sink.messages()
    assert slack_msg["kind"] == "slack" and slack_msg["pictures"][0]["ok"]
    assert urlsplit(slack_msg["pictures"][0]["url"]).path == urlsplit(jandi_msg["pictures"][0]["url"]).path
    assert list(bucket_objects(deployment.buckets["ChartsBucket"]).values()) == [render_png(f)]


def test_a_chart_that_cannot_be_stored_is_counted_and_the_message_goes_without_it(
    alert: tuple[ModuleType, ChatSink, LocalDeployment], capsys: pytest.CaptureFixture[str]
) -> None:
    module, sink, _ = alert
    module.channels.pictures.store.bucket = "gpulse-no-such-bucket"  # PutObject fails: NoSuchBucket
    f = firing()
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    n = single(f, route="default")
    assert [(m["kind"], m["raw"], m["pictures"]) for m in sink.messages()] == [
        ("slack", slack.render(n), []),
        ("jandi", jandi.render(n), []),
    ]
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [doc["ChartsFailed"] for doc in emitted if "ChartsFailed" in doc] == [[1.0]]  # once for both


def test_a_resolve_that_shows_the_recovery_carries_its_own_chart(
    alert: tuple[ModuleType, ChatSink, LocalDeployment],
) -> None:
    module, sink, deployment = alert
    f = firing()
    assert f.evidence is not None
    # as analyze resolves it (gpulse.analyze.recovery): its picture re-drawn, the fault span ended
    back = [replace(r, values=[*r.values[:-2], 90.0, 90.0], level=90.0) for r in f.evidence.rows]
    resolved = replace(
        f,
        state="resolved",
        at=f.at + 180,
        ended=f.at + 60,
        evidence=replace(f.evidence, rows=back, recovery=True),
    )
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    told = len(sink.messages())  # the firing, with its own chart
    assert module.handler(sqs_event(resolved.to_json()), FakeContext()) == {"batchItemFailures": []}
    groups = module.dispatcher.groups
    for key in groups.list_keys():  # group_interval is over: the resolve is due now
        group = groups.load(key)
        assert group.last_flush_at is not None
        later = dataclasses.replace(group, last_flush_at=group.last_flush_at - 3600)
        groups.save(later, group.version, time.time())
    module.handler(load_event("analyze_schedule"), FakeContext())
    png = render_png(resolved)
    assert png != render_png(f)
    n = single(resolved, route="default")
    messages = sink.messages()[told:]
    assert [(m["kind"], m["payload"]) for m in messages] == [
        ("slack", slack.render(n)),
        ("jandi", jandi.render(n)),
    ]
    assert png in bucket_objects(deployment.buckets["ChartsBucket"]).values()
    image = messages[0]["raw"]["blocks"][-1]
    assert image["type"] == "image" and "after it, the recovery" in image["alt_text"]
    for m in messages:
        (p,) = m["pictures"]
        assert (p["ok"], p["width"], p["height"], p["bytes"]) == (True, 800, 400, len(png))
