"""The dead-man's switch: after each completed analyze dispatch (every cluster's tasks enqueued
on the analyze queue; the workers are watched by their Errors, DLQ and queue-age alarms), one GET
to an outside watcher (healthchecks.io, Dead Man's Snitch, Cronitor, an Opsgenie heartbeat …),
which alerts when the pings stop — a gpulse that is down cannot say so itself (DESIGN.md, "Watching itself").

The ping says "analyze runs", not "every cluster is fine": a cluster that failed is its own
`analysis_failed` alert. A failed ping never fails the run; it is logged without the URL, which
often holds the watcher's token.
"""

from __future__ import annotations

import logging

import requests

logger = logging.getLogger(__name__)

# Tight: the run has done its work, and the next ping is a minute away. No retries for the same
# reason (the watcher's grace period covers one lost ping).
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 3.0
MAX_REDIRECTS = 3


class Heartbeat:
    """Pings `url` with a GET. `session` is injected in tests; one is made here otherwise."""

    def __init__(self, url: str, *, session: requests.Session | None = None) -> None:
        self._url = url
        self._session = session or requests.Session()
        self._session.max_redirects = MAX_REDIRECTS

    def __repr__(self) -> str:  # never the URL: it may end up in a log
        return "Heartbeat(<url>)"

    def ping(self) -> bool:
        """True when the watcher answered 2xx; False (logged, never raised) otherwise."""
        try:
            response = self._session.get(self._url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        except requests.RequestException as e:
            # the class only: requests' messages quote the URL
            logger.warning("heartbeat ping failed", extra={"cause": type(e).__name__})
            return False
        if not 200 <= response.status_code < 300:
            logger.warning("heartbeat ping refused", extra={"status": response.status_code})
            return False
        return True
