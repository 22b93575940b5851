"""When to try the next post: exponential backoff with jitter, capped, honouring Retry-After.

The spool owns retrying (a batch may wait across restarts), so this bookkeeping is ours, not
the HTTP session's. The clock and the jitter source are injected: tests step time by hand.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

BASE_S = 1.0
CAP_S = 60.0
MAX_RETRY_AFTER_S = (
    600.0  # a server asking for longer than this is misconfigured; still wait, but not forever
)


class Backoff:
    """Tracks consecutive failures of one destination and the earliest time of the next try.

    After the n-th consecutive failure the wait is `min(cap, base * 2**(n-1))`, scaled by a
    jitter factor in [0.5, 1.0] ("equal jitter": never less than half, so waits still grow).
    A `Retry-After` the server sent replaces that wait (it knows its own load).
    """

    def __init__(
        self,
        *,
        base_s: float = BASE_S,
        cap_s: float = CAP_S,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self._base = base_s
        self._cap = cap_s
        self._clock = clock
        self._jitter = jitter
        self.failures = 0
        self._next_at = 0.0

    def ready(self) -> bool:
        """True when a post may be tried now."""
        return self._clock() >= self._next_at

    def wait_s(self) -> float:
        """Seconds until a post may be tried (0 when ready)."""
        return max(0.0, self._next_at - self._clock())

    def failed(self, retry_after_s: float | None = None) -> float:
        """Record a retryable failure; return the wait before the next try."""
        self.failures += 1
        if retry_after_s is not None and retry_after_s >= 0:
            delay = min(retry_after_s, MAX_RETRY_AFTER_S)
        else:
            ceiling = min(self._cap, self._base * 2 ** min(self.failures - 1, 32))
            delay = ceiling * (0.5 + 0.5 * self._jitter())
        self._next_at = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        """The destination answered: the next failure starts the sequence again."""
        self.failures = 0
        self._next_at = 0.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header in its delta-seconds form; None for absent or HTTP-date."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return None  # the HTTP-date form: fall back to our own backoff
    return seconds if seconds >= 0 else None
