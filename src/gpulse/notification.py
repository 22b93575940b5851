"""Notification: what one flush of one alert group tells one route's channels.

The dispatcher (gpulse.alerting.dispatch) groups findings by route and labels (by default
cluster and rule), waits (group_wait, group_interval, repeat_interval), leaves out what is
silenced, and hands each channel a Notification. A group of one alert renders exactly as that
finding alone; a larger group renders as one message listing its alerts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from gpulse.errors import InvalidInput
from gpulse.finding import Finding


@dataclass(frozen=True)
class Notification:
    id: str  # unique per flush of a group: the key its delivery is recorded under, per channel
    route: str  # the route's name ("default", "ml-team")
    group: dict[str, str]  # the group_by labels and their values: {"cluster": "a", "rule": "idle_held"}
    firing: list[Finding] = field(default_factory=list)  # every firing, unsilenced alert of the group
    resolved: list[Finding] = field(default_factory=list)  # announced alerts resolved since the last flush
    new: list[str] = field(default_factory=list)  # fingerprints of `firing` not announced before
    # fingerprints of `firing` announced before whose news now is nodes joining (`newly_joined`)
    joined: list[str] = field(default_factory=list)
    mentions: list[str] = field(default_factory=list)  # chat handles to name, as the route wrote them
    repeat: bool = False  # sent again because the group kept firing for repeat_interval

    @property
    def findings(self) -> list[Finding]:
        """Firing first, then resolved: the order a message lists them."""
        return [*self.firing, *self.resolved]

    @property
    def single(self) -> Finding | None:
        """The one finding of a group of one (rendered as that finding alone), else None."""
        both = self.findings
        return both[0] if len(both) == 1 else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Notification:
        try:
            doc: dict[str, Any] = json.loads(text)
            return cls(
                **{
                    **doc,
                    "firing": [Finding.from_json(json.dumps(f)) for f in doc["firing"]],
                    "resolved": [Finding.from_json(json.dumps(f)) for f in doc["resolved"]],
                }
            )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InvalidInput(f"notification does not match: {e}") from None


def single(finding: Finding, *, route: str = "default", mentions: list[str] | None = None) -> Notification:
    """A notification of one finding alone (tests, and the fast way to show one finding)."""
    firing, resolved = ([finding], []) if finding.state == "firing" else ([], [finding])
    return Notification(
        id=finding.transition_id,
        route=route,
        group={"cluster": finding.cluster, "rule": finding.rule},
        firing=firing,
        resolved=resolved,
        new=[finding.fingerprint] if finding.state == "firing" else [],
        mentions=list(mentions or []),
    )
