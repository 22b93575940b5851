"""Slack: a notification as a Block Kit message for an incoming webhook.

A group of one alert renders as that finding alone (`render_finding`); a larger group as one
message that lists its alerts, most severe and newest first, and sums up in one line those it
cannot list. Blocks cannot carry a colour, so the header starts with an emoji per severity
(✅ when resolved). Limits kept here: ≤ 50 blocks, header plain_text ≤ 150 characters,
section text ≤ 3000, section field text ≤ 2000; long text is cut at a word, the evidence is
summarised to fit, never cut.

Mentions are inserted raw (Slack's `<@U…>` syntax is markup) only when they match a strict
pattern; anything else is escaped, so a route's handle cannot inject a link or a broadcast.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gpulse.finding import Evidence, Finding
from gpulse.notification import Notification
from gpulse.notify import evidence as ev
from gpulse.notify.base import Webhook
from gpulse.notify.chart import Picture

MAX_BLOCKS = 50  # a single finding uses at most 7 blocks, a group at most MAX_LISTED + 6; a chart adds one
MAX_IMAGE_URL_CHARS = 3000  # an image block's image_url
MAX_ALT_CHARS = 2000  # an image block's alt_text
MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3000
MAX_FIELD_CHARS = 2000
MAX_LISTED = 20  # alerts a group message lists, one section each; the rest are summed up
MAX_TEXT_CC_CHARS = 500  # of the mentions repeated in the top-level text: a push, not a roster
MAX_SUMMARY_CHARS = 1500  # of one listed alert's summary line: the list stays a list
ALERT_BLOCK_ID = "alert-"  # block_id prefix of a listed alert's section: "alert-1", "alert-2", …

EMOJI = ev.SEVERITY_EMOJI
RESOLVED_EMOJI = ev.RESOLVED_EMOJI

# The only handles inserted raw: a user or a user group, or the two channel-wide pings.
MENTION = re.compile(r"<@[UW][A-Z0-9]+>|<!subteam\^[A-Z0-9]+>|<!here>|<!channel>")


def escape(text: str) -> str:
    """Slack's three control characters in mrkdwn text (elsewhere they would start links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(handle: str) -> str:
    """`handle` raw when it is a Slack mention (`<@U123>`, `<!subteam^S1>`, `<!here>`,
    `<!channel>`), else escaped so that it shows as the text it is."""
    return handle if MENTION.fullmatch(handle) else escape(handle)


def cc_line(mentions: Sequence[str]) -> str:
    """`cc <@U123> <!subteam^S1>`, or "" when there is no one to name."""
    handles = [mention(h.strip()) for h in mentions if h.strip()]
    return "cc " + " ".join(handles) if handles else ""


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": ev.truncate(text, MAX_HEADER_CHARS), "emoji": True},
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(ev.truncate(text, MAX_SECTION_CHARS))}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(ev.truncate(text, MAX_SECTION_CHARS))]}


def _field(title: str, body: str) -> dict[str, str]:
    return _mrkdwn(ev.truncate(f"*{title}*\n{escape(body)}", MAX_FIELD_CHARS))


def _code_prefix(evidence: Evidence, note: str = "") -> str:
    """The table's title line; `note`: how old the picture is (`evidence.picture_note`)."""
    return f"*{escape(evidence.title)}*{escape(note)}\n```\n"


CODE_SUFFIX = "\n```"


def _text(head: str, cc: str) -> dict[str, str]:
    """The top-level `text`: what a push notification shows, with the mentions that make it ping."""
    if not cc:
        return {"text": ev.truncate(head, MAX_SECTION_CHARS)}
    cc = ev.truncate(cc, MAX_TEXT_CC_CHARS)  # cut between handles, never inside one
    return {"text": ev.truncate(head, MAX_SECTION_CHARS - len(cc) - 3) + " · " + cc}


def render(notification: Notification) -> dict[str, Any]:
    """The webhook payload for a notification: `text` (the push notification) and `blocks`.

    A group of one is exactly `render_finding` of its finding; a larger group is one message
    listing at most MAX_LISTED alerts, then a line summing up the rest."""
    one = notification.single
    if one is not None:
        return render_finding(one, notification.mentions, repeat=notification.repeat)
    return render_group(notification)


def render_finding(finding: Finding, mentions: Sequence[str] = (), *, repeat: bool = False) -> dict[str, Any]:
    """One finding alone: header, summary, where/who/since/severity, evidence, what to try,
    context; then, when there are mentions, one "cc" section naming them."""
    facts = ev.facts(finding, repeat=repeat)
    resolved = finding.state == "resolved"
    emoji = RESOLVED_EMOJI if resolved else EMOJI[finding.severity]
    if resolved:
        header = f"{emoji} RESOLVED: {finding.title}"
    else:
        header = f"{emoji} Still firing: {finding.title}" if repeat else f"{emoji} {finding.title}"
    lead = (
        f"*Resolved, no action needed.* It was: {escape(finding.summary)}"
        if resolved
        else escape(finding.summary)
    )
    if facts.now is not None:  # a resolve: its figures now, beside what it was
        lead += f"\n*Now:* {escape(facts.now)}"
    blocks: list[dict[str, Any]] = [
        _header(header),
        _section(lead),
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
    listed = ev.symptoms_text(finding)
    if listed is not None:  # an incident: what this cause explains, in the same message
        blocks.append(_section(escape(listed)))
    if finding.evidence is not None:
        prefix = _code_prefix(finding.evidence, ev.picture_note(finding))
        code = ev.fit_table(
            finding.evidence,
            MAX_SECTION_CHARS - len(prefix) - len(CODE_SUFFIX),
            measure=lambda t: len(escape(t)),
        )
        # Not through _section: the table is sized to fit, and a cut would lose the closing ```.
        blocks.append({"type": "section", "text": _mrkdwn(prefix + escape(code) + CODE_SUFFIX)})
    if not resolved:
        blocks.append(_section(f"*What to try*\n{escape(finding.action)}"))
    blocks.append(_context(escape(facts.context)))
    cc = cc_line(mentions)
    if cc:
        blocks.append(_section(cc))
    return {**_text(f"{emoji} {escape(facts.headline)}", cc), "blocks": blocks}


def _listed(finding: Finding, n: int, new: set[str], joined: set[str], titled: bool) -> dict[str, Any]:
    """One listed alert: `🟠 *NEW* summary` (or `🟠 *+ node-06 JOINED* summary` when nodes joined
    an alert told before) over `where · who · for how long`."""
    if finding.state == "resolved":
        mark = f"{RESOLVED_EMOJI} *resolved* "
    elif finding.fingerprint in joined:
        mark = f"{EMOJI[finding.severity]} *{escape(ev.joined_mark(finding))}* "
    else:
        mark = f"{EMOJI[finding.severity]} " + ("*NEW* " if finding.fingerprint in new else "")
    what = f"{finding.title}: {finding.summary}" if titled else finding.summary
    line = mark + ev.truncate(escape(what), MAX_SUMMARY_CHARS)
    return {
        "type": "section",
        "block_id": f"{ALERT_BLOCK_ID}{n}",
        "text": _mrkdwn(ev.truncate(f"{line}\n{escape(ev.short_details(finding))}", MAX_SECTION_CHARS)),
    }


def _group_evidence(finding: Finding | None) -> dict[str, Any] | None:
    """The first listed firing alert's picture, when it fits one section whole."""
    if finding is None or finding.evidence is None:
        return None
    text = _code_prefix(finding.evidence) + escape(ev.table(finding.evidence)) + CODE_SUFFIX
    return {"type": "section", "text": _mrkdwn(text)} if len(text) <= MAX_SECTION_CHARS else None


def render_group(notification: Notification) -> dict[str, Any]:
    """A group of several alerts as one message: header with the counts, the group's labels,
    one section per listed alert (block_id `alert-<n>`), a line summing up the rest, the first
    firing alert's evidence when it fits, the shared action when there is one, and mentions."""
    g = ev.group_facts(notification, MAX_LISTED)
    emoji = RESOLVED_EMOJI if g.severity is None else EMOJI[g.severity]
    blocks: list[dict[str, Any]] = [_header(f"{emoji} {g.headline}")]
    if g.labels:
        blocks.append(_context(escape(g.labels)))
    new, joined = set(notification.new), set(notification.joined)
    titled = len(g.titles) > 1
    blocks.extend(_listed(f, n, new, joined, titled) for n, f in enumerate(g.listed, start=1))
    if g.left_out:
        blocks.append(_section(escape(ev.left_out_line(g.left_out))))
    picture = _group_evidence(next((f for f in g.listed if f.state == "firing"), None))
    if picture is not None:
        blocks.append(picture)
    if g.action is not None:
        blocks.append(_section(f"*What to try*\n{escape(g.action)}"))
    cc = cc_line(notification.mentions)
    if cc:
        blocks.append(_section(cc))
    return {**_text(f"{emoji} {escape(g.headline)}", cc), "blocks": blocks}


def image_block(picture: Picture) -> dict[str, Any]:
    """The chart as an image block: after the text blocks, which stay complete without it."""
    return {"type": "image", "image_url": picture.url, "alt_text": ev.truncate(picture.alt, MAX_ALT_CHARS)}


def with_picture(payload: dict[str, Any], picture: Picture | None) -> dict[str, Any]:
    """`payload` with the chart's image block appended (unchanged without a picture, or when the
    link is longer than an image block takes)."""
    if picture is None or len(picture.url) > MAX_IMAGE_URL_CHARS:
        return payload
    return {**payload, "blocks": [*payload["blocks"], image_block(picture)]}


class SlackWebhook(Webhook):
    """A Slack incoming webhook. `requests` sets Content-Type: application/json."""

    kind = "slack"

    def render(self, notification: Notification) -> dict[str, Any]:
        return with_picture(render(notification), self.picture(notification))
