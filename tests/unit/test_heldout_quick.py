"""The detector catalogue against the quick held-out fleets (scenarios/heldout.py): fleets and
faults written apart from the scenario suite, scored by the issue's thresholds — every injected
fault found (recall 1.0 per rule), precision >= 0.95, no alarm on a healthy fleet, and each
detection within for_s + two analyze runs (+ the allowance the docs justify)."""

from __future__ import annotations

import pytest

from gpulse.detect.catalogue import CATALOGUE
from scenarios.heldout import exercised, run_heldout
from scenarios.run import RuleScore, ScenarioResult, missed, score, unmatched

SEED = 1


@pytest.fixture(scope="module")
def results() -> list[ScenarioResult]:
    return run_heldout(SEED, quick=True)


@pytest.fixture(scope="module")
def scores(results: list[ScenarioResult]) -> dict[str, RuleScore]:
    return score(results, list(CATALOGUE))


def test_every_rule_is_exercised(results: list[ScenarioResult]) -> None:
    assert exercised(results) == list(CATALOGUE)


def test_every_fault_is_found(results: list[ScenarioResult], scores: dict[str, RuleScore]) -> None:
    assert [(t.scenario, t.rule, t.subject) for t in missed(results)] == []
    assert {r: s.recall for r, s in scores.items()} == {r: 1.0 for r in scores}


def test_precision(results: list[ScenarioResult], scores: dict[str, RuleScore]) -> None:
    low = {r: s.precision for r, s in scores.items() if s.precision is not None and s.precision < 0.95}
    assert low == {}, [(a.scenario, a.rule, a.summary) for a in unmatched(results)]


def test_no_alarm_on_healthy_fleets(results: list[ScenarioResult]) -> None:
    healthy = [r for r in results if r.healthy]
    assert sum(r.node_days for r in healthy) >= 0.5
    assert [(a.scenario, a.rule, a.summary) for r in healthy for a in r.alarms] == []


def test_no_fault_is_announced_twice(scores: dict[str, RuleScore]) -> None:
    # a lost or late batch, a checkpoint's pause: neither resolves an alert to fire it again
    assert {r: s.extra for r, s in scores.items() if s.extra} == {}


@pytest.mark.parametrize("rule", list(CATALOGUE))
def test_detection_within_bound(scores: dict[str, RuleScore], rule: str) -> None:
    assert scores[rule].late == 0, (scores[rule].delays, scores[rule].bound_s, scores[rule].allow_s)
