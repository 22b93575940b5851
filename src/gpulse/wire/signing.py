"""Batch v1 request signing, the receiver's half: the clock window, the header's form, and a
constant-time compare. The signature itself and the header names are defined once in
`gpulse_wire.signing` (what a shipper needs) and re-exported here.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from gpulse.errors import InvalidInput
from gpulse_wire.signing import (
    HEADER_NODE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    MAX_SKEW_S,
    SIGNATURE_VERSION,
    sign_headers,
    signature,
)

__all__ = [
    "HEADER_NODE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "MAX_SKEW_S",
    "SIGNATURE_VERSION",
    "parse_timestamp",
    "presented",
    "sign_headers",
    "signature",
    "signed_by_any",
    "verify",
]

_FORM = re.compile(r"v1=[0-9a-f]{64}")


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
