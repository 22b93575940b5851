"""Notifiers: a notification (one flush of one alert group) rendered for Slack or Jandi and
delivered to a webhook, or posted as alerts to an Alertmanager (`alertmanager`).

`slack.render` / `jandi.render` build the payloads (a group of one as that finding alone, a
larger group as one listing message; both share `evidence` for the picture and the wording);
`SlackWebhook` / `JandiWebhook` deliver them through a session from `make_session`, paced per
pace key, and raise `RetryableDeliveryError` or `PermanentDeliveryError` when they cannot.
"""

from gpulse.notify.alertmanager import AlertmanagerWebhook
from gpulse.notify.base import Channel, Webhook
from gpulse.notify.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from gpulse.notify.http import Pacer, PacerLike, make_session
from gpulse.notify.jandi import JandiWebhook
from gpulse.notify.slack import SlackWebhook

__all__ = [
    "AlertmanagerWebhook",
    "Channel",
    "DeliveryError",
    "JandiWebhook",
    "Pacer",
    "PacerLike",
    "PermanentDeliveryError",
    "RetryableDeliveryError",
    "SlackWebhook",
    "Webhook",
    "make_session",
]
