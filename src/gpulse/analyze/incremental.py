"""Each cluster's window kept between analyze ticks, in the Lambda container's memory.

A tick reads only the chunks that arrived since the last one (`SeriesStore.read_chunks(...,
arrived_after=...)`: late spooled batches included, whatever the age of their samples), bins them
into the cluster's `WindowState` and forgets what left the window. A cold container, a clock that
went back, or bins that must widen (`bin_step`) rebuild the state from the store. Both paths give
the same window, bit for bit (tests/unit/test_window_incremental.py):

- the window holds the chunks whose last sample is at or after `lo` — the bin edge at or before
  `now - window_s - STALE_S` — and whose first sample is at or before `now`; of those, the samples
  at or after `lo` (a bin before it is never read again, so a warm state can drop it);
- a chunk is read as `readable` at its arrival (ingest's clock; `now` for an item stored before the
  field existed), with samples more than FUTURE_S past it left out: one reading per chunk, not one
  per tick. Ingest refuses batches more than 5 minutes ahead, so only a chunk stored before that
  rule or a clock jump inside a batch loses samples to it;
- the arrival watermark trails by ARRIVAL_MARGIN_S, and keys already binned are skipped: a write
  that committed after a read but carries an earlier `arrived` is not missed, nor counted twice.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from gpulse import codec
from gpulse.analyze.detection import STEP_S, step_for
from gpulse.codec import Chunk
from gpulse.detect.base import NodeSeen, Window
from gpulse.store import SeriesStore, StoredChunk
from gpulse.window import STALE_S, WindowState, median_step, readable, window_end

logger = logging.getLogger(__name__)
FUTURE_S = 600.0  # samples this far past their chunk's arrival are no reading (ingest allows 300)
# How far behind the newest arrival the next read starts. Ingest stamps `arrived` just before its
# write, which commits (boto3's retries included) before ingest's 15 s Timeout ends (template.yaml
# IngestFunction): so a chunk missed by a read has `arrived` at most 15 s before that read. 15 s
# more covers the read's own duration (its pages are seen from its start), the eventually
# consistent table and LateIndex (visible within a second or so) and skew between ingest
# containers' clocks. Every tick reads this much again (bench/cost_model.py: WARM_READ_S).
ARRIVAL_MARGIN_S = 30.0
REBUILD_BATCH = 256  # chunks decoded at once by a rebuild (about 65 KB each, decoded: ~16 MB)


@dataclass
class TickStats:
    """What one tick did: for the run's report and the bench."""

    cold: bool = False
    read: int = 0  # items read from the store
    decoded: int = 0  # chunks decoded and binned (or held until their time comes)
    corrupt: int = 0
    read_s: float = 0.0
    decode_s: float = 0.0
    bin_s: float = 0.0
    # CPU seconds (process time) of the same steps: the wall times above include waiting on
    # the store and on other processes; the bench splits a tick's CPU with these
    read_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0  # decoding and binning


class _Read(NamedTuple):
    """A decoded chunk with its key, and the bounds and interval every step of a tick reads."""

    chunk: Chunk
    key: str
    first: float  # first and last sample
    last: float
    interval: float | None  # median sample interval (`bin_step`)


@dataclass
class _Cluster:
    state: WindowState
    now: float
    watermark: float = -math.inf  # newest arrival seen
    seen: dict[str, float] = field(default_factory=dict)  # key -> arrival, while inside the margin
    pending: list[_Read] = field(default_factory=list)  # first sample after `now`


class ClusterWindows:
    """The windows of the clusters this container analyses, kept from tick to tick.

    `incremental=False` rebuilds every tick (the reference the warm path must equal).

    SQS hands a cluster's (or shard's) tasks to whichever worker container is free, so one
    container comes to see many of them; each window it keeps costs memory (about 0.7 MB a node
    at 8 GPUs and 15 minutes). With `keep_nodes`, the windows least recently used are forgotten
    once those kept hold more nodes than that (the one just used always stays): a forgotten one
    is rebuilt from the store when its task comes back. The worker keeps one shard's worth
    (`AnalyzeShardNodes`), so its memory stays bounded however many clusters the fleet has."""

    def __init__(
        self,
        store: SeriesStore,
        *,
        window_s: float,
        step_s: float = STEP_S,
        incremental: bool = True,
        keep_nodes: int | None = None,
    ) -> None:
        self.store, self.window_s, self.step_s, self.incremental = store, window_s, step_s, incremental
        self.keep_nodes = keep_nodes
        # by cluster, and by the nodes of a shard of it (None: the whole cluster); least recently
        # used first (a window used is moved to the end)
        self._kept: dict[tuple[str, frozenset[str] | None], _Cluster] = {}

    def forget(self, cluster: str) -> None:
        for slot in [slot for slot in self._kept if slot[0] == cluster]:
            del self._kept[slot]

    def window(
        self,
        cluster: str,
        registry: list[NodeSeen],
        now: float,
        stats: TickStats | None = None,
        *,
        nodes: frozenset[str] | None = None,
    ) -> Window:
        """The cluster's window at `now`: what `window_for` gives over the chunks the store holds
        (with `nodes`, a shard's: only those nodes' chunks are decoded, kept apart)."""
        stats = stats if stats is not None else TickStats()
        slot = (cluster, nodes)
        kept = self._kept.pop(slot, None) if self.incremental else None
        if kept is None or now < kept.now or not self._tick(cluster, kept, now, stats, nodes):
            kept = self._rebuild(cluster, now, stats, nodes)
        if self.incremental:
            self._kept[slot] = kept  # the most recently used, last
            self._trim()
        kept.now = now
        state = kept.state
        last_seen = state.last_seen()
        end = window_end(last_seen.values(), state.step) if last_seen else now - now % state.step
        return state.window(
            cluster,
            end=end,
            span_s=self.window_s,
            node_groups={n.node: n.node_group for n in registry},
            registry=registry,
            now=now,
        )

    def kept(self) -> list[tuple[str, frozenset[str] | None]]:
        """The windows kept, least recently used first."""
        return list(self._kept)

    def _trim(self) -> None:
        """Forget the least recently used windows while those kept hold more than `keep_nodes`
        nodes; never the last one used."""
        if self.keep_nodes is None:
            return
        held = {slot: len(k.state.node_row) for slot, k in self._kept.items()}
        total = sum(held.values())
        for slot in list(self._kept)[:-1]:
            if total <= self.keep_nodes:
                break
            total -= held[slot]
            del self._kept[slot]

    # -- the two paths ----------------------------------------------------------------------------

    def _lo(self, now: float, step: float) -> float:
        return math.floor((now - self.window_s - STALE_S) / step + 1e-9) * step

    def _rebuild(self, cluster: str, now: float, stats: TickStats, nodes: frozenset[str] | None) -> _Cluster:
        stats.cold = True
        t0, c0 = time.perf_counter(), time.process_time()
        stored = self.store.read_chunks(
            cluster, now - self.window_s - STALE_S - 2 * self.step_s - 60.0, now + FUTURE_S
        )
        if nodes is not None:  # a shard's window: its own nodes only
            stored = [s for s in stored if s.node in nodes]
        t1, c1 = time.perf_counter(), time.process_time()
        stats.read, stats.read_s, stats.read_cpu_s = len(stored), t1 - t0, c1 - c0
        # Decoded and binned a batch at a time, so that the decoded window is never all in memory.
        # The bin width comes from the chunks themselves (`bin_step`): binned at the usual width
        # first, and again only if some node samples slower than that.
        cutoff = now - self.window_s - STALE_S
        step = self.step_s
        while True:
            tries = TickStats()
            # room for the window, the stale margin and two minutes ahead; more ahead widens it
            kept = _Cluster(WindowState(step, capacity_s=self.window_s + STALE_S + 120.0), now)
            kept.state.drop_before(self._lo(now, step))
            intervals: list[float | None] = []
            for at in range(0, len(stored), REBUILD_BATCH):
                chunks = self._decode(cluster, stored[at : at + REBUILD_BATCH], now, tries)
                intervals += [r.interval for r in chunks if r.last >= cutoff and r.first <= now]
                self._take(kept, chunks, now)
            needed = step_for(intervals, self.step_s)
            if needed == step:
                break
            step = needed
        self._seen(kept, stored, now)
        stats.decoded, stats.corrupt = tries.decoded, tries.corrupt
        stats.decode_s = time.perf_counter() - t1  # decoding and binning, interleaved
        stats.decode_cpu_s = time.process_time() - c1
        return kept

    def _tick(
        self, cluster: str, kept: _Cluster, now: float, stats: TickStats, nodes: frozenset[str] | None
    ) -> bool:
        """Bring a warm state to `now`; False when it must be rebuilt instead."""
        t0, c0 = time.perf_counter(), time.process_time()
        after = kept.watermark - ARRIVAL_MARGIN_S if kept.watermark > -math.inf else None
        lo = self._lo(now, kept.state.step)
        stored = [
            s
            for s in self.store.read_chunks(cluster, lo, now + FUTURE_S, arrived_after=after)
            if s.key not in kept.seen and (nodes is None or s.node in nodes)
        ]
        t1, c1 = time.perf_counter(), time.process_time()
        chunks = self._decode(cluster, stored, now, stats)
        t2 = time.perf_counter()
        held = kept.pending + chunks
        cutoff = now - self.window_s - STALE_S
        intervals = kept.state.intervals(since=cutoff) + [
            r.interval for r in held if r.first <= now and r.last >= cutoff
        ]
        if step_for(intervals, self.step_s) != kept.state.step:
            return False  # the bins must widen or narrow: every chunk again
        kept.state.drop_before(lo)
        kept.pending = []
        self._take(kept, held, now)
        self._seen(kept, stored, now)
        stats.read, stats.read_s, stats.decode_s = len(stored), t1 - t0, t2 - t1
        stats.bin_s = time.perf_counter() - t2
        stats.read_cpu_s, stats.decode_cpu_s = c1 - c0, time.process_time() - c1
        return True

    def _take(self, kept: _Cluster, chunks: list[_Read], now: float) -> None:
        """Bin the chunks whose time has come; hold those whose first sample is after `now`."""
        lo = self._lo(now, kept.state.step)
        kept.state.add([(r.chunk, r.key) for r in chunks if r.first <= now and r.last >= lo])
        kept.pending.extend(r for r in chunks if r.first > now)

    @staticmethod
    def _seen(kept: _Cluster, stored: list[StoredChunk], now: float) -> None:
        """Advance the watermark past what was read; remember its keys while inside the margin."""
        for s in stored:
            arrived = s.arrived or now
            kept.seen[s.key] = arrived
            kept.watermark = max(kept.watermark, arrived)
        edge = kept.watermark - 2 * ARRIVAL_MARGIN_S
        kept.seen = {k: a for k, a in kept.seen.items() if a >= edge}

    def _decode(self, cluster: str, stored: list[StoredChunk], now: float, stats: TickStats) -> list[_Read]:
        out = []
        for item in stored:
            try:
                chunk = codec.decode(item.data)
            except codec.ChunkCorrupt as e:  # one bad item must not hide its node's other data
                stats.corrupt += 1
                logger.warning(
                    "chunk skipped: it does not decode",
                    extra={"cluster": cluster, "node": item.node, "key": item.key, "reason": str(e)},
                )
                continue
            usable = readable(chunk, item.arrived or now, future_s=FUTURE_S)
            if usable is not None:
                ts = usable.timestamps
                out.append(_Read(usable, item.key, float(ts.min()), float(ts.max()), median_step(ts)))
        stats.decoded += len(out)
        return out
