"""The Alertmanager channel without sockets: the exact postable alerts, the endsAt rule, the
endpoint, error mapping, and how a route's channel is built."""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Sequence
from typing import Any
from unittest.mock import create_autospec

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from gpulse.alerting.routes import ChannelRef, Route
from gpulse.cli import inputs
from gpulse.config.documents import parse
from gpulse.errors import InvalidInput
from gpulse.finding import Finding, with_state
from gpulse.notification import Notification
from gpulse.notify import AlertmanagerWebhook, PermanentDeliveryError, RetryableDeliveryError
from gpulse.notify import alertmanager as am
from gpulse.notify.http import Pacer
from gpulse.notify.registry import KINDS, ChannelRegistry

BASE = "https://gpulse:s3cr3t-pw@am.example.net:9093"
ENDPOINT = "https://gpulse:s3cr3t-pw@am.example.net:9093/api/v2/alerts"
NOW = 1767229200.0  # 2026-01-01T01:00:00Z
FOUR_H = 4 * 3600.0


def idle(gpu: str, fingerprint: str, **changes: Any) -> Finding:
    node = gpu.split("/")[0]
    f = Finding(
        rule="idle_held",
        title="GPU held but idle",
        severity="warning",
        state="firing",
        fingerprint=fingerprint,
        cluster="a100-prod",
        since=1767225240.0,  # 2025-12-31T23:54:00Z
        at=1767225660.0,
        summary=f"{gpu} held by bob, 0% busy for 7 min",
        action="Release the GPU or start the job.",
        node_group="trainers",
        nodes=[node],
        gpus=[gpu],
        users=["bob"],
    )
    return dataclasses.replace(f, **changes)


ONE = idle("node-05/7", "0b1c2d3e4f5a6b7c8d9e")
TWO = idle("node-06/1", "aa1c2d3e4f5a6b7c8d9e", severity="critical", since=1767225300.5, node_group=None)


def group(firing: list[Finding], resolved: Sequence[Finding] = ()) -> Notification:
    return Notification(
        id="default#k#e#1",
        route="default",
        group={"cluster": "a100-prod", "rule": "idle_held"},
        firing=firing,
        resolved=list(resolved),
        new=[f.fingerprint for f in firing],
        mentions=["<@U1>"],  # chat handles mean nothing to Alertmanager: not sent
    )


def response(status: int, body: str = "") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body.encode()
    r.encoding = "utf-8"
    return r


def channel(answer: requests.Response, *, resend_s: float = FOUR_H) -> tuple[AlertmanagerWebhook, Any]:
    session = create_autospec(requests.Session, instance=True)
    session.post.return_value = answer
    return AlertmanagerWebhook(
        "default/alertmanager:ops", BASE, session, resend_s=resend_s, clock=lambda: NOW
    ), session


# ---- the payload -------------------------------------------------------------------------------


def test_a_firing_group_of_two_is_two_postable_alerts_alive_past_the_next_repeat() -> None:
    ch, _ = channel(response(200))
    assert ch.lifetime_s == FOUR_H + 900
    assert ch.render(group([ONE, TWO])) == [
        {
            "labels": {
                "alertname": "idle_held",
                "severity": "warning",
                "cluster": "a100-prod",
                "node_group": "trainers",
                "node": "node-05",
                "gpu": "node-05/7",
                "fingerprint": "0b1c2d3e4f5a6b7c8d9e",
                "source": "gpulse",
            },
            "annotations": {
                "summary": "node-05/7 held by bob, 0% busy for 7 min",
                "description": "Release the GPU or start the job.",
            },
            "startsAt": "2025-12-31T23:54:00.000Z",
            "endsAt": "2026-01-01T05:15:00.000Z",  # now + 4 h + 15 min
            "generatorURL": "gpulse://a100-prod/idle_held/0b1c2d3e4f5a6b7c8d9e",
        },
        {
            "labels": {
                "alertname": "idle_held",
                "severity": "critical",
                "cluster": "a100-prod",
                "node": "node-06",
                "gpu": "node-06/1",
                "fingerprint": "aa1c2d3e4f5a6b7c8d9e",
                "source": "gpulse",
            },
            "annotations": {
                "summary": "node-06/1 held by bob, 0% busy for 7 min",
                "description": "Release the GPU or start the job.",
            },
            "startsAt": "2025-12-31T23:55:00.500Z",
            "endsAt": "2026-01-01T05:15:00.000Z",
            "generatorURL": "gpulse://a100-prod/idle_held/aa1c2d3e4f5a6b7c8d9e",
        },
    ]


def test_a_resolve_ends_at_the_time_it_resolved_and_keeps_the_labels() -> None:
    ch, _ = channel(response(200))
    gone = with_state(ONE, "resolved", 1767226500.0)  # 2026-01-01T00:15:00Z
    [still, ended] = ch.render(group([TWO], [gone]))
    assert still["labels"]["fingerprint"] == TWO.fingerprint
    assert ended == {
        "labels": {
            "alertname": "idle_held",
            "severity": "warning",
            "cluster": "a100-prod",
            "node_group": "trainers",
            "node": "node-05",
            "gpu": "node-05/7",
            "fingerprint": "0b1c2d3e4f5a6b7c8d9e",
            "source": "gpulse",
        },
        "annotations": {
            "summary": "node-05/7 held by bob, 0% busy for 7 min",
            "description": "Release the GPU or start the job.",
        },
        "startsAt": "2025-12-31T23:54:00.000Z",
        "endsAt": "2026-01-01T00:15:00.000Z",
        "generatorURL": "gpulse://a100-prod/idle_held/0b1c2d3e4f5a6b7c8d9e",
    }


def test_several_nodes_or_gpus_are_no_label_and_a_mig_slice_is() -> None:
    wide = idle(
        "node-05/7", "f" * 20, nodes=["node-03", "node-05"], gpus=["node-03/0", "node-05/7"], mig="1g.10gb/3"
    )
    assert am.labels(wide) == {
        "alertname": "idle_held",
        "severity": "warning",
        "cluster": "a100-prod",
        "node_group": "trainers",
        "mig": "1g.10gb/3",
        "fingerprint": "f" * 20,
        "source": "gpulse",
    }
    # the same node named twice is still one node
    assert am.labels(dataclasses.replace(wide, nodes=["node-05", "node-05"]))["node"] == "node-05"


def test_the_picture_hook_adds_its_link_and_nothing_without_one() -> None:
    assert am.annotations_for(
        ONE, lambda f: f"https://pics.example/{f.fingerprint}.png?X-Amz-Expires=604800"
    ) == {
        "summary": ONE.summary,
        "description": ONE.action,
        "picture_url": "https://pics.example/0b1c2d3e4f5a6b7c8d9e.png?X-Amz-Expires=604800",
    }
    assert am.annotations_for(ONE, lambda f: None) == {"summary": ONE.summary, "description": ONE.action}


def test_an_end_is_never_before_the_start() -> None:
    # a clock behind the finding's start (skew) would make Alertmanager refuse the whole alert
    early = am.postable(ONE, now=ONE.since - 10_000, lifetime_s=60)
    assert early["endsAt"] == early["startsAt"] == "2025-12-31T23:54:00.000Z"


@pytest.mark.parametrize(
    ("base", "endpoint"),
    [
        ("http://127.0.0.1:9093", "http://127.0.0.1:9093/api/v2/alerts"),
        ("http://127.0.0.1:9093/", "http://127.0.0.1:9093/api/v2/alerts"),
        ("https://u:p@mon.example/alertmanager/", "https://u:p@mon.example/alertmanager/api/v2/alerts"),
        ("https://mon.example/alertmanager/api/v2/alerts", "https://mon.example/alertmanager/api/v2/alerts"),
        (" http://am:9093\n", "http://am:9093/api/v2/alerts"),
    ],
)
def test_the_endpoint_is_the_alerts_api_under_the_base_url(base: str, endpoint: str) -> None:
    assert am.alerts_url(base) == endpoint


names = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20)


@given(
    nodes=st.lists(names, max_size=3),
    gpus=st.lists(names, max_size=3),
    mig=st.none() | names,
    node_group=st.none() | st.just("") | names,
    since=st.floats(1.6e9, 1.9e9),
    after=st.floats(0, 1e6),
    now=st.floats(1.6e9, 1.9e9),
)
def test_a_resolve_closes_the_alert_its_firing_opened(
    nodes: list[str],
    gpus: list[str],
    mig: str | None,
    node_group: str | None,
    since: float,
    after: float,
    now: float,
) -> None:
    firing = idle("n/0", "0" * 20, nodes=nodes, gpus=gpus, mig=mig, node_group=node_group, since=since)
    resolved = with_state(firing, "resolved", since + after)
    posted = [am.postable(f, now=now, lifetime_s=FOUR_H + 900) for f in (firing, resolved)]
    # Alertmanager identifies an alert by its labels: the resolve must carry exactly the same
    assert posted[0]["labels"] == posted[1]["labels"]
    assert all(v and isinstance(v, str) for v in posted[0]["labels"].values())
    assert posted[1]["endsAt"] == am.rfc3339(since + after)
    for p in posted:
        assert p["startsAt"] == am.rfc3339(since)
        assert p["endsAt"] >= p["startsAt"]  # same width, so text order is time order


# ---- delivery ----------------------------------------------------------------------------------


def test_a_send_posts_the_array_to_the_alerts_endpoint_unpaced() -> None:
    ch, session = channel(response(200))
    pacer = create_autospec(Pacer, instance=True)
    ch = AlertmanagerWebhook(
        "c", BASE, session, pacer=pacer, pace_key="/gpulse/p/alertmanager/ops", resend_s=60, clock=lambda: NOW
    )
    n = group([ONE])
    ch.send(n)
    session.post.assert_called_once_with(
        ENDPOINT,
        json=am.render(n, now=NOW, lifetime_s=960.0),
        headers=None,
        timeout=(3.0, 10.0),
        allow_redirects=False,
    )
    pacer.wait.assert_not_called()  # Alertmanager keeps no 1 msg/s limit: never wait for one
    assert "s3cr3t" not in repr(ch)


def no_credentials(err: BaseException) -> None:
    text = "".join(traceback.format_exception(err)) + str(err) + repr(err)
    assert "s3cr3t" not in text and "am.example.net" not in text


def test_a_refused_alert_is_permanent() -> None:
    # what Alertmanager 0.25 answers for an alert it cannot take (seen from the real binary)
    ch, _ = channel(response(400, '"start time must be before end time"\n'))
    with pytest.raises(PermanentDeliveryError) as info:
        ch.send(group([ONE]))
    err = info.value
    assert (err.kind, err.channel, err.status, err.cause, err.retryable) == (
        "alertmanager",
        "default/alertmanager:ops",
        400,
        "rejected",
        False,
    )
    assert err.reason == '"start time must be before end time"'
    no_credentials(err)


def test_an_unavailable_alertmanager_is_retryable() -> None:
    ch, _ = channel(response(503, "not ready"))
    with pytest.raises(RetryableDeliveryError) as info:
        ch.send(group([ONE]))
    err = info.value
    assert (err.kind, err.status, err.cause, err.retryable, err.retry_after) == (
        "alertmanager",
        503,
        "server_error",
        True,
        None,
    )
    no_credentials(err)


# ---- wiring ------------------------------------------------------------------------------------


class Params:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, name: str) -> str | None:
        return self.values.get(name)


def test_the_registry_builds_an_alertmanager_channel_from_its_route() -> None:
    assert KINDS["alertmanager"] is AlertmanagerWebhook
    ref = ChannelRef("alertmanager", "/gpulse/prod/alertmanager/ops")
    route = Route("ml", (ref,), repeat_interval_s=3600.0)
    session = create_autospec(requests.Session, instance=True)
    session.post.return_value = response(200)
    pacer = create_autospec(Pacer, instance=True)
    registry = ChannelRegistry(Params({ref.secret: BASE}), session, pacer=pacer, clock=lambda: NOW)
    ch = registry.make_channel(route, ref)
    assert isinstance(ch, AlertmanagerWebhook)
    assert (ch.name, ch.kind, ch.lifetime_s) == ("ml/alertmanager:ops", "alertmanager", 4500.0)
    ch.send(group([ONE]))
    assert session.post.call_args.args == (ENDPOINT,)
    assert session.post.call_args.kwargs["json"][0]["endsAt"] == "2026-01-01T02:15:00.000Z"
    pacer.wait.assert_not_called()


def test_a_route_may_name_an_alertmanager_under_its_own_path_only() -> None:
    doc = {"channels": [{"kind": "alertmanager", "secret": "/gpulse/prod/alertmanager/ops"}]}
    route = parse("route", "am", doc)
    assert isinstance(route, Route)
    assert route.channels == (ChannelRef("alertmanager", "/gpulse/prod/alertmanager/ops"),)
    with pytest.raises(InvalidInput):
        parse("route", "am", {"channels": [{"kind": "alertmanager", "secret": "/gpulse/prod/nodes/ops"}]})
    with pytest.raises(InvalidInput):
        parse("route", "am", {"channels": [{"kind": "alertmanager", "secret": BASE}]})


def test_the_cli_takes_an_alertmanager_channel_and_refuses_its_url() -> None:
    assert inputs.parse_channel("alertmanager:/gpulse/prod/alertmanager/ops") == {
        "kind": "alertmanager",
        "secret": "/gpulse/prod/alertmanager/ops",
    }
    with pytest.raises(InvalidInput) as info:
        inputs.parse_channel(f"alertmanager:{BASE}")
    message = str(info.value)
    assert "--name /gpulse/<stage>/alertmanager/<name>" in message
    assert "--channel alertmanager:/gpulse/<stage>/alertmanager/<name>" in message
    assert "s3cr3t" not in message and "am.example.net" not in message
