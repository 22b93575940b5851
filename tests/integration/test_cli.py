"""The `gpulse` CLI against tables deployed from template.yaml into moto, through `--local DIR`
(an outputs.json like the local stack's): exact stored documents, versions and audit entries,
exit codes, silences, routes, and the dry run over a stored window."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.demo import operator_changes
from devstack.template import LocalDeployment
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue
from gpulse.analyze import Analyzer
from gpulse.cli import main
from gpulse.config.flags import DynamoDBStore
from gpulse.config.live import LiveConfig
from gpulse.config.store import ConfigStore
from gpulse.store import SeriesStore
from tests.integration.lambdas import deploy
from tests.integration.test_analyze_handler import ship

pytestmark = pytest.mark.integration
T0 = 1_763_805_600.0  # 2025-11-22T10:00:00Z
URL = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


@dataclass
class Stack:
    deployment: LocalDeployment
    run_dir: Path
    now: float = T0

    def gpulse(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main([*argv, f"--local={self.run_dir}"], clock=lambda: self.now, out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())

    @property
    def config(self) -> ConfigStore:
        return ConfigStore(self.deployment.tables["ConfigTable"], client=boto3.client("dynamodb"))

    def doc(self, kind: str, name: str) -> Any:
        item = self.config.get(kind, name)
        return None if item is None else item.doc

    def scan(self, logical_id: str) -> list[dict[str, Any]]:
        items = boto3.client("dynamodb").scan(TableName=self.deployment.tables[logical_id])["Items"]
        return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


@pytest.fixture
def stack(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Stack:
    d = deploy(moto_server, monkeypatch)
    outputs = {
        "ConfigTableName": d.tables["ConfigTable"],
        "StateTableName": d.tables["StateTable"],
        "SeriesTableName": d.tables["SeriesTable"],
        "FindingsQueueUrl": d.queues["FindingsQueue"]["url"],
    }
    doc = {"endpoint": moto_server, "region": "us-east-1", "outputs": outputs}
    (tmp_path / "outputs.json").write_text(json.dumps(doc))
    return Stack(d, tmp_path)


def test_enable_disable_set_target_unset_store_exact_documents_and_audit(stack: Stack) -> None:
    stack.now += 1  # audit entries sort by their time
    r = stack.gpulse("rules", "disable", "imbalance", "--who", "alice")
    assert (r.code, r.lines[-1]) == (0, "rule imbalance: version 1 written by alice")
    assert stack.doc("rule", "imbalance") == {"enabled": {"default": False}}

    stack.now += 1  # audit entries sort by their time
    r = stack.gpulse(
        "rules", "set", "imbalance", "min_gap=30", "for_s=5m", "--severity", "critical", "--who", "bob"
    )
    assert (r.code, r.lines[-1]) == (0, "rule imbalance: version 2 written by bob")
    assert stack.doc("rule", "imbalance") == {
        "enabled": {"default": False},
        "params": {"min_gap": 30, "for_s": 300, "severity": "critical"},
    }

    stack.now += 1  # audit entries sort by their time
    r = stack.gpulse("rules", "target", "imbalance", "--cluster", "c1", "--who", "alice")
    assert r.code == 0
    target = {"action": "EQUALS", "key": "cluster", "value": "c1"}
    assert stack.doc("rule", "imbalance")["enabled"] == {
        "default": False,
        "rules": {"target": {"when_match": True, "conditions": [target]}},
    }

    stack.now += 1  # audit entries sort by their time
    r = stack.gpulse("rules", "enable", "imbalance", "--who", "alice")
    assert r.code == 0
    assert r.lines[0] == "dropping targeting rule 'target' (on when cluster EQUALS c1)"
    assert r.lines[-1] == "rule imbalance: version 4 written by alice"

    stack.now += 1  # audit entries sort by their time
    r = stack.gpulse("rules", "unset", "imbalance", "min_gap", "--who", "alice")
    assert r.code == 0
    assert stack.doc("rule", "imbalance") == {
        "enabled": {"default": True},
        "params": {"for_s": 300, "severity": "critical"},
    }
    item = stack.config.get("rule", "imbalance")
    assert item is not None and (item.version, item.updated_by) == (5, "alice")
    assert [(a["who"], a["action"], a["kind"], a["name"], a["version"]) for a in stack.config.audit()] == [
        ("alice", "put", "rule", "imbalance", 5),
        ("alice", "put", "rule", "imbalance", 4),
        ("alice", "put", "rule", "imbalance", 3),
        ("bob", "put", "rule", "imbalance", 2),
        ("alice", "put", "rule", "imbalance", 1),
    ]
    assert stack.config.audit(1)[0]["previous"] == {
        "enabled": {"default": True},
        "params": {"min_gap": 30, "for_s": 300, "severity": "critical"},
    }

    r = stack.gpulse("rules", "list", "--json")
    row = next(row for row in json.loads(r.out) if row["rule"] == "imbalance")
    assert row == {
        "rule": "imbalance",
        "enabled": "on",
        "for_s": 300,
        "severity": "critical",
        "overrides": {"for_s": 300, "severity": "critical"},
        "route": None,
        "version": 5,
        "updated_by": "alice",
    }
    r = stack.gpulse("rules", "list")
    assert r.lines[0].split() == [
        "RULE",
        "ENABLED",
        "FOR",
        "SEVERITY",
        "OVERRIDES",
        "ROUTE",
        "VERSION",
        "UPDATED_BY",
    ]
    assert r.lines[1].split() == [
        "imbalance",
        "on",
        "5m",
        "critical",
        "for_s=300",
        "severity=critical",
        "-",
        "5",
        "alice",
    ]


def test_a_local_write_is_the_operators(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "carol")
    r = stack.gpulse("rules", "disable", "numa")
    assert (r.code, r.lines[-1]) == (0, f"rule numa: version 1 written by carol@{socket.gethostname()}")
    item = stack.config.get("rule", "numa")
    # not moto's caller identity (arn:aws:sts::123456789012:user/moto), the same for every operator
    assert item is not None and item.updated_by == f"carol@{socket.gethostname()}"
    assert stack.config.audit(1)[0]["who"] == f"carol@{socket.gethostname()}"


def test_disabling_a_rule_that_inhibits_others_warns_which_will_page(stack: Stack) -> None:
    r = stack.gpulse("rules", "disable", "imbalance", "--who", "alice")
    assert (r.code, r.err) == (
        0,
        "warning: imbalance inhibits idle_held, mig_idle, network: while imbalance is off, their alerts "
        "on the nodes imbalance would name page instead of being muted\n",
    )
    assert stack.doc("rule", "imbalance") == {"enabled": {"default": False}}
    # already off: nothing changes, nothing to say
    r = stack.gpulse("rules", "disable", "imbalance", "--who", "alice")
    assert (r.code, r.err) == (0, "")
    # the rules it mutes that are off themselves will not page
    for rule in ("idle_held", "hardware_errors", "gpu_imbalance", "mig_idle", "mig_layout", "throttling"):
        assert stack.gpulse("rules", "disable", rule, "--who", "alice").code == 0
    r = stack.gpulse("rules", "disable", "silent_node", "--who", "alice", "--dry-run")
    assert (r.code, r.err) == (
        0,
        "warning: silent_node inhibits numa, network, input_bound, memory_pressure: while silent_node "
        "is off, their alerts on the nodes silent_node would name page instead of being muted\n",
    )
    r = stack.gpulse("rules", "disable", "network", "--who", "alice")
    assert (r.code, r.err) == (0, "")  # network inhibits nothing


def test_the_inhibition_warning_reads_the_inhibit_rules_in_the_table(stack: Stack) -> None:
    # a built-in disabled, and one of the operator's own: imbalance no longer mutes network,
    # and now mutes throttling
    stack.config.put("inhibit", "imbalance_network", {"disabled": True}, who="alice", expected_version=None)
    own = {
        "source_matchers": ['rule="imbalance"'],
        "target_matchers": ['rule="throttling"'],
        "equal": ["node"],
    }
    stack.config.put("inhibit", "imbalance_throttling", own, who="alice", expected_version=None)
    r = stack.gpulse("rules", "disable", "imbalance", "--who", "alice", "--dry-run")
    assert (r.code, r.err) == (
        0,
        "warning: imbalance inhibits idle_held, mig_idle, throttling: while imbalance is off, their "
        "alerts on the nodes imbalance would name page instead of being muted\n",
    )


def test_a_stopped_demo_is_said_so(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: the demo's moto has gone
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    doc = {"endpoint": f"http://127.0.0.1:{port}", "region": "us-east-1", "outputs": {"ConfigTableName": "t"}}
    (tmp_path / "outputs.json").write_text(json.dumps(doc))
    out, err = io.StringIO(), io.StringIO()
    code = main(["--local", str(tmp_path), "rules", "list"], out=out, err=err)
    assert (code, out.getvalue(), err.getvalue()) == (
        1,
        "",
        "error: the demo is not running (start it with make demo)\n",
    )
    code = main(["rules", "list", "--local", str(tmp_path / "gone")], out=out, err=err)
    assert code == 2
    gone = tmp_path / "gone" / "outputs.json"
    assert err.getvalue().splitlines()[-1] == (
        f"error: the demo is not running (start it with make demo): {gone} not found"
    )


def test_a_conflicting_write_exits_3_and_changes_nothing(stack: Stack) -> None:
    stack.gpulse("rules", "set", "imbalance", "min_gap=30", "--who", "alice")
    stack.gpulse("rules", "set", "imbalance", "min_gap=35", "--who", "bob")
    r = stack.gpulse("rules", "set", "imbalance", "min_gap=40", "--if-version", "1", "--who", "carol")
    assert r.code == 3
    assert r.err == (
        "conflict: rule imbalance changed since it was read (now version 2, by bob): "
        "read it again and retry\n"
    )
    item = stack.config.get("rule", "imbalance")
    assert item is not None and (item.version, item.doc) == (2, {"params": {"min_gap": 35}})
    r = stack.gpulse("teams", "set", "ml", "--user", "bob", "--if-version", "0", "--who", "a")
    assert r.code == 0  # 0: only if it does not exist yet
    r = stack.gpulse("teams", "set", "ml", "--user", "eve", "--if-version", "0", "--who", "a")
    assert r.code == 3 and stack.doc("team", "ml") == {"users": ["bob"]}


def test_a_bad_parameter_exits_2_and_writes_nothing(stack: Stack) -> None:
    r = stack.gpulse("rules", "set", "imbalance", "min_gap=500", "--who", "alice")
    assert (r.code, r.out) == (2, "")
    assert r.err == "error: imbalance: min_gap must be a number in [0, 100], not 500\n"
    r = stack.gpulse("rules", "flag", "imbalance", "--file", "/nonexistent.json", "--who", "alice")
    assert r.code == 2 and r.err.startswith("error: cannot read /nonexistent.json")
    assert stack.scan("ConfigTable") == []


def test_dry_run_writes_nothing(stack: Stack) -> None:
    r = stack.gpulse("rules", "target", "idle_held", "--team", "ml", "--dry-run", "--who", "alice")
    assert r.code == 0
    assert r.lines[0] == "rule idle_held: would write:"
    assert r.lines[-1] == "dry run: nothing written"
    assert "--- rule/idle_held (none)" in r.lines and "+++ rule/idle_held (new)" in r.lines
    assert stack.scan("ConfigTable") == []


def test_silence_add_list_expire(stack: Stack) -> None:
    r = stack.gpulse("silence", "add", "--match", 'cluster="c1"', "--match", "rule=~imba.*", "--for", "2h",
                     "--comment", "rebuilding", "--who", "alice")  # fmt: skip
    assert r.code == 0
    sid = r.lines[-1]
    assert stack.doc("silence", sid) == {
        "matchers": ['cluster="c1"', 'rule=~"imba.*"'],
        "starts_at": T0,
        "ends_at": T0 + 7200,
        "created_by": "alice",
        "comment": "rebuilding",
    }
    r = stack.gpulse("silence", "list")
    assert r.lines == [
        "ID        STATE   STARTS                ENDS                  "
        "BY     MATCHERS                     COMMENT",
        f"{sid}  active  2025-11-22T10:00:00Z  2025-11-22T12:00:00Z  "
        'alice  cluster="c1" rule=~"imba.*"  rebuilding',
    ]
    stack.now = T0 + 600
    r = stack.gpulse("silence", "expire", sid, "--who", "bob")
    assert r.code == 0 and r.lines[-1] == f"silence {sid}: version 2 written by bob"
    assert stack.doc("silence", sid)["ends_at"] == T0 + 600
    assert stack.gpulse("silence", "list").lines == [
        "no active or future silences (--all shows expired ones)"
    ]
    listed = json.loads(stack.gpulse("silence", "list", "--all", "--json").out)
    assert [(s["id"], s["state"], s["ends_at"]) for s in listed] == [(sid, "expired", T0 + 600)]
    r = stack.gpulse("silence", "expire", sid, "--who", "bob")
    assert (r.code, r.err) == (2, f"error: silence {sid} already ended at 2025-11-22T10:10:00Z\n")


def test_a_future_silence_is_withdrawn_when_expired(stack: Stack) -> None:
    sid = stack.gpulse("silence", "add", "--match", "node=n1", "--start", "2025-11-22T12:00:00Z",
                       "--until", "2025-11-22T13:00:00Z", "--who", "alice").lines[-1]  # fmt: skip
    assert json.loads(stack.gpulse("silence", "list", "--json").out)[0]["state"] == "future"
    r = stack.gpulse("silence", "expire", sid, "--who", "alice")
    assert r.code == 0 and stack.config.get("silence", sid) is None
    assert r.lines[-1] == f"silence {sid}: deleted (was version 1) by alice"


def test_a_silence_expired_the_moment_it_starts_is_withdrawn(stack: Stack) -> None:
    sid = stack.gpulse("silence", "add", "--match", "node=n1", "--for", "1h", "--who", "alice").lines[-1]
    # same clock as its start: ends_at = starts_at would be refused, so it is withdrawn instead
    r = stack.gpulse("silence", "expire", sid, "--who", "alice")
    assert r.code == 0 and stack.config.get("silence", sid) is None


def test_routes_set_list_show_delete(stack: Stack) -> None:
    r = stack.gpulse("routes", "set", "ml", "--match", "team=ml",
                     "--channel", "slack:/gpulse/test/webhooks/ml",
                     "--channel", "jandi:/gpulse/test/webhooks/ml-jandi", "--group-by", "cluster,rule,node",
                     "--group-wait", "10s", "--repeat-interval", "2h", "--no-resolved", "--order", "10",
                     "--continue", "--mention-user", "bob=<@U1>", "--mention-team", "ml=<!subteam^S1>",
                     "--who", "alice")  # fmt: skip
    assert r.code == 0, r.err
    assert stack.doc("route", "ml") == {
        "matchers": ['team="ml"'],
        "channels": [
            {"kind": "slack", "secret": "/gpulse/test/webhooks/ml"},
            {"kind": "jandi", "secret": "/gpulse/test/webhooks/ml-jandi"},
        ],
        "group_by": ["cluster", "rule", "node"],
        "group_wait_s": 10,
        "repeat_interval_s": 7200,
        "send_resolved": False,
        "order": 10,
        "continue": True,
        "mentions": {"users": {"bob": "<@U1>"}, "teams": {"ml": "<!subteam^S1>"}},
    }
    # options given replace their field; the others stay
    assert (
        stack.gpulse("routes", "set", "ml", "--resolved", "--mention-user", "eve=<@U2>", "--who", "a").code
        == 0
    )
    doc = stack.doc("route", "ml")
    assert (doc["send_resolved"], doc["mentions"]) == (
        True,
        {"users": {"eve": "<@U2>"}, "teams": {"ml": "<!subteam^S1>"}},
    )

    r = stack.gpulse("routes", "list")
    assert r.lines[1].split() == [
        "ml",
        "10",
        'team="ml"',
        "slack:/gpulse/test/webhooks/ml,",
        "jandi:/gpulse/test/webhooks/ml-jandi",
        "cluster,rule,node",
        "10s/5m/2h",
        "continue",
        "2",
    ]
    assert json.loads(stack.gpulse("routes", "show", "ml", "--json").out)["version"] == 2

    r = stack.gpulse("routes", "set", "default", "--match", "cluster=c1",
                     "--channel", "slack:/gpulse/t/webhooks/a", "--who", "a")  # fmt: skip
    assert (r.code, r.err) == (2, "error: route default takes what no other route took: it has no matchers\n")

    stack.now += 1  # audit entries sort by their time
    r = stack.gpulse("routes", "delete", "ml", "--who", "alice")
    assert r.code == 0 and stack.config.get("route", "ml") is None
    assert [(a["action"], a["version"]) for a in stack.config.audit(1)] == [("delete", 3)]
    assert stack.gpulse("routes", "delete", "ml", "--who", "alice").code == 2


def test_routes_set_with_a_url_is_refused(stack: Stack) -> None:
    r = stack.gpulse("routes", "set", "ml", "--channel", URL, "--who", "alice")
    assert r.code == 2
    assert "aws ssm put-parameter --type SecureString" in r.err
    assert "SECRET" not in r.out + r.err
    assert stack.scan("ConfigTable") == []


def test_teams_and_config_problems_and_audit(stack: Stack) -> None:
    assert (
        stack.gpulse(
            "teams", "set", "ml", "--user", "bob", "--user", "eve", "--node-group", "g1", "--who", "a"
        ).code
        == 0
    )
    assert stack.gpulse("teams", "list").lines == [
        "TEAM  USERS    NODE_GROUPS  VERSION",
        "ml    bob,eve  g1           1",
    ]
    assert stack.gpulse("config", "problems").lines == ["no problems: every config item is valid"]
    # a bad item written around the CLI: reported, not fatal
    boto3.client("dynamodb").put_item(
        TableName=stack.deployment.tables["ConfigTable"],
        Item={
            "pk": {"S": "rule"},
            "sk": {"S": "imbalance"},
            "doc": {"S": json.dumps({"params": {"min_gap": -1}})},
            "version": {"N": "7"},
            "updated_by": {"S": "mallory"},
        },
    )
    problems = json.loads(stack.gpulse("config", "problems", "--json").out)
    assert problems == [
        {
            "kind": "rule",
            "name": "imbalance",
            "version": 7,
            "updated_by": "mallory",
            "reason": "rule imbalance: imbalance: min_gap must be a number in [0, 100], not -1",
        }
    ]
    row = next(r for r in json.loads(stack.gpulse("rules", "list", "--json").out) if r["rule"] == "imbalance")
    assert row["enabled"] == "rejected"
    stack.now += 1
    assert stack.gpulse("teams", "delete", "ml", "--who", "a").code == 0
    r = stack.gpulse("config", "audit", "--limit", "1")
    assert r.lines[1].split()[1:] == ["a", "delete", "team", "ml", "2"]


def analyzer(stack: Stack, queue: FindingsQueue | None = None) -> Analyzer:
    ddb = boto3.client("dynamodb")
    t = stack.deployment.tables
    config = LiveConfig(DynamoDBStore(ConfigStore(t["ConfigTable"], client=ddb), max_age=0))
    queue = queue or FindingsQueue(
        stack.deployment.queues["FindingsQueue"]["url"], client=boto3.client("sqs")
    )
    return Analyzer(
        SeriesStore(t["SeriesTable"], client=ddb),
        AlertRecords(t["StateTable"], client=ddb),
        queue,
        config,
        clock=lambda: stack.now,
    )


def queued(stack: Stack) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.deployment.queues["FindingsQueue"]["url"],
        AttributeNames=["ApproximateNumberOfMessages"],
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def unchanged(stack: Stack, run: Callable[[], Result]) -> Result:
    """Run a dry run and check that it wrote nothing (state table, queue)."""
    before, messages = stack.scan("StateTable"), queued(stack)
    result = run()
    assert (stack.scan("StateTable"), queued(stack)) == (before, messages)
    return result


HELD_DOWN = (
    "    firing since 2025-11-22T10:01:30Z; its condition is gone: held down (keep_firing_for_s 180) "
    "until 2025-11-22T10:06:55Z"
)


def test_dry_run_shows_what_would_fire_and_where_it_would_go(stack: Stack) -> None:
    store = SeriesStore(stack.deployment.tables["SeriesTable"], client=boto3.client("dynamodb"))
    ship(store, T0, 90, faulty=False)  # 8 nodes; from T0+90 node-03 and node-06 idle, bob holds node-05/3
    ship(store, T0 + 90, 150, faulty=True)
    for cmd in (
        ("rules", "set", "imbalance", "for_s=1m"),
        ("rules", "set", "idle_held", "for_s=5m"),
        ("teams", "set", "ml", "--user", "bob"),
        ("routes", "set", "default", "--channel", "slack:/gpulse/test/webhooks/ops"),
        ("routes", "set", "ml", "--match", "team=ml", "--channel", "slack:/gpulse/test/webhooks/ml",
         "--mention-user", "bob=<@U1>"),
    ):  # fmt: skip
        assert stack.gpulse(*cmd, "--who", "alice").code == 0
    stack.now = T0 + 245

    r = unchanged(stack, lambda: stack.gpulse("dry-run"))
    assert r.code == 0, r.err
    header = [
        "dry run at 2025-11-22T10:04:05Z: nothing is written or published",
        "cluster c1: 8 nodes, window 2025-11-22T09:53:55Z to 2025-11-22T10:03:55Z",
    ]
    assert r.lines[:3] == [*header, "  imbalance [warning] c1 nodes node-03,node-06"]
    assert r.lines[3].startswith(
        "    2 of 8 nodes in c1 at 1 % GPU utilisation while their peers run at 90 %"
    )
    assert r.lines[4:8] == [
        "    would fire at this run (held 2m25s of 1m)",
        "    not silenced",
        "    routes: default → slack:/gpulse/test/webhooks/ops",
        "  idle_held [warning] c1 nodes node-05 gpus node-05/3",
    ]
    assert r.lines[8].startswith("    node-05 GPU 3 held by bob")
    assert r.lines[9:] == [
        "    new: would go pending; fires after 5m, at 2025-11-22T10:06:30Z",
        "    not silenced",
        "    routes: ml → slack:/gpulse/test/webhooks/ml (mentions <@U1>)",
    ]

    sid = stack.gpulse(
        "silence", "add", "--match", 'rule="imbalance"', "--for", "1h", "--who", "carol"
    ).lines[-1]
    r = unchanged(stack, lambda: stack.gpulse("dry-run", "--cluster", "c1"))
    assert r.lines[5] == f"    silenced by {sid} (carol, until 2025-11-22T11:04:05Z)"

    # analyze runs for real: imbalance fires, idle_held goes pending
    a = analyzer(stack)
    a.run_cluster("c1", a.clusters(stack.now)["c1"], a.config.params(), stack.now)
    r = unchanged(stack, lambda: stack.gpulse("dry-run"))
    assert r.lines[4] == "    firing since 2025-11-22T10:01:30Z"
    assert r.lines[9] == "    pending: held 2m25s of 5m, fires at 2025-11-22T10:06:30Z"

    ship(store, T0 + 240, 60, faulty=False)  # recovery
    stack.now = T0 + 305
    r = unchanged(stack, lambda: stack.gpulse("dry-run"))
    assert r.lines == [
        "dry run at 2025-11-22T10:05:05Z: nothing is written or published",
        "cluster c1: 8 nodes, window 2025-11-22T09:54:55Z to 2025-11-22T10:04:55Z",
        "  imbalance [warning] c1 nodes node-03,node-06",
        r.lines[3],  # the summary it was announced with
        # its condition is gone for less than its hold-down: not resolved yet
        HELD_DOWN,
        f"    silenced by {sid} (carol, until 2025-11-22T11:04:05Z)",
        "    routes: default → slack:/gpulse/test/webhooks/ops",
    ]
    report = json.loads(stack.gpulse("dry-run", "--json").out)
    assert [(x["rule"], x["fate"], x["silenced_by"]["id"]) for x in report["clusters"][0]["alerts"]] == [
        ("imbalance", HELD_DOWN.strip(), sid)
    ]
    # without a hold-down it would resolve now
    assert stack.gpulse("rules", "set", "imbalance", "keep_firing_for_s=0", "--who", "carol").code == 0
    r = unchanged(stack, lambda: stack.gpulse("dry-run"))
    assert r.lines[4] == "    would resolve (firing since 2025-11-22T10:01:30Z)"
    assert (
        stack.gpulse("dry-run", "--cluster", "c9").lines[1]
        == "cluster c9: no node has reported in the last week"
    )


def test_dry_run_follows_the_rule_switches(stack: Stack) -> None:
    store = SeriesStore(stack.deployment.tables["SeriesTable"], client=boto3.client("dynamodb"))
    ship(store, T0, 90, faulty=False)
    ship(store, T0 + 90, 150, faulty=True)
    stack.now = T0 + 245

    def rules_seen() -> list[str]:
        lines = stack.gpulse("dry-run").lines
        return [line.split()[0] for line in lines if line.startswith("  ") and not line.startswith("    ")]

    assert rules_seen() == ["imbalance", "idle_held"]
    stack.gpulse("rules", "disable", "imbalance", "--who", "a")
    assert rules_seen() == ["idle_held"]
    stack.gpulse("rules", "target", "imbalance", "--cluster", "c2", "--who", "a")
    assert rules_seen() == ["idle_held"]
    stack.gpulse("rules", "target", "imbalance", "--cluster", "c1", "--who", "a")
    assert rules_seen() == ["imbalance", "idle_held"]
    stack.gpulse("rules", "target", "idle_held", "--team", "ml", "--mute", "--who", "a")
    stack.gpulse("teams", "set", "ml", "--user", "bob", "--who", "a")
    assert rules_seen() == ["imbalance"]


def test_a_url_written_around_the_cli_is_never_printed(stack: Stack) -> None:
    boto3.client("dynamodb").put_item(
        TableName=stack.deployment.tables["ConfigTable"],
        Item={
            "pk": {"S": "route"},
            "sk": {"S": "ml"},
            "doc": {"S": json.dumps({"channels": [{"kind": "slack", "secret": URL}]})},
            "version": {"N": "1"},
            "updated_by": {"S": "mallory"},
        },
    )
    shown = [
        stack.gpulse("routes", "show", "ml"),
        stack.gpulse("routes", "show", "ml", "--json"),
        stack.gpulse("routes", "list"),
        stack.gpulse("routes", "list", "--json"),
        stack.gpulse("config", "problems"),
        stack.gpulse("routes", "set", "ml", "--channel", "slack:/gpulse/test/webhooks/ml", "--who", "alice"),
        stack.gpulse("config", "audit", "--json"),
    ]
    assert [r.code for r in shown] == [0] * 7
    assert all("SECRET" not in r.out + r.err for r in shown)
    assert '"secret": "<webhook URL withheld: store it in SSM and name the parameter>"' in shown[0].out
    assert stack.doc("route", "ml") == {"channels": [{"kind": "slack", "secret": "/gpulse/test/webhooks/ml"}]}


def test_the_demo_reports_rule_changes_made_during_it(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "carol")
    stack.config.put("rule", "imbalance", {"params": {"for_s": 30}}, who="demo", expected_version=None)
    stack.now += 1
    assert stack.gpulse("rules", "disable", "imbalance").code == 0
    stack.now += 1
    assert stack.gpulse("silences", "add", "--match", 'node="node-05"', "--for", "1h").code == 0
    # the demo's own writes are not news; the operator's are, oldest first
    assert operator_changes(stack.config) == [
        f"carol@{socket.gethostname()} put rule imbalance",
        f"carol@{socket.gethostname()} put silence {stack.config.items('silence')[0].name}",
    ]
