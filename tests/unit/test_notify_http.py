"""Delivery without sockets: the pacer, the retry configuration, status classification, errors."""

from __future__ import annotations

import logging
import traceback
from typing import Any
from unittest.mock import create_autospec

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from gpulse.errors import GpulseError
from gpulse.finding import Finding
from gpulse.notification import single
from gpulse.notify import (
    Channel,
    DeliveryError,
    JandiWebhook,
    Pacer,
    PacerLike,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SlackWebhook,
    jandi,
    make_session,
    slack,
)
from gpulse.notify.http import post_json

URL = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"
SECRET = "XXXXSECRETXXXX"


def finding() -> Finding:
    return Finding(
        rule="idle_held",
        title="GPU held but idle",
        severity="warning",
        state="firing",
        fingerprint="0b1c2d3e4f5a6b7c8d9e",
        cluster="a100-prod",
        since=1714566720.0,
        at=1714566850.0,
        summary="node-05/7 idle",
        action="stop it",
        gpus=["node-05/7"],
        users=["bob"],
    )


def response(status: int, body: str = "", headers: dict[str, str] | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body.encode()
    r.encoding = "utf-8"
    r.headers.update(headers or {})
    return r


def session_answering(answer: requests.Response | Exception) -> Any:  # an autospec'd Session
    session = create_autospec(requests.Session, instance=True)
    if isinstance(answer, Exception):
        session.post.side_effect = answer
    else:
        session.post.return_value = answer
    return session


def no_secret_anywhere(err: BaseException) -> None:
    text = "".join(traceback.format_exception(err)) + str(err) + repr(err)
    assert SECRET not in text
    assert "hooks.slack.com" not in text
    assert err.__context__ is None and err.__cause__ is None


# ---- pacer -------------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_spaces_sends_to_one_url_and_not_across_urls() -> None:
    t = FakeTime()
    pacer = Pacer(1.0, clock=t.clock, sleep=t.sleep)
    assert pacer.wait("a") == 0.0
    t.now += 0.25
    assert pacer.wait("a") == 0.75  # waits out the rest of the second
    assert pacer.wait("b") == 0.0  # another webhook has its own budget
    assert pacer.wait("a") == 1.0
    t.now += 5.0
    assert pacer.wait("a") == 0.0  # idle long enough: no wait
    assert t.slept == [0.75, 1.0]


def test_pacer_reserves_slots_for_callers_that_arrive_together() -> None:
    t = FakeTime()
    slept: list[float] = []
    pacer = Pacer(1.0, clock=t.clock, sleep=slept.append)  # a clock that does not move
    assert [pacer.wait("a") for _ in range(3)] == [0.0, 1.0, 2.0]
    assert slept == [1.0, 2.0]


# ---- session -----------------------------------------------------------------------------------


def retry_of(session: requests.Session, url: str) -> Retry:
    adapter = session.get_adapter(url)
    assert isinstance(adapter, HTTPAdapter)
    return adapter.max_retries


def test_make_session_retries_posts_on_429_and_5xx_and_caps_retry_after() -> None:
    session = make_session()
    for scheme in ("http://", "https://"):
        retry = retry_of(session, scheme + "example.invalid")
        assert retry.total == 4
        assert retry.read == 1
        assert set(retry.status_forcelist) == {429, 500, 502, 503, 504}
        assert retry.allowed_methods == frozenset({"POST"})
        assert retry.backoff_factor == 0.5
        assert retry.respect_retry_after_header is True
        assert retry.raise_on_status is False
        assert retry.is_retry("POST", 429, has_retry_after=True)
        assert not retry.is_retry("POST", 404)
        assert retry.parse_retry_after("1") == 1
        assert retry.parse_retry_after("3600") == 30  # never a Lambda asleep for an hour


def test_make_session_parameters() -> None:
    retry = retry_of(make_session(total_retries=0, backoff_factor=0.0, max_retry_after_s=5.0), "https://x")
    assert (retry.total, retry.read, retry.backoff_factor, retry.parse_retry_after("60")) == (0, 0, 0.0, 5)


# ---- classification ----------------------------------------------------------------------------


def test_2xx_is_success_and_the_post_is_exactly_what_was_asked() -> None:
    session = session_answering(response(200, "ok"))
    post_json(
        session, URL, {"text": "hi"}, kind="slack", channel="gpu-alerts", pace_key="k", headers={"X": "1"}
    )
    session.post.assert_called_once_with(
        URL, json={"text": "hi"}, headers={"X": "1"}, timeout=(3.0, 10.0), allow_redirects=False
    )


@pytest.mark.parametrize(
    ("status", "headers", "cause", "retry_after"),
    [
        (429, {"Retry-After": "120"}, "rate_limited", 120.0),
        (429, {}, "rate_limited", None),
        (500, {}, "server_error", None),
        (503, {"Retry-After": "7"}, "server_error", 7.0),
        (504, {"Retry-After": "soon"}, "server_error", None),  # unparseable: no hint
    ],
)
def test_retryable_statuses(
    status: int, headers: dict[str, str], cause: str, retry_after: float | None
) -> None:
    with pytest.raises(RetryableDeliveryError) as info:
        post_json(
            session_answering(response(status, "x", headers)),
            URL,
            {},
            kind="slack",
            channel="gpu-alerts",
            pace_key="k",
        )
    err = info.value
    assert (err.status, err.cause, err.retry_after, err.retryable) == (status, cause, retry_after, True)
    assert (err.kind, err.channel) == ("slack", "gpu-alerts")
    no_secret_anywhere(err)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ],
)
def test_permanent_statuses_carry_the_reason(status: int, body: str) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        post_json(
            session_answering(response(status, body + "\n")),
            URL,
            {},
            kind="slack",
            channel="gpu-alerts",
            pace_key="k",
        )
    err = info.value
    assert (err.status, err.reason, err.cause, err.retryable) == (status, body, "rejected", False)
    assert str(err) == f"slack channel 'gpu-alerts': rejected (HTTP {status}): {body}"


def test_a_redirect_is_not_followed_and_not_retried() -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        post_json(session_answering(response(302, "")), URL, {}, kind="slack", channel="c", pace_key="k")
    assert info.value.status == 302


def test_a_reason_that_echoes_the_url_is_redacted() -> None:
    body = f"<html>No route for POST {URL} (path /services/T000/B000/{SECRET})</html>"
    with pytest.raises(PermanentDeliveryError) as info:
        post_json(session_answering(response(404, body)), URL, {}, kind="slack", channel="c", pace_key="k")
    assert info.value.reason == "<html>No route for POST <webhook> (path <webhook>)</html>"
    no_secret_anywhere(info.value)


@pytest.mark.parametrize(
    ("raised", "expected", "cause"),
    [
        (
            requests.exceptions.ConnectionError(f"Max retries exceeded with url: {URL}"),
            RetryableDeliveryError,
            "connection",
        ),
        (requests.exceptions.ConnectTimeout(f"timed out: {URL}"), RetryableDeliveryError, "timeout"),
        (requests.exceptions.ReadTimeout(f"read timed out: {URL}"), RetryableDeliveryError, "timeout"),
        (requests.exceptions.RetryError(f"too many 500 for {URL}"), RetryableDeliveryError, "connection"),
        (requests.exceptions.MissingSchema(f"No scheme supplied: {URL}"), PermanentDeliveryError, "bad_url"),
        (requests.exceptions.InvalidURL(f"bad: {URL}"), PermanentDeliveryError, "bad_url"),
    ],
)
def test_request_exceptions_become_delivery_errors_without_the_url(
    raised: Exception, expected: type[DeliveryError], cause: str
) -> None:
    with pytest.raises(expected) as info:
        post_json(session_answering(raised), URL, {}, kind="jandi", channel="ops", pace_key="k")
    err = info.value
    assert err.status is None
    assert err.cause == cause  # type: ignore[attr-defined]
    assert str(err) == f"jandi channel 'ops': {cause.replace('_', ' ')}"
    no_secret_anywhere(err)


def test_error_classes() -> None:
    retry = RetryableDeliveryError(
        kind="slack", channel="c", cause="rate_limited", status=429, retry_after=1.5
    )
    perm = PermanentDeliveryError(
        kind="slack", channel="c", cause="rejected", status=410, reason="channel_is_archived"
    )
    assert isinstance(retry, DeliveryError) and isinstance(retry, GpulseError)
    assert isinstance(perm, DeliveryError) and isinstance(perm, GpulseError)
    assert (retry.retryable, perm.retryable) == (True, False)
    assert str(retry) == "slack channel 'c': rate limited (HTTP 429), retry after 1.5s"
    assert str(perm) == "slack channel 'c': rejected (HTTP 410): channel_is_archived"


class RecordingPacer:
    """A PacerLike that only notes the keys it was asked to wait for."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def wait(self, key: str) -> float:
        self.keys.append(key)
        return 0.0


def test_pacer_is_consulted_with_the_pace_key_never_the_url() -> None:
    t = FakeTime()
    pacer = Pacer(1.0, clock=t.clock, sleep=t.sleep)
    session = session_answering(response(200, "ok"))
    for _ in range(2):
        post_json(session, URL, {}, kind="slack", channel="c", pacer=pacer, pace_key="hook-1")
    assert t.slept == [1.0]
    recording = RecordingPacer()
    post_json(session, URL, {}, kind="slack", channel="c", pacer=recording, pace_key="hook-1")
    assert recording.keys == ["hook-1"]


def test_a_webhook_paces_by_its_pace_key_or_else_its_name() -> None:
    pacer: PacerLike = RecordingPacer()
    session = session_answering(response(200, "ok"))
    SlackWebhook("gpu-alerts", URL, session, pacer=pacer).send(single(finding()))
    SlackWebhook("ml-alerts", URL, session, pacer=pacer, pace_key="slack-main").send(single(finding()))
    JandiWebhook("ops", URL, session, pacer=pacer).send(single(finding()))
    assert isinstance(pacer, RecordingPacer)
    assert pacer.keys == ["gpu-alerts", "slack-main", "ops"]
    assert all(SECRET not in k for k in pacer.keys)


def test_channels_sharing_a_pace_key_share_one_pace() -> None:
    t = FakeTime()
    pacer = Pacer(1.0, clock=t.clock, sleep=t.sleep)
    session = session_answering(response(200, "ok"))
    a = SlackWebhook("a", URL, session, pacer=pacer, pace_key="one-hook")
    b = SlackWebhook("b", URL, session, pacer=pacer, pace_key="one-hook")
    c = SlackWebhook("c", URL, session, pacer=pacer)
    for ch in (a, b, c):
        ch.send(single(finding()))
    assert t.slept == [1.0]  # b waited for a; c has its own key


# ---- the channels ------------------------------------------------------------------------------


def test_slack_webhook_sends_the_slack_payload() -> None:
    session = session_answering(response(200, "ok"))
    channel: Channel = SlackWebhook("gpu-alerts", URL, session, pacer=None)
    channel.send(single(finding()))
    session.post.assert_called_once_with(
        URL, json=slack.render(single(finding())), headers=None, timeout=(3.0, 10.0), allow_redirects=False
    )
    assert (channel.kind, channel.name) == ("slack", "gpu-alerts")


def test_jandi_webhook_sends_jandi_headers() -> None:
    url = "https://wh.jandi.com/connect-api/webhook/123/abcdefSECRET"
    session = session_answering(response(200, "{}"))
    channel: Channel = JandiWebhook("ops", url, session, pacer=None)
    channel.send(single(finding()))
    session.post.assert_called_once_with(
        url,
        json=jandi.render(single(finding())),
        headers={"Accept": "application/vnd.tosslab.jandi-v2+json", "Content-Type": "application/json"},
        timeout=(3.0, 10.0),
        allow_redirects=False,
    )
    assert channel.kind == "jandi"


def test_webhook_repr_and_logs_never_show_the_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gpulse.notify")
    ok = SlackWebhook("gpu-alerts", URL, session_answering(response(200, "ok")), pacer=None)
    bad = SlackWebhook("gpu-alerts", URL, session_answering(response(404, "channel_not_found")), pacer=None)
    assert repr(ok) == "SlackWebhook(name='gpu-alerts')"
    ok.send(single(finding()))
    with pytest.raises(PermanentDeliveryError):
        bad.send(single(finding()))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "chat message delivered"),
        ("WARNING", "chat delivery failed"),
    ]
    failed = caplog.records[1]
    assert (failed.channel, failed.status, failed.retryable, failed.error) == (  # type: ignore[attr-defined]
        "gpu-alerts",
        404,
        False,
        "PermanentDeliveryError",
    )
    assert all(SECRET not in str(r.__dict__) for r in caplog.records)
