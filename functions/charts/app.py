"""Charts Lambda: GET /v1/charts/{key+}?exp=&sig= (HTTP API) → the chart's PNG from S3.

An adapter only: gpulse.notify.links checks the link (signature, expiry, that the key is a
chart's); the bytes are served directly (base64 body, image/png) rather than by a redirect to a
presigned URL, since chat clients' image fetchers do not all follow redirects. A refused link
gets a 4xx with a message, never a 5xx.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from gpulse import env, telemetry
from gpulse.errors import GpulseError, InvalidInput
from gpulse.lazy import Lazy, attributes

if TYPE_CHECKING:
    from gpulse.notify.links import LinkKeys

logger = Logger()
tracer = telemetry.tracer()
app = APIGatewayHttpResolver()
clock: Callable[[], float] = time.time  # the request's "now" (link expiry)

# Read at import, so that a missing setting fails the cold start with its name.
CHARTS_BUCKET = env.require(env.CHARTS_BUCKET)
CHART_LINK_KEY_PARAM = env.require(env.CHART_LINK_KEY_PARAM)
MAX_AGE_S = 86_400  # how long a browser or chat client may cache a picture (never past its link)


class Wiring(NamedTuple):
    """Built by the first request, then kept for the container's life."""

    s3: Any
    link_keys: LinkKeys


def _wire() -> Wiring:
    import boto3
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    from gpulse.notify.links import LinkKeys
    from gpulse.secrets import SsmParameters

    parameters = SsmParameters(provider=SSMProvider(boto3_client=boto3.client("ssm")))
    return Wiring(
        s3=boto3.client("s3"),
        link_keys=LinkKeys(CHART_LINK_KEY_PARAM, parameters.get),
    )


wired = Lazy(_wire)
__getattr__ = attributes(wired, Wiring._fields, __name__)


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def read_png(key: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    from gpulse.errors import StoreError

    try:
        got = wired().s3.get_object(Bucket=CHARTS_BUCKET, Key=key)
        body: bytes = got["Body"].read()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise InvalidInput("this chart is no longer stored", status=404) from None
        raise StoreError("could not read the chart") from None
    except BotoCoreError:
        raise StoreError("could not read the chart") from None
    return body


@app.get("/v1/charts/.+")
@tracer.capture_method
def get_chart() -> Response:
    event = app.current_event
    name = (event.path_parameters or {}).get("key") or event.path.removeprefix("/v1/charts/")
    query = event.query_string_parameters or {}
    now = clock()
    key = wired().link_keys.verify(name, query.get("exp"), query.get("sig"), now=now)
    png = read_png(key)
    max_age = max(0, min(MAX_AGE_S, int(query["exp"]) - int(now)))
    logger.info("chart served", key=key, bytes=len(png))
    return Response(
        status_code=200,
        content_type="image/png",
        body=png,  # bytes: Powertools answers base64 with isBase64Encoded true
        headers={"Cache-Control": f"private, max-age={max_age}"},
    )


@app.exception_handler(GpulseError)
def refused(e: GpulseError) -> Response:
    """4xx with the reason for a refused link; 503 only for a store that may answer later."""
    if e.retryable:
        logger.warning("chart store unavailable", error_type=type(e).__name__)
        return _json(503, {"error": "the chart store is unavailable; retry later"})
    status = e.status if isinstance(e, InvalidInput) else 403
    logger.info("chart link refused", status=status, reason=str(e))
    return _json(status, {"error": str(e)})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
