"""HTTP delivery shared by the webhook channels: a retrying session, a pacer, one POST.

Retries live in urllib3's `Retry` (mounted on the session), so what is retried, how often and
how long it waits is configured in one place. `post_json` turns the final answer into
success or a DeliveryError, by status code and exception class only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from gpulse.notify.errors import PermanentDeliveryError, RetryableDeliveryError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REASON_CHARS = 200  # of a refusal's body kept in PermanentDeliveryError.reason


def make_session(
    total_retries: int = 4, backoff_factor: float = 0.5, max_retry_after_s: float = 30.0
) -> requests.Session:
    """A session that retries a POST on 429/5xx and on connection failures, in process.

    Waits follow Retry-After when the server sends one, capped at `max_retry_after_s`, and
    exponential backoff (`backoff_factor` * 2**n, also capped) otherwise. The final 429/5xx
    answer is returned, not raised, so `post_json` can classify it. Worst case, one send waits
    about `total_retries * max_retry_after_s` plus its timeouts: keep that inside the Lambda
    timeout of whoever calls it.
    """
    retry = Retry(
        total=total_retries,
        # A read timeout may mean the message was posted: try once more, not `total` times,
        # each of which can cost READ_TIMEOUT_S.
        read=min(total_retries, 1),
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"POST"}),
        backoff_factor=backoff_factor,
        backoff_max=max_retry_after_s,
        respect_retry_after_header=True,
        # urllib3 >= 2.6.3 caps a long Retry-After itself (its default cap is 6 h); without this
        # a "Retry-After: 3600" would keep a Lambda asleep until it is killed.
        retry_after_max=int(max_retry_after_s),
        raise_on_status=False,
        raise_on_redirect=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class PacerLike(Protocol):
    """Anything that spaces out sends per key: `wait(key)` blocks until `key` may send and
    returns the seconds it waited. The key is a channel's pace key, never its URL (a pacer
    may keep its keys in a table or a log)."""

    def wait(self, key: str) -> float: ...


class Pacer:
    """Keeps sends with the same key (one webhook's pace key) at least `interval_s` apart.

    Slack allows about one message per second per incoming webhook. Each call reserves the
    next free slot for its key under a lock, then sleeps outside it, so concurrent senders
    queue up instead of bursting. The clock and sleep are injected for tests.
    """

    def __init__(
        self,
        interval_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Block until `key` may be used again; return the seconds waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next.get(key, now))
            self._next[key] = start + self.interval_s
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return delay


# One per process (one per warm Lambda container): every channel with the same pace key shares it.
SHARED_PACER = Pacer()


def _redact(text: str, url: str) -> str:
    """Remove the webhook URL (and its secret path) from text a server sent back."""
    path = urlsplit(url).path
    for secret in (url, path if len(path) > 1 else ""):
        if secret:
            text = text.replace(secret, "<webhook>")
    return text


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        # urllib3's parser (seconds or HTTP date); a cap far above anything we would wait.
        return Retry(total=0, retry_after_max=86400).parse_retry_after(value)
    except InvalidHeader:
        return None


def post_json(
    session: requests.Session,
    url: str,
    payload: dict[str, Any] | list[dict[str, Any]],
    *,
    kind: str,
    channel: str,
    headers: dict[str, str] | None = None,
    pacer: PacerLike | None = None,
    pace_key: str,
) -> None:
    """POST `payload` as JSON to `url`; return on 2xx, raise a DeliveryError otherwise.

    With a `pacer`, first wait for `pace_key`'s turn (the URL is never handed to the pacer).

    RetryableDeliveryError: 429 or 5xx once the session's retries ran out, connection failure,
    timeout. PermanentDeliveryError: any other status (4xx, unexpected 3xx), or a URL requests
    cannot use. The errors carry the channel name, never the URL, and do not chain requests'
    exceptions (their text contains the URL).
    """
    failure: RetryableDeliveryError | PermanentDeliveryError | None = None
    if pacer is not None:
        pacer.wait(pace_key)
    try:
        response = session.post(
            url,
            json=payload,
            headers=headers,
            timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            allow_redirects=False,  # a webhook that redirects is misconfigured; never re-POST
        )
    except requests.exceptions.Timeout:
        failure = RetryableDeliveryError(kind=kind, channel=channel, cause="timeout")
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ):
        failure = PermanentDeliveryError(kind=kind, channel=channel, cause="bad_url")
    except requests.exceptions.RequestException:  # ConnectionError, RetryError, ChunkedEncodingError
        failure = RetryableDeliveryError(kind=kind, channel=channel, cause="connection")
    if failure is not None:
        # Raised outside the except block, so requests' exception (URL in its text) is not chained.
        raise failure

    status = response.status_code
    if 200 <= status < 300:
        return
    if status == 429:
        raise RetryableDeliveryError(
            kind=kind,
            channel=channel,
            cause="rate_limited",
            status=status,
            retry_after=_retry_after(response),
        )
    if status >= 500:
        raise RetryableDeliveryError(
            kind=kind,
            channel=channel,
            cause="server_error",
            status=status,
            retry_after=_retry_after(response),
        )
    reason = _redact(response.text.strip(), url)[:REASON_CHARS]
    raise PermanentDeliveryError(kind=kind, channel=channel, cause="rejected", status=status, reason=reason)
