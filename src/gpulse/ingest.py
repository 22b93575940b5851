"""Ingest: one signed Batch v1 request in, its chunks stored once, or a 4xx that says why.

The order is the contract's (docs/batch-v1.md): size as sent → the signing headers' form (node
names, clock window, signature) → the node's secrets → constant-time HMAC over the raw bytes →
gzip inflation (bounded) → nesting → JSON → schema → semantics → the body's identity matches the
signer → store (once per batch_id). Nothing is looked up before the headers are well formed, and
nothing is decompressed or parsed before the signature holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gpulse.errors import DuplicateBatch, InvalidInput
from gpulse.secrets import PREVIOUS_SUFFIX, NodeKeys
from gpulse.wire import batch as wire
from gpulse.wire import signing


class SecretSource(Protocol):
    def node_keys(self, cluster: str, node: str, *, refresh: bool = False) -> NodeKeys | None:
        """The node's secrets, or None if no such node is registered. `refresh` asks for a fresh
        read (the source may rate-limit it): the node may have been rotated or added since."""
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
    digest: str  # sha256 of the inflated JSON (the store judges a replay by what its keys hold)


def signer(headers: dict[str, str]) -> tuple[str, str]:
    """(cluster, node) named by the node header; 401 if absent or malformed. Both are Batch v1
    names (so they make a safe SSM path), and a node's name cannot end in `.previous` (that
    parameter holds another node's old secret)."""
    raw = headers.get(signing.HEADER_NODE, "")
    cluster, sep, node = raw.partition("/")
    if not sep or not wire.NAME_PATTERN.fullmatch(cluster) or not wire.NAME_PATTERN.fullmatch(node):
        raise InvalidInput(
            f"{signing.HEADER_NODE} header must be '<cluster>/<node>', each 1-128 of [A-Za-z0-9._-] "
            "starting with a letter or digit",
            status=401,
        )
    if node.endswith(PREVIOUS_SUFFIX):
        raise InvalidInput(f"node names ending in {PREVIOUS_SUFFIX!r} are reserved", status=401)
    return cluster, node


def authenticate(
    body: bytes, headers: dict[str, str], *, secrets: SecretSource, now: float
) -> tuple[str, str]:
    """(cluster, node) whose secret signed `body`, or InvalidInput(401). A signature that no
    cached secret matches (the node was rotated or added since) re-reads the node's secrets once;
    the source rate-limits that read per node."""
    cluster, node = signer(headers)
    timestamp = signing.parse_timestamp(headers.get(signing.HEADER_TIMESTAMP), now)
    presented = signing.presented(headers.get(signing.HEADER_SIGNATURE))
    keys = secrets.node_keys(cluster, node)
    if keys is not None and signing.signed_by_any(keys.accepted(now), timestamp, body, presented):
        return cluster, node
    fresh = secrets.node_keys(cluster, node, refresh=True)
    if fresh is None:
        raise InvalidInput(f"no secret is registered for node {cluster}/{node}", status=401)
    if fresh == keys or not signing.signed_by_any(fresh.accepted(now), timestamp, body, presented):
        raise InvalidInput("signature does not match the body for this node's secret", status=401)
    return cluster, node


def verify_request(body: bytes, headers: dict[str, str], *, secrets: SecretSource, now: float) -> Verified:
    """Authenticate and validate one request. `headers` must have lower-case names."""
    if len(body) > wire.MAX_BODY_BYTES:
        raise InvalidInput(
            f"body is {len(body)} bytes; the limit is {wire.MAX_BODY_BYTES} as sent", status=413
        )
    cluster, node = authenticate(body, headers, secrets=secrets, now=now)
    raw_json = wire.inflate(body, headers.get("content-encoding"))
    batch = wire.parse(raw_json, now=now)
    if (batch.cluster, batch.node) != (cluster, node):
        raise InvalidInput(
            f"batch is for {batch.cluster}/{batch.node} but was signed by {cluster}/{node}", status=403
        )
    return Verified(batch=batch, digest=hashlib.sha256(raw_json).hexdigest())


def store(batch: wire.Batch, sink: BatchSink) -> Accepted:
    """Write the batch once. A batch stored before is acknowledged (`duplicate`, 0 chunks), not
    written again; the sink raises InvalidInput(409) for the same batch_id with other content."""
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
    """verify_request then store: the whole path, as the ingest function runs it."""
    return store(verify_request(body, headers, secrets=secrets, now=clock()).batch, sink)
