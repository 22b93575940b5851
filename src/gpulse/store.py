"""The series store: Batch v1 documents as compressed chunks in one DynamoDB table.

Keys (contract 2): `pk = "{cluster}#{bucket}"`, `sk = "{t_last_ms:013d}#{node}#{batch_id}#{part}"`, where
bucket is the 10-minute bucket of the chunk's last sample. One analyze window (minutes) is then a
query on two or three partitions per cluster, never one per node. A retried batch maps to the same
keys, so the conditional write stores it once even after the idempotency record has expired.

The table also holds a node registry (`pk = "registry"`, `sk = "{cluster}#{node}"`): the list of
clusters and nodes analyze visits, with each node's group, last report and (`spool`) the state of
its shipper's disk spool as of that report.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3

from gpulse import codec
from gpulse.aws import ConditionFailed, query_all, translated
from gpulse.errors import DuplicateBatch, InvalidInput
from gpulse.wire.batch import Batch

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BUCKET_S = 600
REGISTRY_PK = "registry"
MAX_CHUNK_BYTES = 350_000  # DynamoDB's item limit is 400 KB; keys and attributes take the rest
# A batch of several chunks is written in one TransactWriteItems call, all or nothing. DynamoDB
# takes at most 100 items and 4 MB (summed item sizes) per call: so at most MAX_PARTS chunks
# (splitting halves the span, 1, 2, 4, … 32) whose items sum to at most MAX_TRANSACTION_BYTES
# (4 MB read as decimal, and each item counted generously). A batch past that is refused (413),
# never written in pieces. A 1 MiB gzip body encodes to far less (docs/batch-v1.md, "Sizes").
MAX_PARTS = 32
MAX_TRANSACTION_BYTES = 4_000_000
# What a chunk item holds besides its data, counted generously: keys (pk ≤ 140, sk ≤ 230 bytes),
# the other attributes and their names.
ITEM_OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class NodeInfo:
    cluster: str
    node: str
    node_group: str | None
    last_seen: float
    spool: str | None = None  # the shipper's disk spool as of its latest batch (Batch v1 agent.spool)


@dataclass(frozen=True)
class StoredChunk:
    key: str  # "{pk}/{sk}": where the item lies in the table
    node: str
    data: bytes  # as `codec.encode` wrote it


def bucket_of(t: float) -> int:
    return int(t // BUCKET_S) * BUCKET_S


def _slice_doc(doc: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    """The part of a Batch v1 document between sample indexes a and b (processes and events kept
    where they overlap that span)."""
    ts = doc["timestamps"]
    lo, hi = ts[a], ts[b - 1]
    after = ts[a - 1] if a > 0 else float("-inf")  # each event goes to exactly one part
    until = hi if b < len(ts) else float("inf")
    part = {**doc, "timestamps": ts[a:b]}
    part["host"] = {**doc["host"], "metrics": {k: v[a:b] for k, v in doc["host"]["metrics"].items()}}
    part["gpus"] = [{**g, "metrics": {k: v[a:b] for k, v in g["metrics"].items()}} for g in doc["gpus"]]
    if "mig" in doc:
        part["mig"] = [{**m, "metrics": {k: v[a:b] for k, v in m["metrics"].items()}} for m in doc["mig"]]
    if "processes" in doc:
        part["processes"] = [p for p in doc["processes"] if p["last_seen"] >= lo and p["first_seen"] <= hi]
    if "events" in doc:
        part["events"] = [e for e in doc["events"] if after < e["ts"] <= until]
    return part


def encode_parts(
    doc: dict[str, Any], max_bytes: int = MAX_CHUNK_BYTES, max_total: int = MAX_TRANSACTION_BYTES
) -> list[tuple[dict[str, Any], bytes]]:
    """Encode a batch as one chunk, or split it by time into as few chunks as fit under max_bytes
    each; InvalidInput(413) if that takes more than MAX_PARTS chunks or max_total bytes in all
    (one atomic write could not hold them)."""
    n = len(doc["timestamps"])
    parts = 1
    while True:
        size = -(-n // parts)
        try:
            out = []
            for a in range(0, n, size):
                piece = doc if parts == 1 else _slice_doc(doc, a, min(a + size, n))
                out.append((piece, codec.encode(piece, max_bytes=max_bytes)))
            break
        except codec.ChunkTooLarge:
            if size == 1 or parts >= MAX_PARTS:
                raise InvalidInput(
                    f"batch does not fit in {MAX_PARTS} chunks of {max_bytes} bytes; send smaller batches",
                    status=413,
                ) from None
            parts *= 2
    total = sum(len(data) + ITEM_OVERHEAD_BYTES for _, data in out)
    if total > max_total:
        raise InvalidInput(
            f"batch encodes to {total} bytes; one atomic write holds {max_total}: send smaller batches",
            status=413,
        )
    return out


class SeriesStore:
    """Writes and reads chunks. `client` is injected (a boto3 DynamoDB client) or made here once."""

    def __init__(
        self,
        table_name: str,
        *,
        client: DynamoDBClient | None = None,
        ttl_days: int = 14,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.ttl_s = ttl_days * 86400
        self.clock = clock

    # -- write -------------------------------------------------------------------------------------

    def put_batch(self, batch: Batch) -> int:
        """Store the batch atomically (all its chunks or none). Returns the number of chunks.

        Raises DuplicateBatch if this batch_id was stored before, StoreError if DynamoDB said to
        retry later, InvalidInput(413) if it cannot be stored at all."""
        doc = batch.doc
        parts = encode_parts(doc)
        expires = int(self.clock()) + self.ttl_s
        items = [self._chunk_item(batch, piece, data, i, expires) for i, (piece, data) in enumerate(parts)]
        try:
            with translated():
                self._write_all(items)
        except ConditionFailed:
            raise DuplicateBatch(batch.batch_id) from None
        # After the chunks, not with them: the registry is an index, and a retry of this batch
        # (DuplicateBatch) no longer needs it.
        self._touch_registry(batch, expires)
        return len(items)

    def _write_all(self, items: list[dict[str, Any]]) -> None:
        """One item alone, or all of them in one transaction; each only where none is yet."""
        if len(items) == 1:
            self.client.put_item(
                TableName=self.table, Item=items[0], ConditionExpression="attribute_not_exists(pk)"
            )
        else:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": it,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                    for it in items
                ]
            )

    def _chunk_item(
        self, batch: Batch, piece: dict[str, Any], data: bytes, part: int, expires: int
    ) -> dict[str, Any]:
        ts = piece["timestamps"]
        t_last_ms = round(ts[-1] * 1000)
        item: dict[str, Any] = {
            "pk": {"S": f"{batch.cluster}#{bucket_of(ts[-1])}"},
            "sk": {"S": f"{t_last_ms:013d}#{batch.node}#{batch.batch_id}#{part}"},
            "node": {"S": batch.node},
            "batch_id": {"S": batch.batch_id},
            "seq": {"N": str(int(piece["seq"]))},
            "t_first": {"N": repr(float(ts[0]))},
            "t_last": {"N": repr(float(ts[-1]))},
            "samples": {"N": str(len(ts))},
            "data": {"B": data},
            "expires_at": {"N": str(expires)},
        }
        if batch.node_group:
            item["node_group"] = {"S": batch.node_group}
        if batch.spool:
            item["spool"] = {"S": batch.spool}  # the shipper's spool as of this batch (Batch v1 `agent`)
        return item

    def _touch_registry(self, batch: Batch, expires: int) -> None:
        # The registry is an index of what exists, not data: a lagging write only delays discovery.
        item: dict[str, Any] = {
            "pk": {"S": REGISTRY_PK},
            "sk": {"S": f"{batch.cluster}#{batch.node}"},
            "cluster": {"S": batch.cluster},
            "node": {"S": batch.node},
            "last_seen": {"N": repr(float(batch.timestamps[-1]))},
            "expires_at": {"N": str(expires)},
        }
        if batch.node_group:
            item["node_group"] = {"S": batch.node_group}
        if batch.spool:
            item["spool"] = {"S": batch.spool}  # the node's spool now: the latest batch says
        with contextlib.suppress(ConditionFailed), translated():  # failed: a later batch is there already
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(last_seen) OR last_seen < :t",
                ExpressionAttributeValues={":t": item["last_seen"]},
            )

    # -- read --------------------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        """Every registered node of every cluster."""
        out = []
        for item in self._query({"pk": REGISTRY_PK}, None):
            out.append(
                NodeInfo(
                    cluster=item["cluster"]["S"],
                    node=item["node"]["S"],
                    node_group=item["node_group"]["S"] if "node_group" in item else None,
                    last_seen=float(item["last_seen"]["N"]),
                    spool=item["spool"]["S"] if "spool" in item else None,
                )
            )
        return out

    def read_window(self, cluster: str, start: float, end: float) -> list[bytes]:
        """The encoded chunks of `cluster` with samples in [start, end]: one query per 10-minute bucket."""
        return [c.data for c in self.read_chunks(cluster, start, end)]

    def read_chunks(self, cluster: str, start: float, end: float) -> list[StoredChunk]:
        """As `read_window`, each chunk with its key and node: what a log needs to name one that
        does not decode."""
        lo = f"{int(start * 1000):013d}"
        chunks: list[StoredChunk] = []
        # a chunk is filed under its last sample, which lies at or after `start` if it overlaps
        for b in range(bucket_of(start), bucket_of(end) + BUCKET_S, BUCKET_S):
            for item in self._query({"pk": f"{cluster}#{b}"}, lo):
                if float(item["t_first"]["N"]) <= end:
                    key = f"{item['pk']['S']}/{item['sk']['S']}"
                    node = item.get("node", {}).get("S", "")  # only a log's detail: never fail on it
                    chunks.append(StoredChunk(key, node, item["data"]["B"]))
        return chunks

    def _query(self, key: dict[str, str], sk_from: str | None) -> Iterator[dict[str, Any]]:
        values: dict[str, Any] = {":pk": {"S": key["pk"]}}
        condition = "pk = :pk"
        if sk_from is not None:
            condition += " AND sk >= :lo"
            values[":lo"] = {"S": sk_from}
        return query_all(
            self.client,
            TableName=self.table,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
        )
