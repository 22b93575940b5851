"""Inhibit rules as data, and incidents: one fault told as one message (root cause + symptoms)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpulse.alerting import groups as g
from gpulse.alerting.incidents import ADVICE, MAX_SYMPTOMS, symptoms
from gpulse.alerting.inhibition import DEFAULT_INHIBITIONS, Inhibition, effective
from gpulse.alerting.matchers import parse_all
from gpulse.alerting.routes import ChannelRef, Route
from gpulse.alerting.state import AlertRecord, Rule, decide
from gpulse.analyze.inhibit import inhibit, labels_of
from gpulse.config.documents import InhibitConfig, parse
from gpulse.detect.base import Condition
from gpulse.errors import InvalidInput
from gpulse.finding import fingerprint

RULES = {
    "imbalance": Rule("imbalance", "Cross-node imbalance", for_s=60, keep_firing_for_s=180),
    "idle_held": Rule("idle_held", "GPU held but idle", for_s=300, keep_firing_for_s=120),
    "network": Rule("network", "Network traffic collapsed", for_s=60),
}


def imbalance(nodes: list[str], job: str | None = "slurm:42") -> Condition:
    return Condition(
        rule="imbalance",
        subject={"cluster": "c1", "node_group": None},
        since=1000,
        severity="warning",
        summary=f"{len(nodes)} of 8 nodes out of step",
        action="look at the slow nodes",
        nodes=nodes,
        job=job,
    )


def idle(node: str, gpu: int, job: str | None = "slurm:42", since: float = 1000) -> Condition:
    return Condition(
        rule="idle_held",
        subject={"cluster": "c1", "node": node, "gpu": gpu},
        since=since,
        severity="warning",
        summary=f"GPU {gpu} idle with 70 GiB held",
        action="end the notebook kernel",
        nodes=[node],
        gpus=[f"{node}/{gpu}"],
        job=job,
    )


def stalled_ranks() -> list[Condition]:
    """Two ranks of an 8-node job stall with their memory held: one imbalance, 16 idle GPUs."""
    return [imbalance(["n3", "n6"]), *(idle(n, i) for n in ("n3", "n6") for i in range(8))]


def test_two_stalled_ranks_are_one_incident_told_in_one_message() -> None:
    marked = inhibit(stalled_ranks(), cluster="c1")
    assert [c.muted_by for c in marked] == [None] + ["imbalance"] * 16
    # 400 s in: imbalance (for 60 s) fires; the idle GPUs (for 300 s) would have fired too
    decisions = decide("c1", marked, {}, RULES, now=1400)
    told = [d.record.outbox for d in decisions if d.record.outbox is not None]
    assert len(decisions) == 1 and len(told) == 1
    root = told[0]
    assert (root.rule, root.state, root.nodes) == ("imbalance", "firing", ["n3", "n6"])
    assert root.symptoms == [
        {"rule": "idle_held", "subject": f"{n}/{i}", "summary": f"GPU {i} idle with 70 GiB held"}
        for n in ("n3", "n6")
        for i in range(8)
    ]
    assert root.action == ADVICE[("imbalance", "idle_held")]
    assert "end the notebook kernel" not in root.action

    # the alert side: one group, one notification, the symptoms inside it
    route = Route("default", (ChannelRef("slack", "/t/webhooks/ops"),), group_wait_s=0)
    group = g.add(None, root, route, {"cluster": "c1", "rule": "imbalance"}, now=1400)
    n = g.plan(group, route, lambda f: False, 1400, [])
    assert n is not None
    assert ([f.fingerprint for f in n.firing], n.resolved) == ([root.fingerprint], [])
    assert len(n.firing[0].symptoms) == 16


def test_the_incident_resolves_once_with_its_symptoms() -> None:
    records: dict[str, AlertRecord] = {}
    for d in decide("c1", inhibit(stalled_ranks(), cluster="c1"), {}, RULES, now=1400):
        records[d.record.fingerprint] = replace(d.record, outbox=None)
    # the job is killed: everything ends; the hold-down runs out; one resolve, nothing else
    assert decide("c1", [], records, RULES, now=1460) == []
    [d] = decide("c1", [], records, RULES, now=1580)
    out = d.record.outbox
    assert out is not None and (out.rule, out.state, len(out.symptoms)) == ("imbalance", "resolved", 16)


def test_a_symptom_joins_the_root_of_its_job_when_no_node_is_shared() -> None:
    conds = [imbalance(["n3"]), replace(idle("n9", 0), muted_by="imbalance")]
    assert symptoms(conds) == {
        0: [{"rule": "idle_held", "subject": "n9/0", "summary": "GPU 0 idle with 70 GiB held"}]
    }
    other_job = [imbalance(["n3"]), replace(idle("n9", 0, job="slurm:7"), muted_by="imbalance")]
    assert symptoms(other_job) == {}


def test_symptoms_are_capped() -> None:
    conds = [imbalance(["n1"]), *(replace(idle("n1", i), muted_by="imbalance") for i in range(60))]
    assert len(symptoms(conds)[0]) == MAX_SYMPTOMS


def test_an_idle_gpu_outside_the_flagged_nodes_is_its_own_alert() -> None:
    marked = inhibit([imbalance(["n3"]), idle("n3", 0), idle("n4", 0)], cluster="c1")
    assert [c.muted_by for c in marked] == [None, "imbalance", None]


def test_equal_labels_other_than_node_need_a_value_on_both() -> None:
    same_job = Inhibition(
        "job", parse_all(['rule="imbalance"']), parse_all(['rule="idle_held"']), ("cluster", "job")
    )
    marked = inhibit([imbalance(["n3"]), idle("n9", 0)], [same_job], cluster="c1")
    assert [c.muted_by for c in marked] == [None, "imbalance"]
    marked = inhibit([imbalance(["n3"], job=None), idle("n9", 0, job=None)], [same_job], cluster="c1")
    assert [c.muted_by for c in marked] == [None, None]  # both without a job: not "the same job"
    marked = inhibit([imbalance(["n3"]), idle("n9", 0, job="slurm:7")], [same_job], cluster="c1")
    assert [c.muted_by for c in marked] == [None, None]


def test_a_rule_never_mutes_itself_and_matchers_select_the_target() -> None:
    everything = Inhibition("all", parse_all(['rule=~".+"']), parse_all(['rule=~".+"']), ("node",))
    a, b = idle("n1", 0), idle("n1", 1)
    assert [c.muted_by for c in inhibit([a, b], [everything], cluster="c1")] == [None, None]
    critical_only = Inhibition(
        "crit", parse_all(['rule="imbalance"']), parse_all(['severity="critical"']), ("node",)
    )
    marked = inhibit([imbalance(["n1"]), a, replace(b, severity="critical")], [critical_only], cluster="c1")
    assert [c.muted_by for c in marked] == [None, None, "imbalance"]


def test_labels_of_a_condition() -> None:
    assert labels_of(idle("n3", 2), "c1") == {
        "rule": ["idle_held"],
        "severity": ["warning"],
        "cluster": ["c1"],
        "node_group": [],
        "node": ["n3"],
        "gpu": ["n3/2"],
        "user": [],
        "team": [],
        "state": ["firing"],
        "job": ["slurm:42"],
    }


def test_the_built_in_rules_can_be_replaced_or_disabled_by_name() -> None:
    assert [i.name for i in effective({})] == [
        "gpu_imbalance_idle_held",
        "imbalance_idle_held",
        "imbalance_network",
        "silent_node",
    ]
    mine = Inhibition("mine", parse_all(['rule="a"']), parse_all(['rule="b"']))
    assert effective({"silent_node": None, "mine": mine}) == [
        DEFAULT_INHIBITIONS["gpu_imbalance_idle_held"],
        DEFAULT_INHIBITIONS["imbalance_idle_held"],
        DEFAULT_INHIBITIONS["imbalance_network"],
        mine,
    ]
    # the built-in silent node rule mutes every other rule on the silent nodes
    silent = Condition("silent_node", {"cluster": "c1", "node": "n1"}, 0, "critical", "", "", nodes=["n1"])
    marked = inhibit([silent, idle("n1", 0), imbalance(["n1", "n2"])], cluster="c1")
    assert [c.muted_by for c in marked] == [None, "silent_node", None]


def test_config_documents_are_validated_with_clear_messages() -> None:
    p = parse(
        "inhibit", "x", {"source_matchers": ['rule="a"'], "target_matchers": ['rule="b"'], "equal": ["job"]}
    )
    assert p == InhibitConfig(
        "x", Inhibition("x", parse_all(['rule="a"']), parse_all(['rule="b"']), ("job",))
    )
    assert parse("inhibit", "silent_node", {"disabled": True}) == InhibitConfig("silent_node", None)
    cases = {
        "error: inhibit x: source_matchers and target_matchers required": {},
        "inhibit x: data.equal[0] must be one of": {
            "source_matchers": ['rule="a"'],
            "target_matchers": ['rule="b"'],
            "equal": ["rack"],
        },
        "unknown label 'rack'": {"source_matchers": ['rack="a"'], "target_matchers": ['rule="b"']},
        "inhibit x: only a built-in rule can be disabled": {"disabled": True},
        "inhibit silent_node: a disabled rule has nothing else, not source_matchers": {
            "disabled": True,
            "source_matchers": ['rule="a"'],
        },
    }
    for message, doc in cases.items():
        name = "silent_node" if "silent_node" in message else "x"
        with pytest.raises(InvalidInput) as e:
            parse("inhibit", name, doc)
        assert message.removeprefix("error: ") in str(e.value), (message, str(e.value))


def test_an_inhibited_condition_never_fires_but_fingerprints_stay_apart() -> None:
    marked = inhibit(stalled_ranks(), cluster="c1")
    fps = {fingerprint(c.rule, **c.subject) for c in marked}
    assert len(fps) == 17


def test_a_job_idling_most_of_its_gpus_is_one_alert_but_no_other_idle_gpu_is_muted() -> None:
    """gpu_imbalance (alice's job computes on GPU 0 of n1 and holds 1–3 idle) mutes the idle_held
    alerts of the GPUs it holds: one message, not four. Bob's idle GPU on the same node, alice's
    notebook on another GPU of it, and alice's GPU on another node are still their own alerts."""
    job = Condition(
        "gpu_imbalance",
        {"cluster": "c1", "node": "n1", "container": "abc"},
        1000,
        "warning",
        "n1: 1 of 4 GPUs of alice's job busy",
        "use all the GPUs",
        nodes=["n1"],
        gpus=[f"n1/{i}" for i in range(4)],
        users=["alice"],
    )
    alice = [replace(idle("n1", i, job=None), users=["alice"]) for i in (1, 2, 3)]
    bob = replace(idle("n1", 5, job=None), users=["bob"])
    notebook = replace(idle("n1", 7, job=None), users=["alice"])
    elsewhere = replace(idle("n2", 1, job=None), users=["alice"])
    marked = inhibit([job, *alice, bob, notebook, elsewhere], cluster="c1")
    by = "gpu_imbalance"
    assert [c.muted_by for c in marked] == [None, by, by, by, None, None, None]
    assert [s["subject"] for s in symptoms(marked)[0]] == ["n1/1", "n1/2", "n1/3"]
