"""The series store: Batch v1 documents as compressed chunks in one DynamoDB table.

Keys (contract 2): `pk = "{cluster}#{bucket}#{shard}"`, `sk = "{t_last_ms:013d}#{node}#{batch_id}#{part}"`,
where bucket is the 10-minute bucket of the chunk's last sample and shard = crc32(node) mod the
shard count (`GPULSE_SERIES_SHARDS`, template parameter SeriesShards, default 8). The shard spreads
one big cluster's writes over several partition keys: 1,250 nodes at 10 s batches are 125 writes/s,
~16/s per key with 8 shards, far under DynamoDB's 1,000 WCU/s per partition. One analyze window
(minutes) is then shards × (two or three buckets) queries per cluster, never one per node. A
retried batch maps to the same keys (the shard depends on the node alone), so the conditional write
stores it once: that condition is the only record of what was stored (a replay is told apart from
the same batch_id with other content by what the key holds, returned by the failed condition).
Raising the shard count is safe
(readers query every shard below the count, old ones included); lowering it hides the data in the
dropped shards until it expires.

Two tiers. The chunk items above are the hot tier: they expire `hot_ttl_s` after they are written
(template parameter SeriesHotTtlSeconds, default 4 h: the analyze window and the compactor's reach,
with a margin). The compactor (gpulse.compact) merges each node's chunks of an hour into a block
(gpulse.blocks) and minute rollups, the long tier, which lies in S3 (`LongTier`, below: one object
per node-hour, kept by the bucket's lifecycle rule for SeriesTtlDays). S3 bills a PUT per object
and ~1/11 of DynamoDB's price per stored GB, where DynamoDB billed one write unit per KB of every
block part and rollup ($0.013 per GPU-month, as much as the chunks at 60 s batches: bench/cost_model.py).
The registry items live `ttl_days`.

Each chunk item also carries `arrived`: ingest's clock when it was written. `read_chunks(...,
arrived_after=t)` returns only the chunks written after t, late spooled batches (old samples)
included: that is how analyze reads only what is new each tick (six a minute per shard). It is
billed for little more than that, because a late chunk (written more than LATE_S after its last
sample) also carries `late_pk = "{cluster}#{shard}"`, which puts it in the table's sparse global
index LateIndex (`late_pk`, `arrived`; on-time chunks are not in it). An on-time chunk written
after t ends after t - LATE_S, so the table is queried only from there (not the whole window:
DynamoDB bills what the key condition covers, not what the filter keeps), and the index for the
late chunks written after t. The index is eventually consistent, like the table's reads here:
analyze's arrival margin (gpulse.analyze.incremental.ARRIVAL_MARGIN_S) covers that lag.

The table also holds a node registry (`pk = "registry"`, `sk = "{cluster}#{node}"`): the list of
clusters and nodes analyze visits, with each node's group, last report and (`spool`) the state of
its shipper's disk spool as of that report. Ingest rewrites an entry only when it is
REGISTRY_REFRESH_S older than the batch, or the group or spool changed (a per-container cache,
and one eventually consistent read where the cache has no word): `last_seen` lags the node's
latest batch by up to that much.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.exceptions import ClientError

from gpulse import codec
from gpulse.aws import ConditionFailed, error_code, query_all, translated
from gpulse.errors import DuplicateBatch, InvalidInput, StoreError
from gpulse.wire.batch import Batch

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BUCKET_S = 600
DEFAULT_SHARDS = 8  # per cluster and bucket; see the module docstring
DEFAULT_HOT_TTL_S = 4 * 3600  # see the module docstring; the compactor's reach depends on it
BLOCK_S = 3600  # a long-tier block's span
DAY_S = 86400  # a sparse node's block spans a day (gpulse.compact)
STATS = ("min", "mean", "max", "last")  # a rollup's statistics (gpulse.blocks.STATS)
LONG_PREFIX = "long/"  # the long tier's objects in their bucket (its lifecycle rule names it)
LONG_FORMAT = 1  # a long-tier object's layout (`_pack`): a reader refuses another
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})  # S3's answers for "no such object"
# A chunk written more than LATE_S after its last sample is late: it goes into LATE_INDEX as well
# (`late_key`). An on-time batch reaches ingest a second or two after its last sample (the shipper
# posts a batch when it closes); 60 s leaves room for the shipper's five quick retries (backoff
# 1+2+4+8+16 s: docs/shipper.md) with one post timing out (13 s: its connect and read timeouts),
# ingest's own time and some clock skew, so only spooled batches (an outage, a restart) and nodes
# whose clock is a minute behind pay the index's write. Any value is correct; it trades that write
# against how far back every warm read queries the table (`read_chunks`; at six ticks a minute,
# each second of LATE_S is read six times a minute: bench/cost_model.py).
LATE_S = 60.0
LATE_INDEX = "LateIndex"  # template.yaml: SeriesTable's sparse index of late chunks
REGISTRY_PK = "registry"
# A node's registry entry is rewritten only when it is this much older than the node's latest batch
# (or its group or spool changed): not once per batch. Below the analyze window (10 min), so the
# window's data always covers the lag for silent_node.
REGISTRY_REFRESH_S = 300.0
CONFLICT_MESSAGE = "batch_id was already used for a batch with different content"
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


def _content(item: dict[str, Any]) -> dict[str, Any]:
    """A chunk item's content: what a replay of its batch would write again (numbers compared as
    numbers: DynamoDB returns them normalised), less when it arrived and expires."""
    return {
        k: Decimal(v["N"]) if "N" in v else v
        for k, v in item.items()
        if k not in ("arrived", "expires_at", "late_pk")  # late_pk: a replay may arrive later
    }


def late_key(cluster: str, shard: int, t_last: float, arrived: str) -> str | None:
    """The LateIndex key of a chunk of `cluster`'s `shard` whose last sample is `t_last`, stored
    with `arrived` (the item's attribute, as written); None for an on-time chunk (not indexed)."""
    return f"{cluster}#{shard}" if float(arrived) - t_last > LATE_S else None


def _stored_chunk(item: dict[str, Any]) -> StoredChunk:
    """A chunk item as read: from the table or from LateIndex (which projects every attribute)."""
    sk = item["sk"]["S"]
    node = item.get("node", {}).get("S", "")  # only a log's detail: never fail on it
    arrived = float(item["arrived"]["N"]) if "arrived" in item else 0.0
    return StoredChunk(f"{item['pk']['S']}/{sk}", node, item["data"]["B"], arrived)


def _registry_key(key: str) -> dict[str, Any]:
    return {"pk": {"S": REGISTRY_PK}, "sk": {"S": key}}


def _registry_state(item: dict[str, Any]) -> tuple[float, str | None, str | None]:
    """(last_seen, node_group, spool) of a registry item."""
    return (
        float(item["last_seen"]["N"]),
        item["node_group"]["S"] if "node_group" in item else None,
        item["spool"]["S"] if "spool" in item else None,
    )


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
        registry_refresh_s: float = REGISTRY_REFRESH_S,
    ) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.ttl_s = ttl_days * 86400
        self.hot_ttl_s = hot_ttl_s
        self.shards = shards
        self.clock = clock
        self.registry_refresh_s = registry_refresh_s
        # what this container knows the registry holds: "{cluster}#{node}" → (last_seen, group, spool)
        self._registry: dict[str, tuple[float, str | None, str | None]] = {}

    # -- write -------------------------------------------------------------------------------------

    def put_batch(self, batch: Batch) -> int:
        """Store the batch atomically (all its chunks or none). Returns the number of chunks.

        Raises DuplicateBatch if this batch was stored before with the same content (a replay:
        nothing is written), InvalidInput(409) if its keys hold a batch of the same batch_id with
        other content, StoreError if DynamoDB said to retry later, InvalidInput(413) if it cannot
        be stored at all. The conditional write is the only record of what was stored: a replay is
        recognised for as long as its chunks are in the hot tier (`hot_ttl_s` after they arrived)."""
        now = self.clock()
        items = self.chunk_items(batch, now)
        stored = self._write_all(items)
        if stored is not None:
            # A transaction is atomic, so any chunk found means this batch_id's batch is stored.
            # Not every chunk comes back: DynamoDB need not report past the first failed condition,
            # and TTL deletes a batch's chunks one by one. So: 409 only if a returned chunk differs.
            found = [(old, new) for old, new in zip(stored, items, strict=True) if old is not None]
            if any(_content(old) != _content(new) for old, new in found):
                raise InvalidInput(CONFLICT_MESSAGE, status=409)
            if found:
                raise DuplicateBatch(batch.batch_id)
            # a failed condition that returned nothing to compare: a retry will find the chunks
            raise StoreError("DynamoDB: condition failed without the stored item")
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

    def _write_all(self, items: list[dict[str, Any]]) -> list[dict[str, Any] | None] | None:
        """One item alone, or all of them in one transaction; each only where none is yet. None
        when written; else, for each item, what its key holds already (None where nothing is, or
        where DynamoDB did not say), as the failed condition returned it (no extra read). A
        transaction cancelled only for conflicts (a concurrent copy of the batch being written)
        raises a retryable StoreError: the next try finds that copy stored."""
        condition = "attribute_not_exists(pk)"
        old: Literal["ALL_OLD"] = "ALL_OLD"  # a failed condition returns what the key holds
        found: list[dict[str, Any] | None] = []
        try:
            with translated():
                try:
                    if len(items) == 1:
                        self.client.put_item(
                            TableName=self.table,
                            Item=items[0],
                            ConditionExpression=condition,
                            ReturnValuesOnConditionCheckFailure=old,
                        )
                    else:
                        self.client.transact_write_items(
                            TransactItems=[
                                {
                                    "Put": {
                                        "TableName": self.table,
                                        "Item": it,
                                        "ConditionExpression": condition,
                                        "ReturnValuesOnConditionCheckFailure": old,
                                    }
                                }
                                for it in items
                            ]
                        )
                except ClientError as e:
                    reasons: list[dict[str, Any]] = e.response.get("CancellationReasons") or []  # type: ignore[assignment]
                    item: dict[str, Any] | None = e.response.get("Item")  # type: ignore[assignment]
                    found = [r.get("Item") for r in reasons] if reasons else [item]
                    raise
        except ConditionFailed:
            return found
        return None

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
        late = late_key(batch.cluster, shard, float(ts[-1]), item["arrived"]["N"])
        if late is not None:
            item["late_pk"] = {"S": late}  # in LateIndex: a warm read finds it there
        if batch.node_group:
            item["node_group"] = {"S": batch.node_group}
        if batch.spool:
            item["spool"] = {"S": batch.spool}  # the shipper's spool as of this batch (Batch v1 `agent`)
        return item

    def _touch_registry(self, batch: Batch, expires: int) -> None:
        """Record the node's latest report, group and spool in the registry, at most once per
        `registry_refresh_s` while group and spool stay the same. Readers see `last_seen` up to
        that much (and a batch) behind: silent_node takes the window's own data where it is
        fresher, and the dispatcher only needs the node and its group."""
        key = f"{batch.cluster}#{batch.node}"
        seen = float(batch.timestamps[-1])
        state = (batch.node_group, batch.spool)
        if self._registry_fresh(self._registry.get(key), seen, state):
            return
        # this container has no word on the node, or an old one: read what is stored (an
        # eventually consistent read costs a tenth of a write) before writing
        with translated():
            got = self.client.get_item(TableName=self.table, Key=_registry_key(key)).get("Item")
        if got is not None:
            self._registry[key] = _registry_state(got)
            if self._registry_fresh(self._registry[key], seen, state):
                return
        # The registry is an index of what exists, not data: a lagging write only delays discovery.
        item: dict[str, Any] = {
            **_registry_key(key),
            "cluster": {"S": batch.cluster},
            "node": {"S": batch.node},
            "last_seen": {"N": repr(seen)},
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
            self._registry[key] = (seen, *state)

    def _registry_fresh(
        self,
        known: tuple[float, str | None, str | None] | None,
        seen: float,
        state: tuple[str | None, str | None],
    ) -> bool:
        """Whether the registry needs no write for a batch ending at `seen`: it holds a later
        report, or one less than `registry_refresh_s` older with the same group and spool."""
        if known is None:
            return False
        last, *stored = known
        return seen <= last or (seen - last < self.registry_refresh_s and tuple(stored) == state)

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
        is in order of bucket, then of last sample (sort key), as with one partition per bucket. A
        chunk is filed under its last sample: one that begins by `end` but ends in a later bucket is
        found only within `reach_s` past `end` (the compactor reaches a block's length; analyze,
        whose `end` is now, needs none).

        With `arrived_after` = t the result is the same as filtering the whole window by arrival,
        read more cheaply: the table only from max(start, t - LATE_S) (an on-time chunk written
        after t ends after t - LATE_S), plus LateIndex for the late chunks written after t. A late
        chunk written before LateIndex existed (before the deploy that added it) has no `late_pk`:
        a warm read misses it, a read without `arrived_after` (a cold rebuild, the compactor) finds
        it. Such chunks arrived before the deploy, so only the first window after it can lack one."""
        lo = f"{int(start * 1000):013d}"
        since = start
        if arrived_after is not None:
            # 2 ms of slack: `arrived` is stored to the ms, and sort keys hold milliseconds
            since = max(start, arrived_after - LATE_S - 0.002)
        sk_from = f"{int(since * 1000):013d}"
        first, last = bucket_of(start), bucket_of(end + reach_s)
        # (bucket, sort key, shard) → chunk: the order promised, and a chunk found twice kept once
        found: dict[tuple[int, str, int], StoredChunk] = {}
        # a chunk is filed under its last sample, which lies at or after `start` if it overlaps
        for b in range(bucket_of(since), last + BUCKET_S, BUCKET_S):
            for shard in range(self.shards):
                pk = series_pk(cluster, b, shard)
                until = end if b > bucket_of(end) else None  # past end's bucket: only what began by end
                for item in self._query({"pk": pk}, sk_from, arrived_after, t_first_until=until):
                    if float(item["t_first"]["N"]) <= end:
                        found[(b, item["sk"]["S"], shard)] = _stored_chunk(item)
        if arrived_after is not None:
            for shard in range(self.shards):
                for item in self._query_late(f"{cluster}#{shard}", arrived_after, lo, end):
                    b = int(item["pk"]["S"].rsplit("#", 2)[1])
                    if first <= b <= last and float(item["t_first"]["N"]) <= end:
                        found[(b, item["sk"]["S"], shard)] = _stored_chunk(item)
        return [found[k] for k in sorted(found)]

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

    def _query_late(
        self, late: str, arrived_after: float, sk_from: str, end: float
    ) -> Iterator[dict[str, Any]]:
        """LateIndex: the late chunks under `late` ("{cluster}#{shard}") written after
        `arrived_after` whose last sample's key is at or after `sk_from` and first sample at or
        before `end`. Billed for the late chunks written after `arrived_after` alone."""
        return query_all(
            self.client,
            TableName=self.table,
            IndexName=LATE_INDEX,
            KeyConditionExpression="late_pk = :late AND arrived > :arrived",
            FilterExpression="sk >= :lo AND t_first <= :end",
            ExpressionAttributeValues={
                ":late": {"S": late},
                ":arrived": {"N": f"{arrived_after:.3f}"},
                ":lo": {"S": sk_from},
                ":end": {"N": repr(float(end))},
            },
        )


# -- the long tier: S3 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LongObject:
    """One long-tier object as it is written: where, what, and the metadata a re-run checks."""

    key: str
    body: bytes
    metadata: dict[str, str]

    def billed_bytes(self) -> int:
        """What S3 Standard stores for it: the body, plus its key and user metadata (S3 counts
        metadata with the object; Standard has no per-object minimum)."""
        meta = sum(len(k) + len(v) + len("x-amz-meta-") for k, v in self.metadata.items())
        return len(self.body) + len(self.key.encode()) + meta


def long_prefix(cluster: str, node: str) -> str:
    """Where a node's long tier lies in the bucket: one node's history under one prefix."""
    return f"{LONG_PREFIX}{cluster}/{node}/"


def _pack(header: dict[str, Any], sections: list[bytes]) -> bytes:
    """A long-tier object's body: one line of JSON (what the sections are, and their lengths),
    then the sections (codec chunks, as `blocks.encode_block` and `blocks.rollup` made them)."""
    head = {**header, "v": LONG_FORMAT, "sizes": [len(x) for x in sections]}
    return json.dumps(head, sort_keys=True, separators=(",", ":")).encode() + b"\n" + b"".join(sections)


def _unpack(body: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """(header, sections) of a long-tier object; ChunkCorrupt if it is not one."""
    line, sep, rest = body.partition(b"\n")
    try:
        header = json.loads(line)
        sizes = [int(n) for n in header["sizes"]]
    except (ValueError, KeyError, TypeError) as e:
        raise codec.ChunkCorrupt(f"not a long-tier object: {e}") from None
    if not sep or header.get("v") != LONG_FORMAT or sum(sizes) != len(rest) or min(sizes, default=0) < 0:
        raise codec.ChunkCorrupt("not a long-tier object of this version, or truncated")
    offsets = list(itertools.accumulate(sizes, initial=0))
    return header, [rest[a:b] for a, b in itertools.pairwise(offsets)]


class LongTier:
    """The long tier in S3: one object per node-hour (the hour's block parts and its minute
    rollups) and, for a sparse node, one per node-day (its day block), under
    `long/{cluster}/{node}/h/{hour:010d}` and `.../d/{day:010d}`. The bucket's lifecycle rule
    expires them (template: LongTierBucket, SeriesTtlDays). An hour object's user metadata carries
    `source` (the digest of the chunks it was built from), so a re-run compares it by a HEAD and
    writes nothing; late chunks make a new digest that replaces the object. Each object is
    written whole: a reader never sees a block without its rollups, or a part without the rest.
    `client` is injected (a boto3 S3 client) or made here once."""

    def __init__(self, bucket: str, *, client: Any = None) -> None:
        self.bucket = bucket
        self.client: Any = client or boto3.client("s3")  # typed loosely: no S3 stubs installed

    # -- write -------------------------------------------------------------------------------------

    @staticmethod
    def block_object(
        cluster: str,
        node: str,
        start: float,
        parts: list[bytes],
        rollups: dict[str, bytes],
        *,
        source: str,
        t_first: float,
        t_last: float,
    ) -> LongObject:
        """The object `put_block` writes for a node's hour at `start` (also what benches count)."""
        stats = [k for k in STATS if k in rollups]
        header = {
            "kind": "hour",
            "start": int(start),
            "t_first": t_first,
            "t_last": t_last,
            "parts": len(parts),
            "rollups": stats,
            "source": source,
        }
        body = _pack(header, [*parts, *(rollups[k] for k in stats)])
        return LongObject(f"{long_prefix(cluster, node)}h/{int(start):010d}", body, {"source": source})

    @staticmethod
    def day_block_object(
        cluster: str,
        node: str,
        day: float,
        parts: list[bytes],
        *,
        hours: dict[str, str],
        t_first: float,
        t_last: float,
    ) -> LongObject:
        """The object of a sparse node's day block, with `hours` (hour start → digest of the chunks
        folded in), as `put_day_block` writes it."""
        header = {"kind": "day", "start": int(day), "t_first": t_first, "t_last": t_last, "hours": hours}
        body = _pack({**header, "parts": len(parts), "rollups": []}, parts)
        return LongObject(f"{long_prefix(cluster, node)}d/{int(day):010d}", body, {})

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
        """Write one node's block and rollups for the hour at `start`, unless the object there was
        built from the same `source` already. True if it was written."""
        obj = self.block_object(
            cluster, node, start, parts, rollups, source=source, t_first=t_first, t_last=t_last
        )
        head = self._head(obj.key)
        if head is not None and head.get("source") == source:
            return False  # already what it should be
        self._put(obj)
        return True

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
        previous one and folded an hour into it."""
        self._put(
            self.day_block_object(cluster, node, day, parts, hours=hours, t_first=t_first, t_last=t_last)
        )

    def _put(self, obj: LongObject) -> None:
        with translated("S3"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=obj.key,
                Body=obj.body,
                Metadata=obj.metadata,
                ContentType="application/octet-stream",
            )

    # -- read --------------------------------------------------------------------------------------

    def read_day_block(self, cluster: str, node: str, day: float) -> tuple[list[bytes], dict[str, str]]:
        """A sparse node's day block (its parts, in order) and the hours folded into it; none: ([], {})."""
        body = self._get(f"{long_prefix(cluster, node)}d/{int(day):010d}")
        if body is None:
            return [], {}
        header, sections = _unpack(body)
        return sections[: header["parts"]], dict(header["hours"])

    def read_blocks(self, cluster: str, node: str, start: float, end: float) -> list[StoredBlock]:
        """The node's blocks (hourly, and a sparse node's daily ones) whose samples overlap
        [start, end], in time order."""
        out = []
        for kind, first, span in (
            ("h", start // BLOCK_S * BLOCK_S, BLOCK_S),
            ("d", start // DAY_S * DAY_S, DAY_S),
        ):
            for header, sections in self._objects(cluster, node, kind, first, end):
                if header["t_last"] >= start and header["t_first"] <= end and header["start"] + span > start:
                    out.append(StoredBlock(float(header["start"]), sections[: header["parts"]]))
        return sorted(out, key=lambda b: b.start)

    def read_rollups(self, cluster: str, node: str, start: float, end: float) -> list[StoredRollup]:
        """The node's minute rollups of the hours that overlap [start, end], in time order."""
        out = []
        for header, sections in self._objects(cluster, node, "h", start // BLOCK_S * BLOCK_S, end):
            stats = sections[header["parts"] :]
            out.append(StoredRollup(float(header["start"]), dict(zip(header["rollups"], stats, strict=True))))
        return out

    def _objects(
        self, cluster: str, node: str, kind: str, first: float, end: float
    ) -> Iterator[tuple[dict[str, Any], list[bytes]]]:
        """The node's objects of `kind` whose start lies in [first, end], in key (time) order: one
        listing of the node's prefix from `first`, then a GET each."""
        prefix = f"{long_prefix(cluster, node)}{kind}/"
        last = f"{prefix}{int(end):010d}"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, StartAfter=f"{prefix}{int(first) - 1:010d}"
        )
        with translated("S3"):
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        for key in keys:
            if key <= last:
                body = self._get(key)
                if body is not None:  # gone between the listing and the read: expired
                    yield _unpack(body)

    def _head(self, key: str) -> dict[str, str] | None:
        """The object's user metadata, or None if there is no object."""
        with translated("S3"):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=key)["Metadata"]
            except ClientError as e:
                if error_code(e) in MISSING_CODES:
                    return None
                raise

    def _get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""
        with translated("S3"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as e:
                if error_code(e) in MISSING_CODES:
                    return None
                raise
