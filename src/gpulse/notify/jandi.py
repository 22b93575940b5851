"""Jandi: a finding as an incoming-webhook message (body, colour bar, connectInfo sections).

Jandi wants `Accept: application/vnd.tosslab.jandi-v2+json` and `Content-Type:
application/json`; `body` is the only required field. Each description is kept under
2000 characters; the evidence is summarised to fit, never cut mid-row.
"""

from __future__ import annotations

from typing import Any

from gpulse.finding import Finding
from gpulse.notify import evidence as ev
from gpulse.notify.base import Webhook

MAX_DESCRIPTION_CHARS = 1999  # "under 2000"
HEADERS = {"Accept": "application/vnd.tosslab.jandi-v2+json", "Content-Type": "application/json"}
COLOR = {"critical": "#E01E5A", "warning": "#ECB22E", "info": "#36C5F0"}
RESOLVED_COLOR = "#2EB67D"


def _info(title: str, description: str) -> dict[str, str]:
    return {"title": title, "description": ev.truncate(description, MAX_DESCRIPTION_CHARS)}


def render(finding: Finding) -> dict[str, Any]:
    """The webhook payload: `body`, `connectColor` and `connectInfo`."""
    facts = ev.facts(finding)
    resolved = finding.state == "resolved"
    info = [
        _info("Where", facts.where),
        _info("Who", facts.who),
        _info("Since", facts.since),
        _info("Severity", facts.severity),
    ]
    if finding.evidence is not None:
        info.append(
            {
                "title": finding.evidence.title,
                "description": ev.table(finding.evidence, max_chars=MAX_DESCRIPTION_CHARS),
            }
        )
    info.append(_info("Action", "No action needed: resolved." if resolved else finding.action))
    info.append(_info("Details", facts.context))
    return {
        "body": facts.headline,
        "connectColor": RESOLVED_COLOR if resolved else COLOR[finding.severity],
        "connectInfo": info,
    }


class JandiWebhook(Webhook):
    """A Jandi incoming webhook."""

    kind = "jandi"
    headers = HEADERS

    def render(self, finding: Finding) -> dict[str, Any]:
        return render(finding)
