"""Every CloudWatch metric gpulse emits (EMF through Powertools Metrics), declared once; and
the functions' Tracer.

`emit` refuses a name that is not here, so the catalogue cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

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
    "AnalyzeTasksSent": (MetricUnit.Count, "analyze dispatcher: cluster/shard tasks enqueued in a tick"),
    "AnalyzeTasksStale": (MetricUnit.Count, "analyze worker: tasks dropped, their tick over 120 s old"),
    "AnalyzeTasksTaken": (MetricUnit.Count, "analyze worker: tasks dropped, their tick (or a later) claimed"),
    "BlocksWritten": (MetricUnit.Count, "compactor: long-tier blocks written (new, or rebuilt)"),
    "BlocksFailed": (MetricUnit.Count, "compactor: node-hours that could not be made a block (logged)"),
    "MessagesDelivered": (MetricUnit.Count, "alert: messages a webhook accepted"),
    "MessagesDeadLettered": (MetricUnit.Count, "alert: messages refused (4xx) and sent to the DLQ"),
    "ChartsStored": (MetricUnit.Count, "alert: charts drawn and stored in the charts bucket"),
    "ChartsFailed": (MetricUnit.Count, "alert: charts that could not be drawn or stored (sent without)"),
}


def emit(metrics: Metrics, name: str, value: float = 1) -> None:
    unit, _ = CATALOGUE[name]  # KeyError: an undeclared metric is a bug, caught by the tests
    metrics.add_metric(name=name, unit=unit, value=value)


class _NoSegment(BaseSegment):
    """A subsegment that records nothing."""

    def close(self, end_time: int | None = None) -> None: ...
    def add_subsegment(self, subsegment: Any) -> None: ...
    def remove_subsegment(self, subsegment: Any) -> None: ...
    def put_annotation(self, key: str, value: Any) -> None: ...
    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None: ...
    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None: ...


class NoTracing(BaseProvider):
    """A tracing provider that does nothing, for a function whose tracing is off."""

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _NoSegment()

    def in_subsegment_async(
        self, name: str | None = None, **kwargs: Any
    ) -> AbstractAsyncContextManager[BaseSegment]:
        @asynccontextmanager
        async def segment() -> Any:
            yield _NoSegment()

        return segment()

    def put_annotation(self, key: str, value: Any) -> None: ...
    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None: ...
    def patch(self, modules: Sequence[str]) -> None: ...
    def patch_all(self) -> None: ...


def tracing_disabled() -> bool:
    """Powertools' own rule: POWERTOOLS_TRACE_DISABLED, or not running in Lambda (tests, the
    local stack, `sam local`)."""
    return bool(Tracer._is_tracer_disabled())


def tracer() -> Tracer:
    """The functions' Tracer. With tracing off it gets `NoTracing`: Powertools' Tracer otherwise
    imports the X-Ray SDK in its constructor even when disabled (~170 ms of a cold start)."""
    if tracing_disabled():
        return Tracer(provider=NoTracing(), disabled=True)
    return Tracer()
