"""Notifiers: a finding rendered for Slack or Jandi and delivered to a webhook.

`slack.render` / `jandi.render` build the payloads (sharing `evidence` for the picture and the
wording); `SlackWebhook` / `JandiWebhook` deliver them through a session from `make_session`
and raise `RetryableDeliveryError` or `PermanentDeliveryError` when they cannot.
"""

from gpulse.notify.base import Channel, Webhook
from gpulse.notify.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from gpulse.notify.http import Pacer, make_session
from gpulse.notify.jandi import JandiWebhook
from gpulse.notify.slack import SlackWebhook

__all__ = [
    "Channel",
    "DeliveryError",
    "JandiWebhook",
    "Pacer",
    "PermanentDeliveryError",
    "RetryableDeliveryError",
    "SlackWebhook",
    "Webhook",
    "make_session",
]
