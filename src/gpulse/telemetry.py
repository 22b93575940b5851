"""Every CloudWatch metric gpulse emits (EMF through Powertools Metrics), declared once.

`emit` refuses a name that is not here, so the catalogue cannot drift from the code.
"""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

CATALOGUE: dict[str, tuple[MetricUnit, str]] = {
    "BatchesStored": (MetricUnit.Count, "ingest: batches written (first time)"),
    "BatchesDuplicate": (MetricUnit.Count, "ingest: replays acknowledged without writing"),
    "BatchesRejected": (MetricUnit.Count, "ingest: requests answered 4xx"),
    "BatchesUnauthorized": (MetricUnit.Count, "ingest: requests answered 401 (the IngestUnauthorized alarm)"),
    "SamplesStored": (MetricUnit.Count, "ingest: sample timestamps written"),
    "ClustersAnalyzed": (MetricUnit.Count, "analyze: clusters evaluated in a run"),
    "ChunksRead": (MetricUnit.Count, "analyze: chunks decoded in a run"),
    "FindingsPublished": (MetricUnit.Count, "analyze: transitions sent to the findings queue"),
    "AnalysisFailures": (MetricUnit.Count, "analyze: clusters, and rules on a cluster, that raised in a run"),
    "ChunksCorrupt": (MetricUnit.Count, "analyze: stored chunks that did not decode (skipped)"),
    "HeartbeatsFailed": (MetricUnit.Count, "analyze: heartbeat pings that got no 2xx"),
    "MessagesDelivered": (MetricUnit.Count, "alert: messages a webhook accepted"),
    "MessagesDeadLettered": (MetricUnit.Count, "alert: messages refused (4xx) and sent to the DLQ"),
}


def emit(metrics: Metrics, name: str, value: float = 1) -> None:
    unit, _ = CATALOGUE[name]  # KeyError: an undeclared metric is a bug, caught by the tests
    metrics.add_metric(name=name, unit=unit, value=value)
