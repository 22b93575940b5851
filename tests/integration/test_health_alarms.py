"""gpulse's own alarms, as template.yaml declares them, through SNS and the real alert handler
to the chat sink: each ALARM is one gpulse_health message, its OK resolves it. A crash in the
handler's record processing reaches chat once per window, with its file and line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from devstack.chat_sink import ChatSink
from devstack.template import TEMPLATE_PATH, load_template
from gpulse.alerting import inbox
from gpulse.finding import Finding, fingerprint
from gpulse.health import alarms
from gpulse.notification import single
from gpulse.notify import jandi, slack
from tests.events import load_event
from tests.integration.lambdas import FakeContext, chat_webhooks, deploy, load_function

pytestmark = pytest.mark.integration

TEMPLATE: dict[str, Any] = load_template(TEMPLATE_PATH)
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
ALARMS = {lid: r["Properties"] for lid, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
# the plain words a few of them must say, exactly
SAID = {
    "AnalyzeErrorsAlarm": "gpulse's analyze function failed 3 times in 5 minutes",
    "FindingsDlqAlarm": "gpulse's findings dead-letter queue is not empty: 3 waiting",
    "FindingsAgeAlarm": "findings wait too long for gpulse's alert function: the oldest has waited 302 s",
    "AnalyzeDurationAlarm": "gpulse's analyze function ran close to its 55 s timeout: "
    "its longest run took 44.0 s in 5 minutes",
    "AnalyzeWorkerDurationAlarm": "gpulse's analyze worker ran close to its 10 s tick: "
    "1 % of its runs took 8.0 s or more in 10 minutes",
}
T_ALARM, T_OK = "2026-01-01T00:00:00.000+0000", "2026-01-01T00:10:00.000+0000"


@pytest.fixture
def alert(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ChatSink]]:
    deployment = deploy(moto_server, monkeypatch)
    with ChatSink(out=None) as sink:
        chat_webhooks(deployment, sink.url)
        module = load_function("AlertFunction", deployment, monkeypatch)
        module.dispatcher.wake_queue = None
        yield module, sink


def threshold_of(props: dict[str, Any]) -> float:
    """The alarm's threshold as deployed with the defaults (a number, or a parameter's default)."""
    t = props["Threshold"]
    return float(TEMPLATE["Parameters"][t["Ref"]]["Default"] if isinstance(t, dict) else t)


def value_of(props: dict[str, Any]) -> float:
    # the datapoint that crossed: the threshold, plus 2 where it counts things
    return threshold_of(props) + (0 if props["MetricName"] == "Duration" else 2)


def statistic_of(props: dict[str, Any]) -> dict[str, str]:
    """How CloudWatch's notification names the alarm's statistic (a percentile is extended)."""
    if "ExtendedStatistic" in props:
        return {"StatisticType": "ExtendedStatistic", "ExtendedStatistic": props["ExtendedStatistic"]}
    return {"StatisticType": "Statistic", "Statistic": props["Statistic"].upper()}


def sns_event(lid: str, new: str, old: str, at: str) -> dict[str, Any]:
    """The SNS event CloudWatch's notification for template alarm `lid` arrives as."""
    props = ALARMS[lid]
    v = value_of(props)
    message = {
        "AlarmName": f"gpulse-test-{lid}",
        "AlarmDescription": props["AlarmDescription"],
        "AWSAccountId": "123456789012",
        "NewStateValue": new,
        "NewStateReason": f"Threshold Crossed: 1 out of the last 1 datapoints [{v} (01/01/26 00:00:00)] "
        f"was greater than or equal to the threshold ({threshold_of(props)}).",
        "StateChangeTime": at,
        "Region": "US East (N. Virginia)",
        "OldStateValue": old,
        "Trigger": {
            "MetricName": props["MetricName"],
            "Namespace": props["Namespace"],
            **statistic_of(props),
            "Unit": None,
            "Dimensions": [{"value": "x", "name": d["Name"]} for d in props["Dimensions"]],
            "Period": props["Period"],
            "EvaluationPeriods": props["EvaluationPeriods"],
            "ComparisonOperator": props["ComparisonOperator"],
            "Threshold": threshold_of(props),
            "TreatMissingData": props["TreatMissingData"],
        },
    }
    event = load_event("alert_sns_alarm")
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    return event


@pytest.mark.parametrize("lid", sorted(ALARMS))
def test_each_alarm_fires_in_chat_and_its_ok_resolves_it(
    lid: str, alert: tuple[ModuleType, ChatSink]
) -> None:
    module, sink = alert
    props = ALARMS[lid]
    assert (props["Namespace"], props["MetricName"]) in alarms._WORDING, "say what this alarm means"
    module.handler(sns_event(lid, "ALARM", "OK", T_ALARM), FakeContext())
    [slack_msg, jandi_msg] = sink.messages()
    summary = slack_msg["payload"]["blocks"][1]["text"]["text"]
    assert summary.startswith(slack.escape(props["AlarmDescription"]))
    if lid in SAID:
        assert summary == slack.escape(SAID[lid])
    firing = Finding(
        rule="gpulse_health",
        title="gpulse health",
        severity=alarms._WORDING[(props["Namespace"], props["MetricName"])].severity,
        state="firing",
        fingerprint=fingerprint("gpulse_health", alarm=f"gpulse-test-{lid}"),
        cluster="gpulse",
        since=1767225600.0,
        at=1767225600.0,
        summary=slack_msg["payload"]["blocks"][1]["text"]["text"].replace("&amp;", "&"),
        action=alarms._WORDING[(props["Namespace"], props["MetricName"])].action
        + f" (CloudWatch alarm gpulse-test-{lid})",
        values={"threshold": threshold_of(props), "value": value_of(props)},
    )
    n = single(firing, route="default")
    assert (slack_msg["payload"], jandi_msg["payload"]) == (slack.render(n), jandi.render(n))
    # INSUFFICIENT_DATA says nothing; OK resolves what fired
    module.handler(sns_event(lid, "INSUFFICIENT_DATA", "ALARM", T_OK), FakeContext())
    assert len(sink.messages()) == 2
    now = time.time()
    module.dispatcher.clock = lambda: now + 301  # the group's group_interval (300 s) has passed
    module.handler(sns_event(lid, "OK", "ALARM", T_OK), FakeContext())
    resolved = sink.messages()[2:]
    assert [m["kind"] for m in resolved] == ["slack", "jandi"]
    header = resolved[0]["payload"]["blocks"][0]["text"]["text"]
    assert header == "✅ RESOLVED: gpulse health"


def test_a_crash_in_record_processing_reaches_chat_once_with_file_and_line(
    alert: tuple[ModuleType, ChatSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, sink = alert

    def broken(finding: Finding) -> list[Any]:
        raise KeyError("https://hooks.slack.com/services/T0/B0/SECRET is gone")

    accept = module.dispatcher.accept
    module.dispatcher.accept = broken
    event = load_event("alert_sqs")
    for _ in range(2):  # the same crash twice within the window; Lambda still sees it fail
        with pytest.raises(BatchProcessingError):
            module.handler(event, FakeContext())
    module.dispatcher.accept = accept
    # the report went to the findings queue: feed it to the handler, as SQS would
    queue = module.QUEUE_URL
    got = boto3.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(got) == 1
    report = Finding.from_json(got[0]["Body"])
    # the innermost frame in gpulse's code: where the inbox handed the finding on
    line = next(
        i
        for i, text in enumerate(Path(inbox.__file__).read_text().splitlines(), 1)
        if "self.dispatcher.accept(message)" in text
    )
    assert (report.rule, report.cluster, report.one_shot) == ("gpulse_crash", "gpulse", True)
    assert report.summary == (
        f"gpulse's alert function raised KeyError: '<url> is gone' at gpulse/alerting/inbox.py:{line}"
    )
    sqs_event = load_event("alert_sqs")
    sqs_event["Records"][0]["body"] = got[0]["Body"]
    assert module.handler(sqs_event, FakeContext()) == {"batchItemFailures": []}
    texts = [json.dumps(m["payload"]) for m in sink.messages()]
    assert len(texts) == 2 and all(f"gpulse/alerting/inbox.py:{line}" in t for t in texts)
    assert all("SECRET" not in t and "hooks.slack.com" not in t for t in texts)
