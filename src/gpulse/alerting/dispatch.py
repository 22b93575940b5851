"""The alert side's pipeline: route → group → (wait) → silence → claim → deliver → record.

`accept` puts a finding into the group of each route it goes to and flushes the groups that are
due; `flush` and `tick` flush a group (or every group) whose time has come. All state lives in
the state table and every write is conditional on a version, so two alert invocations working
on the same findings at once announce each transition once: one claims the flush (the outbox,
leased), the other sees the claim and leaves it; a crash mid-delivery leaves the outbox for
whoever comes after the lease, and the sent log stops it repeating a channel that took it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import boto3

from gpulse.alerting import groups as g
from gpulse.alerting.deliver import DeadLetters, SentLog
from gpulse.alerting.labels import LabelMap, of_finding
from gpulse.alerting.routes import ChannelRef, Route, select
from gpulse.alerting.silences import Silence, silenced_by
from gpulse.aws import ConditionFailed, query_all, translated
from gpulse.errors import ConfigurationError, StoreError
from gpulse.finding import Finding
from gpulse.notification import Notification
from gpulse.notify.base import Channel
from gpulse.notify.errors import PermanentDeliveryError, RetryableDeliveryError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)
GROUP_PK = "group"
LEASE_S = 90.0  # longer than one alert invocation (60 s timeout): a live claim is never taken over
GROUP_TTL_S = 30 * 86400
MAX_DELAY_S = 900  # SQS DelaySeconds' limit; the minute tick covers anything later
CONFLICT_RETRIES = 8
RETRY_MIN_S = 5.0  # a failed delivery is tried again after at least this long
RETRY_MAX_S = 60.0  # and at most this long (a longer Retry-After is capped: the tick covers it)


class DispatchConfig(Protocol):
    """What the dispatcher reads of the live config (gpulse.config.live.LiveConfig)."""

    def routes(self) -> list[Route]: ...
    def silences(self) -> list[Silence]: ...
    def rule_route(self, rule: str) -> str | None: ...


# Builds a route's channel; raises ConfigurationError when it cannot (its webhook secret is missing).
ChannelFactory = Callable[[Route, ChannelRef], Channel]


class GroupStore:
    """Groups in the state table: `pk = "group"`, `sk = group key`, the body zlib-compressed JSON."""

    def __init__(self, table_name: str, *, client: DynamoDBClient | None = None) -> None:
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")

    def load(self, key: str) -> g.Group | None:
        with translated():
            resp = self.client.get_item(
                TableName=self.table, Key={"pk": {"S": GROUP_PK}, "sk": {"S": key}}, ConsistentRead=True
            )
        return _decode(resp["Item"]) if "Item" in resp else None

    def list_keys(self) -> list[str]:
        items = query_all(
            self.client,
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": GROUP_PK}},
            ProjectionExpression="sk",
        )
        return [i["sk"]["S"] for i in items]

    def save(self, group: g.Group, expected_version: int, now: float) -> g.Group:
        """Write `group` if the stored version is still `expected_version` (0: not stored);
        an empty group with nothing in flight is deleted instead. Raises ConditionFailed."""
        key = {"pk": {"S": GROUP_PK}, "sk": {"S": group.key}}
        cond = "attribute_not_exists(pk)" if expected_version == 0 else "version = :v"
        values = {} if expected_version == 0 else {":v": {"N": str(expected_version)}}
        new = replace(group, version=expected_version + 1)
        with translated():
            if not group.members and group.outbox is None:
                if expected_version:
                    self.client.delete_item(
                        TableName=self.table,
                        Key=key,
                        ConditionExpression=cond,
                        ExpressionAttributeValues=values,
                    )
                return new
            item: dict[str, Any] = key | {
                "body": {"B": zlib.compress(_encode(new).encode(), 6)},
                "version": {"N": str(new.version)},
                "expires_at": {"N": str(int(now) + GROUP_TTL_S)},
            }
            extra: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression=cond, **extra)
        return new


def _encode(group: g.Group) -> str:
    return json.dumps(
        {
            "key": group.key,
            "route": group.route,
            "labels": group.labels,
            "created_at": group.created_at,
            "members": {
                fp: {"finding": asdict(m.finding), "announced": m.announced, "received_at": m.received_at}
                for fp, m in group.members.items()
            },
            "last_flush_at": group.last_flush_at,
            "seq": group.seq,
            "epoch": group.epoch,
            "version": group.version,
            "outbox": json.loads(group.outbox.to_json()) if group.outbox else None,
            "lease_until": group.lease_until,
        },
        separators=(",", ":"),
    )


def _decode(item: dict[str, Any]) -> g.Group:
    doc = json.loads(zlib.decompress(item["body"]["B"]))
    return g.Group(
        key=doc["key"],
        route=doc["route"],
        labels=doc["labels"],
        created_at=doc["created_at"],
        members={
            fp: g.Member(
                Finding.from_json(json.dumps(m["finding"])), m["announced"], m.get("received_at", 0.0)
            )
            for fp, m in doc["members"].items()
        },
        last_flush_at=doc["last_flush_at"],
        seq=doc["seq"],
        # groups written before epochs existed: their creation time is unique enough to them
        epoch=doc.get("epoch") or repr(doc["created_at"]),
        version=int(item["version"]["N"]),
        outbox=Notification.from_json(json.dumps(doc["outbox"])) if doc["outbox"] else None,
        lease_until=doc["lease_until"],
    )


class WakeQueue:
    """Wake-up calls to the alert function itself, through its own queue with a delay: a group
    that must wait (group_wait, group_interval) is flushed when its time comes, not a minute late."""

    def __init__(self, queue_url: str, *, client: SQSClient | None = None) -> None:
        self.url = queue_url
        self.client: SQSClient = client or boto3.client("sqs")

    def wake(self, key: str, in_s: float) -> None:
        delay = max(0, min(MAX_DELAY_S, math.ceil(in_s)))
        with translated("SQS"):
            self.client.send_message(
                QueueUrl=self.url, MessageBody=json.dumps({"wake": key}), DelaySeconds=delay
            )


@dataclass
class Flushed:
    """What one flush did."""

    key: str
    notification: str | None = None  # its id, when one was sent (or resumed)
    delivered: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    skipped: str | None = None  # why nothing was sent: "not due", "claimed elsewhere", "silenced", ...


class Dispatcher:
    def __init__(
        self,
        config: DispatchConfig,
        groups: GroupStore,
        sent: SentLog,
        dead: DeadLetters,
        channels: ChannelFactory,
        *,
        wake: WakeQueue | None = None,
        clock: Callable[[], float] = time.time,
        lease_s: float = LEASE_S,
    ) -> None:
        self.config, self.groups, self.sent, self.dead = config, groups, sent, dead
        self.channels, self.wake_queue, self.clock, self.lease_s = channels, wake, clock, lease_s

    # -- the stages --------------------------------------------------------------------------------

    def _silenced(self, now: float) -> Callable[[Finding], bool]:
        silences = self.config.silences()
        return lambda f: silenced_by(of_finding(f), silences, now) is not None

    def _route(self, name: str) -> Route | None:
        return next((r for r in self.config.routes() if r.name == name), None)

    def accept(self, finding: Finding) -> list[Flushed]:
        """Put `finding` in its groups; flush those that are due now, wake the others later.
        A transition older than one any route's group holds for the alert is ignored. A resolve
        also goes to every other route whose group still holds the alert live: the routing may
        have changed since it fired, and the channels told it fired must hear it ended."""
        labels: LabelMap = of_finding(finding)
        all_routes = self.config.routes()
        routes = select(labels, all_routes, self.config.rule_route(finding.rule))
        if not routes:
            # nowhere to say it: fail the message, so SQS retries it and then parks it in the DLQ
            raise ConfigurationError(
                f"no route takes this {finding.rule} alert and there is no default route "
                "(no `default` route in the config table, and no webhook set in SSM)"
            )
        held = {r.name: m for r in all_routes if (m := self._member(r, labels, finding.fingerprint))}
        newest = max((g.order(m.finding) for m in held.values()), default=None)
        if newest is not None and newest > g.order(finding):
            # an old transition come again (an SQS redelivery) after a newer one, maybe under other
            # routing: the newer one stands, wherever it went
            logger.info("transition older than one received already: ignored", extra={"at": finding.at})
            return [Flushed(finding.fingerprint, skipped="stale: a newer transition was received")]
        if finding.state == "resolved":
            chosen = {r.name for r in routes}
            routes = routes + [
                r for r in all_routes if r.name not in chosen and r.name in held and not held[r.name].done
            ]
        out = []
        for route in routes:
            group_labels = route.group_key(labels)
            key = g.group_key(route.name, group_labels)
            group = self._update(key, _adding(finding, route, group_labels, self.clock()))
            out.append(self._flush_or_wake(group, route))
        return out

    def _member(self, route: Route, labels: LabelMap, fp: str) -> g.Member | None:
        """The alert `fp` in the route's group for these labels (live or a tombstone), if there."""
        group = self.groups.load(g.group_key(route.name, route.group_key(labels)))
        return group.members.get(fp) if group is not None else None

    def flush(self, key: str) -> Flushed:
        group = self.groups.load(key)
        if group is None:
            return Flushed(key, skipped="gone")
        route = self._route(group.route)
        if route is None:
            logger.error(
                "group's route no longer exists; its alerts are dropped", extra={"route": group.route}
            )
            self._try_save(replace(group, members={}, outbox=None), group.version, self.clock())
            return Flushed(key, skipped="route deleted")
        return self._flush_or_wake(group, route)

    def tick(self) -> list[Flushed]:
        """Flush every group that is due (repeat intervals, silences that ended, lost wake-ups).
        A group the store fails on (throttled, no send slot) is left to the next tick; the
        others still go."""
        out = []
        for key in self.groups.list_keys():
            try:
                out.append(self.flush(key))
            except StoreError as e:
                logger.warning("group not flushed this tick", extra={"group": key, "reason": str(e)})
                out.append(Flushed(key, skipped=f"store error: {e}"))
        return out

    # -- internals ---------------------------------------------------------------------------------

    def _update(self, key: str, change: Callable[[g.Group | None], g.Group | None]) -> g.Group:
        for _ in range(CONFLICT_RETRIES):
            current = self.groups.load(key)
            changed = change(current)
            if changed is None:
                raise StoreError(f"group {key} vanished")
            if current is not None and changed == current:
                return current
            try:
                return self.groups.save(changed, current.version if current else 0, self.clock())
            except ConditionFailed:
                continue
        raise StoreError(f"group {key} kept changing under {CONFLICT_RETRIES} attempts")

    def _flush_or_wake(self, group: g.Group, route: Route) -> Flushed:
        now = self.clock()
        if group.outbox is not None:
            if group.lease_until > now:
                return Flushed(group.key, skipped="claimed elsewhere")
            return self._deliver(self._take_over(group, now), route)
        silenced = self._silenced(now)
        due = g.due_at(group, route, silenced)
        if due is None:
            pruned = g.prune(group, route, now)
            if pruned is not group:
                self._try_save(pruned, group.version, now)
            return Flushed(group.key, skipped="nothing to say")
        if due > now:
            if self.wake_queue is not None and due - now <= MAX_DELAY_S:
                self.wake_queue.wake(group.key, due - now)
            return Flushed(group.key, skipped="not due")
        n = g.plan(group, route, silenced, now, self._mentions(group, route))
        if n is None:
            return Flushed(group.key, skipped="silenced")
        try:
            claimed = self.groups.save(g.claim(group, n, now, self.lease_s), group.version, now)
        except ConditionFailed:
            return Flushed(group.key, skipped="claimed elsewhere")
        return self._deliver(claimed, route)

    def _take_over(self, group: g.Group, now: float) -> g.Group:
        """A flush whose claimant's lease ran out (it crashed, or delivery failed): resume it."""
        return self.groups.save(replace(group, lease_until=now + self.lease_s), group.version, now)

    def _try_save(self, group: g.Group, version: int, now: float) -> None:
        with contextlib.suppress(ConditionFailed):  # someone else moved it on; their write stands
            self.groups.save(group, version, now)

    def _mentions(self, group: g.Group, route: Route) -> list[str]:
        out: list[str] = []
        for m in group.members.values():
            if m.done:
                continue
            for h in route.mentions(of_finding(m.finding)):
                if h not in out:
                    out.append(h)
        return out

    def _deliver(self, group: g.Group, route: Route) -> Flushed:
        n = group.outbox
        assert n is not None
        done = Flushed(group.key, notification=n.id)
        retry: float | None = None  # seconds until a failed channel is worth another try
        for ref in route.channels:
            name = channel_name(route, ref)
            if self.sent.sent(n.id, name):
                continue
            try:
                channel = self.channels(route, ref)
                channel.send(n)
            except PermanentDeliveryError as e:
                logger.error(
                    "webhook refused the message, dead-lettered",
                    extra={"channel": channel.name, "status": e.status, "reason": e.reason},
                )
                self.dead.put(n.to_json(), f"{channel.kind} answered {e.status}: {e.reason}", channel.name)
                self.sent.record(n.id, channel.name, f"dead-lettered {e.status}")
                done.dead_lettered.append(channel.name)
                continue
            except RetryableDeliveryError as e:
                # the other channels still get their message now; this one is tried again later
                wait = max(e.retry_after or 0.0, RETRY_MIN_S)
                retry = max(retry or 0.0, min(wait, RETRY_MAX_S))
                continue
            except ConfigurationError as e:
                logger.error("channel unusable, will retry", extra={"channel": name, "reason": str(e)})
                retry = max(retry or 0.0, RETRY_MAX_S)
                continue
            self.sent.record(n.id, channel.name, "delivered")
            done.delivered.append(channel.name)
        if retry is not None:
            # The outbox stays; its lease now ends when the retry is due, and a wake-up (or the
            # tick) resumes it then, skipping the channels that took it.
            self._release(group, n, retry)
            done.skipped = f"retrying in {retry:g} s"
            return done
        after = self._complete(group.key, n, route)
        if after is not None:
            due = g.due_at(after, route, self._silenced(self.clock()))
            if due is not None and self.wake_queue is not None and due - self.clock() <= MAX_DELAY_S:
                self.wake_queue.wake(after.key, due - self.clock())  # news arrived while delivering
        return done

    def _release(self, group: g.Group, n: Notification, in_s: float) -> None:
        now = self.clock()
        current = self.groups.load(group.key)
        if current is None or current.outbox is None or current.outbox.id != n.id:
            return
        self._try_save(replace(current, lease_until=now + in_s), current.version, now)
        if self.wake_queue is not None:
            self.wake_queue.wake(group.key, in_s)

    def _complete(self, key: str, n: Notification, route: Route) -> g.Group | None:
        for _ in range(CONFLICT_RETRIES):
            current = self.groups.load(key)
            if current is None or current.outbox is None or current.outbox.id != n.id:
                return current  # completed by whoever took over
            try:
                done = g.complete(current, n, route, self.clock())
                return self.groups.save(done, current.version, self.clock())
            except ConditionFailed:
                continue
        raise StoreError(f"group {key} kept changing under {CONFLICT_RETRIES} attempts")


def _adding(
    finding: Finding, route: Route, labels: dict[str, str], now: float
) -> Callable[[g.Group | None], g.Group]:
    return lambda current: g.add(current, finding, route, labels, now)


def channel_name(route: Route, ref: ChannelRef) -> str:
    """A channel's name in logs and the sent log: the route and the secret's last segment."""
    return f"{route.name}/{ref.kind}:{ref.secret.rsplit('/', 1)[-1]}"
