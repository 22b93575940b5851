"""Ingest Lambda: POST /v1/batches (its function URL) → verified, validated, stored once.

An adapter only: Powertools routes the request (a function URL passes every method and path: the
only route is POST /v1/batches, a wrong method on it is 405, any other path 404, both with a JSON
`error`); gpulse.ingest does the checking, gpulse.store the writing. The store's conditional write
is what makes a batch stored once: a replay (the same batch again) finds its chunks and is
acknowledged as a duplicate, writing nothing; the same batch_id with other content at those keys is
refused (409). No idempotency record is kept besides: it cost 2 write units per batch for what the
chunk's condition already knows.

The HTTP API's `POST /v1/batches` route (kept one release for shippers not yet moved to the URL)
hands over the same payload-2.0 event with routeKey `POST /v1/batches`: the resolver answers it
the same (tests/integration/test_ingest_handler.py, events/ingest_http_api.json).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, ingest, telemetry
from gpulse.errors import GpulseError, InvalidInput
from gpulse.lazy import Lazy, attributes
from gpulse.wire.batch import MAX_MESSAGE_CHARS, Batch, clip

if TYPE_CHECKING:
    from gpulse.alerting.records import AlertRecords
    from gpulse.alerting.settle import FindingsQueue
    from gpulse.config.live import LiveConfig
    from gpulse.secrets import SsmNodeSecrets
    from gpulse.store import SeriesStore

logger = Logger()
tracer = telemetry.tracer()
metrics = Metrics()
app = LambdaFunctionUrlResolver()
clock: Callable[[], float] = time.time  # the request's "now" (signing window, batch age, rotation)

# Read at import, so that a missing setting fails the cold start with its name.
SERIES_TABLE = env.require(env.SERIES_TABLE)
SERIES_TTL_DAYS = env.optional_int(env.SERIES_TTL_DAYS, 14)
STATE_TABLE = env.require(env.STATE_TABLE)
FINDINGS_QUEUE_URL = env.require(env.FINDINGS_QUEUE_URL)
NODE_SECRETS_PREFIX = env.require(env.NODE_SECRETS_PREFIX)
CONFIG_TABLE = env.require(env.CONFIG_TABLE)
CONFIG_CACHE_S = env.optional_int(env.CONFIG_CACHE_S, 30)


class Wiring(NamedTuple):
    """What requests use: built by the first request, not by the cold start (boto3 clients, the
    core's stores and numpy cost ~0.5 s of CPU there), then kept for the container's life."""

    store: SeriesStore
    alert_records: AlertRecords
    findings: FindingsQueue
    secrets: SsmNodeSecrets
    rules: LiveConfig


def _wire() -> Wiring:
    import boto3

    from gpulse.alerting.records import AlertRecords
    from gpulse.alerting.settle import FindingsQueue
    from gpulse.config.flags import DynamoDBStore
    from gpulse.config.live import LiveConfig
    from gpulse.config.store import ConfigStore
    from gpulse.secrets import SsmNodeSecrets
    from gpulse.store import DEFAULT_HOT_TTL_S, DEFAULT_SHARDS, SeriesStore

    dynamodb, sqs, ssm = boto3.client("dynamodb"), boto3.client("sqs"), boto3.client("ssm")  # one each
    return Wiring(
        store=SeriesStore(
            SERIES_TABLE,
            ttl_days=SERIES_TTL_DAYS,
            hot_ttl_s=env.optional_int(env.SERIES_HOT_TTL_S, DEFAULT_HOT_TTL_S),
            shards=env.optional_int(env.SERIES_SHARDS, DEFAULT_SHARDS),
            client=dynamodb,
        ),
        alert_records=AlertRecords(STATE_TABLE, client=dynamodb),
        findings=FindingsQueue(FINDINGS_QUEUE_URL, client=sqs),
        secrets=SsmNodeSecrets(NODE_SECRETS_PREFIX, client=ssm),
        rules=LiveConfig(DynamoDBStore(ConfigStore(CONFIG_TABLE, client=dynamodb), max_age=CONFIG_CACHE_S)),
    )


wired = Lazy(_wire)
# its parts as module attributes (`app.dispatcher`), built on first use
__getattr__ = attributes(wired, Wiring._fields, __name__)


BATCHES = "/v1/batches"


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers
    )


@app.post(BATCHES)
@tracer.capture_method
def post_batch() -> Response:
    event = app.current_event
    raw = event.body or ""
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode()
    headers = {k.lower(): v for k, v in (event.headers or {}).items()}
    w = wired()
    verified = ingest.verify_request(body, headers, secrets=w.secrets, now=clock())
    batch = verified.batch
    logger.append_keys(cluster=batch.cluster, node=batch.node, batch_id=batch.batch_id)
    result = ingest.store(batch, w.store).body()  # a replay: acknowledged, duplicate, nothing written
    telemetry.emit(metrics, "BatchesDuplicate" if result["duplicate"] else "BatchesStored")
    if not result["duplicate"]:
        telemetry.emit(metrics, "SamplesStored", batch.samples)
        announce_hardware_errors(batch)
    logger.info("batch accepted", samples=batch.samples, duplicate=result["duplicate"])
    return _json(200, result)


def announce_hardware_errors(batch: Batch) -> None:
    """The fast path; the batch is stored already, so a failure here only leaves it to analyze."""
    from gpulse import fastpath  # the detectors: loaded by the first request, not the cold start

    w = wired()
    try:
        published = fastpath.hardware_alerts(batch.doc, w.alert_records, w.findings, w.rules)
    except GpulseError as e:
        logger.warning(
            "hardware fast path failed; analyze will catch up",
            error_type=type(e).__name__,
            error=clip(str(e)),
        )
        return
    if published:
        telemetry.emit(metrics, "FindingsPublished", len(published))
        logger.info("hardware errors announced", faults=[f.summary for f in published])


@app.exception_handler(GpulseError)
def refused(e: GpulseError) -> Response:
    """`retryable` decides: 503 for what may pass later (a throttled store), else a 4xx that says
    why. A non-retryable store error on a valid batch is 422: resending the same cannot help."""
    if e.retryable:
        return store_unavailable(e)
    status = e.status if isinstance(e, InvalidInput) else 422
    reason = clip(str(e), 2 * MAX_MESSAGE_CHARS)  # every message quotes little; this bounds the sum
    telemetry.emit(metrics, "BatchesRejected")
    if status == 401:  # a spike is a rotated secret a node lacks, or someone guessing (an alarm)
        telemetry.emit(metrics, "BatchesUnauthorized")
    logger.warning("batch rejected", status=status, reason=reason, error_type=type(e).__name__)
    return _json(status, {"error": reason})


@app.not_found
def not_a_batch(_: NotFoundError) -> Response:
    """What the HTTP API's routing used to refuse before ingest ran: the function URL passes any
    method and path, so ingest says which one it serves. Nothing is read or looked up first."""
    event = app.current_event
    method, path = event.http_method, event.path
    logger.warning("not a batch request", method=clip(method, 16), path=clip(path, 64))
    if path == BATCHES:
        return _json(405, {"error": f"{BATCHES} takes POST only"}, {"Allow": "POST"})
    return _json(404, {"error": f"no such path; batches go to POST {BATCHES}"})


def store_unavailable(e: Exception) -> Response:
    logger.warning("store unavailable", error_type=type(e).__name__)
    return _json(503, {"error": "storage is unavailable; retry later"}, {"Retry-After": "5"})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
