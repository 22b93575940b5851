"""Silences: matchers and a time span; an alert they match is not announced while one is active.

Analyze still evaluates a silenced alert (so it fires or resolves on time); only its delivery
waits. When the silence ends and the alert is still firing, its group announces it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gpulse.alerting.matchers import Labels, Matcher, match_all


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at


def silenced_by(labels: Labels, silences: Iterable[Silence], now: float) -> Silence | None:
    """The first active silence whose matchers all hold for `labels`, or None."""
    for s in silences:
        if s.active(now) and match_all(s.matchers, labels):
            return s
    return None
