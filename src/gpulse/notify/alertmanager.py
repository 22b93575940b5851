"""Alertmanager: a notification as postable alerts for Alertmanager's API v2 (`POST /api/v2/alerts`).

Teams that already run Alertmanager route gpulse's findings through it (PagerDuty, email,
OpsGenie…). Each finding of the notification becomes one postable alert: its labels identify it
(Alertmanager deduplicates and groups on them), its annotations carry the text.

Keeping an alert alive. Alertmanager resolves an alert by itself at its `endsAt` (or after its
`resolve_timeout`, 5 min by default, when none is given), unless it is posted again; Prometheus
posts every firing alert each minute with `endsAt` a few resend periods ahead. gpulse tells a
route's channels every firing alert of a group again on each repeat flush (every
`repeat_interval`, groups.due_at), and on every flush that has news. So a firing alert is posted
with `endsAt` = now + the route's repeat_interval + RESEND_MARGIN_S: it never lapses while gpulse
holds it firing, and lapses at most that long after gpulse stops posting it (gpulse down, the
alert silenced or muted in gpulse, a route with send_resolved off). A resolved alert is posted
with `endsAt` = the time it resolved, which resolves it at once.

The URL (the SSM secret) is Alertmanager's base URL, possibly with basic-auth credentials in it;
`/api/v2/alerts` is appended. Alertmanager has no per-sender rate limit and takes a whole array
in one request, so sends are not paced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from gpulse.finding import Finding
from gpulse.notification import Notification
from gpulse.notify.base import Webhook
from gpulse.notify.chart import Pictures
from gpulse.notify.http import PacerLike

API_PATH = "/api/v2/alerts"
SOURCE = "gpulse"  # the `source` label: lets an Alertmanager route or inhibit gpulse's alerts as a whole
# Beyond one repeat_interval: a repeat flush waits for the minute tick, a delivery retry (up to a
# minute each), a cold start. Prometheus leaves a few resend periods; ours are hours long.
RESEND_MARGIN_S = 900.0
PICTURE_ANNOTATION = "picture_url"  # the finding's chart (gpulse.notify.chart): an expiring link

# Where a finding's picture can be fetched (an expiring link), or None: by default the channel's
# `pictures` (the alert function's charts); none for a resolved alert.
PictureLink = Callable[[Finding], str | None]


def alerts_url(base: str) -> str:
    """The API v2 alerts endpoint under Alertmanager's base URL (which may carry a path prefix,
    e.g. behind a proxy, and basic-auth credentials: both kept). Accepts the endpoint itself."""
    parts = urlsplit(base.strip())
    path = parts.path.rstrip("/")
    if not path.endswith(API_PATH):
        path += API_PATH
    return urlunsplit(parts._replace(path=path))


def rfc3339(unix_s: float) -> str:
    """`2026-01-01T00:00:00.000Z`: RFC 3339 in UTC, as Alertmanager writes it."""
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _only(values: list[str]) -> str | None:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def labels(finding: Finding) -> dict[str, str]:
    """The alert's identity: the rule as `alertname`, severity, cluster, node group, the node,
    GPU and MIG slice when the finding names exactly one, its fingerprint and `source`.

    Only fields a firing alert keeps for its whole life (alerting.state keeps the announced
    finding), so its resolve carries the same labels and closes the same Alertmanager alert.
    Empty values are left out (Alertmanager drops them too). Never a URL or a secret."""
    candidates = {
        "alertname": finding.rule,
        "severity": finding.severity,
        "cluster": finding.cluster,
        "node_group": finding.node_group,
        "node": _only(finding.nodes),
        "gpu": _only(finding.gpus),
        "mig": finding.mig,
        "fingerprint": finding.fingerprint,
        "source": SOURCE,
    }
    return {k: v for k, v in candidates.items() if v}


def generator_url(finding: Finding) -> str:
    """A stable back-link to the alert in gpulse: `gpulse://<cluster>/<rule>/<fingerprint>`.
    gpulse has no web UI to link to; Alertmanager only requires a URI, and this one names the
    alert without exposing anything secret."""
    return f"gpulse://{quote(finding.cluster, safe='')}/{quote(finding.rule, safe='')}/{finding.fingerprint}"


def annotations_for(finding: Finding, picture: PictureLink | None = None) -> dict[str, str]:
    """`summary` (what is wrong, with the numbers), `description` (what to try), the nodes that
    joined the alert after it was first announced (`joined`: annotations, not labels, so that the
    alert keeps its identity while it grows), and the picture's link when there is one."""
    out = {"summary": finding.summary, "description": finding.action}
    if finding.joined:
        out["joined"] = ", ".join(finding.joined)
    url = picture(finding) if picture is not None else None
    if url:
        out[PICTURE_ANNOTATION] = url
    return out


def postable(
    finding: Finding, *, now: float, lifetime_s: float, picture: PictureLink | None = None
) -> dict[str, Any]:
    """One postable alert. Firing: `endsAt` = now + lifetime_s (kept alive by the next post);
    resolved: `endsAt` = when it resolved."""
    ends = finding.at if finding.state == "resolved" else now + lifetime_s
    return {
        "labels": labels(finding),
        "annotations": annotations_for(finding, picture),
        "startsAt": rfc3339(finding.since),
        "endsAt": rfc3339(max(ends, finding.since)),  # Alertmanager refuses an end before the start
        "generatorURL": generator_url(finding),
    }


def render(
    notification: Notification, *, now: float, lifetime_s: float, picture: PictureLink | None = None
) -> list[dict[str, Any]]:
    """The request body: one postable alert per finding, firing first then resolved."""
    return [postable(f, now=now, lifetime_s=lifetime_s, picture=picture) for f in notification.findings]


class AlertmanagerWebhook(Webhook):
    """An Alertmanager's API v2. `resend_s` is the longest gpulse may go without posting a
    firing alert again (the route's repeat_interval); `clock` gives unix seconds."""

    kind = "alertmanager"

    def __init__(
        self,
        name: str,
        url: str,
        session: requests.Session,
        *,
        pacer: PacerLike | None = None,
        pace_key: str | None = None,
        resend_s: float,
        clock: Callable[[], float] = time.time,
        picture: PictureLink | None = None,
        pictures: Pictures | None = None,
    ) -> None:
        del pacer  # accepted like every channel's, never used: Alertmanager has no rate to keep
        super().__init__(name, alerts_url(url), session, pacer=None, pace_key=pace_key, pictures=pictures)
        self.lifetime_s = resend_s + RESEND_MARGIN_S
        self._clock = clock
        self._picture = picture

    def render(self, notification: Notification) -> list[dict[str, Any]]:
        picture = self._picture
        if picture is None and self.pictures is not None:
            picture = self.pictures.link(notification.id)  # each alert's own chart
        return render(notification, now=self._clock(), lifetime_s=self.lifetime_s, picture=picture)
