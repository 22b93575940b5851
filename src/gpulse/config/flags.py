"""A Powertools FeatureFlags store provider for the DynamoDB config table (Powertools ships
providers for AppConfig only).

One read of the table (one query per kind) serves everything the config holds: the rules'
feature flags go to FeatureFlags through `get_configuration`, the rest (parameters, routes,
silences, teams) to `LiveConfig` through `snapshot`. The read is cached for `max_age` seconds.
Each item is validated on its own: a malformed one is reported and its last good version (or
none, for a new item) stays in force, so one bad write never stops alerting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

from gpulse.config.documents import Parsed, parse
from gpulse.config.store import ConfigStore
from gpulse.errors import InvalidInput, StoreError

logger = logging.getLogger(__name__)
MAX_AGE_S = 30.0
RETRY_S = 5.0  # after a failed read, the next try (meanwhile: the last good config, or defaults)


@dataclass(frozen=True)
class Problem:
    """A config item that was rejected when read: what it is, who wrote it, why."""

    kind: str
    name: str
    version: int
    updated_by: str
    reason: str


@dataclass(frozen=True)
class Snapshot:
    items: dict[tuple[str, str], Parsed] = field(default_factory=dict)  # (kind, name) → parsed item
    problems: tuple[Problem, ...] = ()
    loaded_at: float = 0.0  # the clock's time of the read
    read_failed: bool = False  # the table could not be read: this is the last good snapshot

    def of(self, kind: str) -> dict[str, Any]:
        return {name: p for (k, name), p in self.items.items() if k == kind}


class DynamoDBStore(StoreProvider):
    """The config table as a FeatureFlags store: `{rule name: feature}` for every rule item."""

    def __init__(
        self,
        store: ConfigStore,
        *,
        max_age: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_age = max_age
        self.clock = clock
        self._snapshot = Snapshot()
        self._good: dict[tuple[str, str], Parsed] = {}
        self._flags: dict[str, Any] = {}
        self._fresh_until: float | None = None

    def snapshot(self) -> Snapshot:
        """The validated config, read again when older than `max_age`."""
        now = self.clock()
        if self._fresh_until is None or now >= self._fresh_until:
            self._reload(now)
        return self._snapshot

    @property
    def get_raw_configuration(self) -> dict[str, Any]:
        return self.get_configuration()

    def get_configuration(self) -> dict[str, Any]:
        """The rules' feature flags. The same dict object is returned until the next read, so
        FeatureFlags validates it once per read, not once per evaluation."""
        self.snapshot()
        return self._flags

    def _reload(self, now: float) -> None:
        try:
            raw = self.store.all()
        except StoreError as e:
            # keep alerting on the last good config; try again at the next evaluation
            logger.warning("config table unreadable, last good config kept: %s", e)
            self._snapshot = Snapshot(
                dict(self._good), self._snapshot.problems, self._snapshot.loaded_at, True
            )
            self._fresh_until = now + min(self.max_age, RETRY_S)
            return
        problems: list[Problem] = []
        items: dict[tuple[str, str], Parsed] = {}
        for kind, rows in raw.items():
            for row in rows:
                key = (kind, row.name)
                try:
                    items[key] = parse(kind, row.name, row.doc)
                except InvalidInput as e:
                    problems.append(Problem(kind, row.name, row.version, row.updated_by, str(e)))
                    logger.error(
                        "config item rejected, last good kept",
                        extra={"kind": kind, "item": row.name, "version": row.version, "reason": str(e)},
                    )
                    if key in self._good:
                        items[key] = self._good[key]
        self._good = items
        self._snapshot = Snapshot(dict(items), tuple(problems), now)
        self._flags = {name: p.flag for (kind, name), p in items.items() if kind == "rule"}  # type: ignore[union-attr]
        self._fresh_until = now + self.max_age
