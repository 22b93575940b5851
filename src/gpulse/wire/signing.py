"""Batch v1 request signing: HMAC-SHA256 over `v1:{timestamp}:{body}`.

The body is the exact bytes sent (gzip-compressed), so a receiver checks the signature before
it spends anything on decompressing or parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from gpulse.errors import InvalidInput

SIGNATURE_VERSION = "v1"
MAX_SKEW_S = 300  # a request signed more than 5 minutes away from the receiver's clock is refused

HEADER_NODE = "x-gpulse-node"  # "{cluster}/{node}": whose secret signed the request
HEADER_TIMESTAMP = "x-gpulse-timestamp"  # integer unix seconds
HEADER_SIGNATURE = "x-gpulse-signature"  # "v1=" + lowercase hex digest
_FORM = re.compile(r"v1=[0-9a-f]{64}")


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value that signs `body` at `timestamp` with `secret`."""
    message = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_headers(secret: bytes, cluster: str, node: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header a shipper sends with a signed, gzip-encoded batch."""
    return {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "X-Gpulse-Node": f"{cluster}/{node}",
        "X-Gpulse-Timestamp": str(timestamp),
        "X-Gpulse-Signature": signature(secret, timestamp, body),
    }


def parse_timestamp(raw: str | None, now: float) -> int:
    """The request's signing time, refused (401) when absent, malformed or outside the window."""
    if not raw:
        raise InvalidInput(f"missing {HEADER_TIMESTAMP} header", status=401)
    try:
        ts = int(raw)
    except ValueError:
        raise InvalidInput(f"{HEADER_TIMESTAMP} must be integer unix seconds", status=401) from None
    if abs(now - ts) > MAX_SKEW_S:
        raise InvalidInput(
            f"{HEADER_TIMESTAMP} is {int(now - ts)} s away from the server clock (limit {MAX_SKEW_S} s); "
            "check the node's clock",
            status=401,
        )
    return ts


def presented(raw: str | None) -> str:
    """The signature header's value, refused (401) unless it has the form of one; checked before
    any secret is looked up, so a malformed header costs no SSM read."""
    if not raw:
        raise InvalidInput(f"missing {HEADER_SIGNATURE} header", status=401)
    value = raw.strip()
    if not _FORM.fullmatch(value):
        raise InvalidInput(f"{HEADER_SIGNATURE} must be 'v1=' and 64 lowercase hex digits", status=401)
    return value


def signed_by_any(secrets: Iterable[bytes], timestamp: int, body: bytes, value: str) -> bool:
    """True if one of `secrets` signs `body` at `timestamp` as `value` says. Every secret is
    compared, each in constant time, so the answer's timing does not say which one matched."""
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(signature(secret, timestamp, body).encode(), value.encode())
    return matched


def verify(secret: bytes, timestamp: int, body: bytes, value: str | None) -> None:
    """Raise InvalidInput(401) unless `value` signs `body`; compared in constant time."""
    if not signed_by_any([secret], timestamp, body, presented(value)):
        raise InvalidInput("signature does not match the body for this node's secret", status=401)
