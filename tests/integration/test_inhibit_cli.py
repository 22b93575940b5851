"""`gpulse inhibit list|add|remove` against the config table deployed from template.yaml into
moto (`--local DIR`): exact output, exact stored documents, and what analyze's live config then
holds in force."""

from __future__ import annotations

import json

import boto3
import pytest

from gpulse.config.flags import DynamoDBStore
from gpulse.config.live import LiveConfig
from tests.integration.test_cli import Stack
from tests.integration.test_cli import stack as stack  # the fixture

pytestmark = pytest.mark.integration

BUILTIN_ROWS = [
    'gpu_imbalance_idle_held  built-in  rule="gpu_imbalance"  rule="idle_held"            node,gpu  -',
    'imbalance_idle_held      built-in  rule="imbalance"      rule=~"idle_held|mig_idle"  node      -',
    'imbalance_network        built-in  rule="imbalance"      rule="network"              node      -',
    'silent_node              built-in  rule="silent_node"    rule!="silent_node"         node      -',
]
BUILTINS = ["gpu_imbalance_idle_held", "imbalance_idle_held", "imbalance_network", "silent_node"]


def in_force(stack: Stack) -> list[str]:
    live = LiveConfig(DynamoDBStore(stack.config, max_age=0))
    return [r.name for r in live.inhibitions()]


def test_list_shows_the_built_in_rules(stack: Stack) -> None:
    r = stack.gpulse("inhibit", "list")
    assert (r.code, r.err) == (0, "")
    assert r.lines == [
        "NAME                     ORIGIN    SOURCE                TARGET                      EQUAL     "
        "VERSION",
        *BUILTIN_ROWS,
    ]
    rows = json.loads(stack.gpulse("inhibit", "list", "--json").out)
    assert rows[1] == {
        "name": "imbalance_idle_held",
        "origin": "built-in",
        "active": True,
        "source_matchers": ['rule="imbalance"'],
        "target_matchers": ['rule=~"idle_held|mig_idle"'],
        "equal": ["node"],
        "description": (
            "a stalled rank's GPUs sit idle with memory held: one alert (imbalance) for the job, "
            "not one per GPU"
        ),
        "version": 0,
        "problem": None,
    }


def test_add_stores_the_exact_document_and_analyze_holds_it_in_force(stack: Stack) -> None:
    r = stack.gpulse(
        "inhibit",
        "add",
        "xid_over_throttling",
        "--source",
        "rule=hardware_errors",
        "--target",
        'rule="throttling"',
        "--equal",
        "node",
        "--equal",
        "job",
        "--description",
        "a GPU that fell off the bus also stops throttling",
        "--who",
        "alice",
    )
    assert (r.code, r.err, r.lines[-1]) == (0, "", "inhibit xid_over_throttling: version 1 written by alice")
    assert stack.doc("inhibit", "xid_over_throttling") == {
        "source_matchers": ['rule="hardware_errors"'],
        "target_matchers": ['rule="throttling"'],
        "equal": ["node", "job"],
        "description": "a GPU that fell off the bus also stops throttling",
    }
    assert stack.gpulse("inhibit", "list").lines == [
        "NAME                     ORIGIN    SOURCE                  TARGET                      EQUAL     "
        "VERSION",
        'gpu_imbalance_idle_held  built-in  rule="gpu_imbalance"    rule="idle_held"            node,gpu  -',
        'imbalance_idle_held      built-in  rule="imbalance"        rule=~"idle_held|mig_idle"  node      -',
        'imbalance_network        built-in  rule="imbalance"        rule="network"              node      -',
        'silent_node              built-in  rule="silent_node"      rule!="silent_node"         node      -',
        'xid_over_throttling      table     rule="hardware_errors"  rule="throttling"           node,job  1',
    ]
    names = [row["name"] for row in json.loads(stack.gpulse("inhibit", "list", "--json").out)]
    assert names == [*BUILTINS, "xid_over_throttling"]
    assert in_force(stack) == [*BUILTINS, "xid_over_throttling"]

    # a second add of the same name is refused: remove it first
    again = stack.gpulse("inhibit", "add", "xid_over_throttling", "--source", "rule=a", "--target", "rule=b")
    assert (again.code, again.err) == (
        2,
        "error: inhibit xid_over_throttling is in the table already (version 1): remove it first, "
        "or give --if-version to replace it\n",
    )
    r = stack.gpulse("inhibit", "remove", "xid_over_throttling", "--who", "alice")
    assert (r.code, r.lines) == (0, ["inhibit xid_over_throttling: deleted (was version 1) by alice"])
    assert stack.doc("inhibit", "xid_over_throttling") is None
    assert in_force(stack) == BUILTINS


def test_a_built_in_rule_is_disabled_replaced_and_brought_back(stack: Stack) -> None:
    r = stack.gpulse("inhibit", "remove", "imbalance_idle_held", "--who", "bob")
    assert (r.code, r.lines[0], r.lines[-1]) == (
        0,
        "inhibit imbalance_idle_held: a built-in rule; disabling it",
        "inhibit imbalance_idle_held: version 1 written by bob",
    )
    assert stack.doc("inhibit", "imbalance_idle_held") == {"disabled": True}
    assert in_force(stack) == ["gpu_imbalance_idle_held", "imbalance_network", "silent_node"]
    listed = stack.gpulse("inhibit", "list").lines
    assert listed[2].split() == [
        "imbalance_idle_held",
        "built-in,",
        "disabled",
        'rule="imbalance"',
        'rule=~"idle_held|mig_idle"',
        "node",
        "1",
    ]
    again = stack.gpulse("inhibit", "remove", "imbalance_idle_held")
    assert (again.code, again.err) == (
        2,
        "error: inhibit imbalance_idle_held: the built-in rule is disabled already "
        "(`gpulse inhibit restore imbalance_idle_held` brings it back)\n",
    )

    # restore deletes the item: the built-in is back
    r = stack.gpulse("inhibit", "restore", "imbalance_idle_held", "--who", "bob")
    assert (r.code, r.lines) == (
        0,
        [
            "inhibit imbalance_idle_held: deleted (was version 1) by bob",
            "inhibit imbalance_idle_held: the built-in rule of that name is in force again",
        ],
    )
    assert stack.gpulse("inhibit", "list").lines[1:] == BUILTIN_ROWS

    # an item of a built-in's name replaces it
    r = stack.gpulse(
        "inhibit", "add", "imbalance_network", "--source", "rule=imbalance", "--target", "rule=network",
        "--equal", "job", "--who", "carol",
    )  # fmt: skip
    assert (r.code, r.lines[0]) == (0, "inhibit imbalance_network: replaces the built-in rule of that name")
    assert stack.gpulse("inhibit", "list").lines[3].split() == [
        "imbalance_network",
        "table,",
        "over",
        "built-in",
        'rule="imbalance"',
        'rule="network"',
        "job",
        "1",
    ]


def test_bad_input_is_refused_with_a_clear_message(stack: Stack) -> None:
    r = stack.gpulse("inhibit", "add", "x", "--source", "rack=a", "--target", "rule=b")
    assert (r.code, r.out) == (2, "")
    assert r.err.startswith("error: matcher 'rack=a'") or r.err.startswith("error: matcher ")
    assert "unknown label 'rack'" in r.err
    r = stack.gpulse("inhibit", "add", "x", "--source", "rule=a", "--target", "rule=b", "--equal", "rack")
    assert r.code == 2
    assert r.err.startswith("error: inhibit x: data.equal[0] must be one of")
    r = stack.gpulse("inhibit", "remove", "nothing")
    assert (r.code, r.err) == (
        2,
        "error: no inhibit rule named 'nothing' (built-in: gpu_imbalance_idle_held, imbalance_idle_held, "
        "imbalance_network, silent_node; `gpulse inhibit list`)\n",
    )
    # an item written around the CLI that disables what is not built in: rejected when read
    boto3.client("dynamodb").put_item(
        TableName=stack.deployment.tables["ConfigTable"],
        Item={
            "pk": {"S": "inhibit"},
            "sk": {"S": "mine"},
            "doc": {"S": json.dumps({"disabled": True})},
            "version": {"N": "1"},
            "updated_by": {"S": "mallory"},
        },
    )
    listed = stack.gpulse("inhibit", "list")
    assert listed.lines[-1] == (
        "rejected: inhibit mine: only a built-in rule can be disabled "
        "(gpu_imbalance_idle_held, imbalance_idle_held, imbalance_network, silent_node); delete the item "
        "instead"
    )
    assert in_force(stack) == BUILTINS
