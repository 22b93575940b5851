"""Batch v1 request signing: HMAC-SHA256 over `v1:{timestamp}:{body}`.

The body is the exact bytes sent (gzip-compressed), so a receiver checks the signature before
it spends anything on decompressing or parsing. This is the signer's half, all a shipper needs;
the receiver's checks (clock window, header form, constant-time compare) are in
`gpulse.wire.signing` and call `signature` from here.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_VERSION = "v1"
MAX_SKEW_S = 300  # a request signed more than 5 minutes away from the receiver's clock is refused

HEADER_NODE = "x-gpulse-node"  # "{cluster}/{node}": whose secret signed the request
HEADER_TIMESTAMP = "x-gpulse-timestamp"  # integer unix seconds
HEADER_SIGNATURE = "x-gpulse-signature"  # "v1=" + lowercase hex digest


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
