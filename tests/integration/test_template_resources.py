"""deploy_local against a moto server: the tables and queues are exactly what template.yaml declares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from mypy_boto3_dynamodb import DynamoDBClient
from mypy_boto3_sqs import SQSClient

from devstack.template import (
    BUCKET_TYPE,
    FUNCTION_TYPE,
    QUEUE_TYPE,
    SKIPPED_TYPES,
    TABLE_TYPE,
    TEMPLATE_PATH,
    TOPIC_TYPE,
    LocalDeployment,
    deploy_local,
    function_specs,
    load_template,
)
from gpulse import env

pytestmark = pytest.mark.integration

TEMPLATE = load_template(TEMPLATE_PATH)
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
TABLES = {lid: r["Properties"] for lid, r in RESOURCES.items() if r["Type"] == TABLE_TYPE}
QUEUES = {lid: r["Properties"] for lid, r in RESOURCES.items() if r["Type"] == QUEUE_TYPE}
PREFIX = "tpl-test"


@pytest.fixture(scope="module")
def clients(moto_server: str) -> tuple[DynamoDBClient, SQSClient]:
    return (
        boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1"),
        boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1"),
    )


@pytest.fixture(scope="module")
def deployed(clients: tuple[DynamoDBClient, SQSClient]) -> Iterator[LocalDeployment]:
    dynamodb, sqs = clients
    yield deploy_local(TEMPLATE, dynamodb=dynamodb, sqs=sqs, prefix=PREFIX, parameters={"Stage": "it"})


def test_deployment_names_every_table_and_queue(
    deployed: LocalDeployment, clients: tuple[DynamoDBClient, SQSClient]
) -> None:
    _, sqs = clients
    assert deployed.tables == {lid: f"{PREFIX}-{lid}" for lid in TABLES}
    assert {lid: q["name"] for lid, q in deployed.queues.items()} == {
        lid: f"{PREFIX}-{lid}" for lid in QUEUES
    }
    for lid, queue in deployed.queues.items():
        assert queue["arn"] == f"arn:aws:sqs:us-east-1:{deployed.account_id}:{PREFIX}-{lid}"
        assert queue["url"] == sqs.get_queue_url(QueueName=f"{PREFIX}-{lid}")["QueueUrl"]
    assert (deployed.region, deployed.account_id) == ("us-east-1", "123456789012")
    assert deployed.parameters == {
        "Stage": "it",
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


@pytest.mark.parametrize("logical_id", sorted(TABLES))
def test_table_matches_the_template(
    logical_id: str, deployed: LocalDeployment, clients: tuple[DynamoDBClient, SQSClient]
) -> None:
    dynamodb, _ = clients
    declared = TABLES[logical_id]
    name = deployed.tables[logical_id]
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == declared["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == sorted(
        declared["AttributeDefinitions"], key=lambda a: a["AttributeName"]
    )
    assert table["BillingModeSummary"]["BillingMode"] == declared["BillingMode"]
    indexes = [  # the declared shape: DynamoDB adds status and throughput
        {"IndexName": i["IndexName"], "KeySchema": i["KeySchema"], "Projection": i["Projection"]}
        for i in table.get("GlobalSecondaryIndexes", [])
    ]
    assert indexes == declared.get("GlobalSecondaryIndexes", [])
    assert table["SSEDescription"]["Status"] == (
        "ENABLED" if declared["SSESpecification"]["SSEEnabled"] else "DISABLED"
    )

    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if "TimeToLiveSpecification" in declared:
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == (
            "ENABLED",
            declared["TimeToLiveSpecification"]["AttributeName"],
        )
    else:
        assert ttl["TimeToLiveStatus"] == "DISABLED"

    pitr = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    wanted = declared.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled", False)
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == (
        "ENABLED" if wanted else "DISABLED"
    )


@pytest.mark.parametrize("logical_id", sorted(QUEUES))
def test_queue_matches_the_template(
    logical_id: str, deployed: LocalDeployment, clients: tuple[DynamoDBClient, SQSClient]
) -> None:
    _, sqs = clients
    declared = QUEUES[logical_id]
    attributes = sqs.get_queue_attributes(
        QueueUrl=deployed.queues[logical_id]["url"], AttributeNames=["All"]
    )["Attributes"]
    for key in ("VisibilityTimeout", "MessageRetentionPeriod"):
        if key in declared:
            assert attributes[key] == str(declared[key]), key
    assert attributes["SqsManagedSseEnabled"] == str(declared["SqsManagedSseEnabled"]).lower()
    if "RedrivePolicy" in declared:
        dlq_id = declared["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert json.loads(attributes["RedrivePolicy"]) == {
            "deadLetterTargetArn": deployed.queues[dlq_id]["arn"],
            "maxReceiveCount": declared["RedrivePolicy"]["maxReceiveCount"],
        }
    else:
        assert "RedrivePolicy" not in attributes


def test_findings_queue_redrives_to_the_dlq_after_five_receives(
    deployed: LocalDeployment, clients: tuple[DynamoDBClient, SQSClient]
) -> None:
    _, sqs = clients
    attributes = sqs.get_queue_attributes(
        QueueUrl=deployed.queues["FindingsQueue"]["url"],
        AttributeNames=["VisibilityTimeout", "RedrivePolicy"],
    )["Attributes"]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": deployed.queues["FindingsDLQ"]["arn"],
        "maxReceiveCount": 5,
    }
    assert attributes["VisibilityTimeout"] == "360"


def test_analyze_queue_redrives_to_its_dlq_after_two_receives_and_keeps_tasks_briefly(
    deployed: LocalDeployment, clients: tuple[DynamoDBClient, SQSClient]
) -> None:
    _, sqs = clients
    attributes = sqs.get_queue_attributes(
        QueueUrl=deployed.queues["AnalyzeQueue"]["url"],
        AttributeNames=["VisibilityTimeout", "RedrivePolicy", "MessageRetentionPeriod"],
    )["Attributes"]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": deployed.queues["AnalyzeDLQ"]["arn"],
        "maxReceiveCount": 2,
    }
    assert (attributes["VisibilityTimeout"], attributes["MessageRetentionPeriod"]) == ("330", "300")


def test_deploying_again_reuses_what_exists(
    deployed: LocalDeployment, clients: tuple[DynamoDBClient, SQSClient]
) -> None:
    dynamodb, sqs = clients
    again = deploy_local(TEMPLATE, dynamodb=dynamodb, sqs=sqs, prefix=PREFIX, parameters={"Stage": "it"})
    assert again == deployed
    # the moto server is shared by the whole session: page through every table name (100 a page)
    names = [t for page in dynamodb.get_paginator("list_tables").paginate() for t in page["TableNames"]]
    mine = [t for t in names if t.startswith(f"{PREFIX}-")]
    assert sorted(mine) == sorted(deployed.tables.values())


def test_function_environments_resolve_to_the_local_resources(deployed: LocalDeployment) -> None:
    specs = function_specs(TEMPLATE, deployed)
    powertools = {
        "POWERTOOLS_SERVICE_NAME": "gpulse",
        "POWERTOOLS_METRICS_NAMESPACE": "Gpulse",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    assert {lid: spec.environment for lid, spec in specs.items()} == {
        "IngestFunction": {
            **powertools,
            env.SERIES_TABLE: f"{PREFIX}-SeriesTable",
            env.NODE_SECRETS_PREFIX: "/gpulse/it/nodes",
            env.SERIES_TTL_DAYS: "14",
            env.SERIES_HOT_TTL_S: "14400",
            env.SERIES_SHARDS: "8",
            env.STATE_TABLE: f"{PREFIX}-StateTable",
            env.FINDINGS_QUEUE_URL: deployed.queues["FindingsQueue"]["url"],
            env.CONFIG_TABLE: f"{PREFIX}-ConfigTable",
            env.CONFIG_CACHE_S: "30",
        },
        "AnalyzeFunction": {
            **powertools,
            env.SERIES_TABLE: f"{PREFIX}-SeriesTable",
            env.STATE_TABLE: f"{PREFIX}-StateTable",
            env.CONFIG_TABLE: f"{PREFIX}-ConfigTable",
            env.FINDINGS_QUEUE_URL: deployed.queues["FindingsQueue"]["url"],
            env.ANALYZE_QUEUE_URL: deployed.queues["AnalyzeQueue"]["url"],
            env.ANALYZE_SHARD_NODES: "500",
            env.ANALYZE_TICKS_PER_MINUTE: "6",
            env.ANALYZE_MINUTE_S: "60",
            env.ANALYZE_WINDOW_S: "600",
            env.SERIES_SHARDS: "8",
            env.CONFIG_CACHE_S: "30",
            env.HEARTBEAT_URL: "",
        },
        "AnalyzeWorkerFunction": {
            **powertools,
            env.SERIES_TABLE: f"{PREFIX}-SeriesTable",
            env.STATE_TABLE: f"{PREFIX}-StateTable",
            env.CONFIG_TABLE: f"{PREFIX}-ConfigTable",
            env.FINDINGS_QUEUE_URL: deployed.queues["FindingsQueue"]["url"],
            env.ANALYZE_WINDOW_S: "600",
            env.ANALYZE_SHARD_NODES: "500",
            env.SERIES_SHARDS: "8",
            env.CONFIG_CACHE_S: "30",
        },
        "AlertFunction": {
            **powertools,
            env.STATE_TABLE: f"{PREFIX}-StateTable",
            env.CONFIG_TABLE: f"{PREFIX}-ConfigTable",
            env.CONFIG_CACHE_S: "30",
            env.FINDINGS_DLQ_URL: deployed.queues["FindingsDLQ"]["url"],
            env.FINDINGS_QUEUE_URL: deployed.queues["FindingsQueue"]["url"],
            env.SLACK_WEBHOOK_PARAM: "/gpulse/it/webhooks/slack",
            env.JANDI_WEBHOOK_PARAM: "/gpulse/it/webhooks/jandi",
            env.CHARTS_BUCKET: f"{PREFIX}-chartsbucket".lower(),
            env.CHART_LINK_S: "604800",
            env.API_URL: "https://local.execute-api.us-east-1.amazonaws.com",
            env.CHART_LINK_KEY_PARAM: "/gpulse/it/charts/link-key",
        },
        "ChartsFunction": {
            **powertools,
            env.CHARTS_BUCKET: f"{PREFIX}-chartsbucket".lower(),
            env.CHART_LINK_KEY_PARAM: "/gpulse/it/charts/link-key",
        },
        "CompactorFunction": {
            **powertools,
            env.SERIES_TABLE: f"{PREFIX}-SeriesTable",
            env.SERIES_TTL_DAYS: "14",
            env.SERIES_HOT_TTL_S: "14400",
            env.SERIES_SHARDS: "8",
            env.LONG_TIER_BUCKET: f"{PREFIX}-longtierbucket".lower(),
        },
    }


def test_topics_are_created_and_what_moto_cannot_run_is_skipped_by_name(
    deployed: LocalDeployment, moto_server: str
) -> None:
    sns = boto3.client("sns", endpoint_url=moto_server, region_name="us-east-1")
    declared = {lid for lid, r in RESOURCES.items() if r["Type"] == TOPIC_TYPE}
    assert deployed.topics == {
        lid: f"arn:aws:sns:us-east-1:{deployed.account_id}:{PREFIX}-{lid}" for lid in declared
    }
    for lid, arn in deployed.topics.items():
        attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
        assert attributes["DisplayName"] == RESOURCES[lid]["Properties"]["DisplayName"]
    # every resource type is created here, run by the local runtime, or knowingly skipped
    handled = {
        TABLE_TYPE,
        QUEUE_TYPE,
        TOPIC_TYPE,
        BUCKET_TYPE,
        FUNCTION_TYPE,
        "AWS::Serverless::LayerVersion",
    }
    assert {r["Type"] for r in RESOURCES.values()} - handled == set(SKIPPED_TYPES)
