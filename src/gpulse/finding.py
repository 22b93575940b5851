"""Finding v1: what analyze tells alert (contract 3 in DESIGN.md).

A finding is one transition of one alert (firing or resolved), self-contained: a notifier
renders it without reading anything else. It travels as JSON in an SQS message body.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from gpulse.errors import InvalidInput

State = Literal["firing", "resolved"]
Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")


@dataclass(frozen=True)
class EvidenceRow:
    """One labelled series in the picture: a node's (or GPU's) level over the window."""

    label: str  # "node-03" or "node-03/gpu2"
    values: list[float | None]  # downsampled to a few dozen points, oldest first; None = no data
    level: float  # the figure the detector compared (e.g. mean utilisation over the `for` span)
    flagged: bool  # this row is what the finding is about
    # Additive to v1: how to draw this row again from a later window (a resolve shows the
    # recovery, `gpulse.analyze.recovery`). `series`: which window series it plots, one of
    # `recovery.SERIES` ("node.util_gpu", "gpu.temp_c", ...); `subject`: the row's identity in the
    # window ("node-03", "node-03/2"); `reduce`: how `level` sums the series up ("mean", "median",
    # "last"). None where the detector did not say: such a picture is never re-drawn.
    series: str | None = None
    subject: str | None = None
    reduce: str | None = None


@dataclass(frozen=True)
class Evidence:
    title: str  # "GPU utilisation per node, last 10 min"
    unit: str  # "%"
    rows: list[EvidenceRow]
    reference: float | None = None  # the line it was held against (group median, threshold)
    reference_label: str | None = None  # "group median"
    scale_max: float = 100.0  # the full-bar value
    # the window the values span, evenly, oldest first (unix s): the time axis of a chart; set by
    # analyze for every detector (None in findings written before charts existed)
    start: float | None = None
    end: float | None = None
    # Additive to v1: the seconds before `end` the levels were taken over (None: the rows' own
    # spans, e.g. since the fault began), and what `reference` is: "peers" (the median of the
    # unflagged rows, re-computed with them) or None (a fixed line: a threshold)
    level_s: float | None = None
    reference_of: str | None = None
    # True when analyze re-drew this evidence at a resolve from the window of that run: values,
    # levels and reference are the recovery's, and `flagged` still marks the rows that were at fault
    recovery: bool = False
    # Additive to v1: at a resolve that was not re-drawn, why (the message words each truthfully):
    # "no_data" (the rows at fault have no data since the fault last held), "no_recipe" (the
    # picture has no recipe, or the window lacks its series or subject), "error" (drawing failed)
    recovery_note: str | None = None


@dataclass(frozen=True)
class Finding:
    rule: str  # catalogue name: "imbalance", "idle_held"
    title: str  # "Cross-node imbalance"
    severity: Severity
    state: State
    fingerprint: str  # stable for one alert across its whole life
    cluster: str
    since: float  # unix s: when the condition began
    at: float  # unix s: when this transition was decided
    summary: str  # one line: what is wrong, with the numbers
    action: str  # what to try
    node_group: str | None = None
    nodes: list[str] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)  # "node-03/2"
    mig: str | None = None
    users: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)  # owners by the config's teams (users, node groups)
    values: dict[str, float] = field(default_factory=dict)  # what crossed the line, and the line
    evidence: Evidence | None = None
    one_shot: bool = False  # an event (an XID, a crash): told once, never repeated, no resolve follows
    version: int = 1
    # Additive to v1 (readers of older messages get the defaults):
    # the severity it was announced with before it turned more severe (a firing told again), or None
    escalated_from: str | None = None
    # the incident's other alerts, which this one (the root cause) explains and which are not
    # announced on their own: [{"rule", "subject", "summary"}, ...]
    symptoms: list[dict[str, str]] = field(default_factory=list)
    # the fingerprints of the alerts whose transitions the same analyze run published for this
    # cluster (this one's included): a group holding one of them at an older state waits a moment
    # for its news rather than telling it as it was (`gpulse.alerting.groups.awaiting`)
    decided_with: list[str] = field(default_factory=list)
    # the rule's `for` when it fired: how long after `since` it could have fired at the earliest
    # (a firing decided later than that has waited already: `gpulse.alerting.groups.due_at`)
    for_s: float | None = None
    # a resolve's end of the fault span: the last analyze run at which the condition held (the
    # alert stayed firing after it only for its hold-down); None on firings and older resolves
    ended: float | None = None
    # the nodes that joined the alert after it was first announced, in the order they were told
    # (`nodes` keeps the first announcement's, so the alert's labels never change)
    joined: list[str] = field(default_factory=list)
    # the nodes of `joined` this transition announces (a firing told again: nodes joined), or []
    newly_joined: list[str] = field(default_factory=list)

    @property
    def transition_id(self) -> str:
        """Unique per transition: the key under which a delivery is recorded once per channel.
        An escalation is a transition of its own (the severity it rose to is part of it); so is a
        join (`joined` only grows, so its length tells one join from the next)."""
        base = f"{self.fingerprint}:{self.state}:{int(self.since)}"
        if self.state != "firing":
            return base
        if self.escalated_from:
            base = f"{base}:{self.severity}"
        return f"{base}:joined{len(self.joined)}" if self.newly_joined else base

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Finding:
        """Parse a Finding v1 message; InvalidInput names what is missing or wrong."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"finding is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise InvalidInput("finding must be a JSON object with version 1")
        if doc.get("state") not in ("firing", "resolved") or doc.get("severity") not in SEVERITIES:
            raise InvalidInput(f"finding has state {doc.get('state')!r}, severity {doc.get('severity')!r}")
        ev = doc.pop("evidence", None)
        try:
            evidence = (
                Evidence(**{**ev, "rows": [EvidenceRow(**r) for r in ev["rows"]]}) if ev is not None else None
            )
            return cls(**doc, evidence=evidence)
        except (TypeError, KeyError) as e:
            raise InvalidInput(f"finding does not match Finding v1: {e}") from None


def fingerprint(rule: str, **labels: str | int | None) -> str:
    """A stable id for one alert subject: the rule plus the labels that say where."""
    canonical = json.dumps({"rule": rule, **{k: v for k, v in sorted(labels.items()) if v is not None}})
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def with_state(finding: Finding, state: State, at: float) -> Finding:
    """The same alert in another state (e.g. the resolved copy of a firing finding)."""
    data: dict[str, Any] = asdict(finding)
    data.update(state=state, at=at)
    return Finding.from_json(json.dumps(data))
