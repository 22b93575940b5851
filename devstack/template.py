"""The local stack's AWS resources, built from template.yaml and never described a second time.

`load_template` reads the SAM template (short tags such as ``!Ref`` become their long form),
`deploy_local` creates its DynamoDB tables, SQS queues and SNS topics through the boto3 clients it
is given (pointing at a moto server), and `function_specs` says how to run each function locally: its
handler, limits, environment with every intrinsic resolved against the local resources, and the
events that trigger it. Whatever the local stack cannot reproduce faithfully is refused with a
`TemplateError` that names the resource, rather than approximated.
"""

from __future__ import annotations

import graphlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import boto3
import yaml
from botocore.exceptions import ClientError

from gpulse.errors import ConfigurationError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"

TABLE_TYPE = "AWS::DynamoDB::Table"
QUEUE_TYPE = "AWS::SQS::Queue"
FUNCTION_TYPE = "AWS::Serverless::Function"
TOPIC_TYPE = "AWS::SNS::Topic"
BUCKET_TYPE = "AWS::S3::Bucket"
# What the local stack knowingly does not create, and why (anything else unknown is the runners'):
SKIPPED_TYPES: dict[str, str] = {
    # the functions run as local processes: neither Lambda's metrics nor their EMF reach moto's
    # CloudWatch, so a local alarm could never change state; tests send the alarm's SNS message
    "AWS::CloudWatch::Alarm": "no metric reaches CloudWatch locally",
    # the local runtime logs to files under the run directory
    "AWS::Logs::LogGroup": "functions log to RUN_DIR/logs locally",
    # only the optional email subscription is declared as a resource; nothing can read mail here
    "AWS::SNS::Subscription": "no email locally",
}

PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
# The implicit HTTP API SAM makes from the HttpApi events: a Ref to it resolves to this id; the
# local runtime swaps the URL it makes (`local_api_url`) for the 127.0.0.1 one it serves on.
IMPLICIT_HTTP_API = "ServerlessHttpApi"
LOCAL_API_ID = "local"


def local_api_url(region: str) -> str:
    """What `https://${ServerlessHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}` resolves to."""
    return f"https://{LOCAL_API_ID}.execute-api.{region}.{URL_SUFFIX}"


# AWS's documented defaults for a function that states neither (SAM passes them through).
DEFAULT_TIMEOUT_S = 3
DEFAULT_MEMORY_MB = 128
DEFAULT_SQS_BATCH_SIZE = 10


class TemplateError(ConfigurationError):
    """The template says something the local stack cannot stand up; the message names where."""


# --------------------------------------------------------------------------------------------
# Loading


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that knows CloudFormation's short tags and leaves date-like scalars as strings."""


# "2010-09-09" must stay the string CloudFormation reads, not a datetime.date.
_CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_SHORT_TAGS: dict[str, str] = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "And",
            "Base64",
            "Cidr",
            "Equals",
            "FindInMap",
            "GetAZs",
            "GetAtt",
            "If",
            "ImportValue",
            "Join",
            "Length",
            "Not",
            "Or",
            "Select",
            "Split",
            "Sub",
            "ToJsonString",
            "Transform",
        )
    },
}


def _construct_short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    long_name = _SHORT_TAGS.get(suffix)
    if long_name is None:
        raise TemplateError(f"unknown YAML tag !{suffix} at {node.start_mark}")
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise TemplateError(f"cannot read !{suffix} at {node.start_mark}")
    if long_name == "Fn::GetAtt" and isinstance(value, str):
        # "!GetAtt Queue.Arn" is ["Queue", "Arn"]; the attribute itself may contain dots.
        value = value.split(".", 1)
    return {long_name: value}


_CfnLoader.add_multi_constructor("!", _construct_short_tag)


def load_template(path: str | Path = TEMPLATE_PATH) -> dict[str, Any]:
    """Read a CloudFormation/SAM template; short-form intrinsics come back in their long form.

    ``!Ref X`` → ``{"Ref": "X"}``, ``!GetAtt A.B`` → ``{"Fn::GetAtt": ["A", "B"]}``,
    ``!Sub s`` → ``{"Fn::Sub": s}`` and so on. Raises TemplateError for an unknown tag or a
    document without Resources.
    """
    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=_CfnLoader)  # a SafeLoader subclass: no arbitrary objects
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise TemplateError(f"{path} is not a template: it has no Resources mapping")
    return doc


# --------------------------------------------------------------------------------------------
# What the local deployment holds


class QueueRef(TypedDict):
    url: str
    arn: str
    name: str


@dataclass(frozen=True)
class LocalDeployment:
    """The local resources created from a template, by logical id."""

    tables: dict[str, str]  # logical id → table name
    queues: dict[str, QueueRef]  # logical id → url, arn, name
    parameters: dict[str, str]  # every template parameter, defaults applied
    region: str
    account_id: str
    prefix: str = "gpulse-local"  # also what AWS::StackName resolves to
    topics: dict[str, str] = field(default_factory=dict)  # logical id → topic ARN
    buckets: dict[str, str] = field(default_factory=dict)  # logical id → bucket name


@dataclass(frozen=True)
class HttpApiEvent:
    """An HttpApi event source (payload format 2.0): the route the local API serves."""

    method: str  # upper case; "ANY" matches every method
    path: str
    name: str  # the event's key in the template


@dataclass(frozen=True)
class ScheduleEvent:
    """A Schedule (EventBridge rule) event source with a rate expression."""

    rate_seconds: int
    enabled: bool
    name: str


@dataclass(frozen=True)
class SqsEvent:
    """An SQS event source mapping."""

    queue_logical_id: str
    queue_url: str
    batch_size: int
    report_batch_item_failures: bool
    enabled: bool
    name: str


@dataclass(frozen=True)
class SnsEvent:
    """An SNS subscription of the function to a topic of the template."""

    topic_logical_id: str
    topic_arn: str
    name: str


FunctionEvent = HttpApiEvent | ScheduleEvent | SqsEvent | SnsEvent


@dataclass(frozen=True)
class FunctionUrl:
    """A function's FunctionUrlConfig: its own HTTPS endpoint, every method and path passed to the
    handler as a payload-format-2.0 event (routeKey `$default`). Locally: AuthType NONE and
    BUFFERED only (no SigV4 check, no response streaming here); no Cors (shippers are not browsers)."""

    auth_type: str = "NONE"
    invoke_mode: str = "BUFFERED"


@dataclass(frozen=True)
class FunctionSpec:
    """How to run one AWS::Serverless::Function locally."""

    logical_id: str
    code_uri: str  # as written in the template, relative to the template's directory
    handler: str  # "app.handler"
    runtime: str
    timeout: int  # seconds
    memory: int  # MB
    environment: dict[str, str]  # Globals merged with the function's, every value resolved
    events: tuple[FunctionEvent, ...]
    url: FunctionUrl | None = None  # its FunctionUrlConfig, if it has one

    @property
    def handler_module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_name(self) -> str:
        return self.handler.rsplit(".", 1)[1]


# --------------------------------------------------------------------------------------------
# Parameters and intrinsic functions


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(type(value).__name__)


def resolve_parameters(template: Mapping[str, Any], given: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every declared parameter's value: the given one, else its Default; checked as CloudFormation does.

    Raises TemplateError for an undeclared name, a missing value without default, or a value that
    breaks AllowedValues, AllowedPattern, or a Number's MinValue/MaxValue.
    """
    declared: dict[str, Any] = template.get("Parameters") or {}
    given = dict(given or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise TemplateError(f"parameters {unknown} are not declared in the template")
    values: dict[str, str] = {}
    for name, decl in declared.items():
        if name in given:
            value = str(given[name])
        elif "Default" in decl:
            value = _scalar_str(decl["Default"])
        else:
            raise TemplateError(f"parameter {name} has no Default: pass a value for it")
        allowed = decl.get("AllowedValues")
        if allowed is not None and value not in [_scalar_str(v) for v in allowed]:
            raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
        pattern = decl.get("AllowedPattern")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise TemplateError(f"parameter {name}={value!r} does not match {pattern!r}")
        if decl.get("Type") == "Number":
            try:
                number = float(value)
            except ValueError:
                raise TemplateError(f"parameter {name}={value!r} is not a number") from None
            if "MinValue" in decl and number < float(decl["MinValue"]):
                raise TemplateError(f"parameter {name}={value} is below MinValue {decl['MinValue']}")
            if "MaxValue" in decl and number > float(decl["MaxValue"]):
                raise TemplateError(f"parameter {name}={value} is above MaxValue {decl['MaxValue']}")
        values[name] = value
    return values


_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class _Resolver:
    """Resolves intrinsic functions against the local resources (filled in as they are created)."""

    def __init__(
        self,
        *,
        parameters: dict[str, str],
        tables: dict[str, str],
        queues: dict[str, QueueRef],
        region: str,
        account_id: str | None,
        stack_name: str,
        topics: dict[str, str] | None = None,
        buckets: dict[str, str] | None = None,
    ) -> None:
        self.parameters = parameters
        self.buckets = buckets if buckets is not None else {}
        self.tables = tables
        self.queues = queues
        self.topics = topics if topics is not None else {}
        self.region = region
        self.account_id = account_id
        self.stack_name = stack_name

    def resolve(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            return [self.resolve(v, where) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg, where)
            if key == "Fn::GetAtt":
                return self._get_att(arg, where)
            if key == "Fn::Sub":
                return self._sub(arg, where)
            if key == "Fn::Join":
                return self._join(arg, where)
            if key == "Fn::Select":
                return self._select(arg, where)
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"{where}: {key} is not supported by the local stack")
        return {k: self.resolve(v, f"{where}.{k}") for k, v in value.items()}

    def _account(self, where: str) -> str:
        if self.account_id is None:
            raise TemplateError(f"{where}: AWS::AccountId is not known before the first resource is created")
        return self.account_id

    def _ref(self, target: Any, where: str) -> str:
        if not isinstance(target, str):
            raise TemplateError(f"{where}: Ref takes a name, got {target!r}")
        if target in self.parameters:
            return self.parameters[target]
        if target in self.tables:
            return self.tables[target]
        if target in self.queues:
            return self.queues[target]["url"]
        if target in self.topics:
            return self.topics[target]
        if target in self.buckets:
            return self.buckets[target]
        if target == IMPLICIT_HTTP_API:
            return LOCAL_API_ID
        pseudo = {
            "AWS::Region": lambda: self.region,
            "AWS::AccountId": lambda: self._account(where),
            "AWS::Partition": lambda: PARTITION,
            "AWS::URLSuffix": lambda: URL_SUFFIX,
            "AWS::StackName": lambda: self.stack_name,
        }
        if target in pseudo:
            return pseudo[target]()
        raise TemplateError(
            f"{where}: Ref {target} names nothing the local stack creates "
            "(it resolves parameters, pseudo parameters, tables, queues, topics and buckets)"
        )

    def _get_att(self, arg: Any, where: str) -> str:
        if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, str) for a in arg)):
            raise TemplateError(f"{where}: Fn::GetAtt takes [resource, attribute], got {arg!r}")
        resource, attribute = arg
        if resource in self.tables and attribute == "Arn":
            name = self.tables[resource]
            return f"arn:{PARTITION}:dynamodb:{self.region}:{self._account(where)}:table/{name}"
        if resource in self.queues:
            queue = self.queues[resource]
            by_attribute = {"Arn": queue["arn"], "QueueUrl": queue["url"], "QueueName": queue["name"]}
            if attribute in by_attribute:
                return by_attribute[attribute]
        if resource in self.topics and attribute in ("TopicArn", "TopicName"):
            arn = self.topics[resource]
            return arn if attribute == "TopicArn" else arn.rsplit(":", 1)[1]
        if resource in self.buckets and attribute == "Arn":
            return f"arn:{PARTITION}:s3:::{self.buckets[resource]}"
        raise TemplateError(f"{where}: Fn::GetAtt {resource}.{attribute} is not available in the local stack")

    def _sub(self, arg: Any, where: str) -> str:
        if isinstance(arg, str):
            text, variables = arg, {}
        elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
            text, variables = arg[0], {k: _as_str(self.resolve(v, where), where) for k, v in arg[1].items()}
        else:
            raise TemplateError(f"{where}: Fn::Sub takes a string or [string, variables], got {arg!r}")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("!"):  # "${!Literal}" is written out as "${Literal}"
                return "${" + name[1:] + "}"
            if name in variables:
                return variables[name]
            if "." in name and not name.startswith("AWS::"):
                return self._get_att(name.split(".", 1), where)
            return self._ref(name, where)

        return _SUB_VAR.sub(replace, text)

    def _join(self, arg: Any, where: str) -> str:
        if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str)):
            raise TemplateError(f"{where}: Fn::Join takes [delimiter, list], got {arg!r}")
        items = self.resolve(arg[1], where)
        if not isinstance(items, list):
            raise TemplateError(f"{where}: Fn::Join's second argument must resolve to a list")
        return arg[0].join(_as_str(item, where) for item in items)

    def _select(self, arg: Any, where: str) -> Any:
        if not (isinstance(arg, list) and len(arg) == 2):
            raise TemplateError(f"{where}: Fn::Select takes [index, list], got {arg!r}")
        index = int(self.resolve(arg[0], where))
        items = self.resolve(arg[1], where)
        if not isinstance(items, list) or not 0 <= index < len(items):
            raise TemplateError(f"{where}: Fn::Select index {index} is outside its list")
        return items[index]


def _as_str(value: Any, where: str) -> str:
    try:
        return _scalar_str(value)
    except TypeError:
        raise TemplateError(f"{where}: expected a string, got {value!r}") from None


def _references(value: Any) -> set[str]:
    """Logical ids (and parameter names) that an unresolved value refers to."""
    found: set[str] = set()
    if isinstance(value, list):
        for v in value:
            found |= _references(v)
    elif isinstance(value, dict):
        if len(value) == 1 and "Ref" in value and isinstance(value["Ref"], str):
            return {value["Ref"]}
        if len(value) == 1 and "Fn::GetAtt" in value and isinstance(value["Fn::GetAtt"], list):
            return {str(value["Fn::GetAtt"][0])}
        if len(value) == 1 and "Fn::Sub" in value:
            arg = value["Fn::Sub"]
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            names = {m.group(1).strip().split(".", 1)[0] for m in _SUB_VAR.finditer(text)}
            return {n for n in names if not n.startswith("!")} - set(variables) | _references(variables)
        for v in value.values():
            found |= _references(v)
    return found


# --------------------------------------------------------------------------------------------
# Creating the resources

# Properties a table may carry, and what the local stack does with them. Anything else is refused.
_TABLE_PROPERTIES_USED = {
    "KeySchema",
    "AttributeDefinitions",
    "BillingMode",
    "ProvisionedThroughput",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
    "SSESpecification",
    "TimeToLiveSpecification",
    "PointInTimeRecoverySpecification",
}
# Named `{prefix}-{LogicalId}` locally; tags and protections change nothing a test can observe.
_TABLE_PROPERTIES_IGNORED = {"TableName", "Tags", "DeletionProtectionEnabled", "TableClass"}

_QUEUE_ATTRIBUTES = {
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
}
_QUEUE_PROPERTIES_IGNORED = {"QueueName", "Tags"}
# A topic's display name is kept; the rest changes nothing a local test can observe.
_TOPIC_PROPERTIES_USED = {"DisplayName"}
_TOPIC_PROPERTIES_IGNORED = {"TopicName", "Tags"}
_QUEUE_EXISTS_CODES = {"QueueAlreadyExists", "QueueNameExists", "AWS.SimpleQueueService.QueueNameExists"}


def _resources_of_type(template: Mapping[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if isinstance(resource, dict) and resource.get("Type") == type_name
    }


def _check_properties(logical_id: str, props: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(props) - allowed)
    if unknown:
        raise TemplateError(f"{logical_id}: properties {unknown} are not supported by the local stack")


def _account_from_arn(arn: str) -> str:
    return arn.split(":")[4]


def _create_table(dynamodb: DynamoDBClient, logical_id: str, name: str, props: dict[str, Any]) -> str:
    """Create (or reuse) one table with the template's keys, indexes, TTL and backups; its ARN."""
    _check_properties(logical_id, props, _TABLE_PROPERTIES_USED | _TABLE_PROPERTIES_IGNORED)
    for required in ("KeySchema", "AttributeDefinitions"):
        if required not in props:
            raise TemplateError(f"{logical_id}: {required} is required")
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if "ProvisionedThroughput" in props:
        kwargs["ProvisionedThroughput"] = {k: int(v) for k, v in props["ProvisionedThroughput"].items()}
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if key in props:
            kwargs[key] = [
                {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
                | (
                    {"ProvisionedThroughput": {k: int(v) for k, v in index["ProvisionedThroughput"].items()}}
                    if "ProvisionedThroughput" in index
                    else {}
                )
                for index in props[key]
            ]
    if "StreamSpecification" in props:
        kwargs["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": props["StreamSpecification"]["StreamViewType"],
        }
    if "SSESpecification" in props:
        kwargs["SSESpecification"] = {"Enabled": bool(props["SSESpecification"].get("SSEEnabled", False))}
    try:
        arn = dynamodb.create_table(**kwargs)["TableDescription"]["TableArn"]
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
        arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]

    ttl = props.get("TimeToLiveSpecification")
    if ttl is not None and ttl.get("Enabled", False):
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if (
            current.get("TimeToLiveStatus") != "ENABLED"
            or current.get("AttributeName") != ttl["AttributeName"]
        ):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr is not None and pitr.get("PointInTimeRecoveryEnabled", False):
        dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    return arn


def _queue_attributes(logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    _check_properties(logical_id, props, _QUEUE_ATTRIBUTES | _QUEUE_PROPERTIES_IGNORED)
    attributes: dict[str, str] = {}
    for key, value in props.items():
        if key in _QUEUE_PROPERTIES_IGNORED:
            continue
        # SQS takes every attribute as a string; policies as JSON.
        attributes[key] = (
            json.dumps(value, separators=(",", ":"))
            if isinstance(value, dict)
            else _as_str(value, f"{logical_id}.{key}")
        )
    return attributes


def _create_queue(sqs: SQSClient, name: str, attributes: dict[str, str]) -> QueueRef:
    """Create one queue, or bring an existing one of that name to the template's attributes."""
    typed = cast("dict[QueueAttributeNameType, str]", attributes)  # names checked by _queue_attributes
    try:
        url = sqs.create_queue(QueueName=name, Attributes=typed)["QueueUrl"]
    except ClientError as e:
        if e.response["Error"]["Code"] not in _QUEUE_EXISTS_CODES:
            raise
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        # FifoQueue can only be set at creation; it is part of the name anyway.
        sqs.set_queue_attributes(
            QueueUrl=url, Attributes={k: v for k, v in typed.items() if k != "FifoQueue"}
        )
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"url": url, "arn": arn, "name": name}


def _create_topic(sns: Any, logical_id: str, name: str, props: dict[str, Any]) -> str:
    """Create (or reuse: CreateTopic is idempotent by name) one topic; its ARN."""
    _check_properties(logical_id, props, _TOPIC_PROPERTIES_USED | _TOPIC_PROPERTIES_IGNORED)
    attributes = {"DisplayName": _as_str(props["DisplayName"], logical_id)} if "DisplayName" in props else {}
    return str(sns.create_topic(Name=name, Attributes=attributes)["TopicArn"])


# A bucket's settings that moto keeps and a test can read back; the rest changes nothing locally.
_BUCKET_PROPERTIES_USED = {"PublicAccessBlockConfiguration", "BucketEncryption", "LifecycleConfiguration"}
_BUCKET_PROPERTIES_IGNORED = {"BucketName", "Tags", "OwnershipControls", "VersioningConfiguration"}


def _create_bucket(s3: Any, logical_id: str, name: str, props: dict[str, Any]) -> None:
    """Create (or reuse) one bucket with the template's public-access block, default encryption
    and lifecycle rules (CloudFormation's property shapes turned into S3's API shapes)."""
    _check_properties(logical_id, props, _BUCKET_PROPERTIES_USED | _BUCKET_PROPERTIES_IGNORED)
    region = s3.meta.region_name
    create: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":  # S3 refuses a LocationConstraint of us-east-1
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**create)
    except ClientError as e:
        if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise
    if "PublicAccessBlockConfiguration" in props:
        block = {k: bool(v) for k, v in props["PublicAccessBlockConfiguration"].items()}
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)
    if "BucketEncryption" in props:
        rules = [  # CloudFormation's ServerSideEncryptionByDefault is the API's Apply…ByDefault
            {
                ("ApplyServerSideEncryptionByDefault" if k == "ServerSideEncryptionByDefault" else k): v
                for k, v in r.items()
            }
            for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    rules = (props.get("LifecycleConfiguration") or {}).get("Rules") or []
    if rules:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(logical_id, r) for r in rules]}
        )


def _lifecycle_rule(logical_id: str, rule: Mapping[str, Any]) -> dict[str, Any]:
    known = {"Id", "Status", "Prefix", "ExpirationInDays"}
    unknown = sorted(set(rule) - known)
    if unknown:
        raise TemplateError(f"{logical_id}: lifecycle rule properties {unknown} are not supported locally")
    out: dict[str, Any] = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        out["ID"] = rule["Id"]
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    return out


def deploy_local(
    template: Mapping[str, Any],
    *,
    dynamodb: DynamoDBClient,
    sqs: SQSClient,
    sns: Any | None = None,
    s3: Any | None = None,
    prefix: str = "gpulse-local",
    parameters: Mapping[str, str] | None = None,
) -> LocalDeployment:
    """Create every AWS::DynamoDB::Table, AWS::SQS::Queue, AWS::SNS::Topic and AWS::S3::Bucket of
    `template` through the given clients (`sns` and `s3` default to one at the dynamodb client's
    endpoint).

    Resources are named ``{prefix}-{LogicalId}`` (``.fifo`` appended for FIFO queues); queues are
    created after the queues they reference (a dead-letter queue before its source). Running it
    again reuses what exists. Functions are left to the local stack's runners; the types in
    SKIPPED_TYPES are knowingly not created. Raises TemplateError for a property or intrinsic
    the local stack cannot reproduce.
    """
    params = resolve_parameters(template, parameters)
    region = dynamodb.meta.region_name
    if sqs.meta.region_name != region:
        raise TemplateError(
            f"the dynamodb client is in {region} but the sqs client in {sqs.meta.region_name}"
        )
    tables: dict[str, str] = {}
    queues: dict[str, QueueRef] = {}
    resolver = _Resolver(
        parameters=params, tables=tables, queues=queues, region=region, account_id=None, stack_name=prefix
    )

    for logical_id, resource in _resources_of_type(template, TABLE_TYPE).items():
        props = resolver.resolve(resource.get("Properties") or {}, f"{logical_id}.Properties")
        name = f"{prefix}-{logical_id}"
        arn = _create_table(dynamodb, logical_id, name, props)
        resolver.account_id = resolver.account_id or _account_from_arn(arn)
        tables[logical_id] = name

    declared_queues = _resources_of_type(template, QUEUE_TYPE)
    order = graphlib.TopologicalSorter(
        {
            lid: _references(r.get("Properties") or {}) & set(declared_queues)
            for lid, r in declared_queues.items()
        }
    )
    try:
        queue_order = list(order.static_order())
    except graphlib.CycleError as e:
        raise TemplateError(f"queues refer to each other in a cycle: {e.args[1]}") from None
    for logical_id in queue_order:
        props = resolver.resolve(
            declared_queues[logical_id].get("Properties") or {}, f"{logical_id}.Properties"
        )
        attributes = _queue_attributes(logical_id, props)
        fifo = attributes.get("FifoQueue") == "true"
        queue = _create_queue(sqs, f"{prefix}-{logical_id}" + (".fifo" if fifo else ""), attributes)
        resolver.account_id = resolver.account_id or _account_from_arn(queue["arn"])
        queues[logical_id] = queue

    declared_topics = _resources_of_type(template, TOPIC_TYPE)
    if declared_topics:
        sns = sns or boto3.client("sns", region_name=region, endpoint_url=dynamodb.meta.endpoint_url)
    topics: dict[str, str] = {}
    for logical_id, resource in declared_topics.items():
        props = resolver.resolve(resource.get("Properties") or {}, f"{logical_id}.Properties")
        topics[logical_id] = _create_topic(sns, logical_id, f"{prefix}-{logical_id}", props)

    declared_buckets = _resources_of_type(template, BUCKET_TYPE)
    if declared_buckets:
        s3 = s3 or boto3.client("s3", region_name=region, endpoint_url=dynamodb.meta.endpoint_url)
    buckets: dict[str, str] = {}
    for logical_id, resource in declared_buckets.items():
        props = resolver.resolve(resource.get("Properties") or {}, f"{logical_id}.Properties")
        name = f"{prefix}-{logical_id}".lower()  # bucket names are lower case
        _create_bucket(s3, logical_id, name, props)
        buckets[logical_id] = name
    resolver.buckets = buckets

    if resolver.account_id is None:
        raise TemplateError("the template declares no table or queue for the local stack to create")
    return LocalDeployment(
        tables=tables,
        queues=queues,
        parameters=params,
        region=region,
        account_id=resolver.account_id,
        prefix=prefix,
        topics=topics,
        buckets=buckets,
    )


# --------------------------------------------------------------------------------------------
# Functions

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_RATE_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}


def parse_rate(expression: str) -> int:
    """Seconds between runs of an EventBridge ``rate(...)`` expression.

    As in AWS, the unit is singular for 1 and plural otherwise. cron(...) and anything else
    raise TemplateError: the local stack fires schedules on a fixed period only.
    """
    match = _RATE.fullmatch(expression.strip())
    if match is None:
        raise TemplateError(
            f"schedule {expression!r} is not a rate(N unit) expression; the local stack runs no cron"
        )
    value, unit = int(match.group(1)), match.group(2)
    if value < 1 or (value == 1) != (not unit.endswith("s")):
        raise TemplateError(
            f"schedule {expression!r}: use 'rate(1 {unit.rstrip('s')})' or 'rate(N {unit.rstrip('s')}s)'"
        )
    return value * _RATE_UNIT_S[unit.rstrip("s")]


def _event(
    function_id: str, name: str, event: dict[str, Any], deployment: LocalDeployment, resolver: _Resolver
) -> FunctionEvent:
    where = f"{function_id}.Events.{name}"
    kind = event.get("Type")
    props: dict[str, Any] = event.get("Properties") or {}
    if kind == "HttpApi":
        if "Method" not in props or "Path" not in props:
            raise TemplateError(f"{where}: the local API needs an explicit Method and Path")
        if str(props.get("PayloadFormatVersion", "2.0")) != "2.0":
            raise TemplateError(f"{where}: the local API sends payload format 2.0 only")
        return HttpApiEvent(method=str(props["Method"]).upper(), path=str(props["Path"]), name=name)
    if kind == "Schedule":
        enabled = bool(props.get("Enabled", True)) and props.get("State", "ENABLED") == "ENABLED"
        rate = resolver.resolve(props.get("Schedule"), where)
        if not isinstance(rate, str):
            raise TemplateError(f"{where}: Schedule must be a rate expression")
        return ScheduleEvent(rate_seconds=parse_rate(rate), enabled=enabled, name=name)
    if kind == "SQS":
        queue = props.get("Queue")
        if not (
            isinstance(queue, dict) and list(queue) == ["Fn::GetAtt"] and queue["Fn::GetAtt"][1:] == ["Arn"]
        ):
            raise TemplateError(f"{where}: Queue must be !GetAtt <queue in this template>.Arn")
        queue_id = queue["Fn::GetAtt"][0]
        if queue_id not in deployment.queues:
            raise TemplateError(f"{where}: queue {queue_id} is not in the local deployment")
        return SqsEvent(
            queue_logical_id=queue_id,
            queue_url=deployment.queues[queue_id]["url"],
            batch_size=int(resolver.resolve(props.get("BatchSize", DEFAULT_SQS_BATCH_SIZE), where)),
            report_batch_item_failures="ReportBatchItemFailures"
            in (props.get("FunctionResponseTypes") or []),
            enabled=bool(props.get("Enabled", True)),
            name=name,
        )
    if kind == "SNS":
        topic = props.get("Topic")
        if not (isinstance(topic, dict) and list(topic) == ["Ref"] and topic["Ref"] in deployment.topics):
            raise TemplateError(f"{where}: Topic must be !Ref <topic in this template>")
        if "FilterPolicy" in props or "SqsSubscription" in props:
            raise TemplateError(f"{where}: FilterPolicy, SqsSubscription: not served locally")
        return SnsEvent(topic_logical_id=topic["Ref"], topic_arn=deployment.topics[topic["Ref"]], name=name)
    raise TemplateError(f"{where}: event type {kind!r} is not served by the local stack")


def _function_url(function_id: str, config: Any) -> FunctionUrl | None:
    """A FunctionUrlConfig as the local stack serves it; what it cannot serve faithfully is refused."""
    if config is None:
        return None
    where = f"{function_id}.FunctionUrlConfig"
    if not isinstance(config, dict):
        raise TemplateError(f"{where}: must be a mapping")
    _check_properties(where, config, {"AuthType", "InvokeMode"})
    url = FunctionUrl(
        auth_type=str(config.get("AuthType", "")), invoke_mode=str(config.get("InvokeMode", "BUFFERED"))
    )
    if url.auth_type != "NONE":
        raise TemplateError(f"{where}: AuthType {url.auth_type!r}: the local stack serves NONE (no SigV4)")
    if url.invoke_mode != "BUFFERED":
        raise TemplateError(f"{where}: InvokeMode {url.invoke_mode!r}: the local stack serves BUFFERED only")
    return url


def function_specs(template: Mapping[str, Any], deployment: LocalDeployment) -> dict[str, FunctionSpec]:
    """Every AWS::Serverless::Function of `template`, ready to run against `deployment`.

    Globals.Function is merged under each function's properties (environment variables merged
    by name). Every intrinsic in the environment is resolved: Ref to a parameter (its value), a
    table (its name), a queue (its URL) or a pseudo parameter; Fn::GetAtt Arn, QueueUrl,
    QueueName; Fn::Sub; Fn::Join. Anything else raises TemplateError naming the function. A
    FunctionUrlConfig becomes the spec's `url` (AuthType NONE, BUFFERED: all the local stack serves).
    """
    resolver = _Resolver(
        parameters=deployment.parameters,
        tables=deployment.tables,
        queues=deployment.queues,
        region=deployment.region,
        account_id=deployment.account_id,
        stack_name=deployment.prefix,
        topics=deployment.topics,
        buckets=deployment.buckets,
    )
    globals_: dict[str, Any] = (template.get("Globals") or {}).get("Function") or {}
    specs: dict[str, FunctionSpec] = {}
    for logical_id, resource in _resources_of_type(template, FUNCTION_TYPE).items():
        props: dict[str, Any] = {**globals_, **(resource.get("Properties") or {})}
        variables: dict[str, Any] = {
            **((globals_.get("Environment") or {}).get("Variables") or {}),
            **(((resource.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}),
        }
        environment = {
            name: _as_str(resolver.resolve(value, f"{logical_id}.Environment.{name}"), f"{logical_id}.{name}")
            for name, value in variables.items()
        }
        for required in ("CodeUri", "Handler", "Runtime"):
            if not isinstance(props.get(required), str):
                raise TemplateError(f"{logical_id}: {required} must be a string in the function or Globals")
        if "." not in props["Handler"]:
            raise TemplateError(f"{logical_id}: Handler {props['Handler']!r} must be module.function")
        events = tuple(
            _event(logical_id, name, event, deployment, resolver)
            for name, event in (props.get("Events") or {}).items()
        )
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_uri=props["CodeUri"],
            handler=props["Handler"],
            runtime=props["Runtime"],
            timeout=int(resolver.resolve(props.get("Timeout", DEFAULT_TIMEOUT_S), f"{logical_id}.Timeout")),
            memory=int(
                resolver.resolve(props.get("MemorySize", DEFAULT_MEMORY_MB), f"{logical_id}.MemorySize")
            ),
            environment=environment,
            events=events,
            url=_function_url(logical_id, props.get("FunctionUrlConfig")),
        )
    return specs
