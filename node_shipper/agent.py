"""The shipper's run loop: sample every node each interval, close batches, hand them to a sender thread.

Two threads, so a slow or dead endpoint never delays a sample: the main thread samples and
builds batches; the sender thread owns every `Outbox` (spool, backoff, HTTP). `request_stop()`
(wired to SIGTERM and SIGINT) ends sampling; then each node's partial batch is closed and sent
or spooled, and the spool is drained until `drain_s` has passed. `run()` then returns 0.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpulse_wire.limits import MAX_BODY_BYTES
from node_shipper.batch import BatchBuilder, encode
from node_shipper.model import Source
from node_shipper.outbox import Outbox
from node_shipper.spool import SeqStore

log = logging.getLogger(__name__)

SENDER_TICK_S = 0.5  # how often the sender looks at backoffs when no new batch arrives
JOIN_GRACE_S = 2.0  # an HTTP call in flight at the drain deadline gets this long to finish


@dataclass
class NodePipeline:
    """Everything one node (real or virtual) needs: where samples come from and where batches go."""

    name: str
    source: Source
    builder: BatchBuilder
    seq: SeqStore
    outbox: Outbox
    samples: int = 0
    batches: int = 0


@dataclass(frozen=True)
class _Closed:
    """A built batch on its way from the sampling thread to the sender thread."""

    pipeline: NodePipeline
    body: bytes
    first_ts: float
    seq: int


class _End:
    """Queued after the last batch: sampling is over, drain and return."""


class Shipper:
    """Runs the pipelines until `request_stop()` or `duration_s`, then drains for up to `drain_s`."""

    def __init__(
        self,
        pipelines: Sequence[NodePipeline],
        *,
        interval_s: float,
        batch_s: float,
        drain_s: float,
        duration_s: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        new_batch_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.pipelines = list(pipelines)
        self._interval = interval_s
        self._per_batch = max(1, round(batch_s / interval_s))
        self._drain_s = drain_s
        self._duration = duration_s
        self._clock = clock
        self._monotonic = monotonic
        self._new_batch_id = new_batch_id
        self._stop = threading.Event()
        self._queue: queue.Queue[_Closed | _End] = queue.Queue()
        self._drain_deadline = 0.0
        self._draining = False  # set once the drain deadline is known
        self._sender_failed = False

    def request_stop(self, reason: str) -> None:
        """Stop sampling (safe from a signal handler); run() then flushes and drains."""
        if not self._stop.is_set():
            log.info("stopping", extra={"reason": reason, "drain_s": self._drain_s})
        self._stop.set()

    # -- sampling thread --

    def _sample(self, p: NodePipeline, ts: float) -> None:
        try:
            sample = p.source.sample(ts)
        except Exception:  # one bad read must not end a node's monitoring; the next second may work
            log.exception("sample failed", extra={"node": p.name})
            return
        if p.builder.add(sample):
            p.samples += 1
        if len(p.builder) >= self._per_batch:
            self._close(p)

    def _close(self, p: NodePipeline) -> None:
        first_ts = p.builder.first_ts
        if first_ts is None:
            return
        seq = p.seq.take()
        doc = p.builder.build(
            inventory=p.source.inventory(),
            seq=seq,
            batch_id=self._new_batch_id(),
            # read across threads: one enum attribute, the state as the batch leaves the sampler
            agent={"spool": p.outbox.spool_state.value},
        )
        body = encode(doc)
        p.batches += 1
        if len(body) > MAX_BODY_BYTES:
            log.error(
                "batch too large for ingest, dropped", extra={"node": p.name, "seq": seq, "bytes": len(body)}
            )
            return
        log.debug(
            "batch closed",
            extra={"node": p.name, "seq": seq, "samples": len(doc["timestamps"]), "bytes": len(body)},
        )
        self._queue.put(_Closed(p, body, first_ts, seq))

    # -- sender thread --

    def _send_loop(self) -> None:
        try:
            while True:
                waits = [p.outbox.backoff.wait_s() for p in self.pipelines if p.outbox.pending]
                try:
                    item: _Closed | _End | None = self._queue.get(timeout=min([SENDER_TICK_S, *waits]))
                except queue.Empty:
                    item = None  # nothing new: just pump
                if isinstance(item, _End):
                    break
                if item is not None:
                    # After a stop, even a direct post must end within the drain window.
                    deadline = self._drain_deadline if self._draining else None
                    item.pipeline.outbox.offer(
                        item.body, first_ts=item.first_ts, seq=item.seq, deadline=deadline
                    )
                for p in self.pipelines:
                    p.outbox.pump(deadline=self._drain_deadline if self._draining else None)
            self._drain()
        except Exception:
            self._sender_failed = True
            log.exception("sender thread failed; stopping")
            self._stop.set()

    def _drain(self) -> None:
        deadline = self._drain_deadline
        while True:
            # Flushed partial batches arrive before the sentinel, so the queue is empty here.
            pending = [p for p in self.pipelines if p.outbox.pending]
            left = deadline - self._monotonic()
            if not pending or left <= 0:
                return
            for p in pending:
                p.outbox.pump(deadline=deadline)
            waits = [p.outbox.backoff.wait_s() for p in self.pipelines if p.outbox.pending]
            if waits:
                time.sleep(max(0.01, min(min(waits), deadline - self._monotonic(), SENDER_TICK_S)))

    # -- the whole run --

    def run(self) -> int:
        """Sample until stopped, then flush and drain. 0 on a clean stop, 1 if the sender failed."""
        started = self._monotonic()
        sender = threading.Thread(target=self._send_loop, name="gpulse-sender", daemon=True)
        sender.start()
        next_tick = started
        try:
            while not self._stop.is_set():
                ts = self._clock()
                for p in self.pipelines:
                    self._sample(p, ts)
                if self._duration is not None and self._monotonic() - started >= self._duration:
                    log.info("duration reached", extra={"duration_s": self._duration})
                    break
                next_tick += self._interval
                delay = next_tick - self._monotonic()
                if delay < 0:  # we fell behind (a slow read): skip the missed ticks, do not burst
                    next_tick = self._monotonic()
                    delay = 0.0
                self._stop.wait(delay)
        finally:
            self._drain_deadline = self._monotonic() + self._drain_s
            self._draining = True
            self._stop.set()
            # Flushed batches go through the same queue, ahead of the sentinel: order is kept.
            # They may be sent directly to the endpoint, so their HTTP calls share the drain window.
            for p in self.pipelines:
                if len(p.builder):
                    self._close(p)
            self._queue.put(_End())
            sender.join(timeout=max(0.0, self._drain_deadline - self._monotonic()) + JOIN_GRACE_S)
            if sender.is_alive():
                log.warning(
                    "sender still busy at the drain deadline; spooled batches stay for the next start"
                )
            for p in self.pipelines:
                p.source.close()
                log.info(
                    "shipper stopped",
                    extra={
                        "node": p.name,
                        "samples": p.samples,
                        "batches": p.batches,
                        "sent": p.outbox.stats.sent,
                        "spooled": p.outbox.stats.spooled,
                        "held": p.outbox.stats.held,
                        "dropped": p.outbox.stats.dropped,
                        "pending": p.outbox.pending,
                        "spool": p.outbox.spool_state.value,
                    },
                )
                if not sender.is_alive():
                    p.outbox.close()
        return 1 if self._sender_failed else 0
