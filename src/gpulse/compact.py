"""The compactor: each node's hot-tier chunks of a closed hour → one long-tier block and rollups.

Run on a schedule (functions/compactor, every hour: each run reads the hot tier's closed hours
again, and reads are what a run costs). Each run visits every registered
cluster and every hour that is closed (its end plus `grace_s` for late batches has passed) and
whose chunks can all still be in the hot tier (it began less than `hot_ttl_s` ago). For each node
it merges the hour (gpulse.blocks), then writes the block and rollups to the long tier in S3 (one
object per node-hour, `gpulse.store.LongTier`) unless the same chunks built the stored one (its
`source` metadata, compared by a HEAD): a re-run over the same hour writes nothing, and a late
chunk replaces that node's object. A sparse node's hours (fewer than
SPARSE_TIMESTAMPS timestamps) are folded into one block per day instead, without rollups.
Nothing is deleted: chunks leave the hot tier only by their TTL, which is longer than an hour's
reach here, so every chunk is in a block first.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpulse import blocks, codec
from gpulse.errors import GpulseError, StoreError
from gpulse.store import BLOCK_S, BUCKET_S, DAY_S, LongTier, SeriesStore, StoredChunk

DEFAULT_GRACE_S = 300  # late batches of a closed hour: a shipper retrying for up to 5 minutes
# An hour with fewer timestamps (a node sampling slower than every 6 s) is folded into its node's
# day block instead: an hour block's fixed cost (item, header) would be ~1 B per sample there.
SPARSE_TIMESTAMPS = 600


@dataclass
class Report:
    """What one run did: counts, and the chunks it could not read (keys, for the log)."""

    hours: int = 0
    nodes: int = 0
    chunks: int = 0
    written: int = 0  # blocks written (new, or replaced because late chunks came)
    unchanged: int = 0  # blocks already stored from the same chunks
    corrupt: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "cluster/node@hour: why" for blocks not written


class Compactor:
    def __init__(
        self,
        store: SeriesStore,
        long_tier: LongTier,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store.hot_ttl_s < BLOCK_S + grace_s:
            raise ValueError(
                f"the hot tier's TTL ({store.hot_ttl_s} s) must exceed a block ({BLOCK_S} s) plus the "
                f"grace for late batches ({grace_s} s), or chunks expire before they are compacted"
            )
        self.store = store  # the hot tier (chunks) and the registry, read
        self.long = long_tier  # where blocks and rollups are written
        self.grace_s = grace_s
        self.clock = clock

    def hours_due(self, now: float) -> list[float]:
        """Starts of the hours a run at `now` compacts (oldest first)."""
        last = (now - self.grace_s) // BLOCK_S * BLOCK_S - BLOCK_S  # the latest closed hour
        first = (now - self.store.hot_ttl_s) // BLOCK_S * BLOCK_S + BLOCK_S  # its chunks all still live
        return [float(h) for h in range(int(first), int(last) + 1, BLOCK_S)]

    def run(self, now: float | None = None) -> Report:
        now = self.clock() if now is None else now
        report = Report()
        clusters = sorted({n.cluster for n in self.store.nodes()})
        for hour in self.hours_due(now):
            report.hours += 1
            for cluster in clusters:
                self.compact(cluster, hour, report)
        return report

    def compact(self, cluster: str, start: float, report: Report) -> None:
        """One cluster's hour: a block per node that has chunks there."""
        end = start + BLOCK_S
        by_node: dict[str, list[StoredChunk]] = defaultdict(list)
        # reach: a batch that straddles the hour's end is filed under the next bucket (batches of up
        # to 10 minutes; the shipper sends 10–60 s). Each bucket of reach is read and billed whole.
        for c in self.store.read_chunks(cluster, start, end - 0.001, reach_s=BUCKET_S):
            by_node[c.node].append(c)
        for node, stored in sorted(by_node.items()):
            report.nodes += 1
            report.chunks += len(stored)
            try:
                self._compact_node(cluster, node, start, stored, report)
            except StoreError as e:  # one node's failed read or write must not stop the run
                report.failed.append(f"{cluster}/{node}@{int(start)}: {type(e).__name__}: {e}")

    def _compact_node(
        self, cluster: str, node: str, start: float, stored: list[StoredChunk], report: Report
    ) -> None:
        decoded = []
        for c in stored:
            try:
                decoded.append(codec.decode(c.data))
            except codec.ChunkCorrupt:
                report.corrupt.append(c.key)  # kept out of the block; the log names it
        doc = blocks.merge(decoded, start, start + BLOCK_S)
        if doc is None:
            return
        digest = blocks.source_digest([c.key for c in stored])
        if len(doc["timestamps"]) < SPARSE_TIMESTAMPS:
            self._fold_into_day(cluster, node, start, doc, digest, report)
            return
        try:
            parts = blocks.encode_block(doc)
            rollups = blocks.rollup(doc)
        except (GpulseError, ValueError) as e:
            report.failed.append(f"{cluster}/{node}@{int(start)}: {e}")
            return
        ts = doc["timestamps"]
        written = self.long.put_block(
            cluster,
            node,
            start,
            parts,
            rollups,
            source=digest,
            t_first=float(ts[0]),
            t_last=float(ts[-1]),
        )
        if written:
            report.written += 1
        else:
            report.unchanged += 1

    def _fold_into_day(
        self, cluster: str, node: str, start: float, hour: dict[str, Any], digest: str, report: Report
    ) -> None:
        """A sparse hour into its node's day block: read it, merge the hour in, write it back;
        nothing if that hour was folded from the same chunks already. No rollups: a minute of a
        node this sparse holds a sample or two, and a chart reads the block itself."""
        day = start // DAY_S * DAY_S
        parts, hours = self.long.read_day_block(cluster, node, day)
        if hours.get(str(int(start))) == digest:
            report.unchanged += 1
            return
        try:
            prior = [blocks.decode_block(p) for p in parts]
            # the hour's samples alone (its chunks may reach into the next hour), as chunks to merge
            mine = [blocks.decode_block(p) for p in blocks.encode_block(hour)]
            doc = blocks.merge(prior + mine, day, day + DAY_S)
            assert doc is not None  # the hour's chunks have samples in it
            new_parts = blocks.encode_block(doc)
        except (GpulseError, ValueError) as e:
            report.failed.append(f"{cluster}/{node}@{int(start)}: {e}")
            return
        ts = doc["timestamps"]
        self.long.put_day_block(
            cluster,
            node,
            day,
            new_parts,
            hours={**hours, str(int(start)): digest},
            t_first=float(ts[0]),
            t_last=float(ts[-1]),
        )
        report.written += 1
