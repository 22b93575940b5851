"""Delivery errors: one root, and two classes that say whether a later retry can help.

The failure is data (status, cause, Retry-After), decided from the status code or the
exception class, never from message text. Messages name the channel, never its URL: a
webhook URL is the secret that lets anyone post to the channel.
"""

from __future__ import annotations

from typing import Literal

from gpulse.errors import GpulseError

RetryableCause = Literal["server_error", "rate_limited", "connection", "timeout"]
PermanentCause = Literal["rejected", "bad_url"]


class DeliveryError(GpulseError):
    """A message did not reach a chat channel."""

    def __init__(self, message: str, *, kind: str, channel: str, status: int | None) -> None:
        super().__init__(message)
        self.kind = kind  # "slack" / "jandi"
        self.channel = channel  # the route's channel name, safe to log
        self.status = status  # HTTP status of the last answer; None when there was none


class RetryableDeliveryError(DeliveryError):
    """Worth another try later: 5xx after the in-process retries ran out, 429 beyond the retry
    budget, a refused connection or a timeout. `retry_after` is the server's last Retry-After
    in seconds (uncapped), when it sent one: the earliest moment a retry makes sense."""

    retryable = True

    def __init__(
        self,
        *,
        kind: str,
        channel: str,
        cause: RetryableCause,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        detail = f" (HTTP {status})" if status is not None else ""
        wait = f", retry after {retry_after:g}s" if retry_after is not None else ""
        super().__init__(
            f"{kind} channel {channel!r}: {cause.replace('_', ' ')}{detail}{wait}",
            kind=kind,
            channel=channel,
            status=status,
        )
        self.cause: RetryableCause = cause
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help: the service refused the message (4xx other than 429, e.g. Slack's
    400 invalid_payload, 404 channel_not_found, 410 channel_is_archived) or the URL is not
    usable. `reason` is the service's answer (body text, shortened, URL removed)."""

    retryable = False

    def __init__(
        self,
        *,
        kind: str,
        channel: str,
        cause: PermanentCause,
        status: int | None = None,
        reason: str = "",
    ) -> None:
        detail = f" (HTTP {status})" if status is not None else ""
        super().__init__(
            f"{kind} channel {channel!r}: {cause.replace('_', ' ')}{detail}"
            + (f": {reason}" if reason else ""),
            kind=kind,
            channel=channel,
            status=status,
        )
        self.cause: PermanentCause = cause
        self.reason = reason
