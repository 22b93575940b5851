"""template.yaml against what the code and AWS expect of it: lint, env names, grants, handlers."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from cfnlint.api import ManualArgs, lint_file

from devstack.template import FUNCTION_TYPE, QUEUE_TYPE, TABLE_TYPE, TEMPLATE_PATH, load_template
from gpulse import env

TEMPLATE = load_template(TEMPLATE_PATH)
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = {lid: r["Properties"] for lid, r in RESOURCES.items() if r["Type"] == FUNCTION_TYPE}
ROOT = TEMPLATE_PATH.parent
ENV_NAMES = {value for name, value in vars(env).items() if name.isupper() and isinstance(value, str)}


def statements(function_id: str) -> list[dict[str, Any]]:
    return [s for policy in FUNCTIONS[function_id]["Policies"] for s in policy["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_cfn_lint_reports_nothing_not_even_informational() -> None:
    matches = lint_file(TEMPLATE_PATH, ManualArgs(include_checks=["I"]))
    assert [str(m) for m in matches] == []


def test_functions_set_only_names_from_gpulse_env_and_every_name_is_set_somewhere() -> None:
    set_names = {
        name
        for props in FUNCTIONS.values()
        for name in props["Environment"]["Variables"]
        if name.startswith("GPULSE_")
    }
    assert set_names == ENV_NAMES


def test_findings_queue_visibility_is_six_times_the_alert_timeout() -> None:
    # AWS's advice for an SQS event source: at least 6 × the function timeout, or messages reappear mid-run.
    (alert_id,) = [
        lid
        for lid, props in FUNCTIONS.items()
        for event in (props.get("Events") or {}).values()
        if event["Type"] == "SQS" and event["Properties"]["Queue"] == {"Fn::GetAtt": ["FindingsQueue", "Arn"]}
    ]
    assert RESOURCES["FindingsQueue"]["Properties"]["VisibilityTimeout"] == 6 * FUNCTIONS[alert_id]["Timeout"]


def test_the_dlq_keeps_messages_longer_than_the_queue() -> None:
    # A message's age carries over to the DLQ; a shorter DLQ retention would drop it on arrival.
    queue = RESOURCES["FindingsQueue"]["Properties"]
    dlq_id = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert RESOURCES[dlq_id]["Properties"]["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


def test_grants_name_actions_and_resources_never_wildcards() -> None:
    for function_id in FUNCTIONS:
        for statement in statements(function_id):
            assert statement["Effect"] == "Allow", function_id
            for action in as_list(statement["Action"]):
                assert "*" not in action, (function_id, action)
            for resource in as_list(statement["Resource"]):
                if "Fn::GetAtt" in resource:
                    target, attribute = resource["Fn::GetAtt"]
                    # a bucket itself only to list the long tier's prefix (the compactor)
                    assert RESOURCES[target]["Type"] in (TABLE_TYPE, QUEUE_TYPE, "AWS::S3::Bucket"), target
                    assert attribute == "Arn"
                elif resource["Fn::Sub"].startswith("${"):
                    # objects under one fixed prefix of a bucket of the template (alert's charts: a
                    # key per message, so the key itself is the only wildcard)
                    bucket, _, key = resource["Fn::Sub"].partition(".Arn}/")
                    if RESOURCES[bucket[2:]]["Type"] == TABLE_TYPE:  # one named index of a table
                        table = RESOURCES[bucket[2:]]["Properties"]
                        names = [i["IndexName"] for i in table["GlobalSecondaryIndexes"]]
                        assert key in [f"index/{n}" for n in names], (function_id, key)
                        continue
                    assert RESOURCES[bucket[2:]]["Type"] == "AWS::S3::Bucket", (function_id, bucket)
                    assert key in ("charts/*", "long/*"), (function_id, key)
                else:
                    arn = resource["Fn::Sub"]
                    assert arn.startswith(
                        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/gpulse/${Stage}/"
                    )


def test_the_compactor_may_list_its_bucket_unconditioned_and_touch_only_long_objects() -> None:
    """A HEAD or GET carries no s3:prefix, so ListBucket under an s3:prefix condition would not
    apply to them: S3 would answer 403, not 404, for a node-hour not written yet, and the run fail."""
    grants = {st["Sid"]: st for st in statements("CompactorFunction") if st["Sid"] != "ReadSeries"}
    assert grants == {
        "WriteLongTier": {
            "Sid": "WriteLongTier",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": {"Fn::Sub": "${LongTierBucket.Arn}/long/*"},
        },
        "ListLongTier": {
            "Sid": "ListLongTier",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": {"Fn::GetAtt": ["LongTierBucket", "Arn"]},
        },
    }


def ssm_grants(function_id: str) -> set[str]:
    """The parameter paths (as Sub strings) a function may read."""
    prefix = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"
    return {
        resource["Fn::Sub"].removeprefix(prefix)
        for statement in statements(function_id)
        if as_list(statement["Action"]) == ["ssm:GetParameter"]
        for resource in as_list(statement["Resource"])
    }


def test_each_ssm_name_a_function_is_told_is_one_it_may_read() -> None:
    variables = {lid: props["Environment"]["Variables"] for lid, props in FUNCTIONS.items()}
    assert ssm_grants("IngestFunction") == {
        variables["IngestFunction"][env.NODE_SECRETS_PREFIX]["Fn::Sub"] + "/*"
    }
    # routes in the config table name webhooks under the path the template's two live in
    webhooks = "/gpulse/${Stage}/webhooks/"
    link_key = "/gpulse/${Stage}/charts/link-key"
    assert ssm_grants("AlertFunction") == {webhooks + "*", "/gpulse/${Stage}/alertmanager/*", link_key}
    for name in (env.SLACK_WEBHOOK_PARAM, env.JANDI_WEBHOOK_PARAM):
        assert variables["AlertFunction"][name]["Fn::Sub"].startswith(webhooks)
    # the chart link key: alert signs with it, charts checks with it (and with the key before a
    # rotation, until its `until`), and neither reads more
    assert ssm_grants("ChartsFunction") == {link_key, link_key + ".previous"}
    for function_id in ("AlertFunction", "ChartsFunction"):
        assert variables[function_id][env.CHART_LINK_KEY_PARAM] == {"Fn::Sub": link_key}
    assert ssm_grants("AnalyzeFunction") == set()


def test_the_charts_function_may_only_read_charts_and_the_link_key() -> None:
    assert [(st["Sid"], st["Action"]) for st in statements("ChartsFunction")] == [
        ("ReadCharts", "s3:GetObject"),
        ("ReadChartLinkKey", "ssm:GetParameter"),
    ]
    assert statements("ChartsFunction")[0]["Resource"] == {"Fn::Sub": "${ChartsBucket.Arn}/charts/*"}
    ssm = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"
    arn = ssm + "/gpulse/${Stage}/charts/link-key"
    # charts also reads the key before a rotation; alert signs with the current one only
    assert statements("ChartsFunction")[1]["Resource"] == [{"Fn::Sub": arn}, {"Fn::Sub": arn + ".previous"}]


def test_every_table_and_queue_is_an_output() -> None:
    exported = {output["Value"].get("Ref") for output in TEMPLATE["Outputs"].values()}
    stateful = {lid for lid, r in RESOURCES.items() if r["Type"] in (TABLE_TYPE, QUEUE_TYPE)}
    assert stateful <= exported


def test_shippers_post_to_ingests_function_url_and_the_old_api_route_stays_one_release() -> None:
    ingest = FUNCTIONS["IngestFunction"]
    # auth NONE: ingest verifies every batch's HMAC itself; no Cors: shippers are not browsers
    assert ingest["FunctionUrlConfig"] == {"AuthType": "NONE"}
    # shippers in the field post to <ApiUrl>/v1/batches: without this route an upgraded stack
    # answers them 404, with its own throttle (the API's default is sized for charts)
    assert ingest["Events"] == {
        "PostBatch": {
            "Type": "HttpApi",
            "Properties": {
                "Method": "POST",
                "Path": "/v1/batches",
                "RouteSettings": {"ThrottlingBurstLimit": 200, "ThrottlingRateLimit": 100},
            },
        }
    }
    # what the HTTP API's throttle bounded, reserved concurrency bounds now
    assert ingest["ReservedConcurrentExecutions"] == {"Ref": "IngestConcurrency"}
    assert TEMPLATE["Parameters"]["IngestConcurrency"]["Default"] == 20
    routes = {
        (lid, e["Properties"]["Method"], e["Properties"]["Path"])
        for lid, props in FUNCTIONS.items()
        for e in (props.get("Events") or {}).values()
        if e["Type"] == "HttpApi"
    }
    assert routes == {
        ("ChartsFunction", "GET", "/v1/charts/{key+}"),
        ("IngestFunction", "POST", "/v1/batches"),
    }
    outputs = TEMPLATE["Outputs"]
    assert outputs["IngestUrl"]["Value"] == {"Fn::GetAtt": ["IngestFunctionUrl", "FunctionUrl"]}
    # the charts links still need the HTTP API's base (GPULSE_API_URL); the shippers do not
    api = "https://${ServerlessHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": api}
    assert FUNCTIONS["AlertFunction"]["Environment"]["Variables"][env.API_URL] == {"Fn::Sub": api}


def test_no_alarm_reads_api_gateway_and_ingests_5xx_are_its_function_urls() -> None:
    alarms = {lid: r["Properties"] for lid, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert [lid for lid, a in alarms.items() if a["Namespace"] == "AWS/ApiGateway"] == []
    five = alarms["IngestServerErrorsAlarm"]
    assert (five["Namespace"], five["MetricName"], five["Statistic"]) == ("AWS/Lambda", "Url5xxCount", "Sum")
    assert five["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "IngestFunction"}}]


def test_each_handler_named_in_the_template_is_a_function_in_its_code_uri() -> None:
    for function_id, props in FUNCTIONS.items():
        module, name = props["Handler"].rsplit(".", 1)
        source = ROOT / props["CodeUri"] / f"{module}.py"
        assert source.is_file(), f"{function_id}: {source} is missing"
        tree = ast.parse(source.read_text(encoding="utf-8"))
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in defined, f"{function_id}: {source} defines no top-level {name}()"


def test_the_layer_holds_the_core_package_and_its_requirements() -> None:
    layer = RESOURCES["CoreLayer"]
    content = ROOT / layer["Properties"]["ContentUri"]
    assert (content / "requirements.txt").is_file()
    assert (content / "gpulse" / "__init__.py").is_file()
    assert layer["Metadata"]["BuildMethod"] == TEMPLATE["Globals"]["Function"]["Runtime"]
    assert Path(content, "gpulse").resolve() == (ROOT / "src" / "gpulse").resolve()
