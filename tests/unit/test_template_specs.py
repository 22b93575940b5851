"""devstack.template.function_specs and its intrinsic resolution, against a hand-made deployment (no AWS)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from devstack.template import (
    FUNCTION_TYPE,
    TEMPLATE_PATH,
    FunctionSpec,
    FunctionUrl,
    HttpApiEvent,
    LocalDeployment,
    QueueRef,
    ScheduleEvent,
    SnsEvent,
    SqsEvent,
    TemplateError,
    function_specs,
    load_template,
    local_api_url,
    parse_rate,
    resolve_parameters,
)
from gpulse import env

TEMPLATE = load_template(TEMPLATE_PATH)
REGION = "eu-west-1"
ACCOUNT = "111122223333"


def queue(logical_id: str) -> QueueRef:
    name = f"q-{logical_id}"
    return {
        "url": f"http://127.0.0.1:9/{ACCOUNT}/{name}",
        "arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        "name": name,
    }


def deployment(template: dict[str, Any], **parameters: str) -> LocalDeployment:
    """What deploy_local would return, built by hand: tables t-<id>, queues q-<id>."""
    resources = template["Resources"]
    return LocalDeployment(
        tables={lid: f"t-{lid}" for lid, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"},
        queues={lid: queue(lid) for lid, r in resources.items() if r["Type"] == "AWS::SQS::Queue"},
        parameters=resolve_parameters(template, parameters),
        region=REGION,
        account_id=ACCOUNT,
        prefix="unit",
        topics={
            lid: f"arn:aws:sns:{REGION}:{ACCOUNT}:s-{lid}"
            for lid, r in resources.items()
            if r["Type"] == "AWS::SNS::Topic"
        },
        buckets={lid: f"b-{lid.lower()}" for lid, r in resources.items() if r["Type"] == "AWS::S3::Bucket"},
    )


POWERTOOLS = {
    "POWERTOOLS_SERVICE_NAME": "gpulse",
    "POWERTOOLS_METRICS_NAMESPACE": "Gpulse",
    "POWERTOOLS_LOG_LEVEL": "DEBUG",
}


def test_the_three_functions_resolve_to_exact_specs() -> None:
    specs = function_specs(TEMPLATE, deployment(TEMPLATE, Stage="dev", LogLevel="DEBUG", SeriesTtlDays="3"))
    assert specs == {
        "IngestFunction": FunctionSpec(
            logical_id="IngestFunction",
            code_uri="functions/ingest/",
            handler="app.handler",
            runtime="python3.12",
            timeout=15,
            memory=512,
            environment={
                **POWERTOOLS,
                env.SERIES_TABLE: "t-SeriesTable",
                env.NODE_SECRETS_PREFIX: "/gpulse/dev/nodes",
                env.SERIES_TTL_DAYS: "3",
                env.SERIES_HOT_TTL_S: "14400",
                env.SERIES_SHARDS: "8",
                env.STATE_TABLE: "t-StateTable",
                env.FINDINGS_QUEUE_URL: f"http://127.0.0.1:9/{ACCOUNT}/q-FindingsQueue",
                env.CONFIG_TABLE: "t-ConfigTable",
                env.CONFIG_CACHE_S: "30",
            },
            # shippers reach it through its function URL; the old API route stays one release
            events=(HttpApiEvent(method="POST", path="/v1/batches", name="PostBatch"),),
            url=FunctionUrl(auth_type="NONE", invoke_mode="BUFFERED"),
        ),
        "AnalyzeFunction": FunctionSpec(
            logical_id="AnalyzeFunction",
            code_uri="functions/analyze/",
            handler="app.handler",
            runtime="python3.12",
            timeout=55,
            memory=1024,
            environment={
                **POWERTOOLS,
                env.SERIES_TABLE: "t-SeriesTable",
                env.STATE_TABLE: "t-StateTable",
                env.CONFIG_TABLE: "t-ConfigTable",
                env.FINDINGS_QUEUE_URL: f"http://127.0.0.1:9/{ACCOUNT}/q-FindingsQueue",
                env.ANALYZE_QUEUE_URL: f"http://127.0.0.1:9/{ACCOUNT}/q-AnalyzeQueue",
                env.ANALYZE_SHARD_NODES: "500",
                env.ANALYZE_TICKS_PER_MINUTE: "6",
                env.ANALYZE_MINUTE_S: "60",
                env.ANALYZE_WINDOW_S: "600",
                env.SERIES_SHARDS: "8",
                env.CONFIG_CACHE_S: "30",
                env.HEARTBEAT_URL: "",
            },
            events=(ScheduleEvent(rate_seconds=60, enabled=True, name="EveryMinute"),),
        ),
        "AnalyzeWorkerFunction": FunctionSpec(
            logical_id="AnalyzeWorkerFunction",
            code_uri="functions/analyze_worker/",
            handler="app.handler",
            runtime="python3.12",
            timeout=55,
            memory=1024,
            environment={
                **POWERTOOLS,
                env.SERIES_TABLE: "t-SeriesTable",
                env.STATE_TABLE: "t-StateTable",
                env.CONFIG_TABLE: "t-ConfigTable",
                env.FINDINGS_QUEUE_URL: f"http://127.0.0.1:9/{ACCOUNT}/q-FindingsQueue",
                env.ANALYZE_WINDOW_S: "600",
                env.ANALYZE_SHARD_NODES: "500",
                env.SERIES_SHARDS: "8",
                env.CONFIG_CACHE_S: "30",
            },
            events=(
                SqsEvent(
                    queue_logical_id="AnalyzeQueue",
                    queue_url=f"http://127.0.0.1:9/{ACCOUNT}/q-AnalyzeQueue",
                    batch_size=1,
                    report_batch_item_failures=True,
                    enabled=True,
                    name="Tasks",
                ),
            ),
        ),
        "AlertFunction": FunctionSpec(
            logical_id="AlertFunction",
            code_uri="functions/alert/",
            handler="app.handler",
            runtime="python3.12",
            timeout=60,
            memory=256,
            environment={
                **POWERTOOLS,
                env.STATE_TABLE: "t-StateTable",
                env.CONFIG_TABLE: "t-ConfigTable",
                env.CONFIG_CACHE_S: "30",
                env.FINDINGS_DLQ_URL: f"http://127.0.0.1:9/{ACCOUNT}/q-FindingsDLQ",
                env.FINDINGS_QUEUE_URL: f"http://127.0.0.1:9/{ACCOUNT}/q-FindingsQueue",
                env.SLACK_WEBHOOK_PARAM: "/gpulse/dev/webhooks/slack",
                env.JANDI_WEBHOOK_PARAM: "/gpulse/dev/webhooks/jandi",
                env.CHARTS_BUCKET: "b-chartsbucket",
                env.CHART_LINK_S: "604800",
                env.API_URL: f"https://local.execute-api.{REGION}.amazonaws.com",
                env.CHART_LINK_KEY_PARAM: "/gpulse/dev/charts/link-key",
            },
            events=(
                SqsEvent(
                    queue_logical_id="FindingsQueue",
                    queue_url=f"http://127.0.0.1:9/{ACCOUNT}/q-FindingsQueue",
                    batch_size=10,
                    report_batch_item_failures=True,
                    enabled=True,
                    name="Findings",
                ),
                ScheduleEvent(rate_seconds=60, enabled=True, name="Tick"),
                SnsEvent(
                    topic_logical_id="HealthTopic",
                    topic_arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:s-HealthTopic",
                    name="Health",
                ),
            ),
        ),
        "ChartsFunction": FunctionSpec(
            logical_id="ChartsFunction",
            code_uri="functions/charts/",
            handler="app.handler",
            runtime="python3.12",
            timeout=10,
            memory=256,
            environment={
                **POWERTOOLS,
                env.CHARTS_BUCKET: "b-chartsbucket",
                env.CHART_LINK_KEY_PARAM: "/gpulse/dev/charts/link-key",
            },
            events=(HttpApiEvent(method="GET", path="/v1/charts/{key+}", name="GetChart"),),
        ),
        "CompactorFunction": FunctionSpec(
            logical_id="CompactorFunction",
            code_uri="functions/compactor/",
            handler="app.handler",
            runtime="python3.12",
            timeout=600,
            memory=1024,
            environment={
                **POWERTOOLS,
                env.SERIES_TABLE: "t-SeriesTable",
                env.SERIES_TTL_DAYS: "3",
                env.SERIES_HOT_TTL_S: "14400",
                env.SERIES_SHARDS: "8",
                env.LONG_TIER_BUCKET: "b-longtierbucket",
            },
            events=(ScheduleEvent(rate_seconds=3600, enabled=True, name="EveryHour"),),
        ),
    }
    assert (specs["IngestFunction"].handler_module, specs["IngestFunction"].handler_name) == (
        "app",
        "handler",
    )


# ---- parameters


def test_parameter_defaults_apply_and_come_back_as_strings() -> None:
    assert resolve_parameters(TEMPLATE) == {
        "Stage": "prod",
        "SeriesTtlDays": "14",
        "SeriesShards": "8",
        "SeriesHotTtlSeconds": "14400",
        "Tracing": "PassThrough",
        "AnalyzeWindowSeconds": "600",
        "AnalyzeTicksPerMinute": "6",
        "AnalyzeShardNodes": "500",
        "AnalyzeWorkerConcurrency": "20",
        "AnalyzeWorkerDurationAlarmMs": "8000",
        "ConfigCacheSeconds": "30",
        "LogLevel": "INFO",
        "LogRetentionDays": "30",
        "IngestConcurrency": "20",
        "HeartbeatUrl": "",
        "AlarmEmail": "",
        "ChartRetentionDays": "8",
        "ChartLinkSeconds": "604800",
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"Stage": "Prod"}, r"Stage='Prod' does not match"),
        ({"LogLevel": "TRACE"}, r"LogLevel='TRACE' is not one of"),
        ({"SeriesTtlDays": "0"}, r"SeriesTtlDays=0 is below MinValue 1"),
        ({"AnalyzeWindowSeconds": "ten"}, r"AnalyzeWindowSeconds='ten' is not a number"),
        ({"Region": "x"}, r"parameters \['Region'\] are not declared"),
    ],
)
def test_parameters_are_checked_as_cloudformation_does(given: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        resolve_parameters(TEMPLATE, given)


def test_a_parameter_without_default_must_be_given() -> None:
    with pytest.raises(TemplateError, match="parameter Secret has no Default"):
        resolve_parameters({"Parameters": {"Secret": {"Type": "String"}}, "Resources": {}})


# ---- intrinsics, on a small template


def one_function(variables: dict[str, Any], events: dict[str, Any] | None = None) -> dict[str, Any]:
    template = copy.deepcopy(TEMPLATE)
    template["Resources"]["Probe"] = {
        "Type": FUNCTION_TYPE,
        "Properties": {
            "CodeUri": "functions/probe/",
            "Handler": "probe.main",
            "Environment": {"Variables": variables},
            "Events": events or {},
        },
    }
    return template


def probe(variables: dict[str, Any], events: dict[str, Any] | None = None) -> FunctionSpec:
    template = one_function(variables, events)
    return function_specs(template, deployment(template))["Probe"]


def test_sub_getatt_join_and_pseudo_parameters_resolve() -> None:
    spec = probe(
        {
            "PSEUDO": {"Fn::Sub": "${AWS::Partition}:${AWS::Region}:${AWS::AccountId}:${AWS::URLSuffix}"},
            "STACK": {"Ref": "AWS::StackName"},
            "ATTRS": {"Fn::Sub": "${FindingsQueue.Arn}|${FindingsQueue.QueueName}|${FindingsQueue.QueueUrl}"},
            "TABLE_ARN": {"Fn::GetAtt": ["SeriesTable", "Arn"]},
            "TOPIC": {"Fn::Sub": "${HealthTopic}|${HealthTopic.TopicName}"},
            "LITERAL": {"Fn::Sub": "${!NotResolved}-${Stage}"},
            "VARS": {"Fn::Sub": ["${Name}/${Stage}", {"Name": {"Ref": "ConfigTable"}}]},
            "JOINED": {"Fn::Join": ["/", ["a", {"Ref": "Stage"}, 7]]},
            "SELECTED": {"Fn::Select": [1, ["a", {"Ref": "LogLevel"}]]},
            "NUMBER": 42,
            "FLAG": True,
        }
    )
    assert spec.environment == {
        **POWERTOOLS,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "PSEUDO": f"aws:{REGION}:{ACCOUNT}:amazonaws.com",
        "STACK": "unit",
        "ATTRS": f"arn:aws:sqs:{REGION}:{ACCOUNT}:q-FindingsQueue|q-FindingsQueue|"
        f"http://127.0.0.1:9/{ACCOUNT}/q-FindingsQueue",
        "TABLE_ARN": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t-SeriesTable",
        "TOPIC": f"arn:aws:sns:{REGION}:{ACCOUNT}:s-HealthTopic|s-HealthTopic",
        "LITERAL": "${NotResolved}-prod",
        "VARS": "t-ConfigTable/prod",
        "JOINED": "a/prod/7",
        "SELECTED": "INFO",
        "NUMBER": "42",
        "FLAG": "true",
    }
    assert (spec.timeout, spec.memory, spec.runtime) == (3, 256, "python3.12")


def test_the_implicit_http_apis_url_resolves_to_the_one_the_local_runtime_replaces() -> None:
    url = {"Fn::Sub": "https://${ServerlessHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}
    assert (
        probe({"X": url}).environment["X"]
        == local_api_url(REGION)
        == (f"https://local.execute-api.{REGION}.amazonaws.com")
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Fn::ImportValue": "shared-vpc"}, r"Probe\.Environment\.X: Fn::ImportValue is not supported"),
        ({"Ref": "CoreLayer"}, r"Probe\.Environment\.X: Ref CoreLayer names nothing the local stack creates"),
        ({"Fn::Sub": "${CoreLayer}"}, r"Probe\.Environment\.X: Ref CoreLayer names nothing"),
        (
            {"Fn::GetAtt": ["SeriesTable", "StreamArn"]},
            r"Probe\.Environment\.X: Fn::GetAtt SeriesTable\.StreamArn",
        ),
        ({"Fn::If": ["IsProd", "a", "b"]}, r"Probe\.Environment\.X: Fn::If is not supported"),
        (["a", "b"], r"Probe\.X: expected a string"),
    ],
)
def test_what_cannot_be_resolved_is_refused_with_its_place(value: Any, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        probe({"X": value})


# ---- events


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(1 hour)", 3600), ("rate(2 days)", 172800)],
)
def test_parse_rate(expression: str, seconds: int) -> None:
    assert parse_rate(expression) == seconds


@pytest.mark.parametrize(
    "expression",
    ["cron(0/5 * * * ? *)", "rate(5 minute)", "rate(1 minutes)", "rate(0 minutes)", "every minute"],
)
def test_parse_rate_refuses_cron_and_malformed_rates(expression: str) -> None:
    with pytest.raises(TemplateError, match="schedule"):
        parse_rate(expression)


def test_event_options_are_read() -> None:
    spec = probe(
        {},
        {
            "Api": {"Type": "HttpApi", "Properties": {"Method": "any", "Path": "/x/{id}"}},
            "Off": {"Type": "Schedule", "Properties": {"Schedule": "rate(5 minutes)", "Enabled": False}},
            "Dlq": {
                "Type": "SQS",
                "Properties": {"Queue": {"Fn::GetAtt": ["FindingsDLQ", "Arn"]}, "BatchSize": 1},
            },
        },
    )
    assert spec.events == (
        HttpApiEvent(method="ANY", path="/x/{id}", name="Api"),
        ScheduleEvent(rate_seconds=300, enabled=False, name="Off"),
        SqsEvent(
            queue_logical_id="FindingsDLQ",
            queue_url=f"http://127.0.0.1:9/{ACCOUNT}/q-FindingsDLQ",
            batch_size=1,
            report_batch_item_failures=False,
            enabled=True,
            name="Dlq",
        ),
    )


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"Type": "Api", "Properties": {"Method": "get", "Path": "/"}},
            r"Probe\.Events\.E: event type 'Api'",
        ),
        ({"Type": "Schedule", "Properties": {"Schedule": "cron(* * * * ? *)"}}, "runs no cron"),
        ({"Type": "HttpApi", "Properties": {}}, "explicit Method and Path"),
        (
            {"Type": "HttpApi", "Properties": {"Method": "GET", "Path": "/", "PayloadFormatVersion": "1.0"}},
            "payload format 2.0 only",
        ),
        (
            {"Type": "SQS", "Properties": {"Queue": "arn:aws:sqs:us-east-1:1:elsewhere"}},
            r"Probe\.Events\.E: Queue must be !GetAtt",
        ),
        (
            {"Type": "SNS", "Properties": {"Topic": "arn:aws:sns:us-east-1:1:elsewhere"}},
            r"Probe\.Events\.E: Topic must be !Ref",
        ),
        (
            {"Type": "SNS", "Properties": {"Topic": {"Ref": "HealthTopic"}, "FilterPolicy": {}}},
            r"Probe\.Events\.E: FilterPolicy, SqsSubscription: not served locally",
        ),
    ],
)
def test_events_the_local_stack_cannot_serve_are_refused(event: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        probe({}, {"E": event})


def test_a_handler_must_name_module_and_function() -> None:
    template = one_function({})
    template["Resources"]["Probe"]["Properties"]["Handler"] = "handler"
    with pytest.raises(TemplateError, match=r"Probe: Handler 'handler' must be module.function"):
        function_specs(template, deployment(template))


def probe_url(config: Any) -> FunctionSpec:
    template = one_function({})
    template["Resources"]["Probe"]["Properties"]["FunctionUrlConfig"] = config
    return function_specs(template, deployment(template))["Probe"]


def test_a_function_url_is_read_and_a_function_without_one_has_none() -> None:
    assert probe_url({"AuthType": "NONE"}).url == FunctionUrl(auth_type="NONE", invoke_mode="BUFFERED")
    assert probe_url({"AuthType": "NONE", "InvokeMode": "BUFFERED"}).url == FunctionUrl("NONE", "BUFFERED")
    assert probe({}).url is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"AuthType": "AWS_IAM"}, r"Probe\.FunctionUrlConfig: AuthType 'AWS_IAM'.*NONE"),
        ({}, r"Probe\.FunctionUrlConfig: AuthType ''"),
        ({"AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM"}, r"InvokeMode 'RESPONSE_STREAM'.*BUFFERED"),
        ({"AuthType": "NONE", "Cors": {"AllowOrigins": ["*"]}}, r"properties \['Cors'\] are not supported"),
        ("NONE", r"Probe\.FunctionUrlConfig: must be a mapping"),
    ],
)
def test_function_urls_the_local_stack_cannot_serve_are_refused(config: Any, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        probe_url(config)
