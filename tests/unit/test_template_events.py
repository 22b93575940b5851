"""The sample events in events/ have the shapes AWS delivers and carry valid gpulse payloads."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import (
    EventBridgeEvent,
    LambdaFunctionUrlEvent,
    SNSEvent,
    SQSEvent,
)

from devstack.runtime import function_url_event, url_domain
from devstack.template import (
    TEMPLATE_PATH,
    FunctionUrl,
    HttpApiEvent,
    LocalDeployment,
    function_specs,
    load_template,
    resolve_parameters,
)
from gpulse.finding import Finding, fingerprint
from gpulse.wire import signing
from gpulse.wire.batch import inflate, parse
from node_shipper.sender import PATH as SHIPPER_PATH
from tests.events import event_names, load_event

TEMPLATE = load_template(TEMPLATE_PATH)
# a function URL's domain, as AWS names it: https://<url-id>.lambda-url.<region>.on.aws
URL_DOMAIN = re.compile(r"(?P<id>[a-z0-9]+)\.lambda-url\.(?P<region>[a-z0-9-]+)\.on\.aws")


def ingest_url() -> FunctionUrl | None:
    """IngestFunction's function URL, as the template declares it and the local stack reads it."""
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
    spec = function_specs(TEMPLATE, stub)["IngestFunction"]
    # the URL, and the old API route kept one release for shippers not yet moved to it
    assert spec.events == (HttpApiEvent(method="POST", path=SHIPPER_PATH, name="PostBatch"),)
    return spec.url


def test_every_function_has_its_sample() -> None:
    assert event_names() == [
        "alert_sns_alarm",
        "alert_sqs",
        "analyze_schedule",
        "charts_get",
        "ingest_function_url",
        "ingest_http_api",
    ]


def test_load_event_returns_a_fresh_copy_and_names_what_exists() -> None:
    first = load_event("ingest_function_url")
    first["body"] = "changed"
    assert load_event("ingest_function_url.json")["body"] != "changed"
    with pytest.raises(FileNotFoundError, match=r"no sample event 'nope'.*'alert_sqs', 'analyze_schedule'"):
        load_event("nope")


def test_ingest_sample_is_a_function_url_request_for_the_shippers_path() -> None:
    raw = load_event("ingest_function_url")
    event = LambdaFunctionUrlEvent(raw)
    assert ingest_url() == FunctionUrl(auth_type="NONE", invoke_mode="BUFFERED")
    assert event.version == "2.0"
    # a function URL has no routes: routeKey is a placeholder, the path is the request's
    assert raw["routeKey"] == raw["requestContext"]["routeKey"] == "$default"
    assert (event.http_method, event.raw_path, event.path) == ("POST", SHIPPER_PATH, SHIPPER_PATH)
    domain = URL_DOMAIN.fullmatch(event.request_context.domain_name)
    assert domain is not None and domain["region"] == "us-east-1"
    assert raw["requestContext"]["apiId"] == raw["requestContext"]["domainPrefix"] == domain["id"]
    assert raw["requestContext"]["accountId"] == "anonymous"  # AuthType NONE: no IAM caller
    assert "authorizer" not in raw["requestContext"] and "pathParameters" not in raw
    assert event.headers["host"] == event.request_context.domain_name
    assert event.is_base64_encoded is True
    assert all(name == name.lower() for name in raw["headers"])
    assert event.headers["content-encoding"] == "gzip"
    body = base64.b64decode(event.body or "")
    assert event.headers["content-length"] == str(len(body))
    assert event.headers[signing.HEADER_SIGNATURE].startswith("v1=")


def keys(value: Any) -> Any:
    """The shape of a JSON value: its keys, nested; leaves as their type."""
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items()}
    return type(value).__name__


def test_the_local_runtime_builds_the_samples_shape_from_the_same_request() -> None:
    sample = load_event("ingest_function_url")
    headers, body = sample["headers"], base64.b64decode(sample["body"])
    domain = url_domain("IngestFunction", "us-east-1")
    assert URL_DOMAIN.fullmatch(domain) is not None
    got = function_url_event("POST", SHIPPER_PATH, "", dict(headers), body, domain=domain)
    assert keys(got) == keys(sample)
    for same in ("version", "routeKey", "rawPath", "rawQueryString", "headers", "body", "isBase64Encoded"):
        assert got[same] == sample[same], same
    context, expected = got["requestContext"], sample["requestContext"]
    assert (context["accountId"], context["routeKey"], context["stage"]) == (
        "anonymous",
        "$default",
        "$default",
    )
    assert (context["domainName"], context["apiId"], context["domainPrefix"]) == (
        domain,
        "ingestfunction",
        "ingestfunction",
    )
    assert {k: v for k, v in context["http"].items() if k != "sourceIp"} == {
        k: v for k, v in expected["http"].items() if k != "sourceIp"
    }
    # a query string arrives parsed too, a repeated parameter joined with commas
    queried = function_url_event("GET", "/x", "a=1&a=2&b=3", {}, b"", domain=domain)
    assert (queried["rawQueryString"], queried["queryStringParameters"]) == (
        "a=1&a=2&b=3",
        {"a": "1,2", "b": "3"},
    )
    assert (queried["body"], queried["isBase64Encoded"]) == ("", False)


def test_ingest_sample_body_is_a_valid_batch_v1_from_the_signing_node() -> None:
    event = load_event("ingest_function_url")
    headers = event["headers"]
    body = base64.b64decode(event["body"])
    sent_at = signing.parse_timestamp(
        headers[signing.HEADER_TIMESTAMP], now=event["requestContext"]["timeEpoch"] / 1000
    )
    batch = parse(inflate(body, headers["content-encoding"]), now=sent_at)
    assert headers[signing.HEADER_NODE] == f"{batch.cluster}/{batch.node}"
    assert (batch.cluster, batch.node, batch.node_group, batch.samples) == ("demo", "node-01", "trainers", 10)
    assert batch.timestamps[-1] < sent_at


def test_the_old_api_route_sample_carries_the_same_batch_as_the_url_sample() -> None:
    """events/ingest_http_api.json: what the HTTP API's PostBatch route hands ingest (payload 2.0,
    routeKey "POST /v1/batches"), for shippers still posting to <ApiUrl>/v1/batches."""
    api, url = load_event("ingest_http_api"), load_event("ingest_function_url")
    assert api["routeKey"] == api["requestContext"]["routeKey"] == f"POST {SHIPPER_PATH}"
    assert (api["version"], api["rawPath"], api["requestContext"]["http"]["method"]) == (
        "2.0",
        SHIPPER_PATH,
        "POST",
    )
    assert api["requestContext"]["domainName"].endswith(".execute-api.us-east-1.amazonaws.com")
    assert (api["body"], api["isBase64Encoded"]) == (url["body"], url["isBase64Encoded"])


def test_a_resigned_ingest_sample_verifies() -> None:
    event = load_event("ingest_function_url")
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
