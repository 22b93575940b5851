"""The channel registry: which webhook class serves which kind, and how a route's channel is
built from the SSM parameter that holds its URL (the URL is read here, never logged).
An Alertmanager channel also gets its route's repeat_interval (how soon its firing alerts are
posted again) and the clock.

The alert function builds one `ChannelRegistry`; the dispatcher calls `make_channel` for each
route's channel, and the live config calls `fallback_channels` when the table has no default
route (the template's Slack and Jandi webhooks that are set).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import requests

from gpulse.alerting.dispatch import channel_name
from gpulse.alerting.routes import ChannelRef, Route
from gpulse.errors import ConfigurationError
from gpulse.notify.alertmanager import AlertmanagerWebhook
from gpulse.notify.base import Webhook
from gpulse.notify.chart import Pictures
from gpulse.notify.http import PacerLike
from gpulse.notify.jandi import JandiWebhook
from gpulse.notify.slack import SlackWebhook

KINDS: dict[str, type[Webhook]] = {
    "slack": SlackWebhook,
    "jandi": JandiWebhook,
    "alertmanager": AlertmanagerWebhook,
}


class Parameters(Protocol):
    """A source of secret values by name (gpulse.secrets.SsmParameters): None when unset."""

    def get(self, name: str) -> str | None: ...


class ChannelRegistry:
    def __init__(
        self,
        parameters: Parameters,
        session: requests.Session,
        *,
        pacer: PacerLike | None,
        fallback: tuple[ChannelRef, ...] = (),
        clock: Callable[[], float] = time.time,
        pictures: Pictures | None = None,
    ) -> None:
        unknown = sorted({ref.kind for ref in fallback} - set(KINDS))
        if unknown:
            raise ConfigurationError(f"no channel kind {unknown}; known: {sorted(KINDS)}")
        self.parameters, self.session, self.pacer, self.fallback = parameters, session, pacer, fallback
        self.clock = clock
        self.pictures = pictures  # the charts every channel's messages carry (None: text only)

    def fallback_channels(self) -> tuple[ChannelRef, ...]:
        """The fallback webhooks whose parameter is set (read through the cache)."""
        return tuple(ref for ref in self.fallback if self.parameters.get(ref.secret))

    def make_channel(self, route: Route, ref: ChannelRef) -> Webhook:
        """The channel for `ref` of `route`; ConfigurationError when its kind is unknown or its
        parameter is not set (the dispatcher retries later, the message names the parameter)."""
        kind = KINDS.get(ref.kind)
        if kind is None:
            raise ConfigurationError(
                f"route {route.name}: no channel kind {ref.kind!r}; known: {sorted(KINDS)}"
            )
        url = self.parameters.get(ref.secret)
        if not url:
            raise ConfigurationError(f"route {route.name}: webhook parameter {ref.secret} is not set in SSM")
        name = channel_name(route, ref)
        if kind is AlertmanagerWebhook:
            return AlertmanagerWebhook(
                name,
                url,
                self.session,
                pace_key=ref.secret,
                resend_s=route.repeat_interval_s,
                clock=self.clock,
                pictures=self.pictures,
            )
        return kind(name, url, self.session, pacer=self.pacer, pace_key=ref.secret, pictures=self.pictures)
