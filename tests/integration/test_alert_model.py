"""The alert path against a reference model: every transition told once per matching channel.

A Hypothesis state machine drives analyze's settle (the state machine `decide` and the alert
records) and two dispatchers sharing one state table — the real stores, on moto's server, with
the real SQS findings queue between them — through random sequences of: conditions appearing,
ending and being muted (inhibition), rule `for` changes and re-routing, silences, webhook
failures (retryable, permanent), a crash between a webhook's 200 and its record (or before the
send), SQS redelivery of an old message, and the clock moving. The channels are recording fakes
of a webhook (what is under test is the dispatch, not HTTP; the HTTP path has its own tests).

What the model demands:
- analyze: an unmuted condition held for its rule's `for` fires; one that ended resolves once it
  has been gone for its rule's hold-down (`keep_firing_for_s`, counted from the last run it held,
  muted or not), and one that comes back before that is the same alert (no resolve, no re-fire);
  a muted one changes nothing; a firing alert that turns critical is published again, once; a
  node that joins a firing alert is published (as joined) once in the alert's life, at most once
  per JOIN_EVERY_S since the alert was last published, and only while it is still in the
  condition; a node that leaves is not news;
- per channel, a notification id is delivered once (once more for each time the process died
  between the webhook's answer and its record: at-least-once then, as Alertmanager), a firing is
  told as new at most once until its resolve is told, a resolve only to a channel that was told
  the alert fires;
- once faults and silences end and the clock runs on (the drain), every channel's last word on
  every alert is the alert's last published state: nothing swallowed, no ghost left firing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from devstack.template import deploy_local, load_template
from gpulse.alerting.deliver import DeadLetters, SentLog
from gpulse.alerting.dispatch import Dispatcher, GroupStore
from gpulse.alerting.groups import TOMBSTONE_S
from gpulse.alerting.matchers import Matcher
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.routes import ChannelRef, Route
from gpulse.alerting.settle import FindingsQueue, settle
from gpulse.alerting.silences import Silence
from gpulse.alerting.state import JOIN_EVERY_S, Rule
from gpulse.detect.base import Condition
from gpulse.finding import Finding, fingerprint
from gpulse.notification import Notification
from gpulse.notify.errors import PermanentDeliveryError, RetryableDeliveryError
from tests.integration.lambdas import ROOT

pytestmark = pytest.mark.integration

T0 = 1_900_000_000.0
CLUSTER = "c1"
SUBJECTS = (("idle_held", "n1"), ("imbalance", "n1"), ("imbalance", "n3"))
JOINERS = ("n7", "n8")  # nodes that join (and leave) a subject's condition: a second rank stalls
TITLES = {"idle_held": "GPU held but idle", "imbalance": "Cross-node imbalance"}
GPU_ROUTE = Route(
    "gpu",
    (ChannelRef("slack", "/t/webhooks/gpu"),),
    matchers=(Matcher("rule", "=", "idle_held"),),
    group_wait_s=30,
    group_interval_s=120,
    repeat_interval_s=3600,
)
DEFAULT_ROUTE = Route(
    "default",
    (ChannelRef("slack", "/t/webhooks/ops"), ChannelRef("jandi", "/t/webhooks/ops")),
    group_wait_s=0,
    group_interval_s=60,
    repeat_interval_s=1800,
)
LEASE_S = 90.0


class Crash(BaseException):
    """The alert process dying: nothing in the dispatcher catches it."""


def fp_of(subject: tuple[str, str]) -> str:
    return fingerprint(subject[0], node=subject[1])


@dataclasses.dataclass
class Told:
    channel: str
    id: str
    new: list[str]  # transition ids told as new firing
    resolved: list[str]  # transition ids told resolved
    mentioned: dict[str, str]  # fingerprint → "firing"/"resolved": every alert the message lists
    refused: bool = False  # the webhook answered a permanent 4xx: dead-lettered, with its reason


class Config:
    """The live config, as the dispatcher reads it; the test changes it between steps."""

    def __init__(self) -> None:
        self.route_for: dict[str, str | None] = {"idle_held": None, "imbalance": None}
        self.silence_list: list[Silence] = []

    def routes(self) -> list[Route]:
        return [GPU_ROUTE, DEFAULT_ROUTE]

    def silences(self) -> list[Silence]:
        return list(self.silence_list)

    def rule_route(self, rule: str) -> str | None:
        return self.route_for.get(rule)


class Chat:
    """Every channel's recording fake, and the faults the next sends meet."""

    def __init__(self) -> None:
        self.log: list[Told] = []
        self.faults: dict[str, list[str]] = {}  # channel → faults for its next sends, in order
        # (channel, notification id) → how often the process died after sending it and before
        # recording it: each such death may cost one more copy (at least once)
        self.crashed: dict[tuple[str, str], int] = {}

    def channel(self, route: Route, ref: ChannelRef) -> Any:
        chat, name = self, f"{route.name}/{ref.kind}:{ref.secret.rsplit('/', 1)[-1]}"

        class Recording:
            kind = ref.kind

            def __init__(self) -> None:
                self.name = name

            def send(self, n: Notification) -> None:
                fault = chat.faults.get(name, []).pop(0) if chat.faults.get(name) else None
                if fault == "retryable":
                    raise RetryableDeliveryError(
                        kind=ref.kind, channel=name, cause="server_error", status=500
                    )
                if fault == "crash_before":
                    raise Crash()
                new_fps = set(n.new) | set(n.joined)  # a join of an alert told before: news too
                chat.log.append(
                    Told(
                        name,
                        n.id,
                        [f.transition_id for f in n.firing if f.fingerprint in new_fps],
                        [f.transition_id for f in n.resolved],
                        {f.fingerprint: f.state for f in n.findings},
                        refused=fault == "permanent",
                    )
                )
                if fault == "permanent":
                    raise PermanentDeliveryError(kind=ref.kind, channel=name, cause="rejected", status=400)
                if fault == "crash_after":
                    chat.crashed[(name, n.id)] = chat.crashed.get((name, n.id), 0) + 1
                    raise Crash()

        return Recording()


def channels_of(rule: str, config: Config) -> list[str]:
    route = config.rule_route(rule)
    if route == "default" or (route is None and rule != "idle_held"):
        return ["default/slack:ops", "default/jandi:ops"]
    return ["gpu/slack:gpu"]


class AlertPath(RuleBasedStateMachine):
    endpoint = ""

    @initialize()
    def deploy(self) -> None:
        dep = deploy_local(
            load_template(ROOT / "template.yaml"),
            dynamodb=boto3.client("dynamodb"),
            sqs=boto3.client("sqs"),
            prefix=f"m{uuid.uuid4().hex[:8]}",
            parameters={"Stage": "test"},
        )
        self.sqs = boto3.client("sqs")
        self.queue_url = dep.queues["FindingsQueue"]["url"]
        state = dep.tables["StateTable"]
        self.now = T0
        clock = lambda: self.now  # noqa: E731
        self.records = AlertRecords(state)
        self.queue = FindingsQueue(self.queue_url)
        self.config = Config()
        self.chat = Chat()
        self.dlq: list[str] = []
        dead = DeadLetters(dep.queues["FindingsDLQ"]["url"])
        self.dispatchers = [
            Dispatcher(
                self.config,
                GroupStore(state),
                SentLog(state, clock=clock),
                dead,
                self.chat.channel,
                clock=clock,
                lease_s=LEASE_S,
            )
            for _ in range(2)
        ]
        self.for_s = {"idle_held": 0.0, "imbalance": 60.0}
        self.keep = {"idle_held": 0.0, "imbalance": 120.0}  # keep_firing_for_s
        self.present: dict[tuple[str, str], float] = {}  # condition → since
        self.critical: set[tuple[str, str]] = set()  # conditions now at critical severity
        self.held_at: dict[tuple[str, str], float] = {}  # the last run its (firing) condition held
        self.muted: set[tuple[str, str]] = set()
        self.published: dict[str, list[Finding]] = {}  # fingerprint → transitions, in order
        self.extra: dict[tuple[str, str], set[str]] = {}  # condition → nodes that joined it now
        self.announced: dict[tuple[str, str], set[str]] = {}  # firing alert → nodes told in its life
        self.told_at: dict[tuple[str, str], float] = {}  # firing alert → when last published
        self.inflight: list[str] = []  # receipt handles of messages taken by a process that died
        self.routed: dict[str, set[str]] = {}  # firing transition id → the channels it was routed to

    # -- analyze ----------------------------------------------------------------------------------

    def alert_rules(self) -> dict[str, Rule]:
        return {
            name: Rule(name, TITLES[name], for_s=self.for_s[name], keep_firing_for_s=self.keep[name])
            for name in TITLES
        }

    # (rules that usually come together are one step with a flag, so that the long paths through
    # fire → tell → resolve → tell → re-fire are common in 50 steps, not rare)

    @rule(subject=st.sampled_from(SUBJECTS), then_analyze=st.booleans())
    def condition_starts(self, subject: tuple[str, str], then_analyze: bool = False) -> None:
        self.present.setdefault(subject, self.now)
        if then_analyze:
            self.analyze()

    @rule(subject=st.sampled_from(SUBJECTS), then_analyze=st.booleans())
    def condition_ends(self, subject: tuple[str, str], then_analyze: bool = False) -> None:
        self.present.pop(subject, None)
        self.muted.discard(subject)
        self.critical.discard(subject)
        if then_analyze:
            self.analyze()

    @rule(
        subject=st.sampled_from(SUBJECTS),
        node=st.sampled_from(JOINERS),
        joins=st.booleans(),
        then_analyze=st.booleans(),
    )
    def node_joins_or_leaves(
        self, subject: tuple[str, str], node: str, joins: bool, then_analyze: bool
    ) -> None:
        (
            self.extra.setdefault(subject, set()).add
            if joins
            else self.extra.setdefault(subject, set()).discard
        )(node)
        if then_analyze:
            self.analyze()

    @rule(subject=st.sampled_from(SUBJECTS), node=st.sampled_from(JOINERS))
    def a_rank_joins_later(self, subject: tuple[str, str], node: str) -> None:
        """The join path in one step, so that it is common: the condition holds (and fires when
        its `for` allows), a node joins it, and analyze runs once JOIN_EVERY_S has passed."""
        self.condition_starts(subject, then_analyze=True)
        self.node_joins_or_leaves(subject, node, joins=True, then_analyze=False)
        self.now += JOIN_EVERY_S
        self.analyze()

    @rule(subject=st.sampled_from(SUBJECTS), muted=st.booleans())
    def inhibition(self, subject: tuple[str, str], muted: bool) -> None:
        (self.muted.add if muted else self.muted.discard)(subject)

    @rule(name=st.sampled_from(sorted(TITLES)), for_s=st.sampled_from([0.0, 30.0, 60.0, 300.0]))
    def rule_for_changes(self, name: str, for_s: float) -> None:
        self.for_s[name] = for_s

    @rule(name=st.sampled_from(sorted(TITLES)), keep_s=st.sampled_from([0.0, 60.0, 120.0, 300.0]))
    def rule_keep_firing_for_changes(self, name: str, keep_s: float) -> None:
        self.keep[name] = keep_s

    @rule(subject=st.sampled_from(SUBJECTS), then_analyze=st.booleans())
    def turns_critical(self, subject: tuple[str, str], then_analyze: bool = False) -> None:
        if subject in self.present:
            self.critical.add(subject)
        if then_analyze:
            self.analyze()

    @rule()
    def analyze(self) -> None:
        # Each run decides at a later instant than the last: its `at` is the window's end, which
        # moves on with the data between runs (a minute, 15 s in the demo). Three runs at one
        # instant could give a firing, its resolve and a re-fire that nothing tells apart.
        self.now += 1.0
        stored = self.records.load(CLUSTER)
        conditions = [
            Condition(
                rule=r,
                subject={"node": n},
                since=since,
                severity="critical" if (r, n) in self.critical else "warning",
                summary=f"{r} on {n}",
                action="look",
                nodes=[n, *sorted(self.extra.get((r, n), set()))],
                muted_by="silent_node" if (r, n) in self.muted else None,
            )
            for (r, n), since in sorted(self.present.items())
        ]
        published = settle(self.records, self.queue, CLUSTER, conditions, self.alert_rules(), self.now)
        together = sorted(f.fingerprint for f in published)  # a run's transitions name each other
        assert [f.decided_with for f in published] == [together if len(together) > 1 else []] * len(published)
        for f in published:
            self.published.setdefault(f.fingerprint, []).append(f)
        after = self.records.load(CLUSTER)
        for subject in SUBJECTS:
            fp = fp_of(subject)
            was = stored.get(fp)
            now = after.get(fp)
            was_firing = was is not None and was.state == "firing"
            firing = now is not None and now.state == "firing"
            told = [f for f in published if f.fingerprint == fp]
            if subject in self.muted and subject in self.present:
                assert firing == was_firing, f"muted {subject} changed"
            elif subject in self.present:
                held = self.now - self.present[subject] >= self.for_s[subject[0]]
                assert firing == (held or was_firing), subject
            elif was_firing and self.now - self.held_at[subject] < self.keep[subject[0]]:
                assert firing and not told, f"{subject} resolved inside its hold-down"
            else:
                assert not firing, f"{subject} ended but still fires"
            nodes = {subject[1], *self.extra.get(subject, set())}
            if firing and subject in self.present and (subject in self.muted or was_firing):
                # the same alert all along: at most an escalation is published, and only the first
                # time; and nodes that joined, each once in its life, at most every JOIN_EVERY_S
                live = subject not in self.muted and was_firing
                rose = (
                    live
                    and subject in self.critical
                    and was is not None
                    and was.finding.severity == "warning"
                )
                new = nodes - self.announced[subject] if live else set()
                joined = new if new and self.now - self.told_at[subject] >= JOIN_EVERY_S else set()
                expected = [("firing", "critical" if rose else was.finding.severity, joined)] if was else []
                assert [(f.state, f.severity, set(f.newly_joined)) for f in told] == (
                    expected if rose or joined else []
                ), (subject, told)
                if rose or joined:
                    self.told_at[subject] = self.now
                    self.announced[subject] |= joined
            elif firing and not was_firing:
                assert [(f.state, f.newly_joined) for f in told] == [("firing", [])], (subject, told)
                self.announced[subject], self.told_at[subject] = nodes, self.now
            if firing and subject in self.present:
                self.held_at[subject] = self.now
            assert all(r.outbox is None for r in after.values())

    # -- the config -------------------------------------------------------------------------------

    @rule(name=st.sampled_from(sorted(TITLES)), to=st.sampled_from([None, "default", "gpu"]))
    def reroute(self, name: str, to: str | None) -> None:
        self.config.route_for[name] = to

    @rule(name=st.sampled_from(sorted(TITLES)), for_s=st.sampled_from([60.0, 600.0]))
    def silence(self, name: str, for_s: float) -> None:
        self.config.silence_list.append(
            Silence(
                id=uuid.uuid4().hex,
                matchers=(Matcher("rule", "=", name),),
                starts_at=self.now,
                ends_at=self.now + for_s,
                created_by="model",
            )
        )

    @rule()
    def silences_expire(self) -> None:
        self.config.silence_list = []

    # -- the alert side ---------------------------------------------------------------------------

    @rule(
        which=st.integers(0, 1),
        ack=st.sampled_from([True, True, True, False]),
        batch=st.sampled_from([1, 10]),
    )
    def alert_receives(self, which: int, ack: bool, batch: int = 1) -> None:
        """An alert invocation takes messages; one whose process dies (or that does not ack) leaves
        them in flight until their visibility timeout ends."""
        got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=batch, WaitTimeSeconds=0)
        for m in got.get("Messages", []):
            body = json.loads(m["Body"])
            try:
                if set(body) != {"wake"}:
                    self._accept(which, m["Body"])
            except Crash:
                ack = False
            if ack:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            else:
                self.inflight.append(m["ReceiptHandle"])

    @rule()
    def redelivered(self) -> None:
        """The visibility timeout of messages whose process died (or did not ack) runs out."""
        for handle in self.inflight:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
            )
        self.inflight = []

    @rule(which=st.integers(0, 1), after_s=st.sampled_from([0.0, 61.0, 301.0]))
    def tick(self, which: int, after_s: float = 0.0) -> None:
        if after_s > TOMBSTONE_S:
            self._before_a_day_passes()
        self.now += after_s
        with contextlib.suppress(Crash):  # the process died mid-tick: the lease holds its claim
            self.dispatchers[which].tick()

    @rule(
        channel=st.sampled_from(["gpu/slack:gpu", "default/slack:ops", "default/jandi:ops"]),
        fault=st.sampled_from(["retryable", "permanent", "crash_after", "crash_before"]),
    )
    def webhook_fault(self, channel: str, fault: str) -> None:
        self.chat.faults.setdefault(channel, []).append(fault)

    @rule(dt=st.sampled_from([10.0, 31.0, 61.0, 95.0, 301.0, TOMBSTONE_S + 1]))
    def clock_moves(self, dt: float) -> None:
        if dt > TOMBSTONE_S:
            self._before_a_day_passes()
        self.now += dt

    def _before_a_day_passes(self) -> None:
        """SQS gives a message back after its visibility timeout (minutes) and the alert function
        takes it at once; after a few receives it is in the DLQ. A message held in flight for a
        day, then taken after its alert's tombstone expired, cannot happen: take them all first."""
        for _ in range(20):
            self.redelivered()
            got = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            if not self.inflight and got["ApproximateNumberOfMessages"] == "0":
                return
            self.alert_receives(0, True, 10)

    @rule(subject=st.sampled_from(SUBJECTS), later_s=st.sampled_from([301.0, TOMBSTONE_S + 1]))
    def the_whole_way(self, subject: tuple[str, str], later_s: float) -> None:
        """One transition all the way through in one step, so that long lives (fire, resolve, a
        day, fire again) are common: the condition flips, analyze runs, an alert invocation takes
        everything queued, and a tick comes `later_s` after."""
        if subject in self.present:
            self.condition_ends(subject)
        else:
            self.condition_starts(subject)
        self.analyze()
        for _ in range(3):  # what analyze published (a process that dies leaves its message in flight)
            self.alert_receives(0, True, 10)
        self.tick(1, later_s)

    # -- what must hold ---------------------------------------------------------------------------

    @invariant()
    def told_once(self) -> None:
        if not hasattr(self, "chat"):
            return
        seen: dict[tuple[str, str], int] = {}
        new: dict[
            tuple[str, str], set[str]
        ] = {}  # (channel, fp) → firings told as new since its last resolve
        believes: dict[tuple[str, str], str] = {}  # (channel, fp) → what the channel was last told
        for t in self.chat.log:
            key = (t.channel, t.id)
            seen[key] = seen.get(key, 0) + 1
            limit = 1 + self.chat.crashed.get(key, 0)
            assert seen[key] <= limit, f"{t.channel} got notification {t.id} {seen[key]} times"
            if seen[key] > 1:
                continue  # the repeat after a crash: its content was checked the first time
            # A firing is told as new once until a resolve of the alert is told (a condition that
            # comes back with the same start, a detector's run reaching back, fires again rightly);
            # a resolve is told only to a channel that believes the alert fires. Alerts that flap
            # within a group_interval collapse: the channel hears the state they ended in.
            for tid in t.new:
                fp = tid.split(":")[0]
                told = new.setdefault((t.channel, fp), set())
                assert tid not in told, f"{t.channel}: {tid} told as new twice"
                told.add(tid)
                believes[(t.channel, fp)] = "firing"
            for tid in t.resolved:
                fp = tid.split(":")[0]
                assert believes.get((t.channel, fp)) == "firing", (
                    f"{t.channel}: {tid} resolves what it never heard fire"
                )
                believes[(t.channel, fp)] = "resolved"
                new[(t.channel, fp)] = set()

    def teardown(self) -> None:
        if not hasattr(self, "chat"):
            return
        # the drain: faults and silences end, dead processes' messages come back, time runs on
        self.chat.faults.clear()
        self.config.silence_list = []
        self.redelivered()
        self.now += 400
        self.analyze()
        for _ in range(4):
            while self._drain_queue():
                pass
            self.now += max(LEASE_S, GPU_ROUTE.group_interval_s) + 1
            for d in self.dispatchers:
                d.tick()
        self.told_once()
        for subject in SUBJECTS:
            fp = fp_of(subject)
            transitions = self.published.get(fp, [])
            final = transitions[-1] if transitions else None
            if final is not None and final.state == "firing":
                for channel in self.routed[final.transition_id]:
                    last = self._last_heard(channel, fp)
                    assert last == "firing", f"{subject} fires, but {channel} last heard {last}"
            else:
                for channel in {t.channel for t in self.chat.log}:
                    last = self._last_heard(channel, fp)
                    assert last in (None, "resolved"), f"{subject} ended, but {channel} last heard {last}"

    def _last_heard(self, channel: str, fp: str) -> str | None:
        return next(
            (t.mentioned[fp] for t in reversed(self.chat.log) if t.channel == channel and fp in t.mentioned),
            None,
        )

    def _accept(self, which: int, body: str) -> None:
        finding = Finding.from_json(body)
        if finding.state == "firing":
            self.routed.setdefault(finding.transition_id, set()).update(
                channels_of(finding.rule, self.config)
            )
        self.dispatchers[which].accept(finding)

    def _drain_queue(self) -> bool:
        got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = got.get("Messages", [])
        for m in messages:
            if set(json.loads(m["Body"])) != {"wake"}:
                self._accept(0, m["Body"])
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return bool(messages)


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    yield


def test_the_alert_path_matches_its_model(aws: None) -> None:
    run = settings(
        # `make drills` runs many more (GPULSE_MODEL_EXAMPLES=500); CI runs a short version
        max_examples=int(os.environ.get("GPULSE_MODEL_EXAMPLES", "20")),
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(AlertPath).TestCase
    run().runTest()


def test_the_model_catches_a_refire_after_its_group_was_deleted(aws: None) -> None:
    """The path of the bug that swallowed re-fired alerts (a re-created group reused its
    notification ids, and the sent log said they had been told), run through the same machine:
    fire, tell, resolve, tell, a day passes (the group is deleted), fire again."""
    m = AlertPath()
    m.deploy()
    subject = ("imbalance", "n1")
    m.rule_for_changes("imbalance", 0.0)
    for starts in (True, False, True):
        (m.condition_starts if starts else m.condition_ends)(subject)
        m.analyze()
        m.alert_receives(0, True)
        m.clock_moves(301.0)
        m.tick(0)
        m.told_once()
        if not starts:
            m.clock_moves(TOMBSTONE_S + 1)
            m.tick(1)
    assert [t.mentioned for t in m.chat.log if t.channel == "default/slack:ops"] == [
        {fp_of(subject): "firing"},
        {fp_of(subject): "resolved"},
        {fp_of(subject): "firing"},
    ]
    m.teardown()


def test_the_model_hears_a_rank_that_joins_a_firing_alert(aws: None) -> None:
    """A second rank stalls while the job's alert fires: the channels hear it joined, once; it
    leaving and coming back is not news."""
    m = AlertPath()
    m.deploy()
    subject = ("imbalance", "n1")
    m.rule_for_changes("imbalance", 0.0)
    m.condition_starts(subject, then_analyze=True)
    for joins in (True, False, True):
        m.node_joins_or_leaves(subject, "n7", joins=joins, then_analyze=False)
        m.clock_moves(301.0)
        m.analyze()
        m.alert_receives(0, True)
        m.clock_moves(61.0)
        m.tick(0)
        m.told_once()
    fp = fp_of(subject)
    assert [(f.state, f.newly_joined) for f in m.published[fp]] == [("firing", []), ("firing", ["n7"])]
    assert [t.new for t in m.chat.log if t.channel == "default/slack:ops"] == [
        [f"{fp}:firing:{int(T0)}"],
        [f"{fp}:firing:{int(T0)}:joined1"],
    ]
    m.teardown()
