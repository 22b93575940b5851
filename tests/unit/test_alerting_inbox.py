"""What reaches the alert function, told apart at the edge: the event kind, and what one SQS
record's body is (a finding, a wake-up, a redriven notification, or unreadable, with why)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpulse.alerting.inbox import Kind, Unreadable, Wake, kind_of, parse_record
from gpulse.errors import InvalidInput
from gpulse.finding import Finding
from gpulse.notification import Notification, single
from tests.events import load_event

NOT_AN_EVENT = "the alert function takes schedule ticks, SQS records and SNS notifications"


def finding() -> Finding:
    return Finding.from_json(load_event("alert_sqs")["Records"][0]["body"])


@pytest.mark.parametrize(
    ("event", "kind"),
    [("analyze_schedule", Kind.TICK), ("alert_sqs", Kind.SQS), ("alert_sns_alarm", Kind.SNS)],
)
def test_each_sample_event_is_its_kind(event: str, kind: Kind) -> None:
    assert kind_of(load_event(event)) is kind


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Records": []},
        {"Records": "x"},
        {"Records": ["x"]},
        {"Records": [{"eventSource": "aws:kinesis"}]},
        {"Records": [{"EventSource": "aws:sqs"}]},  # SNS's spelling with SQS's source: neither
        {"detail-type": "Object Created", "source": "aws.s3"},
    ],
)
def test_anything_else_is_refused(event: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as e:
        kind_of(event)
    assert str(e.value) == NOT_AN_EVENT


def test_a_finding() -> None:
    f = finding()
    assert parse_record(f.to_json()) == f
    resolved = replace(f, state="resolved")
    assert parse_record(resolved.to_json()) == resolved


def test_a_wake_up() -> None:
    assert parse_record(json.dumps({"wake": "default#f892dc8443a1895c"})) == Wake("default#f892dc8443a1895c")


def test_a_notification_the_dlq_held_and_an_operator_redrove() -> None:
    n = single(finding(), route="default")
    assert parse_record(n.to_json()) == n
    group = Notification(
        id="default#g#e#3",
        route="default",
        group={"cluster": "demo"},
        firing=[finding()],
        resolved=[replace(finding(), fingerprint="f" * 20, state="resolved")],
        new=[],
        mentions=["@oncall"],
        repeat=True,
    )
    assert parse_record(group.to_json()) == group


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "unreadable finding: finding is not JSON: Expecting property name enclosed in double "),
        ("null", "unreadable finding: finding must be a JSON object with version 1"),
        ("[1, 2]", "unreadable finding: finding must be a JSON object with version 1"),
        ('{"wake": "g", "extra": 1}', "unreadable finding: finding must be a JSON object with version 1"),
        ("[" * 100_000 + "]" * 100_000, "unreadable finding: nested too deeply"),
        (
            '{"id": "n", "route": "default", "firing": [{"rule": "x"}], "resolved": []}',
            "unreadable notification: finding must be a JSON object with version 1",
        ),
        (
            '{"id": "n", "route": "default", "firing": 3, "resolved": []}',
            "unreadable notification: notification does not match: 'int' object is not iterable",
        ),
    ],
)
def test_what_no_code_can_read_says_why(body: str, reason: str) -> None:
    got = parse_record(body)
    assert isinstance(got, Unreadable) and got.reason.startswith(reason)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
KEYS = ["wake", "id", "route", "group", "firing", "resolved", "rule", "state", "severity", "version"]


@given(st.text() | JSON.map(json.dumps))
def test_any_body_is_read_or_refused_never_raises(body: str) -> None:
    assert isinstance(parse_record(body), Wake | Finding | Notification | Unreadable)


@given(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=len(KEYS)))
def test_bodies_shaped_like_ours_are_read_or_refused_never_raise(doc: dict[str, Any]) -> None:
    assert isinstance(parse_record(json.dumps(doc)), Wake | Finding | Notification | Unreadable)
