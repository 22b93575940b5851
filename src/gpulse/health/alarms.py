"""A CloudWatch alarm's state change (the JSON SNS delivers) → a `gpulse_health` finding.

ALARM fires it, OK resolves it (only after an ALARM: a new alarm's INSUFFICIENT_DATA → OK says
nothing), INSUFFICIENT_DATA is not a transition worth a message. The alarm's description is the
plain words; the metric adds the figure ("… failed 3 times in 5 minutes") and what to look at.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpulse.errors import InvalidInput
from gpulse.finding import Finding, Severity, State, fingerprint
from gpulse.health import CLUSTER

RULE = "gpulse_health"
TITLE = "gpulse health"
# "… 1 out of the last 1 datapoints [3.0 (06/03/15 17:43:00)] was …" (newest first), or the
# older "… 1 datapoint (10.0) was …": the figure that crossed the line
_DATAPOINT = re.compile(r"datapoints? \[?\(?(-?\d+(?:\.\d+)?(?:[Ee][-+]?\d+)?)")
_PERCENTILE = re.compile(r"[pP](\d+(?:\.\d+)?)")  # an extended statistic: "p99", "p99.9"


@dataclass(frozen=True)
class AlarmChange:
    """The fields of a CloudWatch alarm notification that gpulse uses."""

    name: str
    description: str
    state: str  # ALARM / OK / INSUFFICIENT_DATA
    old_state: str
    reason: str
    at: float  # StateChangeTime, unix s
    namespace: str = ""
    metric: str = ""
    statistic: str = ""  # SUM, MAXIMUM, … or a percentile (p99)
    period_s: int = 0
    evaluation_periods: int = 1
    threshold: float | None = None
    dimensions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_message(cls, text: str) -> AlarmChange:
        """Parse an SNS Message from CloudWatch; InvalidInput if it is not an alarm's."""
        try:
            doc: Any = json.loads(text)
        except json.JSONDecodeError:
            raise InvalidInput("SNS message is not JSON: not a CloudWatch alarm") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("AlarmName"), str):
            raise InvalidInput("SNS message has no AlarmName: not a CloudWatch alarm")
        try:
            at = datetime.strptime(doc["StateChangeTime"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(f"alarm {doc['AlarmName']}: StateChangeTime is missing or malformed") from None
        raw = doc.get("Trigger")
        trigger: dict[str, Any] = raw if isinstance(raw, dict) else {}
        dims = trigger.get("Dimensions") or []
        return cls(
            name=doc["AlarmName"],
            description=str(doc.get("AlarmDescription") or doc["AlarmName"]),
            state=str(doc.get("NewStateValue")),
            old_state=str(doc.get("OldStateValue")),
            reason=str(doc.get("NewStateReason") or ""),
            at=at,
            namespace=str(trigger.get("Namespace") or ""),
            metric=str(trigger.get("MetricName") or ""),
            # a percentile alarm's Trigger names it as ExtendedStatistic (some senders in Statistic)
            statistic=str(trigger.get("ExtendedStatistic") or trigger.get("Statistic") or ""),
            period_s=int(trigger.get("Period") or 0),
            evaluation_periods=int(trigger.get("EvaluationPeriods") or 1),
            threshold=float(trigger["Threshold"]) if trigger.get("Threshold") is not None else None,
            dimensions={str(d.get("name")): str(d.get("value")) for d in dims if isinstance(d, dict)},
        )

    @property
    def value(self) -> float | None:
        """The datapoint that crossed the threshold, as NewStateReason states it."""
        m = _DATAPOINT.search(self.reason)
        return float(m.group(1)) if m else None

    @property
    def percentile(self) -> float | None:
        """The percentile the alarm watches (99.0 for p99); None for the other statistics."""
        m = _PERCENTILE.fullmatch(self.statistic)
        return float(m.group(1)) if m else None


@dataclass(frozen=True)
class _Wording:
    figure: str  # format with {n} (the value as an integer), {s} (ms as seconds), {window}
    action: str
    severity: Severity
    # the figure of a percentile alarm; also {tail}: the share of values at or above it (1 for p99)
    percentile_figure: str = ""


_WORDING: dict[tuple[str, str], _Wording] = {
    ("AWS/Lambda", "Errors"): _Wording(
        " {n} times in {window}",
        "Look for its crash report in this channel (file and line) and read its log. What failed is "
        "retried; findings that keep failing end in the dead-letter queue (`gpulse dlq list`).",
        "critical",
    ),
    ("AWS/Lambda", "Throttles"): _Wording(
        " {n} times in {window}",
        "Check the account's Lambda concurrency. Analyze runs one at a time (reserved concurrency 1): "
        "a throttled analyze run means the one before overran its minute.",
        "warning",
    ),
    ("AWS/Lambda", "Duration"): _Wording(
        ": its longest run took {s} in {window}",
        "Read the analyze worker's log: each task's read, decode and detect times, and whether it "
        "rebuilt its window (cold). Give it more memory (and so CPU), fewer nodes per shard "
        "(AnalyzeShardNodes), or a shorter window (AnalyzeWindowSeconds), before runs time out.",
        "warning",
        percentile_figure=": {tail} % of its runs took {s} or more in {window}",
    ),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): _Wording(
        ": {n} waiting",
        "`gpulse dlq list` shows what is parked and why; fix the cause, then `gpulse dlq redrive --all`.",
        "critical",
    ),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"): _Wording(
        ": the oldest has waited {n} s",
        "Alerts are late. Look at the alert function's errors and throttles, and at the webhooks' "
        "answers in its log (a chat service that keeps answering 429 or 5xx).",
        "critical",
    ),
    ("AWS/Lambda", "Url5xxCount"): _Wording(  # ingest's function URL
        " {n} times in {window}",
        "Read ingest's log: a 503 means storage was throttled or unavailable (shippers retry it); "
        "a 502 is a crash, reported in this channel with its file and line.",
        "critical",
    ),
    ("Gpulse", "BatchesUnauthorized"): _Wording(
        ": {n} in {window}",
        "A node signs with a secret ingest does not know: a secret rotated on one side only, or a "
        "node that is not registered. See docs/operations.md on node secrets.",
        "warning",
    ),
}
_OTHER = _Wording("", "Read the alarm in CloudWatch.", "warning")


def _window(seconds: int) -> str:
    if seconds and seconds % 60 == 0:
        minutes = seconds // 60
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds} s"


def summary(change: AlarmChange) -> str:
    """The plain words: the alarm's description, and the figure when the reason states one."""
    wording = _WORDING.get((change.namespace, change.metric), _OTHER)
    value, percentile = change.value, change.percentile
    figure = wording.figure if percentile is None else wording.percentile_figure
    if value is None or not figure or change.state != "ALARM":
        return change.description
    return change.description + figure.format(
        n=f"{value:.0f}",
        s=f"{value / 1000:.1f} s",
        window=_window(change.period_s * change.evaluation_periods),
        tail=f"{100 - (percentile or 0):.4g}",
    )


def to_finding(change: AlarmChange) -> Finding | None:
    """The finding an alarm's state change announces; None when it announces nothing."""
    state: State
    if change.state == "ALARM":
        state = "firing"
    elif change.state == "OK" and change.old_state == "ALARM":
        state = "resolved"
    else:
        return None
    wording = _WORDING.get((change.namespace, change.metric), _OTHER)
    values = {"threshold": change.threshold} if change.threshold is not None else {}
    if change.value is not None and state == "firing":
        values["value"] = change.value
    return Finding(
        rule=RULE,
        title=TITLE,
        severity=wording.severity,
        state=state,
        fingerprint=fingerprint(RULE, alarm=change.name),
        cluster=CLUSTER,
        # an OK does not say when its ALARM began: the resolve is stamped with its own time
        since=change.at,
        at=change.at,
        summary=summary(change),
        action=f"{wording.action} (CloudWatch alarm {change.name})",
        values=values,
    )
