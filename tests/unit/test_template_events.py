"""The sample events in events/ have the shapes AWS delivers and carry valid gpulse payloads."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEventV2,
    EventBridgeEvent,
    SNSEvent,
    SQSEvent,
)

from devstack.template import (
    TEMPLATE_PATH,
    HttpApiEvent,
    LocalDeployment,
    function_specs,
    load_template,
    resolve_parameters,
)
from gpulse.finding import Finding, fingerprint
from gpulse.wire import signing
from gpulse.wire.batch import inflate, parse
from tests.events import event_names, load_event

TEMPLATE = load_template(TEMPLATE_PATH)


def http_route() -> HttpApiEvent:
    """IngestFunction's HttpApi route, as the template declares it."""
    stub = LocalDeployment(
        tables={lid: lid for lid, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"},
        queues={
            lid: {"url": lid, "arn": lid, "name": lid}
            for lid, r in TEMPLATE["Resources"].items()
            if r["Type"] == "AWS::SQS::Queue"
        },
        parameters=resolve_parameters(TEMPLATE),
        region="us-east-1",
        account_id="123456789012",
        topics={lid: lid for lid, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::SNS::Topic"},
        buckets={
            lid: lid.lower() for lid, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::S3::Bucket"
        },
    )
    (route,) = function_specs(TEMPLATE, stub)["IngestFunction"].events
    assert isinstance(route, HttpApiEvent)
    return route


def test_every_function_has_its_sample() -> None:
    assert event_names() == ["alert_sns_alarm", "alert_sqs", "analyze_schedule", "charts_get", "ingest_batch"]


def test_load_event_returns_a_fresh_copy_and_names_what_exists() -> None:
    first = load_event("ingest_batch")
    first["body"] = "changed"
    assert load_event("ingest_batch.json")["body"] != "changed"
    with pytest.raises(FileNotFoundError, match=r"no sample event 'nope'.*'alert_sqs', 'analyze_schedule'"):
        load_event("nope")


def test_ingest_batch_is_an_http_api_v2_request_for_the_templates_route() -> None:
    raw = load_event("ingest_batch")
    event = APIGatewayProxyEventV2(raw)
    route = http_route()
    assert event.version == "2.0"
    assert (event.http_method, event.raw_path, event.route_key) == (
        route.method,
        route.path,
        f"{route.method} {route.path}",
    )
    assert event.is_base64_encoded is True
    assert all(name == name.lower() for name in raw["headers"])
    assert event.headers["content-encoding"] == "gzip"
    body = base64.b64decode(event.body or "")
    assert event.headers["content-length"] == str(len(body))
    assert event.headers[signing.HEADER_SIGNATURE].startswith("v1=")


def test_ingest_batch_body_is_a_valid_batch_v1_from_the_signing_node() -> None:
    event = load_event("ingest_batch")
    headers = event["headers"]
    body = base64.b64decode(event["body"])
    sent_at = signing.parse_timestamp(
        headers[signing.HEADER_TIMESTAMP], now=event["requestContext"]["timeEpoch"] / 1000
    )
    batch = parse(inflate(body, headers["content-encoding"]), now=sent_at)
    assert headers[signing.HEADER_NODE] == f"{batch.cluster}/{batch.node}"
    assert (batch.cluster, batch.node, batch.node_group, batch.samples) == ("demo", "node-01", "trainers", 10)
    assert batch.timestamps[-1] < sent_at


def test_a_resigned_ingest_batch_verifies() -> None:
    event = load_event("ingest_batch")
    body = base64.b64decode(event["body"])
    timestamp = int(event["headers"][signing.HEADER_TIMESTAMP])
    secret = b"test-secret"
    signing.verify(secret, timestamp, body, signing.signature(secret, timestamp, body))


def test_analyze_schedule_is_an_eventbridge_scheduled_event() -> None:
    event = EventBridgeEvent(load_event("analyze_schedule"))
    assert (event.detail_type, event.source, event.detail) == ("Scheduled Event", "aws.events", {})
    assert event.resources[0].startswith(f"arn:aws:events:{event.region}:{event.account}:rule/")


def test_alert_sqs_carries_one_valid_finding_v1() -> None:
    event = SQSEvent(load_event("alert_sqs"))
    (record,) = list(event.records)
    assert record.event_source == "aws:sqs"
    assert record.md5_of_body == hashlib.md5(record.body.encode()).hexdigest()
    finding = Finding.from_json(record.body)
    assert (finding.rule, finding.state, finding.severity, finding.cluster) == (
        "imbalance",
        "firing",
        "warning",
        "demo",
    )
    assert finding.fingerprint == fingerprint(
        "imbalance", cluster="demo", node_group="trainers", node="node-03"
    )
    assert finding.evidence is not None
    assert [row.label for row in finding.evidence.rows if row.flagged] == finding.nodes == ["node-03"]
    assert finding.to_json() == record.body


def test_alert_sns_alarm_is_a_cloudwatch_alarm_of_the_template_through_sns() -> None:
    event = SNSEvent(load_event("alert_sns_alarm"))
    (record,) = list(event.records)
    assert record.event_source == "aws:sns"
    alarm = json.loads(record.sns.message)
    declared = TEMPLATE["Resources"]["AnalyzeErrorsAlarm"]["Properties"]
    assert (alarm["NewStateValue"], alarm["OldStateValue"]) == ("ALARM", "OK")
    assert alarm["AlarmDescription"] == declared["AlarmDescription"]
    assert (alarm["Trigger"]["Namespace"], alarm["Trigger"]["MetricName"]) == (
        declared["Namespace"],
        declared["MetricName"],
    )
    assert (alarm["Trigger"]["Period"], alarm["Trigger"]["Threshold"]) == (
        declared["Period"],
        declared["Threshold"],
    )
