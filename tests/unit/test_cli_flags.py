"""`gpulse rules target`: the exact Powertools feature flags it builds, and how they evaluate."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.feature_flags import FeatureFlags
from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

from gpulse.alerting.labels import flag_context, labels
from gpulse.cli.rules import describe_flag, flag_state, target_flag
from gpulse.config.documents import RuleConfig, parse
from gpulse.errors import InvalidInput


class OneFlag(StoreProvider):
    """The smallest store: one rule's flag, as the config table's DynamoDBStore would give it."""

    def __init__(self, rule: str, flag: dict[str, Any]) -> None:
        self.features = {rule: flag}

    @property
    def get_raw_configuration(self) -> dict[str, Any]:
        return self.features

    def get_configuration(self) -> dict[str, Any]:
        return self.features


def on_for(flag: dict[str, Any], **label: Any) -> bool:
    lm = labels(rule="imbalance", severity=label.pop("severity", "warning"), cluster="c1", **label)
    return bool(
        FeatureFlags(OneFlag("imbalance", flag)).evaluate(
            name="imbalance", context=flag_context(lm), default=True
        )
    )


def test_one_cluster_is_equals() -> None:
    assert target_flag(clusters=["c1"]) == {
        "default": False,
        "rules": {
            "target": {
                "when_match": True,
                "conditions": [{"action": "EQUALS", "key": "cluster", "value": "c1"}],
            }
        },
    }


def test_several_values_are_in_and_teams_any_in_value() -> None:
    assert target_flag(
        clusters=["c1", "c2"], node_groups=["g1"], teams=["ml", "cv"], severities=["critical", "warning"]
    ) == {
        "default": False,
        "rules": {
            "target": {
                "when_match": True,
                "conditions": [
                    {"action": "IN", "key": "cluster", "value": ["c1", "c2"]},
                    {"action": "EQUALS", "key": "node_group", "value": "g1"},
                    {"action": "IN", "key": "severity", "value": ["critical", "warning"]},
                    {"action": "ANY_IN_VALUE", "key": "teams", "value": ["ml", "cv"]},
                ],
            }
        },
    }


def test_mute_in_maintenance_hours() -> None:
    assert target_flag(
        clusters=["c1"], between=("22:00", "06:00"), days=["SATURDAY", "SUNDAY"], tz="Asia/Seoul", mute=True
    ) == {
        "default": True,
        "rules": {
            "mute": {
                "when_match": False,
                "conditions": [
                    {"action": "EQUALS", "key": "cluster", "value": "c1"},
                    {
                        "action": "SCHEDULE_BETWEEN_TIME_RANGE",
                        "key": "CURRENT_TIME",
                        "value": {"START": "22:00", "END": "06:00", "TIMEZONE": "Asia/Seoul"},
                    },
                    {
                        "action": "SCHEDULE_BETWEEN_DAYS_OF_WEEK",
                        "key": "CURRENT_DAY_OF_WEEK",
                        "value": {"DAYS": ["SATURDAY", "SUNDAY"], "TIMEZONE": "Asia/Seoul"},
                    },
                ],
            }
        },
    }


def test_time_windows_default_to_utc() -> None:
    flag = target_flag(between=("09:00", "18:00"))
    assert flag["rules"]["target"]["conditions"] == [
        {
            "action": "SCHEDULE_BETWEEN_TIME_RANGE",
            "key": "CURRENT_TIME",
            "value": {"START": "09:00", "END": "18:00", "TIMEZONE": "UTC"},
        }
    ]


def test_a_target_needs_a_condition_and_tz_needs_a_time() -> None:
    with pytest.raises(InvalidInput, match="needs at least one of --cluster"):
        target_flag()
    with pytest.raises(InvalidInput, match="--tz applies to --between and --days"):
        target_flag(clusters=["c1"], tz="Asia/Seoul")


@pytest.mark.parametrize(
    "flag",
    [
        target_flag(clusters=["c1"]),
        target_flag(clusters=["c1", "c2"], teams=["ml"], severities=["critical"]),
        target_flag(
            node_groups=["g1"], between=("22:00", "06:00"), days=["MONDAY"], tz="Asia/Seoul", mute=True
        ),
    ],
)
def test_every_built_flag_is_a_valid_rule_document(flag: dict[str, Any]) -> None:
    rc = parse("rule", "imbalance", {"enabled": flag})
    assert isinstance(rc, RuleConfig) and rc.flag == flag


def test_a_bad_time_zone_is_refused_by_the_document_check() -> None:
    with pytest.raises(InvalidInput, match="rule imbalance: enabled:"):
        parse("rule", "imbalance", {"enabled": target_flag(between=("09:00", "18:00"), tz="Mars/Olympus")})


def test_targeted_flags_evaluate_on_the_alert_labels() -> None:
    only_c1 = target_flag(clusters=["c1"])
    assert on_for(only_c1) is True
    assert on_for(target_flag(clusters=["c2", "c3"])) is False
    assert on_for(target_flag(clusters=["c2", "c1"])) is True
    assert on_for(target_flag(teams=["ml"]), teams=["cv", "ml"]) is True
    assert on_for(target_flag(teams=["ml"]), teams=["cv"]) is False
    assert on_for(target_flag(node_groups=["g1"]), node_group="g1") is True
    assert on_for(target_flag(severities=["critical"]), severity="warning") is False
    assert on_for(target_flag(clusters=["c1"], mute=True)) is False  # muted there
    assert on_for(target_flag(clusters=["c2"], mute=True)) is True  # on elsewhere


def test_flag_state_and_description() -> None:
    assert flag_state({"default": True}) == "on"
    assert flag_state({"default": False}) == "off"
    assert flag_state(target_flag(clusters=["c1"])) == "targeted (default off, 1 rule)"
    assert describe_flag(target_flag(clusters=["c1", "c2"], teams=["ml"])) == [
        "default: off",
        'target: on when cluster IN ["c1", "c2"] and teams ANY_IN_VALUE ["ml"]',
    ]
    assert describe_flag(target_flag(between=("22:00", "06:00"), mute=True)) == [
        "default: on",
        "mute: off when CURRENT_TIME SCHEDULE_BETWEEN_TIME_RANGE START=22:00 END=06:00 TIMEZONE=UTC",
    ]
