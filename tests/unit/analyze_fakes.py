"""In-memory stand-ins for what analyze talks to (the series store, the alert records, the
findings queue, the live config): subclasses of the real classes, so an interface change breaks
them, holding what the real ones would write in DynamoDB and SQS. No sockets."""

from __future__ import annotations

from typing import Any

from gpulse import codec
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue
from gpulse.alerting.state import AlertRecord, Decision
from gpulse.errors import StoreError
from gpulse.finding import Finding
from gpulse.store import NodeInfo, SeriesStore, StoredChunk


class MemSeries(SeriesStore):
    """Chunks and the registry in memory; a cluster in `broken` fails its reads as a throttled
    DynamoDB would."""

    def __init__(self) -> None:  # no client: nothing here reaches AWS
        self.chunks: dict[str, list[StoredChunk]] = {}
        self.registry: list[NodeInfo] = []
        self.broken: set[str] = set()

    def add(
        self, doc: dict[str, Any], *, key: str | None = None, arrived: float | None = None
    ) -> StoredChunk:
        """Store a Batch v1 document as the store would (encoded), and register its node. It
        arrives at `arrived` (default: its last sample, as if sent at once)."""
        stored = StoredChunk(
            key or f"{doc['cluster']}/{doc['batch_id']}",
            doc["node"],
            codec.encode(doc),
            float(doc["timestamps"][-1]) if arrived is None else arrived,
        )
        self.chunks.setdefault(doc["cluster"], []).append(stored)
        self.register(doc["cluster"], doc["node"], float(doc["timestamps"][-1]))
        return stored

    def register(self, cluster: str, node: str, last_seen: float) -> None:
        self.registry = [n for n in self.registry if (n.cluster, n.node) != (cluster, node)]
        self.registry.append(NodeInfo(cluster, node, None, last_seen))

    def nodes(self) -> list[NodeInfo]:
        return list(self.registry)

    def read_chunks(
        self,
        cluster: str,
        start: float,
        end: float,
        *,
        arrived_after: float | None = None,
        reach_s: float = 0.0,
    ) -> list[StoredChunk]:
        if cluster in self.broken:
            raise StoreError("DynamoDB ThrottlingException")
        return [c for c in self.chunks.get(cluster, []) if arrived_after is None or c.arrived > arrived_after]


class MemRecords(AlertRecords):
    """Alert records with the table's conditional writes (version checks)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], AlertRecord] = {}

    def load(self, cluster: str) -> dict[str, AlertRecord]:
        return {fp: rec for (c, fp), rec in self.rows.items() if c == cluster}

    def apply(self, decision: Decision, now: float) -> bool:
        rec = decision.record
        key = (rec.cluster, rec.fingerprint)
        held = self.rows.get(key)
        if (held.version if held is not None else None) != decision.expected_version:
            return False
        if decision.delete:
            self.rows.pop(key, None)
        else:
            self.rows[key] = rec
        return True


class MemQueue(FindingsQueue):
    """Keeps what would be sent to the findings queue, in order."""

    def __init__(self) -> None:
        self.sent: list[Finding] = []

    def publish(self, findings: list[Finding]) -> None:
        self.sent.extend(findings)

    def take(self) -> list[Finding]:
        out, self.sent = self.sent, []
        return out
