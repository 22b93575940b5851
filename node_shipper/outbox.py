"""One node's way out: post a new batch at once when nothing waits, else spool it; drain oldest first.

The order of batches is kept: while the spool holds anything, a new batch joins the back of it.
A DROP answer (a 4xx other than 429) deletes that batch with the server's message in the log;
a RETRY answer keeps it and lets `Backoff` say when to try again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from node_shipper.errors import SpoolError
from node_shipper.retry import Backoff
from node_shipper.sender import Sender, SendResult, Verdict
from node_shipper.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class OutboxStats:
    sent: int = 0
    spooled: int = 0
    dropped: int = 0  # refused by the server (4xx) or lost to a spool that could not be written


class Outbox:
    """Spool + sender + backoff of one node. Not thread-safe: one thread drives it."""

    def __init__(
        self,
        *,
        node: str,
        spool: Spool,
        sender: Sender,
        backoff: Backoff,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.spool = spool
        self._sender = sender
        self.backoff = backoff
        self._monotonic = monotonic
        self.stats = OutboxStats()

    @property
    def pending(self) -> int:
        return len(self.spool)

    def _timeout(self, deadline: float | None) -> float | None:
        return None if deadline is None else deadline - self._monotonic()

    def _judge(self, result: SendResult, seq: int, first_ts: float) -> bool:
        """Record one answer; True when the batch is done with (sent or refused for good)."""
        keys = {"node": self.node, "seq": seq, "status": result.status}
        if result.verdict is Verdict.SENT:
            self.backoff.succeeded()
            self.stats.sent += 1
            log.debug("batch sent", extra=keys)
            return True
        if result.verdict is Verdict.DROP:
            # The server will refuse these bytes every time: keep its reason, not the batch.
            self.backoff.succeeded()
            self.stats.dropped += 1
            log.error("batch refused, dropped", extra={**keys, "response": result.detail})
            return True
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

    def _spool(self, body: bytes, first_ts: float, seq: int) -> None:
        try:
            self.spool.put(body, first_ts=first_ts, seq=seq)
            self.stats.spooled += 1
        except SpoolError as e:
            self.stats.dropped += 1
            log.error(
                "batch lost: spool write failed", extra={"node": self.node, "seq": seq, "error": str(e)}
            )

    def offer(self, body: bytes, *, first_ts: float, seq: int, deadline: float | None = None) -> None:
        """A new batch: post it now if nothing waits and the backoff allows, else spool it."""
        if self.spool or not self.backoff.ready():
            self._spool(body, first_ts, seq)
            return
        if not self._judge(self._sender.send(body, timeout_s=self._timeout(deadline)), seq, first_ts):
            self._spool(body, first_ts, seq)

    def pump(self, *, deadline: float | None = None) -> None:
        """Post spooled batches, oldest first, while the backoff allows and before `deadline` (monotonic)."""
        while self.backoff.ready() and (deadline is None or self._monotonic() < deadline):
            head = self.spool.oldest()
            if head is None:
                return
            entry, body = head
            if self._judge(
                self._sender.send(body, timeout_s=self._timeout(deadline)), entry.seq, entry.first_ts
            ):
                self.spool.remove(entry)
            else:
                return
