"""Slack: a finding as a Block Kit message for an incoming webhook.

Blocks cannot carry a colour, so the header starts with an emoji per severity (✅ when
resolved). Limits kept here: ≤ 50 blocks, header plain_text ≤ 150 characters, section text
≤ 3000, section field text ≤ 2000; the evidence code block is summarised to fit, never cut.
"""

from __future__ import annotations

from typing import Any

from gpulse.finding import Finding
from gpulse.notify import evidence as ev
from gpulse.notify.base import Webhook

MAX_BLOCKS = 50  # the layout below uses at most 6; long evidence is summarised, never split into blocks
MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3000
MAX_FIELD_CHARS = 2000

EMOJI = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_EMOJI = "✅"


def escape(text: str) -> str:
    """Slack's three control characters in mrkdwn text (elsewhere they would start links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _field(title: str, body: str) -> dict[str, str]:
    return _mrkdwn(ev.truncate(f"*{title}*\n{escape(body)}", MAX_FIELD_CHARS))


def render(finding: Finding) -> dict[str, Any]:
    """The webhook payload: `text` (the notification fallback) and `blocks`."""
    facts = ev.facts(finding)
    resolved = finding.state == "resolved"
    emoji = RESOLVED_EMOJI if resolved else EMOJI[finding.severity]
    header = f"{emoji} RESOLVED: {finding.title}" if resolved else f"{emoji} {finding.title}"
    lead = (
        f"*Resolved, no action needed.* It was: {escape(finding.summary)}"
        if resolved
        else escape(finding.summary)
    )
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": ev.truncate(header, MAX_HEADER_CHARS), "emoji": True},
        },
        {"type": "section", "text": _mrkdwn(ev.truncate(lead, MAX_SECTION_CHARS))},
        {
            "type": "section",
            "fields": [
                _field("Where", facts.where),
                _field("Who", facts.who),
                _field("Since", facts.since),
                _field("Severity", f"{emoji} {facts.severity}"),
            ],
        },
    ]
    if finding.evidence is not None:
        prefix = f"*{escape(finding.evidence.title)}*\n```\n"
        suffix = "\n```"
        code = ev.fit_table(
            finding.evidence,
            MAX_SECTION_CHARS - len(prefix) - len(suffix),
            measure=lambda t: len(escape(t)),
        )
        blocks.append({"type": "section", "text": _mrkdwn(prefix + escape(code) + suffix)})
    if not resolved:
        action = ev.truncate(f"*What to try*\n{escape(finding.action)}", MAX_SECTION_CHARS)
        blocks.append({"type": "section", "text": _mrkdwn(action)})
    blocks.append({"type": "context", "elements": [_mrkdwn(escape(facts.context))]})
    return {"text": ev.truncate(f"{emoji} {escape(facts.headline)}", MAX_SECTION_CHARS), "blocks": blocks}


class SlackWebhook(Webhook):
    """A Slack incoming webhook. `requests` sets Content-Type: application/json."""

    kind = "slack"

    def render(self, finding: Finding) -> dict[str, Any]:
        return render(finding)
