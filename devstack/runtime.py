"""One function of the template, run locally the way Lambda runs it, with its event source.

`python -m devstack.runtime FUNCTION --endpoint URL --port N` runs in its own process (as a
Lambda container does), with exactly the environment the template gives the function, and
imports the same `functions/<name>/app.py` handler that `sam build` packages:

- an HttpApi event: an HTTP server on 127.0.0.1 that turns requests into API Gateway v2
  (payload format 2.0) events and the handler's answer back into HTTP;
- a FunctionUrlConfig: the same, but as the function's own URL does it: every method and path
  reaches the handler (routeKey `$default`, domain `<url-id>.lambda-url.<region>.on.aws`); with
  HttpApi routes too (ingest's old `POST /v1/batches`), one port serves both: a request that
  matches a route gets the HTTP API's event, any other the URL's;
- a Schedule event: the handler fired with an EventBridge scheduled event every rate/time_scale;
- an SQS event: an event-source-mapping poller that deletes what succeeded and leaves the
  `batchItemFailures` to come back after the visibility timeout (scaled like the schedule);
- an SNS event: the topic delivers to a private queue (moto's SNS → SQS), and each notification
  is handed to the handler as the one-record SNS event Lambda gets.

One invocation at a time per process, as in one Lambda container.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

import boto3

from devstack.template import (
    FunctionSpec,
    FunctionUrl,
    HttpApiEvent,
    ScheduleEvent,
    SnsEvent,
    SqsEvent,
    deploy_local,
    function_specs,
    load_template,
    local_api_url,
)
from gpulse import env

ROOT = Path(__file__).resolve().parent.parent
HTTP_API_MAX_BYTES = 10 * 1024 * 1024  # API Gateway HTTP API payload limit
LAMBDA_SYNC_MAX_BYTES = 6 * 1024 * 1024  # a synchronous invocation's event; a function URL's request too
TOO_LARGE = b'{"message":"Request Entity Too Large"}'
logger = logging.getLogger("devstack.runtime")


@dataclass
class LambdaContext:
    """What the Lambda runtime hands a handler (the fields Powertools reads)."""

    function_name: str
    memory_limit_in_mb: int
    timeout_s: int
    aws_request_id: str = ""
    function_version: str = "$LATEST"
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


class Function:
    """A handler imported with its own environment, invoked one event at a time."""

    def __init__(self, spec: FunctionSpec, region: str, account: str) -> None:
        self.spec = spec
        self.region, self.account = region, account
        self.lock = threading.Lock()
        path = ROOT / spec.code_uri / f"{spec.handler_module}.py"
        module_spec = importlib.util.spec_from_file_location(f"{spec.logical_id}_{spec.handler_module}", path)
        if module_spec is None or module_spec.loader is None:
            raise SystemExit(f"cannot load handler module {path}")
        module: ModuleType = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        self.handler: Callable[[dict[str, Any], Any], Any] = getattr(module, spec.handler_name)

    def invoke(self, event: dict[str, Any]) -> Any:
        ctx = LambdaContext(
            function_name=self.spec.logical_id,
            memory_limit_in_mb=self.spec.memory,
            timeout_s=self.spec.timeout,
            aws_request_id=str(uuid.uuid4()),
            invoked_function_arn=f"arn:aws:lambda:{self.region}:{self.account}:function:{self.spec.logical_id}",
            log_group_name=f"/aws/lambda/{self.spec.logical_id}",
            _deadline=time.monotonic() + self.spec.timeout,
        )
        with self.lock:
            return self.handler(event, ctx)


def route_pattern(path: str) -> re.Pattern[str]:
    """An HTTP API route path as a regex: `{name}` is one segment, `{name+}` the rest (greedy)."""
    out = ""
    for literal, name, greedy in re.findall(r"([^{]*)(?:\{(\w+)(\+?)\})?", path):
        out += re.escape(literal)
        if name:
            out += f"(?P<{name}>.+)" if greedy else f"(?P<{name}>[^/]+)"
    return re.compile(out)


def match_route(
    routes: list[HttpApiEvent], method: str, path: str
) -> tuple[HttpApiEvent, dict[str, str]] | None:
    """The route a request takes and its path parameters, as API Gateway picks them."""
    for r in routes:
        m = route_pattern(r.path).fullmatch(path)
        if m is not None and r.method in (method, "ANY"):
            return r, m.groupdict()
    return None


def http_api_event(
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    route: str,
    path_parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload-format-2.0 event, as Lambda receives it."""
    now = datetime.now(UTC)
    binary = _is_binary(headers, body)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": route,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace"),
        "isBase64Encoded": bool(binary),
    }
    if query:  # API Gateway joins a repeated parameter's values with commas
        event["queryStringParameters"] = {k: ",".join(v) for k, v in parse_qs(query).items()}
    if path_parameters:
        event["pathParameters"] = path_parameters
    return event


def _is_binary(headers: dict[str, str], body: bytes) -> bool:
    """Whether the body reaches the handler base64-encoded: an encoded (gzip) or non-text body."""
    text_types = ("application/json", "text/")
    ctype = headers.get("content-type", "")
    return bool(body) and bool(headers.get("content-encoding") or not ctype.startswith(text_types))


def url_domain(function_id: str, region: str) -> str:
    """The local function URL's domain, as AWS names one (`<url-id>.lambda-url.<region>.on.aws`)."""
    return f"{function_id.lower()}.lambda-url.{region}.on.aws"


def function_url_event(
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    *,
    domain: str,
) -> dict[str, Any]:
    """A Lambda function URL's event (payload format 2.0, AuthType NONE), as the handler receives
    it: routeKey `$default` whatever the path, no pathParameters, no authorizer, and the caller's
    account `anonymous` (what AWS puts there when the URL checks no IAM identity)."""
    now = datetime.now(UTC)
    binary = _is_binary(headers, body)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": domain.split(".", 1)[0],
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace"),
        "isBase64Encoded": binary,
    }
    if query:  # repeated parameters joined with commas, as API Gateway v2 does
        event["queryStringParameters"] = {k: ",".join(v) for k, v in parse_qs(query).items()}
    return event


# What turns one request into the handler's event: None is a 404 no handler sees.
EventFor = Callable[[str, str, str, dict[str, str], bytes], dict[str, Any] | None]


def serve_http_api(fn: Function, routes: list[HttpApiEvent], port: int, stop: threading.Event) -> None:
    """The function's HttpApi routes on 127.0.0.1:`port`, as API Gateway serves them."""

    def event_for(
        method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> dict[str, Any] | None:
        matched = match_route(routes, method, path)
        if matched is None:
            return None
        route, params = matched
        return http_api_event(method, path, query, headers, body, f"{route.method} {route.path}", params)

    _serve(fn, event_for, HTTP_API_MAX_BYTES, 500, port, stop)


def serve_function_url(
    fn: Function,
    url: FunctionUrl,
    port: int,
    stop: threading.Event,
    *,
    routes: list[HttpApiEvent] | None = None,
) -> None:
    """The function's URL on 127.0.0.1:`port`: every request reaches the handler (AuthType NONE).

    A function with HttpApi routes too (ingest keeps its old API route for one release) gets both
    on this one port: a request that matches a route arrives as the HTTP API's event (its
    routeKey), any other as the URL's, so both event shapes reach the handler locally."""
    assert url.auth_type == "NONE"  # function_specs refuses the others
    domain = url_domain(fn.spec.logical_id, fn.region)

    def event_for(
        method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> dict[str, Any] | None:
        matched = match_route(routes or [], method, path)
        if matched is not None:
            route, params = matched
            return http_api_event(method, path, query, headers, body, f"{route.method} {route.path}", params)
        return function_url_event(method, path, query, headers, body, domain=domain)

    _serve(fn, event_for, LAMBDA_SYNC_MAX_BYTES, 502, port, stop)  # a URL reports a crash as 502


def _serve(
    fn: Function, event_for: EventFor, max_bytes: int, crash_status: int, port: int, stop: threading.Event
) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # the handler logs; keep stderr quiet
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in ("content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":  # HEAD: the headers of the answer, never its body
                self.wfile.write(body)

        def _handle(self) -> None:
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_bytes:
                self._answer(413, TOO_LARGE, {"Content-Type": "application/json"})
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            event = event_for(self.command, path, query, headers, body)
            if event is None:
                self._answer(404, b'{"message":"Not Found"}', {"Content-Type": "application/json"})
                return
            if len(json.dumps(event)) > LAMBDA_SYNC_MAX_BYTES:  # what Lambda refuses before the handler
                self._answer(413, TOO_LARGE, {"Content-Type": "application/json"})
                return
            try:
                result = fn.invoke(event)
            except Exception:  # an unhandled error: the API's 500 or the URL's 502, as in AWS
                logger.exception("handler raised")
                self._answer(
                    crash_status, b'{"message":"Internal Server Error"}', {"Content-Type": "application/json"}
                )
                return
            out = result.get("body") or ""
            raw = base64.b64decode(out) if result.get("isBase64Encoded") else str(out).encode()
            self._answer(int(result.get("statusCode", 200)), raw, dict(result.get("headers") or {}))

        do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready http://127.0.0.1:{server.server_address[1]}", flush=True)
    stop.wait()
    server.shutdown()


def scheduled_event(region: str, account: str, rule: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule}"],
        "detail": {},
    }


def run_schedule(fn: Function, ev: ScheduleEvent, time_scale: float, stop: threading.Event) -> None:
    period = ev.rate_seconds / time_scale
    print(f"ready schedule every {period:g}s", flush=True)
    while not stop.wait(period):
        try:
            fn.invoke(scheduled_event(fn.region, fn.account, f"{fn.spec.logical_id}-{ev.name}"))
        except Exception:  # as in AWS: the run fails, the next one comes on schedule
            logger.exception("scheduled invocation failed")


def poll_sqs(fn: Function, ev: SqsEvent, time_scale: float, stop: threading.Event) -> None:
    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=ev.queue_url, AttributeNames=["QueueArn", "VisibilityTimeout"])[
        "Attributes"
    ]
    queue_arn, visibility = arn["QueueArn"], int(arn["VisibilityTimeout"])
    retry_after = max(int(visibility / time_scale), 1)
    print(f"ready sqs {ev.queue_logical_id} batch={ev.batch_size}", flush=True)
    while not stop.is_set():
        got = sqs.receive_message(
            QueueUrl=ev.queue_url,
            MaxNumberOfMessages=ev.batch_size,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            continue
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    k: {
                        "stringValue": v.get("StringValue"),
                        "binaryValue": v.get("BinaryValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": v["DataType"],
                    }
                    for k, v in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": fn.region,
            }
            for m in got
        ]
        try:
            result = fn.invoke({"Records": records}) or {}
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            if failed and not ev.report_batch_item_failures:
                failed = {m["MessageId"] for m in got}
        except Exception:  # the whole batch failed: every message comes back
            logger.exception("sqs invocation failed")
            failed = {m["MessageId"] for m in got}
        for m in got:
            if m["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=ev.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=retry_after
                )
            else:
                sqs.delete_message(QueueUrl=ev.queue_url, ReceiptHandle=m["ReceiptHandle"])


def sns_record(envelope: dict[str, Any], subscription_arn: str) -> dict[str, Any]:
    """The SNS event Lambda gets for one notification, from the envelope SNS puts in SQS."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": envelope.get("Type", "Notification"),
                    "MessageId": envelope["MessageId"],
                    "TopicArn": envelope["TopicArn"],
                    "Subject": envelope.get("Subject"),
                    "Message": envelope["Message"],
                    "Timestamp": envelope["Timestamp"],
                    "SignatureVersion": envelope.get("SignatureVersion", "1"),
                    "Signature": envelope.get("Signature", ""),
                    # Lambda spells these two with "Url"; the SQS envelope with "URL"
                    "SigningCertUrl": envelope.get("SigningCertURL", ""),
                    "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
                    "MessageAttributes": envelope.get("MessageAttributes", {}),
                },
            }
        ]
    }


def subscribe_sns(fn: Function, ev: SnsEvent) -> tuple[str, str]:
    """The function's private queue, subscribed to the topic: (queue URL, subscription ARN).
    Idempotent (same queue name, same endpoint), so a restarted runtime takes up where it was."""
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    url = sqs.create_queue(QueueName=f"{ev.topic_arn.rsplit(':', 1)[1]}-{fn.spec.logical_id}-sns")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=ev.topic_arn, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
    return url, subscription


def run_sns(
    fn: Function, ev: SnsEvent, stop: threading.Event, subscribed: tuple[str, str] | None = None
) -> None:
    """Hand each notification of the topic to the function (`subscribed`: what subscribe_sns
    returned, when the caller subscribed before saying it is ready)."""
    sqs = boto3.client("sqs")
    url, subscription = subscribed or subscribe_sns(fn, ev)
    print(f"ready sns {ev.topic_logical_id}", flush=True)
    while not stop.is_set():
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            try:
                fn.invoke(sns_record(json.loads(m["Body"]), subscription))
            except Exception:  # Lambda would retry an asynchronous invocation twice; locally it is logged
                logger.exception("sns invocation failed")
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.runtime", description=__doc__.splitlines()[0])
    ap.add_argument("function", help="logical id in template.yaml, e.g. IngestFunction")
    ap.add_argument("--endpoint", required=True, help="the moto server, http://127.0.0.1:PORT")
    ap.add_argument(
        "--port", type=int, default=0, help="for an HttpApi or function URL function: the port to serve on"
    )
    ap.add_argument(
        "--time-scale", type=float, default=1.0, help="schedules and SQS visibility run this much faster"
    )
    ap.add_argument("--param", action="append", default=[], help="template parameter override NAME=VALUE")
    ap.add_argument("--template", default=str(ROOT / "template.yaml"))
    ap.add_argument("--prefix", default="gpulse-local", help="the local stack's resource name prefix")
    ap.add_argument(
        "--api-url",
        default="",
        help="the local HTTP API's base URL, for what the template makes of ServerlessHttpApi",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    template = load_template(args.template)
    params = dict(p.split("=", 1) for p in args.param)
    deployment = deploy_local(
        template,
        dynamodb=boto3.client("dynamodb"),
        sqs=boto3.client("sqs"),
        parameters=params,
        prefix=args.prefix,
    )
    spec = function_specs(template, deployment)[args.function]
    os.environ.update(spec.environment)  # exactly what the template gives this function
    if env.ANALYZE_MINUTE_S in spec.environment:  # analyze's minute runs as fast as its schedule
        minute_s = int(spec.environment[env.ANALYZE_MINUTE_S])
        os.environ[env.ANALYZE_MINUTE_S] = str(max(1, round(minute_s / args.time_scale)))
    if args.api_url:  # ... save that the API is on 127.0.0.1, not execute-api
        aws_url = local_api_url(deployment.region)
        os.environ.update({k: v.replace(aws_url, args.api_url) for k, v in spec.environment.items()})
    fn = Function(spec, deployment.region, deployment.account_id)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = []
    # subscribed before any thread prints "ready": what is published once the stack is up arrives
    subscribed = {ev.name: subscribe_sns(fn, ev) for ev in spec.events if isinstance(ev, SnsEvent)}
    for ev in spec.events:
        if isinstance(ev, HttpApiEvent):
            continue
        if isinstance(ev, SnsEvent):
            t = threading.Thread(target=run_sns, args=(fn, ev, stop, subscribed[ev.name]), daemon=True)
            t.start()
            threads.append(t)
            continue
        target: Any = run_schedule if isinstance(ev, ScheduleEvent) else poll_sqs
        t = threading.Thread(target=target, args=(fn, ev, args.time_scale, stop), daemon=True)
        t.start()
        threads.append(t)
    routes = [ev for ev in spec.events if isinstance(ev, HttpApiEvent)]
    if spec.url is not None:  # with its HttpApi routes, if any, on the same port
        serve_function_url(fn, spec.url, args.port, stop, routes=routes)
    elif routes:
        serve_http_api(fn, routes, args.port, stop)
    else:
        stop.wait()
    for t in threads:
        t.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
