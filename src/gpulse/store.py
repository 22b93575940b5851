"""The series store: Batch v1 documents as compressed chunks in one DynamoDB table.

Keys (contract 2): `pk = "{cluster}#{bucket}"`, `sk = "{t_last_ms:013d}#{node}#{batch_id}#{part}"`, where
bucket is the 10-minute bucket of the chunk's last sample. One analyze window (minutes) is then a
query on two or three partitions per cluster, never one per node. A retried batch maps to the same
keys, so the conditional write stores it once even after the idempotency record has expired.

The table also holds a node registry (`pk = "registry"`, `sk = "{cluster}#{node}"`): the list of
clusters and nodes analyze visits, with each node's group and last report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from gpulse import codec
from gpulse.errors import DuplicateBatch, InvalidInput, StoreError
from gpulse.wire.batch import Batch

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BUCKET_S = 600
REGISTRY_PK = "registry"
MAX_CHUNK_BYTES = 350_000  # DynamoDB's item limit is 400 KB; keys and attributes take the rest
MAX_PARTS = 25  # one TransactWriteItems call (100 items, 4 MB) is the atomic unit; 25 × 350 KB fits
_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
}


@dataclass(frozen=True)
class NodeInfo:
    cluster: str
    node: str
    node_group: str | None
    last_seen: float


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


def encode_parts(doc: dict[str, Any], max_bytes: int = MAX_CHUNK_BYTES) -> list[tuple[dict[str, Any], bytes]]:
    """Encode a batch as one chunk, or split it by time into as few chunks as fit under max_bytes."""
    n = len(doc["timestamps"])
    parts = 1
    while True:
        size = -(-n // parts)
        try:
            out = []
            for a in range(0, n, size):
                piece = doc if parts == 1 else _slice_doc(doc, a, min(a + size, n))
                out.append((piece, codec.encode(piece, max_bytes=max_bytes)))
            return out
        except codec.ChunkTooLarge:
            if size == 1 or parts >= MAX_PARTS:
                raise InvalidInput(
                    f"batch does not fit in {MAX_PARTS} chunks of {max_bytes} bytes; send smaller batches",
                    status=413,
                ) from None
            parts *= 2


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
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            reasons = [r.get("Code") for r in e.response.get("CancellationReasons", [])]
            if code == "ConditionalCheckFailedException" or "ConditionalCheckFailed" in reasons:
                raise DuplicateBatch(batch.batch_id) from None
            raise self._store_error(e) from e
        self._touch_registry(batch, expires)
        return len(items)

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
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(last_seen) OR last_seen < :t",
                ExpressionAttributeValues={":t": item["last_seen"]},
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._store_error(e) from e

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
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        try:
            while True:
                page = self.client.query(**kwargs)
                yield from page.get("Items", [])
                if "LastEvaluatedKey" not in page:
                    return
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except ClientError as e:
            raise self._store_error(e) from e

    @staticmethod
    def _store_error(e: ClientError) -> StoreError:
        code = e.response.get("Error", {}).get("Code", "Unknown")
        err = StoreError(f"DynamoDB {code}")
        err.retryable = code in _RETRYABLE
        return err
