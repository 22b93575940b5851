"""The channel interface, and the webhook base that Slack and Jandi share."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol

import requests

from gpulse.notification import Notification
from gpulse.notify.errors import DeliveryError
from gpulse.notify.http import SHARED_PACER, PacerLike, post_json

if TYPE_CHECKING:
    from gpulse.notify.chart import Picture, Pictures

logger = logging.getLogger(__name__)


class Channel(Protocol):
    """Where a notification is delivered. `send` returns on success and raises DeliveryError
    (RetryableDeliveryError or PermanentDeliveryError) otherwise."""

    kind: str  # "slack" / "jandi" / "alertmanager"
    name: str  # the route's channel name: safe to log, unlike the URL

    def send(self, notification: Notification) -> None: ...


class Webhook(ABC):
    """A channel reached by POSTing JSON to a secret URL. Subclasses say how a notification
    looks (`render`) and which headers the service wants; delivery and errors are common.

    Sends are paced per `pace_key` (default: the channel name). Give channels that share one
    webhook URL the same pace key, so that together they keep to the service's rate.
    """

    kind: str = ""
    headers: dict[str, str] | None = None

    def __init__(
        self,
        name: str,
        url: str,
        session: requests.Session,
        *,
        pacer: PacerLike | None = SHARED_PACER,
        pace_key: str | None = None,
        pictures: Pictures | None = None,
    ) -> None:
        self.name = name
        self.pictures = pictures  # charts for the messages (None: text only)
        self._url = url  # the secret: kept private, out of repr, logs, errors and the pacer
        self._session = session
        self._pacer = pacer
        self.pace_key = pace_key or name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    def render(self, notification: Notification) -> dict[str, Any] | list[dict[str, Any]]:
        """The JSON payload this service should receive for `notification` (an object for chat
        webhooks, an array for Alertmanager)."""

    def picture(self, notification: Notification) -> Picture | None:
        """The chart this message carries, if any (drawn and stored once, shared by channels)."""
        return self.pictures.for_notification(notification) if self.pictures is not None else None

    def send(self, notification: Notification) -> None:
        """Render and POST `notification`; raise DeliveryError if it was not accepted."""
        log = {
            "channel_kind": self.kind,
            "channel": self.name,
            "notification": notification.id,
            "route": notification.route,
            "firing": len(notification.firing),
            "resolved": len(notification.resolved),
        }
        try:
            post_json(
                self._session,
                self._url,
                self.render(notification),
                kind=self.kind,
                channel=self.name,
                headers=self.headers,
                pacer=self._pacer,
                pace_key=self.pace_key,
            )
        except DeliveryError as e:
            logger.warning(
                "chat delivery failed",
                extra={**log, "status": e.status, "retryable": e.retryable, "error": type(e).__name__},
            )
            raise
        logger.info("chat message delivered", extra=log)
