"""Chart links on gpulse's own API, over moto: the alert function links each chart to
GET /v1/charts/{key+} signed with the key in SSM, the charts function (the real handler, served
over real HTTP on 127.0.0.1 by the local runtime's API server) answers exactly the stored PNG,
and refuses, with a 4xx and a message, an expired, tampered or out-of-prefix link."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from devstack.chat_sink import ChatSink
from devstack.runtime import Function, http_api_event, serve_http_api
from devstack.stack import free_port
from devstack.template import LocalDeployment, function_specs, load_template
from gpulse.finding import Finding
from gpulse.notification import single
from gpulse.notify import slack
from gpulse.notify.chart import render_png
from gpulse.notify.links import signature
from tests.events import load_event
from tests.integration.lambdas import ROOT, FakeContext, chat_webhooks, deploy, env_of, load_function

pytestmark = pytest.mark.integration
STAGE = "links"  # its own SSM paths: the other chart tests run without a link key


@dataclass
class Stack:
    charts: Any  # the charts function's module (its clock is set by the tests)
    deployment: LocalDeployment
    api: str  # http://127.0.0.1:<port>, the charts function's routes
    key: bytes
    reads: list[str]  # the S3 keys the charts function asked for
    monkeypatch: pytest.MonkeyPatch


class Served:
    """The charts module behind the runtime's HTTP API server (its `Function.invoke`)."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module

    def invoke(self, event: dict[str, Any]) -> Any:
        return self.module.handler(event, FakeContext())


@pytest.fixture(scope="module")
def served(moto_server: str) -> Iterator[Stack]:
    """One deployment and one charts server for the module (setting them up is the slow part)."""
    with pytest.MonkeyPatch.context() as mp:
        deployment = deploy(moto_server, mp, stage=STAGE)
        key = secrets.token_hex(32)
        boto3.client("ssm").put_parameter(
            Name=env_of("ChartsFunction", deployment)["GPULSE_CHART_LINK_KEY_PARAM"],
            Value=key,
            Type="SecureString",
            Overwrite=True,
        )
        charts = load_function("ChartsFunction", deployment, mp)
        reads: list[str] = []
        charts.s3.meta.events.register(
            "provide-client-params.s3.GetObject", lambda params, **_: reads.append(params["Key"])
        )
        spec = function_specs(load_template(ROOT / "template.yaml"), deployment)["ChartsFunction"]
        port, stop = free_port(), threading.Event()
        server = threading.Thread(
            target=serve_http_api,
            args=(cast(Function, Served(charts)), list(spec.events), port, stop),
            daemon=True,
        )
        server.start()
        try:
            yield Stack(charts, deployment, f"http://127.0.0.1:{port}", key.encode(), reads, mp)
        finally:
            stop.set()
            server.join(timeout=5)


@pytest.fixture
def stack(served: Stack) -> Stack:
    served.charts.clock = time.time
    served.reads.clear()
    return served


@pytest.fixture
def alert(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ChatSink]]:
    with ChatSink(out=None) as sink:
        chat_webhooks(stack.deployment, sink.url)
        module = load_function("AlertFunction", stack.deployment, monkeypatch)
        module.dispatcher.wake_queue = None  # the tests flush by hand
        module.channels.pictures.store.links.api_url = stack.api  # as the local stack points it (--api-url)
        yield module, sink


def stored(s: Stack, name: str, png: bytes) -> str:
    """Put `png` where a chart named `name` lives; a link to it valid for a minute."""
    boto3.client("s3").put_object(Bucket=s.deployment.buckets["ChartsBucket"], Key="charts/" + name, Body=png)
    exp = int(s.charts.clock()) + 60
    return f"{s.api}/v1/charts/{name}?exp={exp}&sig={signature(s.key, name, exp)}"


NAME = "0123456789abcdef0123456789abcdef/e481145432c068bc068a.png"


def firing() -> Finding:
    f = Finding.from_json(load_event("alert_sqs")["Records"][0]["body"])
    assert f.evidence is not None
    return replace(f, evidence=replace(f.evidence, start=f.at - 600, end=f.at))


def sqs_event(body: str) -> dict[str, Any]:
    event = load_event("alert_sqs")
    event["Records"] = [{**event["Records"][0], "messageId": "m0", "body": body}]
    return event


def parts(url: str) -> tuple[str, int, str]:
    """(name, exp, sig) of a chart link."""
    split = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(split.query).items()}
    return split.path.removeprefix("/v1/charts/"), int(query["exp"]), query["sig"]


def test_the_message_links_the_api_route_and_the_link_serves_the_stored_png(
    stack: Stack, alert: tuple[ModuleType, ChatSink]
) -> None:
    module, sink = alert
    before = time.time()
    f = firing()
    assert module.handler(sqs_event(f.to_json()), FakeContext()) == {"batchItemFailures": []}
    slack_msg, jandi_msg = sink.messages()
    url = slack_msg["raw"]["blocks"][-1]["image_url"]
    n = single(f, route="default")
    assert slack_msg["raw"]["blocks"][:-1] == slack.render(n)["blocks"]  # the text is whole
    name, exp, sig = parts(url)
    assert url == f"{stack.api}/v1/charts/{name}?exp={exp}&sig={sig}"
    assert name.endswith(f"/{f.fingerprint}.png")
    assert int(before) + 604_800 <= exp <= time.time() + 604_800  # the whole 7 days
    assert sig == signature(stack.key, name, exp)
    assert jandi_msg["raw"]["connectInfo"][-1]["imageUrl"] == url
    png = render_png(f)
    bucket = stack.deployment.buckets["ChartsBucket"]
    assert boto3.client("s3").get_object(Bucket=bucket, Key="charts/" + name)["Body"].read() == png
    got = requests.get(url, timeout=5)
    assert (got.status_code, got.content) == (200, png)
    assert got.headers["Content-Type"] == "image/png"
    assert got.headers["Cache-Control"] == "private, max-age=86400"
    # the chat sink fetched the same link for both messages, as Slack and Jandi would
    for m in (slack_msg, jandi_msg):
        (p,) = m["pictures"]
        assert (p["url"], p["ok"], p["status"], p["width"], p["height"], p["bytes"]) == (
            url,
            True,
            200,
            800,
            400,
            len(png),
        )
    assert stack.reads == ["charts/" + name] * 3


def test_the_handler_answers_a_binary_http_api_response(stack: Stack) -> None:
    png = render_png(firing())
    event = load_event("charts_get")
    name = event["pathParameters"]["key"]
    _, exp, sig = parts(stored(stack, name, png))
    event["queryStringParameters"] = {"exp": str(exp), "sig": sig}
    event["rawQueryString"] = f"exp={exp}&sig={sig}"
    stack.charts.clock = lambda: exp - 50.0  # fifty seconds left: no cache beyond the link
    got = stack.charts.handler(event, FakeContext())
    assert got["statusCode"] == 200 and got["isBase64Encoded"] is True
    assert got["headers"]["Content-Type"] == "image/png"
    assert got["headers"]["Cache-Control"] == "private, max-age=50"
    assert base64.b64decode(got["body"]) == png
    assert stack.reads == ["charts/" + name]


def refusal(url: str) -> tuple[int, str, str]:
    got = requests.get(url, timeout=5)
    return got.status_code, got.headers["Content-Type"], got.json()["error"]


def test_an_expired_link_is_403_with_a_message(stack: Stack) -> None:
    url = stored(stack, NAME, b"png")
    _, exp, _ = parts(url)
    stack.charts.clock = lambda: float(exp)
    assert refusal(url) == (
        403,
        "application/json",
        "this chart link has expired; the alert's text still stands",
    )
    assert stack.reads == []
    stack.charts.clock = lambda: exp - 1.0
    got = requests.get(url, timeout=5)
    assert (got.status_code, got.content, got.headers["Cache-Control"]) == (200, b"png", "private, max-age=1")
    assert stack.reads == ["charts/" + NAME]


def test_a_tampered_link_is_403_and_reads_nothing(stack: Stack) -> None:
    name, exp, sig = parts(stored(stack, NAME, b"png"))
    other = NAME.replace("e48", "f48")
    stored(stack, other, b"another chart")
    bad = "this chart link's signature is not valid"
    for tampered in (
        f"{stack.api}/v1/charts/{name}?exp={exp + 3600}&sig={sig}",
        f"{stack.api}/v1/charts/{name}?exp={exp}&sig={sig[::-1]}",
        f"{stack.api}/v1/charts/{other}?exp={exp}&sig={sig}",  # another chart under this signature
    ):
        assert refusal(tampered) == (403, "application/json", bad)
    assert refusal(f"{stack.api}/v1/charts/{name}?exp={exp}") == (
        400,
        "application/json",
        "a chart link needs its exp and sig parameters",
    )
    assert stack.reads == []


def test_a_key_outside_charts_is_404_and_never_read_even_with_a_valid_signature(stack: Stack) -> None:
    bucket = stack.deployment.buckets["ChartsBucket"]
    boto3.client("s3").put_object(Bucket=bucket, Key="secret.png", Body=b"not for you")
    exp = int(stack.charts.clock()) + 60
    for name in ("../secret.png", "0123456789abcdef0123456789abcdef/../../secret.png", "secret.png"):
        url = f"{stack.api}/v1/charts/{name}?exp={exp}&sig={signature(stack.key, name, exp)}"
        # requests would fold the ".." away; send the path as written, as an attacker can
        req = requests.Request("GET", url).prepare()
        req.url = url
        got = requests.Session().send(req, timeout=5)
        assert (got.status_code, got.json()) == (404, {"error": "no such chart"})
    assert stack.reads == []


def test_a_chart_no_longer_stored_is_404(stack: Stack) -> None:
    name = "0123456789abcdef0123456789abcdef/gone.png"
    exp = int(stack.charts.clock()) + 60
    url = f"{stack.api}/v1/charts/{name}?exp={exp}&sig={signature(stack.key, name, exp)}"
    assert refusal(url) == (404, "application/json", "this chart is no longer stored")
    assert stack.reads == ["charts/" + name]


def test_without_the_key_alert_falls_back_to_presigned_links_and_charts_refuses(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deploy(moto_server, monkeypatch, stage="nolinks")  # no key put at its path
    charts = load_function("ChartsFunction", deployment, monkeypatch)
    with ChatSink(out=None) as sink:
        chat_webhooks(deployment, sink.url)
        module = load_function("AlertFunction", deployment, monkeypatch)
        module.dispatcher.wake_queue = None
        f = firing()
        module.handler(sqs_event(f.to_json()), FakeContext())
        url = sink.messages()[0]["raw"]["blocks"][-1]["image_url"]
    bucket = deployment.buckets["ChartsBucket"]
    assert urlsplit(url).path.startswith(f"/{bucket}/charts/") and "X-Amz-Signature=" in url
    assert requests.get(url, timeout=5).content == render_png(f)
    name = urlsplit(url).path.removeprefix(f"/{bucket}/charts/")
    exp = int(time.time()) + 60
    query = f"exp={exp}&sig={signature(b'k' * 64, name, exp)}"
    event = http_api_event(
        "GET", f"/v1/charts/{name}", query, {}, b"", "GET /v1/charts/{key+}", {"key": name}
    )
    got = charts.handler(event, FakeContext())
    assert (got["statusCode"], json.loads(got["body"])) == (
        403,
        {"error": "chart links are not enabled on this deployment"},
    )


def test_a_rotated_key_keeps_links_already_sent_until_the_previous_key_ends(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rotation docs/deploy.md gives: the old key to `.previous` with an `until`, then a new
    current key. Links signed before (old key) and after (new key, which the charts container has
    not cached yet) are both served; once `until` passes, only the new key's."""
    ssm = boto3.client("ssm")
    param = env_of("ChartsFunction", stack.deployment)["GPULSE_CHART_LINK_KEY_PARAM"]
    old_url = stored(stack, NAME, b"png")
    assert requests.get(old_url, timeout=5).status_code == 200  # the old key is cached now
    until = int(time.time()) + 3600
    new = secrets.token_hex(32).encode()
    ssm.put_parameter(
        Name=param + ".previous",
        Value=json.dumps({"secret": stack.key.decode(), "until": until}),
        Type="SecureString",
        Overwrite=True,
    )
    ssm.put_parameter(Name=param, Value=new.decode(), Type="SecureString", Overwrite=True)
    old, stack.key = stack.key, new  # what alert signs with from now on (the later tests too)
    new_url = stored(stack, NAME, b"png")
    monkeypatch.setattr(stack.charts.link_keys, "refresh_s", 0.0)  # an earlier test's re-read is recent
    assert requests.get(new_url, timeout=5).status_code == 200  # one re-read found the new key
    assert requests.get(old_url, timeout=5).status_code == 200  # the previous key, before `until`
    name, _, _ = parts(old_url)
    later = until + 10
    old_late = f"{stack.api}/v1/charts/{name}?exp={later + 60}&sig={signature(old, name, later + 60)}"
    new_late = f"{stack.api}/v1/charts/{name}?exp={later + 60}&sig={signature(new, name, later + 60)}"
    stack.charts.clock = lambda: float(later)
    assert refusal(old_late) == (403, "application/json", "this chart link's signature is not valid")
    assert requests.get(new_late, timeout=5).status_code == 200
