"""Config documents, matchers and routes: what is accepted, what it means, what is refused and why."""

from __future__ import annotations

import pytest

from gpulse.alerting import matchers, routes
from gpulse.alerting.labels import labels
from gpulse.config.documents import RuleConfig, parse
from gpulse.errors import InvalidInput

SLACK = {"kind": "slack", "secret": "/gpulse/prod/webhooks/ml"}
ALERT = labels(
    rule="idle_held",
    severity="warning",
    cluster="a",
    node_group="g1",
    nodes=["n1"],
    users=["bob", "eve"],
    teams=["ml"],
)


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ('cluster="a"', True),
        ('cluster!="a"', False),
        ('user="eve"', True),  # any of several values
        ('user!="eve"', False),  # none of them
        ('severity=~"warn.*|critical"', True),
        ('rule!~"idle.*"', False),
        ('node_group=""', False),
        ('gpu=""', True),  # a missing label is ""
    ],
)
def test_matchers_follow_alertmanager(text: str, holds: bool) -> None:
    assert matchers.parse(text).matches(ALERT) is holds


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("cluster=a", 'is not label="value"'),
        ('host="x"', "unknown label 'host'"),
        ('rule=~"("', "bad regular expression"),
    ],
)
def test_bad_matchers_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        matchers.parse(text)


def test_a_rule_document_means_params_flag_and_route() -> None:
    rc = parse("rule", "imbalance", {"params": {"for_s": 60}, "enabled": {"default": False}, "route": "ml"})
    assert isinstance(rc, RuleConfig)
    assert (rc.params["for_s"], rc.flag, rc.route, rc.overrides) == (
        60,
        {"default": False},
        "ml",
        {"for_s": 60},
    )


@pytest.mark.parametrize(
    ("kind", "name", "doc", "error"),
    [
        ("rule", "imbalanse", {}, "no detector is named 'imbalanse'"),
        ("rule", "imbalance", {"params": {"for_s": -5}}, "for_s"),
        ("rule", "imbalance", {"params": {"nope": 1}}, "nope"),
        ("rule", "imbalance", {"enabled": {"rules": {}}}, "enabled.default must be true or false"),
        (
            "rule",
            "imbalance",
            {
                "enabled": {
                    "default": True,
                    "rules": {"x": {"when_match": False, "conditions": [{"action": "NOPE"}]}},
                }
            },
            "enabled",
        ),
        ("rule", "imbalance", {"colour": "red"}, "must not contain"),
        (
            "route",
            "ml",
            {"channels": [{"kind": "slack", "secret": "https://hooks.slack.com/services/T/B/x"}]},
            "must match",
        ),
        ("route", "default", {"channels": [SLACK], "matchers": ['team="ml"']}, "has no matchers"),
        (
            "route",
            "ml",
            {"channels": [SLACK], "group_interval_s": 600, "repeat_interval_s": 300},
            "shorter than",
        ),
        (
            "silence",
            "s1",
            {"matchers": ['rule="x"'], "starts_at": 10, "ends_at": 5, "created_by": "a"},
            "after",
        ),
        (
            "silence",
            "s1",
            {"matchers": [], "starts_at": 1, "ends_at": 5, "created_by": "a"},
            "must contain at least",
        ),
        ("team", "bad name!", {}, "must be 1-64"),
    ],
)
def test_malformed_documents_are_refused_with_the_reason(
    kind: str, name: str, doc: object, error: str
) -> None:
    with pytest.raises(InvalidInput, match=error):
        parse(kind, name, doc)


def test_routes_first_match_wins_unless_continue_and_default_takes_the_rest() -> None:
    ml = parse("route", "ml", {"channels": [SLACK], "matchers": ['team="ml"'], "order": 1})
    crit = parse("route", "crit", {"channels": [SLACK], "matchers": ['severity="critical"'], "order": 2})
    default = parse("route", "default", {"channels": [SLACK]})
    assert (
        isinstance(ml, routes.Route) and isinstance(crit, routes.Route) and isinstance(default, routes.Route)
    )
    table = [default, crit, ml]
    assert [r.name for r in routes.select(ALERT, table)] == ["ml"]
    other = labels(rule="silent_node", severity="critical", cluster="b")
    assert [r.name for r in routes.select(other, table)] == ["crit"]
    assert [r.name for r in routes.select(labels(rule="x", severity="info", cluster="b"), table)] == [
        "default"
    ]
    both = routes.Route("ml", ml.channels, ml.matchers, order=1, continue_=True)
    critical_ml = labels(rule="x", severity="critical", cluster="a", teams=["ml"])
    assert [r.name for r in routes.select(critical_ml, [default, crit, both])] == ["ml", "crit"]
    assert [r.name for r in routes.select(ALERT, table, rule_route="crit")] == ["crit"]


def test_mentions_name_the_users_and_teams_of_the_alert() -> None:
    route = parse(
        "route",
        "ml",
        {
            "channels": [SLACK],
            "mentions": {"users": {"bob": "<@U1>", "zed": "<@U9>"}, "teams": {"ml": "<!subteam^S1>"}},
        },
    )
    assert isinstance(route, routes.Route)
    assert route.mentions(ALERT) == ["<@U1>", "<!subteam^S1>"]
    assert route.group_key(ALERT) == {"cluster": "a", "rule": "idle_held"}
