"""Jandi: a notification as an incoming-webhook message (body, colour bar, connectInfo sections).

Jandi wants `Accept: application/vnd.tosslab.jandi-v2+json` and `Content-Type:
application/json`; `body` is the only required field. A group of one alert renders as that
finding alone (`render_finding`); a larger group as one message with one connectInfo entry per
listed alert (at most MAX_LISTED) and one entry summing up the rest. Each description is kept
under 2000 characters, cut at a word; the evidence is summarised to fit, never cut mid-row.
Mentions are plain text ("cc @alice"): Jandi's webhook has no mention markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpulse.finding import Finding
from gpulse.notification import Notification
from gpulse.notify import evidence as ev
from gpulse.notify.base import Webhook
from gpulse.notify.chart import Picture

MAX_DESCRIPTION_CHARS = 1999  # "under 2000"
MAX_SUMMARY_CHARS = 1500  # of one listed alert's summary: room left for who and how long
MAX_LISTED = 10  # alerts a group message lists, one connectInfo entry each; the rest are summed up
HEADERS = {"Accept": "application/vnd.tosslab.jandi-v2+json", "Content-Type": "application/json"}
COLOR = {"critical": "#E01E5A", "warning": "#ECB22E", "info": "#36C5F0"}
RESOLVED_COLOR = "#2EB67D"
CHART_TITLE = "Chart"
EMOJI = ev.SEVERITY_EMOJI
RESOLVED_EMOJI = ev.RESOLVED_EMOJI


def _info(title: str, description: str) -> dict[str, str]:
    return {"title": title, "description": ev.truncate(description, MAX_DESCRIPTION_CHARS)}


def cc_line(mentions: Sequence[str]) -> str:
    """`cc @alice @ml-team`, or "" when there is no one to name."""
    handles = [h.strip() for h in mentions if h.strip()]
    return "cc " + " ".join(handles) if handles else ""


def _body(*lines: str) -> str:
    return "\n".join(line for line in lines if line)


def render(notification: Notification) -> dict[str, Any]:
    """The webhook payload for a notification: `body`, `connectColor` and `connectInfo`.

    A group of one is exactly `render_finding` of its finding; a larger group lists at most
    MAX_LISTED alerts, then one entry summing up the rest."""
    one = notification.single
    if one is not None:
        return render_finding(one, notification.mentions, repeat=notification.repeat)
    return render_group(notification)


def render_finding(finding: Finding, mentions: Sequence[str] = (), *, repeat: bool = False) -> dict[str, Any]:
    """One finding alone: the headline as body (plus a "cc" line when there are mentions), the
    severity colour, and Where/Who/Since/Severity/evidence/Action/Details entries."""
    facts = ev.facts(finding, repeat=repeat)
    resolved = finding.state == "resolved"
    info = [
        _info("Where", facts.where),
        _info("Who", facts.who),
        _info("Since", facts.since),
        _info("Severity", facts.severity),
    ]
    if facts.now is not None:  # a resolve: its figures now, beside what it was
        info.append(_info("Now", facts.now))
    listed = ev.symptoms_text(finding)
    if listed is not None:  # an incident: what this cause explains, in the same message
        info.append(_info("Symptoms", listed))
    if finding.evidence is not None:
        info.append(
            {
                "title": finding.evidence.title + ev.picture_note(finding),
                "description": ev.table(finding.evidence, max_chars=MAX_DESCRIPTION_CHARS),
            }
        )
    info.append(_info("Action", "No action needed: resolved." if resolved else finding.action))
    info.append(_info("Details", facts.context))
    return {
        "body": _body(facts.headline, cc_line(mentions)),
        "connectColor": RESOLVED_COLOR if resolved else COLOR[finding.severity],
        "connectInfo": info,
    }


def _listed(finding: Finding, new: set[str], joined: set[str], titled: bool) -> dict[str, str]:
    """One listed alert: title `🟠 node-05 GPU 7 · NEW` (where; `· + node-06 JOINED` when nodes
    joined an alert told before), description the summary over who and how long."""
    where = ev.short_where(finding)
    if finding.state == "resolved":
        title = f"{RESOLVED_EMOJI} {where} · resolved"
    elif finding.fingerprint in joined:
        title = f"{EMOJI[finding.severity]} {where} · {ev.joined_mark(finding)}"
    else:
        title = f"{EMOJI[finding.severity]} {where}" + (" · NEW" if finding.fingerprint in new else "")
    what = ev.truncate(
        f"{finding.title}: {finding.summary}" if titled else finding.summary, MAX_SUMMARY_CHARS
    )
    return _info(title, f"{what}\n{ev.short_details(finding, where=False)}")


def render_group(notification: Notification) -> dict[str, Any]:
    """A group of several alerts as one message: the counts and labels as body (plus mentions),
    the worst firing severity's colour, one entry per listed alert, one summing up the rest."""
    g = ev.group_facts(notification, MAX_LISTED)
    new, joined = set(notification.new), set(notification.joined)
    titled = len(g.titles) > 1
    info = [_listed(f, new, joined, titled) for f in g.listed]
    if g.left_out:
        info.append(_info(f"…and {len(g.left_out)} more", ", ".join(ev.left_out_parts(g.left_out))))
    if g.action is not None:
        info.append(_info("Action", g.action))
    return {
        "body": _body(g.headline, g.labels, cc_line(notification.mentions)),
        "connectColor": RESOLVED_COLOR if g.severity is None else COLOR[g.severity],
        "connectInfo": info,
    }


def with_picture(payload: dict[str, Any], picture: Picture | None) -> dict[str, Any]:
    """`payload` with one more connectInfo entry showing the chart (`imageUrl`); unchanged
    without a picture. The entries before it stay complete without the image."""
    if picture is None:
        return payload
    chart = {"title": CHART_TITLE, "description": ev.truncate(picture.alt, MAX_DESCRIPTION_CHARS)}
    return {**payload, "connectInfo": [*payload["connectInfo"], {**chart, "imageUrl": picture.url}]}


class JandiWebhook(Webhook):
    """A Jandi incoming webhook."""

    kind = "jandi"
    headers = HEADERS

    def render(self, notification: Notification) -> dict[str, Any]:
        return with_picture(render(notification), self.picture(notification))
