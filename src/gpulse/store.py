"""The series store: Batch v1 documents as compressed chunks in one DynamoDB table.

Keys (contract 2): `pk = "{cluster}#{bucket}#{shard}"`, `sk = "{t_last_ms:013d}#{node}#{batch_id}#{part}"`,
where bucket is the 10-minute bucket of the chunk's last sample and shard = crc32(node) mod the
shard count (`GPULSE_SERIES_SHARDS`, template parameter SeriesShards, default 8). The shard spreads
one big cluster's writes over several partition keys: 1,250 nodes at 10 s batches are 125 writes/s,
~16/s per key with 8 shards, far under DynamoDB's 1,000 WCU/s per partition. One analyze window
(minutes) is then shards × (two or three buckets) queries per cluster, never one per node. A
retried batch maps to the same keys (the shard depends on the node alone), so the conditional write
stores it once even after the idempotency record has expired. Raising the shard count is safe
(readers query every shard below the count, old ones included); lowering it hides the data in the
dropped shards until it expires.

Two tiers. The chunk items above are the hot tier: they expire `hot_ttl_s` after they are written
(template parameter SeriesHotTtlSeconds, default 4 h: the analyze window and the compactor's reach,
with a margin). The compactor (gpulse.compact) merges each node's chunks of an hour into a block
(gpulse.blocks) and minute rollups, the long tier, kept `ttl_days` (SeriesTtlDays):
`pk = "{cluster}#long#{node}"`, `sk = "{hour:010d}#b#{part:03d}"` for a block's parts and
`"{hour:010d}#r"` for its rollups; a sparse node's day block under `"d#{day:010d}#{part:03d}"`
(with `hours`: the hours folded into it and a digest of each one's chunks).
One node's history is one partition, so a chart reads one query
and a compactor run spreads its writes over every node's key. Each long item carries `source` (a
digest of the chunks it was built from): writing it again from the same chunks is refused by its
condition, so a re-run writes nothing, and late chunks make a new digest that replaces the block.
The registry items live `ttl_days` too.

Each chunk item also carries `arrived`: ingest's clock when it was written. `read_chunks(...,
arrived_after=t)` returns only the chunks written after t, late spooled batches (old samples)
included: that is how analyze reads only what is new each tick. It is a server-side filter: the
query still reads (and is billed for) the window's items, but only the new ones cross the wire
and get decoded.

The table also holds a node registry (`pk = "registry"`, `sk = "{cluster}#{node}"`): the list of
clusters and nodes analyze visits, with each node's group, last report and (`spool`) the state of
its shipper's disk spool as of that report.
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
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
DEFAULT_SHARDS = 8  # per cluster and bucket; see the module docstring
DEFAULT_HOT_TTL_S = 4 * 3600  # see the module docstring; the compactor's reach depends on it
BLOCK_S = 3600  # a long-tier block's span
DAY_S = 86400  # a sparse node's block spans a day (gpulse.compact)
STATS = ("min", "mean", "max", "last")  # a rollup item's attributes (gpulse.blocks.STATS)
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
class StoredBlock:
    start: float  # the block's span is [start, start + BLOCK_S)
    parts: list[bytes]  # codec chunks, in time order: `codec.decode` each


@dataclass(frozen=True)
class StoredRollup:
    start: float
    stats: dict[str, bytes]  # "min", "mean", "max", "last" → a codec chunk of per-minute values


@dataclass(frozen=True)
class StoredChunk:
    key: str  # "{pk}/{sk}": where the item lies in the table
    node: str
    data: bytes  # as `codec.encode` wrote it
    arrived: float = 0.0  # ingest's clock when the item was written (0: an item older than the field)


def bucket_of(t: float) -> int:
    return int(t // BUCKET_S) * BUCKET_S


def shard_of(node: str, shards: int) -> int:
    """The node's shard: stable across processes and releases (crc32, not Python's salted hash)."""
    return zlib.crc32(node.encode()) % shards


def series_pk(cluster: str, bucket: int, shard: int) -> str:
    return f"{cluster}#{bucket}#{shard}"


def long_pk(cluster: str, node: str) -> str:
    return f"{cluster}#long#{node}"


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
        hot_ttl_s: int = DEFAULT_HOT_TTL_S,
        shards: int = DEFAULT_SHARDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.ttl_s = ttl_days * 86400
        self.hot_ttl_s = hot_ttl_s
        self.shards = shards
        self.clock = clock

    # -- write -------------------------------------------------------------------------------------

    def put_batch(self, batch: Batch) -> int:
        """Store the batch atomically (all its chunks or none). Returns the number of chunks.

        Raises DuplicateBatch if this batch_id was stored before, StoreError if DynamoDB said to
        retry later, InvalidInput(413) if it cannot be stored at all."""
        now = self.clock()
        items = self.chunk_items(batch, now)
        try:
            with translated():
                self._write_all(items)
        except ConditionFailed:
            raise DuplicateBatch(batch.batch_id) from None
        # After the chunks, not with them: the registry is an index, and a retry of this batch
        # (DuplicateBatch) no longer needs it. It lives as long as the long tier.
        self._touch_registry(batch, int(now) + self.ttl_s)
        return len(items)

    def chunk_items(self, batch: Batch, now: float) -> list[dict[str, Any]]:
        """The hot-tier items `put_batch` writes for this batch at `now` (also what benches and
        the cost model count, as DynamoDB bills them)."""
        expires = int(now) + self.hot_ttl_s
        return [
            self._chunk_item(batch, piece, data, i, expires, now)
            for i, (piece, data) in enumerate(encode_parts(batch.doc))
        ]

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
        self, batch: Batch, piece: dict[str, Any], data: bytes, part: int, expires: int, arrived: float
    ) -> dict[str, Any]:
        ts = piece["timestamps"]
        t_last_ms = round(ts[-1] * 1000)
        shard = shard_of(batch.node, self.shards)
        item: dict[str, Any] = {
            "pk": {"S": series_pk(batch.cluster, bucket_of(ts[-1]), shard)},
            "sk": {"S": f"{t_last_ms:013d}#{batch.node}#{batch.batch_id}#{part}"},
            "node": {"S": batch.node},
            "batch_id": {"S": batch.batch_id},
            "seq": {"N": str(int(piece["seq"]))},
            "t_first": {"N": repr(float(ts[0]))},
            "t_last": {"N": repr(float(ts[-1]))},
            "samples": {"N": str(len(ts))},
            "data": {"B": data},
            "expires_at": {"N": str(expires)},
            "arrived": {"N": f"{arrived:.3f}"},  # what `read_chunks(arrived_after=...)` filters on
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

    # -- long tier -----------------------------------------------------------------------------------

    def put_block(
        self,
        cluster: str,
        node: str,
        start: float,
        parts: list[bytes],
        rollups: dict[str, bytes],
        *,
        source: str,
        t_first: float,
        t_last: float,
    ) -> bool:
        """Write one node's block and rollups for the span at `start`, unless the same `source`
        is stored there already. True if anything was written. Parts first, rollups last: a
        reader never sees rollups whose block is missing."""
        items = self.block_items(
            cluster, node, start, parts, rollups, source=source, t_first=t_first, t_last=t_last
        )
        written = False
        for item in items:
            try:
                with translated():
                    self.client.put_item(
                        TableName=self.table,
                        Item=item,
                        ConditionExpression="attribute_not_exists(pk) OR #source <> :source",
                        ExpressionAttributeNames={"#source": "source"},
                        ExpressionAttributeValues={":source": item["source"]},
                    )
                written = True
            except ConditionFailed:
                pass  # this item is already what it should be
        return written

    def block_items(
        self,
        cluster: str,
        node: str,
        start: float,
        parts: list[bytes],
        rollups: dict[str, bytes],
        *,
        source: str,
        t_first: float,
        t_last: float,
    ) -> list[dict[str, Any]]:
        """The long-tier items `put_block` writes: the block's parts, then the rollups."""
        pk = {"S": long_pk(cluster, node)}
        expires = {"N": str(int(self.clock()) + self.ttl_s)}
        common = {"source": {"S": source}, "expires_at": expires}
        items: list[dict[str, Any]] = [
            {
                "pk": pk,
                "sk": {"S": f"{int(start):010d}#b#{i:03d}"},  # padded: parts read back in order
                "data": {"B": data},
                "parts": {"N": str(len(parts))},
                "t_first": {"N": repr(float(t_first))},
                "t_last": {"N": repr(float(t_last))},
                **common,
            }
            for i, data in enumerate(parts)
        ]
        rollup: dict[str, Any] = {"pk": pk, "sk": {"S": f"{int(start):010d}#r"}, **common}
        items.append(rollup | {k: {"B": v} for k, v in rollups.items()})
        return items

    def day_block_items(
        self,
        cluster: str,
        node: str,
        day: float,
        parts: list[bytes],
        *,
        hours: dict[str, str],
        t_first: float,
        t_last: float,
    ) -> list[dict[str, Any]]:
        """The items of a sparse node's day block: `sk = "d#{day:010d}#{part}"`, each part with
        `hours` (hour start → digest of the chunks folded in), as `put_day_block` writes them."""
        pk = {"S": long_pk(cluster, node)}
        expires = {"N": str(int(self.clock()) + self.ttl_s)}
        folded = json.dumps(hours, sort_keys=True, separators=(",", ":"))
        return [
            {
                "pk": pk,
                "sk": {"S": f"d#{int(day):010d}#{i:03d}"},
                "data": {"B": data},
                "parts": {"N": str(len(parts))},
                "t_first": {"N": repr(float(t_first))},
                "t_last": {"N": repr(float(t_last))},
                "hours": {"S": folded},
                "expires_at": expires,
            }
            for i, data in enumerate(parts)
        ]

    def put_day_block(
        self,
        cluster: str,
        node: str,
        day: float,
        parts: list[bytes],
        *,
        hours: dict[str, str],
        t_first: float,
        t_last: float,
    ) -> None:
        """Write (replace) a sparse node's day block. The compactor, one run at a time, read the
        previous one and folded an hour into it; a part past the new count is deleted."""
        items = self.day_block_items(cluster, node, day, parts, hours=hours, t_first=t_first, t_last=t_last)
        with translated():
            for item in items:
                self.client.put_item(TableName=self.table, Item=item)
            for i in range(len(parts), self._day_parts(cluster, node, day)):
                key = {"pk": {"S": long_pk(cluster, node)}, "sk": {"S": f"d#{int(day):010d}#{i:03d}"}}
                self.client.delete_item(TableName=self.table, Key=key)

    def read_day_block(self, cluster: str, node: str, day: float) -> tuple[list[bytes], dict[str, str]]:
        """A sparse node's day block (its parts, in order) and the hours folded into it; none: ([], {})."""
        items = list(self._day_items(cluster, node, day, day))
        if not items or len(items) < int(items[0]["parts"]["N"]):
            return [], {}
        count = int(items[0]["parts"]["N"])
        return [i["data"]["B"] for i in items[:count]], json.loads(items[0]["hours"]["S"])

    def _day_parts(self, cluster: str, node: str, day: float) -> int:
        return sum(1 for _ in self._day_items(cluster, node, day, day))

    def _day_items(self, cluster: str, node: str, first: float, last: float) -> Iterator[dict[str, Any]]:
        return query_all(
            self.client,
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": {"S": long_pk(cluster, node)},
                ":lo": {"S": f"d#{int(first):010d}#"},
                ":hi": {"S": f"d#{int(last):010d}#~"},
            },
        )

    def read_blocks(self, cluster: str, node: str, start: float, end: float) -> list[StoredBlock]:
        """The node's blocks (hourly, and a sparse node's daily ones) whose samples overlap
        [start, end], in time order."""
        out: list[StoredBlock] = self._read_day_blocks(cluster, node, start, end)
        current: tuple[float, str, int] | None = None  # (start, source, parts) of the block being read
        parts: list[bytes] = []
        for item in self._long_items(cluster, node, start, end):
            hour, kind, *rest = item["sk"]["S"].split("#")
            if kind != "b" or float(item["t_last"]["N"]) < start or float(item["t_first"]["N"]) > end:
                continue
            if int(rest[0]) == 0:
                if current is not None and len(parts) == current[2]:
                    out.append(StoredBlock(current[0], parts))
                current, parts = (float(hour), item["source"]["S"], int(item["parts"]["N"])), []
            # a part left over from an earlier build with more parts has another source: skipped
            if current is not None and item["source"]["S"] == current[1] and float(hour) == current[0]:
                parts.append(item["data"].get("B", b""))  # a part without data: its block fails to decode
        if current is not None and len(parts) == current[2]:
            out.append(StoredBlock(current[0], parts))
        return sorted(out, key=lambda b: b.start)

    def _read_day_blocks(self, cluster: str, node: str, start: float, end: float) -> list[StoredBlock]:
        days: dict[float, list[dict[str, Any]]] = {}
        first, last = start // DAY_S * DAY_S, end // DAY_S * DAY_S
        for item in self._day_items(cluster, node, first, last):
            if float(item["t_last"]["N"]) >= start and float(item["t_first"]["N"]) <= end:
                days.setdefault(float(item["sk"]["S"].split("#")[1]), []).append(item)
        return [
            StoredBlock(day, [i["data"]["B"] for i in items])
            for day, items in days.items()
            if len(items) == int(items[0]["parts"]["N"])
        ]

    def read_rollups(self, cluster: str, node: str, start: float, end: float) -> list[StoredRollup]:
        """The node's minute rollups of the blocks that overlap [start, end], in time order."""
        out = []
        for item in self._long_items(cluster, node, start, end):
            hour, kind = item["sk"]["S"].split("#")[:2]
            if kind == "r" and float(hour) + BLOCK_S > start:
                stats: dict[str, bytes] = {k: item[k]["B"] for k in STATS if k in item}
                out.append(StoredRollup(float(hour), stats))
        return out

    def _long_items(self, cluster: str, node: str, start: float, end: float) -> Iterator[dict[str, Any]]:
        return query_all(
            self.client,
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": {"S": long_pk(cluster, node)},
                ":lo": {"S": f"{max(0, int(start) - BLOCK_S):010d}"},
                ":hi": {"S": f"{int(end):010d}~"},  # "~" sorts after "#": the hour at `end` is in
            },
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

    def read_chunks(
        self,
        cluster: str,
        start: float,
        end: float,
        *,
        arrived_after: float | None = None,
        reach_s: float = 0.0,
    ) -> list[StoredChunk]:
        """As `read_window`, each chunk with its key, node and arrival: what a log needs to name one
        that does not decode. With `arrived_after`, only chunks written after that instant (ingest's
        clock), whatever the age of their samples. Queries every shard of every bucket; the result
        is in order of last sample (sort key), as with one partition per bucket. A chunk is filed
        under its last sample: one that begins by `end` but ends in a later bucket is found only
        within `reach_s` past `end` (the compactor reaches a block's length; analyze, whose `end`
        is now, needs none)."""
        lo = f"{int(start * 1000):013d}"
        chunks: list[StoredChunk] = []
        # a chunk is filed under its last sample, which lies at or after `start` if it overlaps
        for b in range(bucket_of(start), bucket_of(end + reach_s) + BUCKET_S, BUCKET_S):
            found: list[tuple[str, StoredChunk]] = []
            for shard in range(self.shards):
                pk = series_pk(cluster, b, shard)
                until = end if b > bucket_of(end) else None  # past end's bucket: only what began by end
                for item in self._query({"pk": pk}, lo, arrived_after, t_first_until=until):
                    if float(item["t_first"]["N"]) <= end:
                        sk = item["sk"]["S"]
                        node = item.get("node", {}).get("S", "")  # only a log's detail: never fail on it
                        arrived = float(item["arrived"]["N"]) if "arrived" in item else 0.0
                        found.append(
                            (sk, StoredChunk(f"{item['pk']['S']}/{sk}", node, item["data"]["B"], arrived))
                        )
            chunks.extend(c for _, c in sorted(found, key=lambda f: f[0]))
        return chunks

    def _query(
        self,
        key: dict[str, str],
        sk_from: str | None,
        arrived_after: float | None = None,
        *,
        t_first_until: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        values: dict[str, Any] = {":pk": {"S": key["pk"]}}
        condition = "pk = :pk"
        if sk_from is not None:
            condition += " AND sk >= :lo"
            values[":lo"] = {"S": sk_from}
        extra: dict[str, Any] = {}
        filters = []
        if arrived_after is not None:
            filters.append("arrived > :arrived")
            values[":arrived"] = {"N": f"{arrived_after:.3f}"}
        if t_first_until is not None:
            filters.append("t_first <= :until")
            values[":until"] = {"N": repr(float(t_first_until))}
        if filters:
            extra["FilterExpression"] = " AND ".join(filters)
        return query_all(
            self.client,
            TableName=self.table,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            **extra,
        )
