"""A CloudWatch alarm's SNS message → a gpulse_health finding, or nothing: the parse, the state
mapping and the exact plain words."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.template import TEMPLATE_PATH, load_template
from gpulse.errors import InvalidInput
from gpulse.finding import Finding, fingerprint
from gpulse.health import alarms
from tests.events import load_event

NAME = "gpulse-prod-AnalyzeErrorsAlarm-1A2B3C4D5E6F"
T0 = 1767225600.0  # 2026-01-01T00:00:00Z, the sample's StateChangeTime
STATES = ("ALARM", "OK", "INSUFFICIENT_DATA")


def message(**changes: Any) -> dict[str, Any]:
    """The sample alarm's SNS Message (analyze's Errors, 3 in 5 minutes), with `changes`;
    `trigger` changes go into Trigger."""
    doc: dict[str, Any] = json.loads(load_event("alert_sns_alarm")["Records"][0]["Sns"]["Message"])
    doc["Trigger"].update(changes.pop("trigger", {}))
    doc.update(changes)
    return doc


def change(**changes: Any) -> alarms.AlarmChange:
    return alarms.AlarmChange.from_message(json.dumps(message(**changes)))


def test_the_sample_notification_parses_to_its_fields() -> None:
    assert change() == alarms.AlarmChange(
        name=NAME,
        description="gpulse's analyze function failed",
        state="ALARM",
        old_state="OK",
        reason="Threshold Crossed: 1 out of the last 1 datapoints [3.0 (31/12/25 23:55:00)] was greater "
        "than or equal to the threshold (1.0) (minimum 1 datapoint for OK -> ALARM transition).",
        at=T0,
        namespace="AWS/Lambda",
        metric="Errors",
        statistic="SUM",
        period_s=300,
        evaluation_periods=1,
        threshold=1.0,
        dimensions={"FunctionName": "gpulse-prod-AnalyzeFunction-AbCdEf123456"},
    )
    assert change().value == 3.0


def test_alarm_fires_with_the_figure_in_plain_words() -> None:
    assert alarms.to_finding(change()) == Finding(
        rule="gpulse_health",
        title="gpulse health",
        severity="critical",
        state="firing",
        fingerprint=fingerprint("gpulse_health", alarm=NAME),
        cluster="gpulse",
        since=T0,
        at=T0,
        summary="gpulse's analyze function failed 3 times in 5 minutes",
        action="Look for its crash report in this channel (file and line) and read its log. What failed "
        "is retried; findings that keep failing end in the dead-letter queue (`gpulse dlq list`). "
        f"(CloudWatch alarm {NAME})",
        values={"threshold": 1.0, "value": 3.0},
    )


def test_ok_after_alarm_resolves_the_same_alert_without_a_figure() -> None:
    ok = change(
        NewStateValue="OK",
        OldStateValue="ALARM",
        NewStateReason="Threshold Crossed: 1 out of the last 1 datapoints [0.0 (01/01/26 00:05:00)] was not "
        "greater than or equal to the threshold (1.0).",
        StateChangeTime="2026-01-01T00:10:00.000+0000",
    )
    resolved = alarms.to_finding(ok)
    firing = alarms.to_finding(change())
    assert resolved is not None and firing is not None
    assert (resolved.state, resolved.fingerprint) == ("resolved", firing.fingerprint)
    assert (resolved.since, resolved.at) == (T0 + 600, T0 + 600)
    assert resolved.summary == "gpulse's analyze function failed"
    assert resolved.values == {"threshold": 1.0}


@pytest.mark.parametrize(
    ("new", "old"),
    [("OK", "INSUFFICIENT_DATA"), ("OK", "OK"), ("INSUFFICIENT_DATA", "ALARM"), ("INSUFFICIENT_DATA", "OK")],
)
def test_changes_that_announce_nothing(new: str, old: str) -> None:
    assert alarms.to_finding(change(NewStateValue=new, OldStateValue=old)) is None


@given(st.sampled_from(STATES), st.sampled_from(STATES))
def test_only_alarm_fires_and_only_ok_after_alarm_resolves(new: str, old: str) -> None:
    got = alarms.to_finding(change(NewStateValue=new, OldStateValue=old))
    expected = "firing" if new == "ALARM" else "resolved" if (new, old) == ("OK", "ALARM") else None
    assert (got.state if got else None) == expected


@pytest.mark.parametrize(
    ("description", "trigger", "reason", "said"),
    [
        (
            "gpulse's analyze function ran close to its 55 s timeout",
            {"MetricName": "Duration", "Statistic": "MAXIMUM", "Period": 60, "EvaluationPeriods": 5},
            "1 out of the last 5 datapoints [44123.5 (01/01/26 00:00:00)] was greater than ...",
            "gpulse's analyze function ran close to its 55 s timeout: "
            "its longest run took 44.1 s in 5 minutes",
        ),
        (
            "gpulse's analyze worker ran close to its 30 s tick",
            {
                "MetricName": "Duration",
                "StatisticType": "ExtendedStatistic",
                "ExtendedStatistic": "p99",
                "Period": 300,
                "EvaluationPeriods": 2,
            },
            "2 out of the last 2 datapoints [26512.0 (01/01/26 00:05:00), 25003.1 (01/01/26 00:00:00)] ...",
            "gpulse's analyze worker ran close to its 30 s tick: 1 % of its runs took 26.5 s or more "
            "in 10 minutes",
        ),
        (
            # a percentile named in Statistic, as some senders write it
            "slow",
            {"MetricName": "Duration", "Statistic": "p99.9", "Period": 60, "EvaluationPeriods": 1},
            "1 out of the last 1 datapoints [1500.0 (01/01/26 00:00:00)] ...",
            "slow: 0.1 % of its runs took 1.5 s or more in 1 minute",
        ),
        (
            # a percentile of a metric gpulse words only as a sum: the description alone, no false figure
            "errors, p90",
            {"MetricName": "Errors", "ExtendedStatistic": "p90"},
            "1 out of the last 1 datapoints [3.0 (01/01/26 00:00:00)] ...",
            "errors, p90",
        ),
        (
            "gpulse's findings dead-letter queue is not empty",
            {"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible", "Period": 60},
            "1 out of the last 1 datapoints [3.0 (01/01/26 00:00:00)] was greater ...",
            "gpulse's findings dead-letter queue is not empty: 3 waiting",
        ),
        (
            "ingest refuses signatures",
            {"Namespace": "Gpulse", "MetricName": "BatchesUnauthorized", "Period": 90},
            # the older wording: "1 datapoint (10.0) was …"
            "Threshold Crossed: 1 datapoint (12.0) was greater than or equal to the threshold (10.0).",
            "ingest refuses signatures: 12 in 90 s",
        ),
        (
            "ingest's function URL answered 5xx",
            {"Namespace": "AWS/Lambda", "MetricName": "Url5xxCount", "Period": 60, "EvaluationPeriods": 1},
            "1 out of the last 1 datapoints [1.0E1 (01/01/26 00:00:00)] was ...",
            "ingest's function URL answered 5xx 10 times in 1 minute",
        ),
        (
            "gpulse's analyze function failed",
            {},
            "Alarm state set by hand (no datapoint quoted)",
            "gpulse's analyze function failed",
        ),
    ],
)
def test_the_exact_summary(description: str, trigger: dict[str, Any], reason: str, said: str) -> None:
    c = change(AlarmDescription=description, NewStateReason=reason, trigger=trigger)
    assert alarms.summary(c) == said


def test_an_alarm_gpulse_has_no_words_for_says_its_description_and_where_to_look() -> None:
    c = change(AlarmDescription=None, trigger={"Namespace": "AWS/EC2", "MetricName": "CPUUtilization"})
    f = alarms.to_finding(c)
    assert f is not None
    assert (f.summary, f.severity) == (NAME, "warning")  # no description: the alarm's name
    assert f.action == f"Read the alarm in CloudWatch. (CloudWatch alarm {NAME})"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{not json", "SNS message is not JSON: not a CloudWatch alarm"),
        ('"an S3 event"', "SNS message has no AlarmName: not a CloudWatch alarm"),
        ('{"Records": []}', "SNS message has no AlarmName: not a CloudWatch alarm"),
        (
            '{"AlarmName": "a", "StateChangeTime": "yesterday"}',
            "alarm a: StateChangeTime is missing or malformed",
        ),
        ('{"AlarmName": "a"}', "alarm a: StateChangeTime is missing or malformed"),
    ],
)
def test_what_is_not_an_alarm_is_refused_with_why(text: str, error: str) -> None:
    with pytest.raises(InvalidInput) as e:
        alarms.AlarmChange.from_message(text)
    assert str(e.value) == error


def test_a_trigger_without_its_optional_parts_still_parses() -> None:
    doc = message()
    del doc["Trigger"]
    c = alarms.AlarmChange.from_message(json.dumps(doc))
    assert (c.namespace, c.metric, c.period_s, c.evaluation_periods, c.threshold, c.dimensions) == (
        "",
        "",
        0,
        1,
        None,
        {},
    )
    f = alarms.to_finding(c)
    assert f is not None and f.values == {"value": 3.0}


def test_a_percentile_alarm_parses_its_statistic() -> None:
    c = change(trigger={"StatisticType": "ExtendedStatistic", "ExtendedStatistic": "p99", "Statistic": None})
    assert (c.statistic, c.percentile) == ("p99", 99.0)
    assert change().percentile is None  # SUM


def test_the_worker_duration_alarm_fires_before_a_tick_overruns_and_long_before_the_timeout() -> None:
    template = load_template(TEMPLATE_PATH)
    params, resources = template["Parameters"], template["Resources"]
    alarm = resources["AnalyzeWorkerDurationAlarm"]["Properties"]
    worker = resources["AnalyzeWorkerFunction"]["Properties"]
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "AnalyzeWorkerFunction"}}]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["ExtendedStatistic"]) == (
        "AWS/Lambda",
        "Duration",
        "p99",
    )
    assert alarm["Threshold"] == {"Ref": "AnalyzeWorkerDurationAlarmMs"}
    default_ms = params["AnalyzeWorkerDurationAlarmMs"]["Default"]
    # the tick period at the default six ticks a minute, and the worker's timeout
    tick_ms = 60_000 / params["AnalyzeTicksPerMinute"]["Default"]
    assert default_ms < tick_ms < worker["Timeout"] * 1000
    assert params["AnalyzeWorkerDurationAlarmMs"]["MaxValue"] == worker["Timeout"] * 1000
    # routed like every alarm: ALARM and OK to the health topic
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "HealthTopic"}]
    assert alarm["TreatMissingData"] == "notBreaching"
