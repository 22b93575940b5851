"""Silences through the real alert Lambda (moto, a real chat sink on 127.0.0.1): a silenced alert
is held until its silence ends, or is expired early, and is then announced exactly once; an
alert of the same group that the silence does not match goes out at once.

Time is the test's: one clock stands in for every clock the function reads (the dispatcher's,
the config cache's, the pacer's), so nothing sleeps and every tick lands exactly where it should.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from devstack.chat_sink import ChatSink
from gpulse.alerting import groups as g
from gpulse.config.store import ConfigStore
from gpulse.finding import Finding
from gpulse.notification import Notification
from gpulse.notify import jandi, slack
from tests.events import load_event
from tests.integration.lambdas import FakeContext, chat_webhooks, deploy, load_function

pytestmark = pytest.mark.integration

SILENCE_FOR_S = 600.0  # longer than the route's group_interval (300 s): the release is not held by it
GROUP = {"cluster": "demo", "rule": "imbalance"}  # the sample finding's group under the default route


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Stack:
    module: ModuleType  # functions/alert/app.py, freshly imported
    sink: ChatSink
    config: ConfigStore  # the config table, as the CLI writes it
    clock: Clock
    sleeps: list[float]  # what the pacer would have slept


@pytest.fixture
def stack(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    deployment = deploy(moto_server, monkeypatch)
    config = ConfigStore(deployment.tables["ConfigTable"])
    with ChatSink(out=None) as sink:
        chat_webhooks(deployment, sink.url)  # no group_wait: only its silence holds an alert back
        module = load_function("AlertFunction", deployment, monkeypatch)
        module.dispatcher.wake_queue = None  # no self-addressed wake-ups: the tests tick by hand
        clock = Clock(float(int(time.time())))
        sleeps: list[float] = []
        module.dispatcher.clock = clock  # when groups are due, whether a silence is active
        module.config.store.clock = clock  # how old the cached config is
        module.channels.pacer.clock = clock  # a webhook's next send slot ...
        module.channels.pacer.sleep = sleeps.append  # ... and no real wait for it
        yield Stack(module, sink, config, clock, sleeps)


def sample() -> Finding:
    """The sample firing finding: imbalance in cluster demo, node-03."""
    return Finding.from_json(load_event("alert_sqs")["Records"][0]["body"])


def deliver(stack: Stack, *findings: Finding) -> None:
    """The findings in one SQS batch, as the queue hands them to the function."""
    event = load_event("alert_sqs")
    template = event["Records"][0]
    event["Records"] = [
        {**template, "messageId": f"m{i}", "body": f.to_json()} for i, f in enumerate(findings)
    ]
    assert stack.module.handler(event, FakeContext()) == {"batchItemFailures": []}


def tick(stack: Stack) -> dict[str, Any]:
    """The EventBridge minute tick; returns the handler's answer ({"groups": n, "sent": n})."""
    result: dict[str, Any] = stack.module.handler(load_event("analyze_schedule"), FakeContext())
    return result


def silence(stack: Stack, name: str, matchers: list[str], ends_at: float) -> None:
    """A silence from now until `ends_at`, written as `gpulse silence add` writes one."""
    doc = {"matchers": matchers, "starts_at": stack.clock.t, "ends_at": ends_at, "created_by": "test"}
    stack.config.put("silence", name, doc, who="test", expected_version=None)


def flush(seq: int, firing: list[Finding], new: list[Finding]) -> Notification:
    """The notification the sample's group sends at its `seq`-th flush."""
    return Notification(
        id=f"{g.group_key('default', GROUP)}#{seq}",
        route="default",
        group=dict(GROUP),
        firing=firing,
        new=[f.fingerprint for f in new],
    )


def sent(sink: ChatSink) -> list[tuple[str, str, Any]]:
    return [(m["kind"], m["channel"], m["payload"]) for m in sink.messages()]


def on_both(n: Notification) -> list[tuple[str, str, Any]]:
    """`n` as each channel of the default route receives it: Slack first, then Jandi."""
    return [("slack", "ops", slack.render(n)), ("jandi", "ops", jandi.render(n))]


def test_a_silenced_alert_is_held_until_the_silence_ends_then_told_once(stack: Stack) -> None:
    f = sample()
    ends_at = stack.clock.t + SILENCE_FOR_S
    silence(stack, "maintenance", ['rule="imbalance"', 'cluster="demo"'], ends_at)
    deliver(stack, f)
    assert sent(stack.sink) == []

    stack.clock.t = ends_at - 1
    assert tick(stack) == {"groups": 1, "sent": 0}
    assert sent(stack.sink) == []

    stack.clock.t = ends_at  # a silence covers [starts_at, ends_at): at ends_at it is over
    assert tick(stack) == {"groups": 1, "sent": 1}
    assert sent(stack.sink) == on_both(flush(1, firing=[f], new=[f]))
    for m in stack.sink.messages():
        assert f.summary in json.dumps(m["payload"], ensure_ascii=False)

    stack.clock.t += 60  # told once: the next word on it is the repeat, four hours on
    assert tick(stack) == {"groups": 1, "sent": 0}
    assert len(stack.sink.messages()) == 2
    assert stack.sleeps == []


def test_an_alert_the_silence_does_not_match_goes_out_while_its_group_mate_waits(stack: Stack) -> None:
    # Both alerts share one group (cluster demo, rule imbalance) and the silence names node-03
    # only. That is the harder case: a silence is matched per alert, so the group must flush
    # node-05 now, leave node-03 out without marking it told, and announce it when the silence
    # ends. (In separate groups the two would never meet.)
    held = sample()
    free = dataclasses.replace(
        held,
        fingerprint="f" * 20,
        nodes=["node-05"],
        gpus=["node-05/0"],
        since=held.since + 60,
        summary="node-05 at 9% GPU utilisation while its group's median is 97% (for 6 min)",
    )
    ends_at = stack.clock.t + SILENCE_FOR_S
    silence(stack, "node-03-repair", ['rule="imbalance"', 'node="node-03"'], ends_at)
    deliver(stack, held, free)
    first = on_both(flush(1, firing=[free], new=[free]))
    assert sent(stack.sink) == first

    stack.clock.t = ends_at - 1
    assert tick(stack) == {"groups": 1, "sent": 0}
    assert sent(stack.sink) == first

    stack.clock.t = ends_at
    assert tick(stack) == {"groups": 1, "sent": 1}
    # the group's message lists both, newest first; only node-03 is news (node-05, told before,
    # is told as of this flush: how long it has held by now)
    again = dataclasses.replace(free, at=ends_at)
    assert sent(stack.sink) == first + on_both(flush(2, firing=[again, held], new=[held]))

    stack.clock.t += 60
    assert tick(stack) == {"groups": 1, "sent": 0}
    assert len(stack.sink.messages()) == 4
    assert stack.sleeps == []


def test_expiring_a_silence_early_releases_the_alert_once_the_config_cache_renews(stack: Stack) -> None:
    f = sample()
    silence(stack, "maintenance", ['rule="imbalance"', 'cluster="demo"'], stack.clock.t + 3600)
    deliver(stack, f)
    stack.clock.t += 60
    assert tick(stack) == {"groups": 1, "sent": 0}  # this tick read the config afresh

    # what `gpulse silence expire` writes: the same silence, ending now
    item = stack.config.get("silence", "maintenance")
    assert item is not None
    stack.config.put(
        "silence",
        "maintenance",
        {**item.doc, "ends_at": stack.clock.t},
        who="test",
        expected_version=item.version,
    )
    expired_at = stack.clock.t
    max_age = stack.module.config.store.max_age  # GPULSE_CONFIG_CACHE_S from the template

    stack.clock.t = expired_at + max_age - 1  # the function still works from its cached read
    assert tick(stack) == {"groups": 1, "sent": 0}
    assert sent(stack.sink) == []

    stack.clock.t = expired_at + max_age
    assert tick(stack) == {"groups": 1, "sent": 1}
    assert sent(stack.sink) == on_both(flush(1, firing=[f], new=[f]))

    stack.clock.t += 60
    assert tick(stack) == {"groups": 1, "sent": 0}
    assert len(stack.sink.messages()) == 2
