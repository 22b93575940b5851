"""Ingest Lambda: POST /v1/batches (HTTP API) → verified, validated, stored once.

An adapter only: Powertools routes the request and makes the write idempotent by batch_id;
gpulse.ingest does the checking, gpulse.store the writing.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, fastpath, ingest, telemetry
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue
from gpulse.config.flags import DynamoDBStore
from gpulse.config.live import LiveConfig
from gpulse.config.store import ConfigStore
from gpulse.errors import GpulseError, InvalidInput
from gpulse.secrets import SsmNodeSecrets
from gpulse.store import SeriesStore
from gpulse.wire.batch import MAX_AGE_S, MAX_MESSAGE_CHARS, Batch, clip

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayHttpResolver()
clock: Callable[[], float] = time.time  # the request's "now" (signing window, batch age, rotation)

store = SeriesStore(env.require(env.SERIES_TABLE), ttl_days=env.optional_int(env.SERIES_TTL_DAYS, 14))
alert_records = AlertRecords(env.require(env.STATE_TABLE))
findings = FindingsQueue(env.require(env.FINDINGS_QUEUE_URL))
secrets = SsmNodeSecrets(env.require(env.NODE_SECRETS_PREFIX))
rules = LiveConfig(
    DynamoDBStore(
        ConfigStore(env.require(env.CONFIG_TABLE)), max_age=env.optional_int(env.CONFIG_CACHE_S, 30)
    )
)


def replayed(response: Any, idempotent_data: DataRecord) -> Any:
    """A replay answered from the idempotency record: acknowledged, nothing written this time."""
    return {**response, "chunks": 0, "duplicate": True}


idempotency = IdempotencyConfig(
    event_key_jmespath="batch_id",
    payload_validation_jmespath="digest",  # same batch_id, other content: refused, not overwritten
    raise_on_no_idempotency_key=True,
    expires_after_seconds=MAX_AGE_S,  # as long as ingest accepts a batch at all
    response_hook=replayed,  # so a replay is counted, and handled, as one: no second fast path
)
persistence = DynamoDBPersistenceLayer(table_name=env.require(env.IDEMPOTENCY_TABLE))


@idempotent_function(data_keyword_argument="record", config=idempotency, persistence_store=persistence)
def store_once(record: dict[str, str], batch: Batch) -> dict[str, object]:
    return ingest.store(batch, store).body()


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers
    )


@app.post("/v1/batches")
@tracer.capture_method
def post_batch() -> Response:
    event = app.current_event
    raw = event.body or ""
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode()
    headers = {k.lower(): v for k, v in (event.headers or {}).items()}
    verified = ingest.verify_request(body, headers, secrets=secrets, now=clock())
    batch = verified.batch
    logger.append_keys(cluster=batch.cluster, node=batch.node, batch_id=batch.batch_id)
    result = store_once(record={"batch_id": batch.batch_id, "digest": verified.digest}, batch=batch)
    telemetry.emit(metrics, "BatchesDuplicate" if result["duplicate"] else "BatchesStored")
    if not result["duplicate"]:
        telemetry.emit(metrics, "SamplesStored", batch.samples)
        announce_hardware_errors(batch)
    logger.info("batch accepted", samples=batch.samples, duplicate=result["duplicate"])
    return _json(200, result)


def announce_hardware_errors(batch: Batch) -> None:
    """The fast path; the batch is stored already, so a failure here only leaves it to analyze."""
    try:
        published = fastpath.hardware_alerts(batch.doc, alert_records, findings, rules)
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


@app.exception_handler(IdempotencyValidationError)
def conflicting_replay(e: IdempotencyValidationError) -> Response:
    telemetry.emit(metrics, "BatchesRejected")
    logger.warning("batch_id reused with different content")
    return _json(409, {"error": "batch_id was already used for a batch with different content"})


@app.exception_handler(IdempotencyAlreadyInProgressError)
def in_progress(e: IdempotencyAlreadyInProgressError) -> Response:
    # Another request is storing this batch right now: the shipper retries 429 and then gets its answer.
    return _json(429, {"error": "this batch is being stored by another request; retry"}, {"Retry-After": "2"})


@app.exception_handler(IdempotencyPersistenceLayerError)
def store_unavailable(e: Exception) -> Response:
    logger.warning("store unavailable", error_type=type(e).__name__)
    return _json(503, {"error": "storage is unavailable; retry later"}, {"Retry-After": "5"})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register_lambda_context(context)
    return app.resolve(event, context)
