"""One node's way out: post a new batch at once when nothing waits, else keep it; send oldest first.

A batch that cannot go now is kept in the disk spool, or, while the spool cannot take it (disk
full, unwritable, or disabled), in a bounded queue in memory: live sending never depends on the
disk. When the spool can take batches again, what memory holds moves to it.

Every batch ends exactly one way: sent (2xx), or dropped for a stated reason (`DropReason`,
logged with the node, seq and reason, and passed to `on_drop`), or still held. Answers:
SENT is done; RETRY keeps the batch and lets `Backoff` say when to try again; AUTH (401/403)
re-reads the secret and keeps the batch while the refusals have lasted less than
`auth_hold_s` (a secret being rotated), then drops; MISROUTED (404/405: the endpoint is wrong,
not the data) keeps the batch with backoff, saying once per episode what to fix, and drops only
by the spool's own bounds (size, age); DROP (another 4xx) drops at once.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from node_shipper.errors import SpoolUnavailable
from node_shipper.retry import Backoff
from node_shipper.sender import Sender, SendResult, Verdict
from node_shipper.spool import DEFAULT_MAX_AGE_S, Spool, SpoolEntry, SpoolState

log = logging.getLogger(__name__)

DEFAULT_AUTH_HOLD_S = 1800.0  # ingest caches a node's secret for 15 min: twice that covers a rotation
MEMORY_MAX_BYTES = 4 << 20  # per node: ~400 batches of an 8-GPU node, over an hour at 10 s a batch


class DropReason(enum.Enum):
    """Why a batch was given up: the only ways a batch may end unsent."""

    REFUSED = "refused"  # a 4xx other than 401/403: the same bytes would be refused again
    AUTH_HOLD_EXPIRED = "auth_hold_expired"  # 401/403 for longer than auth_hold_s
    SPOOL_BOUND = "spool_bound"  # the oldest, pushed out by --spool-max-mb
    MEMORY_BOUND = "memory_bound"  # the oldest held in memory while the spool could not take it
    TOO_OLD = "too_old"  # older than ingest accepts
    STOPPED = "stopped"  # held in memory (spool unusable) when the shipper stopped


@dataclass(frozen=True)
class Held:
    """A batch kept in memory: the spool could not take it."""

    body: bytes
    first_ts: float
    seq: int


@dataclass
class OutboxStats:
    sent: int = 0
    spooled: int = 0
    held: int = 0  # kept in memory because the spool could not take them
    dropped: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Outbox:
    """Spool + memory queue + sender + backoff of one node. Not thread-safe: one thread drives it.

    `spool` None means no spool at all (`--no-spool`). Clocks are injected: `clock` is wall
    time (ages, the 401 hold), `monotonic` is for deadlines.
    """

    def __init__(
        self,
        *,
        node: str,
        spool: Spool | None,
        sender: Sender,
        backoff: Backoff,
        auth_hold_s: float = DEFAULT_AUTH_HOLD_S,
        memory_max_bytes: int = MEMORY_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_drop: Callable[[int, DropReason], None] | None = None,
    ) -> None:
        self.node = node
        self.spool = spool
        self._sender = sender
        self.backoff = backoff
        self._auth_hold_s = auth_hold_s
        self._memory_max = memory_max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        self._monotonic = monotonic
        self._on_drop = on_drop
        self._memory: deque[Held] = deque()
        self._memory_bytes = 0
        self._auth_since: float | None = None  # wall time of the first 401/403 since the last 2xx
        self._misrouted = False  # a 404/405 since the last 2xx: said once, not per retry
        self.stats = OutboxStats()

    @property
    def spool_state(self) -> SpoolState:
        """What each new batch reports in `agent.spool`."""
        return SpoolState.DISABLED if self.spool is None else self.spool.state

    @property
    def pending(self) -> int:
        return len(self._memory) + (len(self.spool) if self.spool is not None else 0)

    @property
    def in_memory(self) -> tuple[int, ...]:
        """The seqs held in memory, oldest first (lost if the process dies)."""
        return tuple(h.seq for h in self._memory)

    def _timeout(self, deadline: float | None) -> float | None:
        return None if deadline is None else deadline - self._monotonic()

    # -- where a batch ends ------------------------------------------------------------------------

    def _drop(self, seq: int, reason: DropReason, **detail: object) -> None:
        self.stats.dropped += 1
        self.stats.by_reason[reason.value] = self.stats.by_reason.get(reason.value, 0) + 1
        level = logging.WARNING if reason in (DropReason.SPOOL_BOUND, DropReason.TOO_OLD) else logging.ERROR
        log.log(
            level, "batch dropped", extra={"node": self.node, "seq": seq, "reason": reason.value, **detail}
        )
        if self._on_drop is not None:
            self._on_drop(seq, reason)

    def _judge(self, result: SendResult, seq: int, first_ts: float) -> bool:
        """Record one answer; True when the batch is done with (sent, or dropped for a reason)."""
        keys = {"node": self.node, "seq": seq, "status": result.status}
        if result.verdict is Verdict.SENT:
            self.backoff.succeeded()
            self._auth_since = None
            self._misrouted = False
            self.stats.sent += 1
            log.debug("batch sent", extra=keys)
            return True
        if result.verdict is Verdict.DROP:
            # The server will refuse these bytes every time: keep its reason, not the batch.
            self.backoff.succeeded()
            self._drop(seq, DropReason.REFUSED, status=result.status, response=result.detail)
            return True
        if result.verdict is Verdict.AUTH:
            changed = self._sender.reload_secret()
            now = self._clock()
            if self._auth_since is None:
                self._auth_since = now
                log.error(
                    "ingest refused our signature: holding batches, re-reading the secret file",
                    extra={**keys, "hold_s": self._auth_hold_s, "response": result.detail},
                )
            if now - self._auth_since >= self._auth_hold_s:
                self.backoff.succeeded()  # the server answers; each held batch gets its last try
                self._drop(
                    seq,
                    DropReason.AUTH_HOLD_EXPIRED,
                    status=result.status,
                    response=result.detail,
                    refused_for_s=round(now - self._auth_since),
                )
                return True
            if changed:
                return False  # a new secret: try again at once, no backoff
        if result.verdict is Verdict.MISROUTED and not self._misrouted:
            self._misrouted = True
            log.error(
                "ingest has no such endpoint: holding batches until --endpoint is fixed",
                extra={
                    **keys,
                    "url": self._sender.url,
                    "fix": "--endpoint is the stack's IngestUrl output (or its ApiUrl), without "
                    "/v1/batches: the shipper adds the path",
                    "response": result.detail,
                },
            )
        wait = self.backoff.failed(result.retry_after_s)
        log.warning(
            "batch post failed, will retry",
            extra={
                **keys,
                "retry_in_s": round(wait, 2),
                "retry_after": result.retry_after_s,
                "failures": self.backoff.failures,
                "error": result.detail,
                "first_ts": first_ts,
            },
        )
        return False

    def _keep(self, batch: Held) -> None:
        """Keep a batch that could not go: in the spool if it can take it, else in memory."""
        if self.spool is not None:
            try:
                for evicted in self.spool.put(batch.body, first_ts=batch.first_ts, seq=batch.seq):
                    self._drop(evicted.seq, DropReason.SPOOL_BOUND)
                self.stats.spooled += 1
                return
            except SpoolUnavailable:
                pass  # the spool said so in its log, once; memory keeps the batch meanwhile
        self._memory.append(batch)
        self._memory_bytes += len(batch.body)
        self.stats.held += 1
        while self._memory_bytes > self._memory_max and len(self._memory) > 1:  # the newest stays
            oldest = self._memory.popleft()
            self._memory_bytes -= len(oldest.body)
            self._drop(oldest.seq, DropReason.MEMORY_BOUND, max_bytes=self._memory_max)

    def _spool_memory(self, *, probe_now: bool = False) -> None:
        """While the spool can take batches, move what memory holds to it (a crash then loses none)."""
        if self.spool is None or self.spool.reprobe(now=probe_now) is not SpoolState.OK:
            return
        while self._memory:
            batch = self._memory[0]
            try:
                evicted = self.spool.put(batch.body, first_ts=batch.first_ts, seq=batch.seq)
            except SpoolUnavailable:
                return
            self._memory.popleft()
            self._memory_bytes -= len(batch.body)
            self.stats.spooled += 1
            for entry in evicted:
                self._drop(entry.seq, DropReason.SPOOL_BOUND)

    def _expire(self) -> None:
        if self.spool is not None:
            for entry in self.spool.expire():
                self._drop(entry.seq, DropReason.TOO_OLD)
        cutoff = self._clock() - self._max_age_s
        for batch in [b for b in self._memory if b.first_ts < cutoff]:
            self._memory.remove(batch)
            self._memory_bytes -= len(batch.body)
            self._drop(batch.seq, DropReason.TOO_OLD)

    def _oldest(self) -> tuple[SpoolEntry | None, Held] | None:
        """The oldest batch held anywhere, and its spool entry (None: it is in memory)."""
        head = self.spool.oldest() if self.spool is not None else None
        mem = self._memory[0] if self._memory else None
        if head is not None and (mem is None or (head[0].first_ts, head[0].seq) <= (mem.first_ts, mem.seq)):
            entry, body = head
            return entry, Held(body, entry.first_ts, entry.seq)
        return (None, mem) if mem is not None else None

    # -- what the sender thread calls --------------------------------------------------------------

    def offer(self, body: bytes, *, first_ts: float, seq: int, deadline: float | None = None) -> None:
        """A new batch: post it now if nothing waits and the backoff allows, else keep it."""
        self._spool_memory()
        batch = Held(body, first_ts, seq)
        if self.pending or not self.backoff.ready():
            self._keep(batch)
            return
        if not self._judge(self._sender.send(body, timeout_s=self._timeout(deadline)), seq, first_ts):
            self._keep(batch)

    def pump(self, *, deadline: float | None = None) -> None:
        """Post held batches, oldest first, while the backoff allows and before `deadline` (monotonic).

        Also gives the spool its probe when due, so its state recovers without a failed batch.
        """
        self._spool_memory()
        self._expire()
        while self.backoff.ready() and (deadline is None or self._monotonic() < deadline):
            head = self._oldest()
            if head is None:
                return
            entry, batch = head
            if not self._judge(
                self._sender.send(batch.body, timeout_s=self._timeout(deadline)), batch.seq, batch.first_ts
            ):
                return
            if entry is not None:
                assert self.spool is not None
                self.spool.remove(entry)
            else:
                self._memory.popleft()
                self._memory_bytes -= len(batch.body)

    def close(self) -> None:
        """At stop: memory goes to the spool if the disk takes it now (probed at once, whatever
        the probe's backoff: a disk freed since the last probe must not cost the batches); what
        it cannot take is lost (said once, with the seqs); release the spool."""
        self._spool_memory(probe_now=True)
        for batch in self._memory:
            self._drop(batch.seq, DropReason.STOPPED, spool=self.spool_state.value)
        self._memory.clear()
        self._memory_bytes = 0
        if self.spool is not None:
            self.spool.close()
