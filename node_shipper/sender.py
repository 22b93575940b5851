"""POST one gzip batch to `{endpoint}/v1/batches`, signed at send time, and classify the answer.

The failure class is data (`Verdict`), not a string match: 2xx SENT; 429, 5xx, redirects,
timeouts and connection errors RETRY (with the server's `Retry-After`, if any); 401 and 403
AUTH (the signature was refused: the node's secret may be being rotated, so the batch is worth
keeping for a while and the secret file worth reading again); 404 and 405 MISROUTED (the endpoint
is wrong, not the data: a stack upgraded under the shipper, or `--endpoint` given with the path,
so the batch is kept until someone fixes the endpoint); any other 4xx DROP, since the same bytes
will be refused again. The server's message is kept, bounded, for the log.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from gpulse_wire.signing import sign_headers
from node_shipper import __version__
from node_shipper.errors import ConfigError
from node_shipper.retry import parse_retry_after

log = logging.getLogger(__name__)

PATH = "/v1/batches"
CONNECT_TIMEOUT_S = 3.05
READ_TIMEOUT_S = 10.0
MAX_LOGGED_BODY = 300  # a server's message is quoted, never echoed whole


class Verdict(enum.Enum):
    SENT = "sent"
    RETRY = "retry"  # worth trying the same bytes again later
    AUTH = "auth"  # 401/403: refused with this secret; a rotated secret may pass later
    MISROUTED = "misrouted"  # 404/405: the endpoint is wrong, not the data; keep it until fixed
    DROP = "drop"  # refused for good: retrying cannot help


@dataclass(frozen=True)
class SendResult:
    verdict: Verdict
    status: int | None = None  # None: no HTTP answer (connection error, timeout)
    retry_after_s: float | None = None
    detail: str = ""


class Sender:
    """Posts one node's batches. The session is injected (one per process, shared by nodes)."""

    def __init__(
        self,
        *,
        session: requests.Session,
        endpoint: str,
        cluster: str,
        node: str,
        secret: bytes,
        secret_loader: Callable[[], bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._url = endpoint.rstrip("/") + PATH
        self._cluster = cluster
        self._node = node
        self._secret = secret
        self._load_secret = secret_loader
        self._clock = clock

    @property
    def url(self) -> str:
        """Where batches go: `endpoint` + /v1/batches (not a secret: logged on a 404/405)."""
        return self._url

    def reload_secret(self) -> bool:
        """Read the secret again (after a 401: rotation writes a new one); True if it changed."""
        if self._load_secret is None:
            return False
        try:
            secret = self._load_secret()
        except ConfigError as e:  # keep signing with the one we have; say why (never the secret)
            log.warning("secret not re-read", extra={"node": self._node, "error": str(e)})
            return False
        if secret == self._secret:
            return False
        self._secret = secret
        log.warning("secret file changed: signing with the new secret", extra={"node": self._node})
        return True

    def send(self, body: bytes, *, timeout_s: float | None = None) -> SendResult:
        """Sign `body` now and POST it; never raises for network or HTTP failures."""
        headers = sign_headers(self._secret, self._cluster, self._node, int(self._clock()), body)
        headers["User-Agent"] = f"gpulse-shipper/{__version__}"
        read = READ_TIMEOUT_S if timeout_s is None else max(0.5, min(READ_TIMEOUT_S, timeout_s))
        connect = min(CONNECT_TIMEOUT_S, read)
        try:
            response = self._session.post(
                self._url, data=body, headers=headers, timeout=(connect, read), allow_redirects=False
            )
        except requests.RequestException as e:  # connection refused, DNS, timeout, reset
            return SendResult(Verdict.RETRY, detail=f"{type(e).__name__}: {e}")
        status = response.status_code
        text = (response.text or "")[:MAX_LOGGED_BODY]
        if 200 <= status < 300:
            return SendResult(Verdict.SENT, status)
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        if status == 429 or status >= 500:
            return SendResult(Verdict.RETRY, status, retry_after, text)
        if status in (401, 403):
            return SendResult(Verdict.AUTH, status, None, text)
        if status in (404, 405):
            return SendResult(Verdict.MISROUTED, status, None, text)
        if 400 <= status < 500:
            return SendResult(Verdict.DROP, status, None, text)
        # 1xx/3xx: a proxy or a wrong --endpoint; keep the batch until someone fixes it.
        return SendResult(Verdict.RETRY, status, None, f"unexpected HTTP {status}; check --endpoint")
