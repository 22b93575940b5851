"""Ingest: one signed Batch v1 request in, its chunks stored once, or a 4xx that says why.

The order is the contract's (docs/batch-v1.md): size as sent → who signed (node header, clock
window, secret, constant-time HMAC over the raw bytes) → gzip inflation (bounded) → JSON →
schema → semantics → the body's identity matches the signer → store (once per batch_id).
Nothing is decompressed or parsed before the signature holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gpulse.errors import DuplicateBatch, InvalidInput
from gpulse.wire import batch as wire
from gpulse.wire import signing


class SecretSource(Protocol):
    def node_secret(self, cluster: str, node: str) -> bytes | None:
        """The node's signing secret, or None if no such node is registered."""
        ...


class BatchSink(Protocol):
    def put_batch(self, batch: wire.Batch) -> int: ...


@dataclass(frozen=True)
class Accepted:
    batch_id: str
    samples: int
    chunks: int
    duplicate: bool

    def body(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "samples": self.samples,
            "chunks": self.chunks,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True)
class Verified:
    """A request whose signature holds and whose body is a valid batch from the signer."""

    batch: wire.Batch
    digest: str  # sha256 of the inflated JSON: the same batch_id with other content is a conflict


def signer(headers: dict[str, str]) -> tuple[str, str]:
    """(cluster, node) named by the node header; 401 if absent or malformed."""
    raw = headers.get(signing.HEADER_NODE, "")
    cluster, sep, node = raw.partition("/")
    if not raw or not sep or not cluster or not node or "/" in node:
        raise InvalidInput(f"{signing.HEADER_NODE} header must be '<cluster>/<node>'", status=401)
    return cluster, node


def verify_request(body: bytes, headers: dict[str, str], *, secrets: SecretSource, now: float) -> Verified:
    """Authenticate and validate one request. `headers` must have lower-case names."""
    if len(body) > wire.MAX_BODY_BYTES:
        raise InvalidInput(
            f"body is {len(body)} bytes; the limit is {wire.MAX_BODY_BYTES} as sent", status=413
        )
    cluster, node = signer(headers)
    timestamp = signing.parse_timestamp(headers.get(signing.HEADER_TIMESTAMP), now)
    secret = secrets.node_secret(cluster, node)
    if secret is None:
        raise InvalidInput(f"no secret is registered for node {cluster}/{node}", status=401)
    signing.verify(secret, timestamp, body, headers.get(signing.HEADER_SIGNATURE))
    raw_json = wire.inflate(body, headers.get("content-encoding"))
    batch = wire.parse(raw_json, now=now)
    if (batch.cluster, batch.node) != (cluster, node):
        raise InvalidInput(
            f"batch is for {batch.cluster}/{batch.node} but was signed by {cluster}/{node}", status=403
        )
    return Verified(batch=batch, digest=hashlib.sha256(raw_json).hexdigest())


def store(batch: wire.Batch, sink: BatchSink) -> Accepted:
    """Write the batch once. A batch stored before is acknowledged, not written again."""
    try:
        chunks = sink.put_batch(batch)
    except DuplicateBatch:
        return Accepted(batch.batch_id, batch.samples, 0, duplicate=True)
    return Accepted(batch.batch_id, batch.samples, chunks, duplicate=False)


def ingest(
    body: bytes,
    headers: dict[str, str],
    *,
    secrets: SecretSource,
    sink: BatchSink,
    clock: Callable[[], float],
) -> Accepted:
    """verify_request then store: the whole path, for callers that need no idempotency layer."""
    return store(verify_request(body, headers, secrets=secrets, now=clock()).batch, sink)
