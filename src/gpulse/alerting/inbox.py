"""What reaches the alert function, parsed at the edge and handed to the dispatcher.

Three event kinds: the minute tick (EventBridge), SQS records from the findings queue (a
Finding v1, the dispatcher's own `{"wake": group}` wake-up, or a notification a webhook refused
that an operator sent back with `gpulse dlq redrive`), and SNS notifications of
gpulse's own CloudWatch alarms (gpulse.health.alarms). A record nothing can read is parked in
the DLQ with the reason instead of being retried.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gpulse.alerting.dispatch import Dispatcher, Flushed, channel_name
from gpulse.errors import InvalidInput
from gpulse.finding import Finding
from gpulse.health import alarms
from gpulse.notification import Notification
from gpulse.notify.errors import PermanentDeliveryError

logger = logging.getLogger(__name__)
REDRIVEN = "#redriven"  # the sent log's key of a redriven notification: "<id>#redriven"


class Kind(enum.Enum):
    TICK = "tick"
    SQS = "sqs"
    SNS = "sns"


def kind_of(event: dict[str, Any]) -> Kind:
    """Which source sent `event`; InvalidInput for anything else."""
    if event.get("detail-type") == "Scheduled Event":
        return Kind.TICK
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        if records[0].get("EventSource") == "aws:sns":
            return Kind.SNS
        if records[0].get("eventSource") == "aws:sqs":
            return Kind.SQS
    raise InvalidInput("the alert function takes schedule ticks, SQS records and SNS notifications")


@dataclass(frozen=True)
class Wake:
    key: str  # the group to flush


@dataclass(frozen=True)
class Unreadable:
    reason: str


Message = Wake | Finding | Notification | Unreadable


def parse_record(body: str) -> Message:
    """An SQS record's body: a wake-up, a finding, a redriven notification, or what no code can
    read (with why)."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        doc = None
    except RecursionError:  # nested deeper than the parser goes: nothing below could read it either
        return Unreadable("unreadable finding: nested too deeply")
    if isinstance(doc, dict) and set(doc) == {"wake"}:
        return Wake(str(doc["wake"]))
    if isinstance(doc, dict) and {"id", "route", "firing", "resolved"} <= set(doc):
        try:
            return Notification.from_json(body)
        except InvalidInput as e:
            return Unreadable(f"unreadable notification: {e}")
    try:
        return Finding.from_json(body)
    except InvalidInput as e:
        return Unreadable(f"unreadable finding: {e}")


@dataclass
class Received:
    """What one event (or record) did, for the handler to report."""

    flushed: list[Flushed] = field(default_factory=list)
    dead_lettered: int = 0  # messages parked in the DLQ as unreadable
    ignored: list[str] = field(default_factory=list)  # why a notification announced nothing


class Inbox:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def tick(self) -> Received:
        return Received(self.dispatcher.tick())

    def record(self, body: str, message_id: str = "", channel: str | None = None) -> Received:
        """One SQS record (`channel`: its attribute, set on what the DLQ held). Raises what the
        dispatcher raises (the record is retried)."""
        message = parse_record(body)
        if isinstance(message, Wake):
            return Received([self.dispatcher.flush(message.key)])
        if isinstance(message, Notification):
            resent = self._resend(message, channel)
            if isinstance(resent, Received):
                return resent
            message = resent
        if isinstance(message, Unreadable):
            # retrying cannot help: park it with the reason
            logger.error("record dead-lettered", extra={"reason": message.reason, "message_id": message_id})
            self.dispatcher.dead.put(body, message.reason, None)
            return Received(dead_lettered=1)
        return Received(self.dispatcher.accept(message))

    def _resend(self, n: Notification, channel: str | None) -> Received | Unreadable:
        """A notification back from the DLQ goes to the one channel that refused it (the
        operator asked for it again: the sent log's "dead-lettered" does not stop it)."""
        route = next((r for r in self.dispatcher.config.routes() if r.name == n.route), None)
        ref = next((c for c in route.channels if channel_name(route, c) == channel), None) if route else None
        if route is None or ref is None:
            return Unreadable(f"redriven notification: route {n.route} has no channel {channel}")
        target = self.dispatcher.channels(route, ref)
        # SQS delivers the redriven copy at least once: a second copy after a delivery sends nothing
        redriven = f"{n.id}{REDRIVEN}"
        if self.dispatcher.sent.sent(redriven, target.name):
            return Received(flushed=[Flushed(n.id, skipped="redriven copy already delivered")])
        try:
            target.send(n)
        except PermanentDeliveryError as e:
            self.dispatcher.dead.put(
                n.to_json(), f"{target.kind} answered {e.status}: {e.reason}", target.name
            )
            return Received(flushed=[Flushed(n.id, dead_lettered=[target.name])])
        self.dispatcher.sent.record(redriven, target.name, "delivered")
        self.dispatcher.sent.record(n.id, target.name, "delivered")
        return Received(flushed=[Flushed(n.id, notification=n.id, delivered=[target.name])])

    def alarms(self, messages: Iterable[str]) -> Received:
        """SNS messages from CloudWatch: each alarm change becomes a gpulse_health finding.
        A message that is not an alarm's is logged and left (SNS would only redeliver it)."""
        out = Received()
        for text in messages:
            try:
                change = alarms.AlarmChange.from_message(text)
            except InvalidInput as e:
                logger.warning("SNS message ignored", extra={"reason": str(e)})
                out.ignored.append(str(e))
                continue
            finding = alarms.to_finding(change)
            if finding is None:
                out.ignored.append(f"alarm {change.name}: {change.old_state} → {change.state}")
                continue
            out.flushed.extend(self.dispatcher.accept(finding))
        return out
