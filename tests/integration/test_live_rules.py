"""Rules under live control, through the analyze Lambda against moto: switch off, back on,
retune, target one cluster, a time window, and a malformed item that must not stop alerting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from gpulse.config.store import ConfigStore
from gpulse.finding import Finding
from gpulse.store import SeriesStore
from tests.events import load_event
from tests.integration.lambdas import FakeContext, deploy
from tests.integration.test_analyze_handler import AnalyzeTick, findings, load_analyze, ship

pytestmark = pytest.mark.integration


P60 = {"for_s": 60, "keep_firing_for_s": 0}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def stack(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[AnalyzeTick, ConfigStore, str, Clock]]:
    """Analyze with 4 minutes of faults in c1 (imbalance, idle_held) and the config cache on a test clock."""
    deployment = deploy(moto_server, monkeypatch)
    store = SeriesStore(deployment.tables["SeriesTable"])
    config = ConfigStore(deployment.tables["ConfigTable"])
    for rule in ("imbalance", "idle_held"):
        # no hold-down: these tests are about the config taking effect, not about flapping
        config.put("rule", rule, {"params": P60}, who="test", expected_version=None)
    now = time.time()
    start = now - now % 30 - 240
    ship(store, start, 90, faulty=False)
    ship(store, start + 90, 150, faulty=True)
    analyze = load_analyze(deployment, monkeypatch)
    clock = Clock()
    analyze.analyzer.config.store.clock = clock
    yield analyze, config, deployment.queues["FindingsQueue"]["url"], clock


def run(analyze: AnalyzeTick, queue: str) -> list[tuple[str, str]]:
    analyze.handler(load_event("analyze_schedule"), FakeContext())
    return [(f.rule, f.state) for f in findings(queue)]


def set_rule(config: ConfigStore, rule: str, doc: dict[str, Any]) -> None:
    current = config.get("rule", rule)
    config.put("rule", rule, doc, who="alice", expected_version=current.version if current else None)


def test_off_takes_effect_after_the_cache_and_on_resumes(
    stack: tuple[AnalyzeTick, ConfigStore, str, Clock],
) -> None:
    analyze, config, queue, clock = stack
    assert run(analyze, queue) == [("idle_held", "firing"), ("imbalance", "firing")]
    # off, with its default hold-down (180 s): turning a rule off ends its alert at once all the same
    set_rule(config, "imbalance", {"params": {"for_s": 60}, "enabled": {"default": False}})
    clock.t += 29.0  # within the 30 s cache the old config holds: nothing changes
    assert run(analyze, queue) == []
    clock.t += 1.0  # the cache expired: the rule is off, its alert resolves, idle_held goes on
    assert run(analyze, queue) == [("imbalance", "resolved")]
    assert run(analyze, queue) == []
    set_rule(config, "imbalance", {"params": P60})
    clock.t += 30.0
    # back on: the condition has held since the faults began, longer than for_s: it fires at once
    assert run(analyze, queue) == [("imbalance", "firing")]


def test_a_retuned_threshold_takes_effect(stack: tuple[AnalyzeTick, ConfigStore, str, Clock]) -> None:
    analyze, config, queue, clock = stack
    assert run(analyze, queue) == [("idle_held", "firing"), ("imbalance", "firing")]
    # idle_held counts a GPU as idle below util_max %: at 0 % bob's GPU is idle under any
    # threshold above 0, so retune its `for` beyond what the data covers instead: it must resolve
    set_rule(config, "idle_held", {"params": {"for_s": 3600}})
    clock.t += 30.0
    assert run(analyze, queue) == []  # a firing alert stays firing: `for` gates pending → firing only
    set_rule(config, "imbalance", {"params": {**P60, "level_ratio": 0.005, "slow_ratio": 0}})
    clock.t += 30.0
    # nodes at 1 % against peers at 90 % are no longer "far below" a 0.5 % ratio, and the slow-node
    # test is off (slow_ratio 0): resolved
    assert run(analyze, queue) == [("imbalance", "resolved")]


def test_a_rule_targeted_at_another_cluster_stays_quiet_here(
    stack: tuple[AnalyzeTick, ConfigStore, str, Clock],
) -> None:
    analyze, config, queue, _ = stack
    target = {"when_match": True, "conditions": [{"action": "EQUALS", "key": "cluster", "value": "c2"}]}
    set_rule(
        config,
        "imbalance",
        {"params": {"for_s": 60}, "enabled": {"default": False, "rules": {"c2 only": target}}},
    )
    assert run(analyze, queue) == [("idle_held", "firing")]


def test_a_time_window_switches_a_rule_off_during_maintenance(
    stack: tuple[AnalyzeTick, ConfigStore, str, Clock],
) -> None:
    analyze, config, queue, clock = stack
    seoul = time.time() + 9 * 3600  # Seoul's wall clock (UTC+9, no DST), as seconds
    mute: dict[str, Any] = {
        "when_match": False,
        "conditions": [
            {
                "action": "SCHEDULE_BETWEEN_TIME_RANGE",
                "key": "CURRENT_TIME",
                "value": {"START": hhmm(seoul - 3600), "END": hhmm(seoul + 3600), "TIMEZONE": "Asia/Seoul"},
            }
        ],
    }
    set_rule(
        config,
        "idle_held",
        {"params": {"for_s": 60}, "enabled": {"default": True, "rules": {"maintenance": mute}}},
    )
    assert run(analyze, queue) == [("imbalance", "firing")]  # inside the window: idle_held is off
    mute["conditions"][0]["value"] = {
        "START": hhmm(seoul + 3600),
        "END": hhmm(seoul + 7200),
        "TIMEZONE": "Asia/Seoul",
    }
    set_rule(
        config, "idle_held", {"params": {"for_s": 60}, "enabled": {"default": True, "rules": {"later": mute}}}
    )
    clock.t += 30.0
    assert run(analyze, queue) == [("idle_held", "firing")]  # outside it: on again


def test_a_malformed_item_is_reported_and_the_last_good_one_stays(
    stack: tuple[AnalyzeTick, ConfigStore, str, Clock],
) -> None:
    analyze, config, queue, clock = stack
    assert run(analyze, queue) == [("idle_held", "firing"), ("imbalance", "firing")]
    # written around the CLI's checks: a parameter out of range
    item = config.get("rule", "imbalance")
    assert item is not None
    boto3.client("dynamodb").put_item(
        TableName=config.table,
        Item={
            "pk": {"S": "rule"},
            "sk": {"S": "imbalance"},
            "doc": {"S": '{"params": {"for_s": -1}}'},
            "version": {"N": str(item.version + 1)},
            "updated_by": {"S": "mallory"},
        },
    )
    clock.t += 30.0
    published = findings_after(analyze, queue)
    assert [(f.rule, f.state, f.cluster) for f in published] == [("bad_config", "firing", "gpulse-config")]
    assert published[0].summary.startswith(
        "rule 'imbalance' version 2 (written by mallory) was rejected: rule imbalance:"
    )
    assert run(analyze, queue) == []  # imbalance still firing on its last good parameters: no resolve
    set_rule(config, "imbalance", {"params": {"for_s": 60}})
    clock.t += 30.0
    assert run(analyze, queue) == [("bad_config", "resolved")]


def hhmm(t: float) -> str:
    return time.strftime("%H:%M", time.gmtime(t))


def findings_after(analyze: AnalyzeTick, queue: str) -> list[Finding]:
    analyze.handler(load_event("analyze_schedule"), FakeContext())
    return findings(queue)
