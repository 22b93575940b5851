"""An exception in a gpulse function → one `gpulse_crash` finding in chat, then re-raised.

The report names the function, the file and line of the innermost frame in gpulse's own code
(the core package or the function's directory) and the message, with URLs scrubbed and the
length capped. At most one report per function and file:line per `window_s` (15 min): a
conditional put in the state table claims the slot, so concurrent invocations that all crash
the same way send one message. The exception always propagates: Lambda must still see the
failure (SQS retries the record, the Errors alarm counts it).

Apply it to the handler (and to the per-record function of a batch handler):

    crash = CrashReporter("alert", STATE_TABLE, FindingsQueue(QUEUE_URL), code={HERE: "functions/alert"})

    @crash
    def record_handler(record): ...
"""

from __future__ import annotations

import functools
import logging
import re
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import boto3

import gpulse
from gpulse.aws import ConditionFailed, translated
from gpulse.finding import Finding, fingerprint
from gpulse.health import CLUSTER

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)
RULE = "gpulse_crash"
TITLE = "gpulse crashed"
WINDOW_S = 900.0
MESSAGE_CHARS = 300
CRASH_PK = "crash"
_URL = re.compile(r"https?://\S+")
_CORE = Path(gpulse.__file__).resolve().parent
_SELF = Path(__file__).resolve()

F = TypeVar("F", bound=Callable[..., Any])


class Publisher(Protocol):
    """Where a report goes (gpulse.alerting.settle.FindingsQueue)."""

    def publish(self, findings: list[Finding]) -> None: ...


def scrub(message: str, limit: int = MESSAGE_CHARS) -> str:
    """The message without URLs (webhooks carry their secret in the path), on one line, capped."""
    text = " ".join(_URL.sub("<url>", message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def where(exc: BaseException, code: Mapping[Path, str]) -> str:
    """ "file:line" of the innermost traceback frame in gpulse's code (`code`: directory → the
    name it is shown under; the core package is always included), "unknown" if none is."""
    roots = {_CORE: "gpulse", **{Path(k).resolve(): v for k, v in code.items()}}
    found = "unknown"
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename).resolve()
        if path == _SELF:
            continue
        for root, shown in roots.items():
            if path.is_relative_to(root):
                found = f"{shown}/{path.relative_to(root).as_posix()}:{frame.lineno}"
                break
    return found


def crash_finding(function: str, exc: BaseException, place: str, now: float) -> Finding:
    message = scrub(str(exc))
    error = type(exc).__name__ + (f": {message}" if message else "")
    return Finding(
        rule=RULE,
        title=TITLE,
        severity="critical",
        state="firing",
        fingerprint=fingerprint(RULE, function=function, where=place),
        cluster=CLUSTER,
        since=now,
        at=now,
        one_shot=True,  # told once; the rate limit, not a resolve, says when it may come again
        summary=f"gpulse's {function} function raised {error} at {place}",
        action=(
            f"Read the {function} function's log at this time for the whole traceback. What failed is "
            "retried; findings that keep failing end in the dead-letter queue (`gpulse dlq list`). "
            f"The same crash is reported again after {WINDOW_S / 60:.0f} minutes at the earliest."
        ),
    )


class CrashReporter:
    def __init__(
        self,
        function: str,
        table_name: str,
        queue: Publisher,
        *,
        code: Mapping[Path, str] | None = None,
        ignore: tuple[type[BaseException], ...] = (),
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
        window_s: float = WINDOW_S,
    ) -> None:
        """`ignore`: exceptions that are reported elsewhere (a batch failure whose records
        were each reported already)."""
        self.function, self.table, self.queue = function, table_name, queue
        self.code = dict(code or {})
        self.ignore = ignore
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.clock, self.window_s = clock, window_s

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except self.ignore:
                raise
            except Exception as e:
                self.report(e)
                raise

        return wrapper  # type: ignore[return-value]

    def report(self, exc: BaseException) -> Finding | None:
        """Publish the crash report unless one for the same place went out within the window;
        returns what was published. Never raises: the crash itself is what must propagate."""
        now = self.clock()
        place = where(exc, self.code)
        try:
            if not self._claim(place, now):
                logger.info("crash already reported", extra={"where": place})
                return None
            finding = crash_finding(self.function, exc, place, now)
            self.queue.publish([finding])
        except Exception:  # reporting is best effort: it must not replace the crash being reported
            logger.exception("crash report failed", extra={"where": place})
            return None
        logger.error("crash reported", extra={"where": place, "fingerprint": finding.fingerprint})
        return finding

    def _claim(self, place: str, now: float) -> bool:
        """Take the (function, place) slot until now + window, if it is free."""
        until = now + self.window_s
        try:
            with translated():
                self.client.put_item(
                    TableName=self.table,
                    Item={
                        "pk": {"S": CRASH_PK},
                        "sk": {"S": f"{self.function}#{place}"},
                        "until": {"N": repr(until)},
                        "expires_at": {"N": str(int(until) + 86400)},  # TTL only cleans up, lazily
                    },
                    ConditionExpression="attribute_not_exists(pk) OR #until <= :now",
                    ExpressionAttributeNames={"#until": "until"},
                    ExpressionAttributeValues={":now": {"N": repr(now)}},
                )
        except ConditionFailed:
            return False
        return True
