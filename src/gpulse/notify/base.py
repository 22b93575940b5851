"""The channel interface, and the webhook base that Slack and Jandi share."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, Protocol

import requests

from gpulse.finding import Finding
from gpulse.notify.errors import DeliveryError
from gpulse.notify.http import SHARED_PACER, Pacer, post_json

logger = logging.getLogger(__name__)


class Channel(Protocol):
    """Where a finding is delivered. `send` returns on success and raises DeliveryError
    (RetryableDeliveryError or PermanentDeliveryError) otherwise."""

    kind: str  # "slack" / "jandi"
    name: str  # the route's channel name: safe to log, unlike the URL

    def send(self, finding: Finding) -> None: ...


class Webhook(ABC):
    """A channel reached by POSTing JSON to a secret URL. Subclasses say how a finding looks
    (`render`) and which headers the service wants; delivery and errors are common."""

    kind: str = ""
    headers: dict[str, str] | None = None

    def __init__(self, name: str, url: str, session: requests.Session, *, pacer: Pacer | None = SHARED_PACER):
        self.name = name
        self._url = url  # the secret: kept private, out of repr, logs and errors
        self._session = session
        self._pacer = pacer

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    def render(self, finding: Finding) -> dict[str, Any]:
        """The JSON payload this service should receive for `finding`."""

    def send(self, finding: Finding) -> None:
        """Render and POST `finding`; raise DeliveryError if it was not accepted."""
        log = {"channel_kind": self.kind, "channel": self.name, "fingerprint": finding.fingerprint}
        try:
            post_json(
                self._session,
                self._url,
                self.render(finding),
                kind=self.kind,
                channel=self.name,
                headers=self.headers,
                pacer=self._pacer,
            )
        except DeliveryError as e:
            logger.warning(
                "chat delivery failed",
                extra={**log, "status": e.status, "retryable": e.retryable, "error": type(e).__name__},
            )
            raise
        logger.info("chat message delivered", extra={**log, "state": finding.state})
