"""The exact Slack and Jandi payloads of notifications: mentions on a group of one, groups of
several, a long group summed up within Slack's limits, repeats, and handles that try to
inject markup."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gpulse.errors import InvalidInput
from gpulse.finding import Evidence, EvidenceRow, Finding, with_state
from gpulse.notification import Notification, single
from gpulse.notify import evidence as ev
from gpulse.notify import jandi, slack
from tests.unit.test_notify_render import IDLE_SUMMARY, SINCE, header, idle_held, imbalance, md, section

GROUP = {"cluster": "a100-prod", "rule": "idle_held"}


def held(
    fingerprint: str, node: str, index: int, user: str, minutes: int, severity: str = "warning"
) -> Finding:
    """An idle-but-held GPU, firing for `minutes`, without evidence."""
    return dataclasses.replace(
        idle_held(),
        fingerprint=fingerprint,
        severity=severity,  # type: ignore[arg-type]
        nodes=[node],
        gpus=[f"{node}/{index}"],
        users=[user],
        containers=[],
        at=SINCE + minutes * 60,
        summary=f"{node}/{index} held by {user} for {minutes}m at 0% utilisation",
        action=f"Ask {user} to release {node}/{index}.",
        evidence=None,
    )


def group(**kw: Any) -> Notification:
    return Notification(id="grp-1", route="ml-team", group=GROUP, **kw)


def texts(payload: dict[str, Any]) -> list[str]:
    """Every text a Slack payload shows: header, sections, fields, context elements."""
    out = []
    for b in payload["blocks"]:
        if "text" in b:
            out.append(b["text"]["text"])
        out.extend(f["text"] for f in b.get("fields", []))
        out.extend(e["text"] for e in b.get("elements", []))
    return out


# ---- a group of one, with mentions -------------------------------------------------------------


def test_slack_group_of_one_with_mentions_adds_one_cc_line_and_pings() -> None:
    n = single(idle_held(), mentions=["<@U123ABC>", "<!subteam^S1TEAM>"])
    payload = slack.render(n)
    alone = slack.render(single(idle_held()))
    assert payload == {
        "text": f"🟠 [FIRING] GPU held but idle — {IDLE_SUMMARY} · cc <@U123ABC> <!subteam^S1TEAM>",
        "blocks": [*alone["blocks"], section("cc <@U123ABC> <!subteam^S1TEAM>")],
    }
    assert payload == slack.render_finding(idle_held(), ["<@U123ABC>", "<!subteam^S1TEAM>"])


def test_jandi_group_of_one_with_mentions_names_them_in_the_body() -> None:
    payload = jandi.render(single(idle_held(), mentions=["@bob", "@ml-oncall"]))
    alone = jandi.render(single(idle_held()))
    assert payload == {
        "body": f"[FIRING] GPU held but idle — {IDLE_SUMMARY}\ncc @bob @ml-oncall",
        "connectColor": "#ECB22E",
        "connectInfo": alone["connectInfo"],
    }


def test_a_group_of_one_resolved_renders_as_the_resolved_finding() -> None:
    resolved = with_state(idle_held(), "resolved", SINCE + 2705)
    n = single(resolved)
    assert (n.firing, n.resolved) == ([], [resolved])
    assert slack.render(n) == slack.render_finding(resolved)
    assert jandi.render(n) == jandi.render_finding(resolved)


# ---- handles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handle", "shown"),
    [
        ("<@U123>", "<@U123>"),
        ("<@W0ABC9>", "<@W0ABC9>"),
        ("<!subteam^S0123>", "<!subteam^S0123>"),
        ("<!here>", "<!here>"),
        ("<!channel>", "<!channel>"),
        ("<http://evil|x>", "&lt;http://evil|x&gt;"),
        ("<@U123|bob>", "&lt;@U123|bob&gt;"),
        ("<@u123>", "&lt;@u123&gt;"),
        ("<!everyone>", "&lt;!everyone&gt;"),
        ("<!subteam^S1|@team>", "&lt;!subteam^S1|@team&gt;"),
        ("<@U1><http://evil|x>", "&lt;@U1&gt;&lt;http://evil|x&gt;"),
        ("@alice & co", "@alice &amp; co"),
    ],
)
def test_slack_inserts_only_strict_mentions_raw(handle: str, shown: str) -> None:
    assert slack.mention(handle) == shown


def test_an_injected_handle_is_escaped_in_every_place_it_appears() -> None:
    payload = slack.render(single(idle_held(), mentions=["<http://evil|x>", "<@U1>", " "]))
    assert payload["blocks"][-1] == section("cc &lt;http://evil|x&gt; <@U1>")
    assert payload["text"].endswith(" · cc &lt;http://evil|x&gt; <@U1>")
    assert "<http" not in str(payload)


def test_no_mentions_no_cc_line() -> None:
    assert slack.cc_line([]) == "" and slack.cc_line(["", "  "]) == ""
    assert jandi.cc_line([]) == ""
    assert jandi.cc_line([" @a ", "", "@b"]) == "cc @a @b"


# ---- a group of several ------------------------------------------------------------------------


def three_firing_one_resolved() -> Notification:
    carol = held("1b1c2d3e4f5a6b7c8d9e", "node-02", 3, "carol", 130, severity="critical")
    dave = held("2b1c2d3e4f5a6b7c8d9e", "node-07", 1, "dave", 50)
    erin = with_state(held("3b1c2d3e4f5a6b7c8d9e", "node-01", 0, "erin", 60), "resolved", SINCE + 3600)
    bob = idle_held()  # warning, new, with evidence
    return group(firing=[bob, carol, dave], resolved=[erin], new=[bob.fingerprint], mentions=["<@U123>"])


BOB_LINE = f"🟠 *NEW* {IDLE_SUMMARY}\nnode-05 GPU 7 · user bob · for 45m 5s"


def test_slack_three_firing_one_resolved() -> None:
    assert slack.render(three_firing_one_resolved()) == {
        "text": "🔴 3 firing · 1 resolved — GPU held but idle · cc <@U123>",
        "blocks": [
            header("🔴 3 firing · 1 resolved — GPU held but idle"),
            {"type": "context", "elements": [md("cluster a100-prod · rule idle_held")]},
            {
                "type": "section",
                "block_id": "alert-1",
                "text": md(
                    "🔴 node-02/3 held by carol for 130m at 0% utilisation\n"
                    "node-02 GPU 3 · user carol · for 2h 10m"
                ),
            },
            {"type": "section", "block_id": "alert-2", "text": md(BOB_LINE)},
            {
                "type": "section",
                "block_id": "alert-3",
                "text": md(
                    "🟠 node-07/1 held by dave for 50m at 0% utilisation\nnode-07 GPU 1 · user dave · for 50m"
                ),
            },
            {
                "type": "section",
                "block_id": "alert-4",
                "text": md(
                    "✅ *resolved* node-01/0 held by erin for 60m at 0% utilisation\n"
                    "node-01 GPU 0 · user erin · was firing for 1h"
                ),
            },
            section("cc <@U123>"),
        ],
    }


def grown() -> Notification:
    """Bob's alert, told before, now with node-06 and node-08 joined; dave's is new."""
    bob = dataclasses.replace(idle_held(), joined=["node-06", "node-08"], newly_joined=["node-06", "node-08"])
    dave = held("2b1c2d3e4f5a6b7c8d9e", "node-07", 1, "dave", 50)
    return group(firing=[bob, dave], new=[dave.fingerprint], joined=[bob.fingerprint])


def test_slack_a_join_is_shown_as_the_nodes_that_joined_not_as_new() -> None:
    blocks = slack.render(grown())["blocks"]
    assert [b["text"]["text"] for b in blocks if b.get("block_id", "").startswith("alert-")] == [
        "🟠 *NEW* node-07/1 held by dave for 50m at 0% utilisation\nnode-07 GPU 1 · user dave · for 50m",
        f"🟠 *+ node-06, node-08 JOINED* {IDLE_SUMMARY}\nnode-05 GPU 7 · user bob · for 45m 5s",
    ]


def test_jandi_a_join_is_shown_as_the_nodes_that_joined_not_as_new() -> None:
    assert [i["title"] for i in jandi.render(grown())["connectInfo"]] == [
        "🟠 node-07 GPU 1 · NEW",
        "🟠 node-05 GPU 7 · + node-06, node-08 JOINED",
    ]


def test_a_notification_written_before_joins_were_marked_reads_back() -> None:
    n = grown()
    doc = n.to_json().replace(',"joined":["' + n.firing[0].fingerprint + '"]', "")
    assert '"joined":["' + n.firing[0].fingerprint not in doc
    assert Notification.from_json(doc) == dataclasses.replace(n, joined=[])


def test_jandi_three_firing_one_resolved() -> None:
    assert jandi.render(three_firing_one_resolved()) == {
        "body": "3 firing · 1 resolved — GPU held but idle\ncluster a100-prod · rule idle_held\ncc <@U123>",
        "connectColor": "#E01E5A",
        "connectInfo": [
            {
                "title": "🔴 node-02 GPU 3",
                "description": "node-02/3 held by carol for 130m at 0% utilisation\nuser carol · for 2h 10m",
            },
            {
                "title": "🟠 node-05 GPU 7 · NEW",
                "description": f"{IDLE_SUMMARY}\nuser bob · for 45m 5s",
            },
            {
                "title": "🟠 node-07 GPU 1",
                "description": "node-07/1 held by dave for 50m at 0% utilisation\nuser dave · for 50m",
            },
            {
                "title": "✅ node-01 GPU 0 · resolved",
                "description": (
                    "node-01/0 held by erin for 60m at 0% utilisation\nuser erin · was firing for 1h"
                ),
            },
        ],
    }


def test_a_group_shows_the_first_firing_evidence_and_a_shared_action() -> None:
    bob = idle_held()
    other = dataclasses.replace(
        held("4b1c2d3e4f5a6b7c8d9e", "node-05", 6, "bob", 40), action=bob.action, evidence=bob.evidence
    )
    payload = slack.render(group(firing=[other, bob], new=[bob.fingerprint]))
    assert payload["blocks"][0] == header("🟠 2 firing — GPU held but idle")
    assert [b.get("block_id") for b in payload["blocks"]] == [None, None, "alert-1", "alert-2", None, None]
    assert payload["blocks"][2]["text"]["text"] == BOB_LINE  # new before not new
    assert payload["blocks"][4] == section(
        "*GPU utilisation, last 45 min*\n```\n"
        "node-05/7                            0%  ·▃▂▁▁▁▁▁  ◀\nidle threshold  █                    5%\n```"
    )
    assert payload["blocks"][5] == section(f"*What to try*\n{bob.action}")
    assert jandi.render(group(firing=[other, bob]))["connectInfo"][-1] == {
        "title": "Action",
        "description": bob.action,
    }


def test_a_group_leaves_out_evidence_that_does_not_fit() -> None:
    f = imbalance()
    assert f.evidence is not None
    rows = [
        EvidenceRow(f"dgx-h100-{i // 8:02d}/gpu{i % 8}", [5.0] * 30, 5.0, True) for i in range(64)
    ]  # 64 flagged rows: the whole table needs more than one section
    big = dataclasses.replace(f, evidence=dataclasses.replace(f.evidence, rows=rows))
    other = dataclasses.replace(imbalance(), fingerprint="ffffffffffffffffffff", evidence=None)
    payload = slack.render(
        Notification(id="x", route="r", group={"cluster": "a100-prod"}, firing=[big, other])
    )
    assert not any("```" in t for t in texts(payload))
    assert [b["type"] for b in payload["blocks"]] == ["header", "context", "section", "section", "section"]


def test_a_group_of_several_titles_names_each_alert_title() -> None:
    n = Notification(
        id="x",
        route="default",
        group={"cluster": "a100-prod"},
        firing=[imbalance(), idle_held()],
    )
    payload = slack.render(n)
    assert payload["blocks"][0] == header("🔴 2 firing — Cross-node imbalance, GPU held but idle")
    assert payload["blocks"][1] == {"type": "context", "elements": [md("cluster a100-prod")]}
    assert payload["blocks"][2]["text"]["text"].startswith("🔴 Cross-node imbalance: 2 of 8 nodes")
    assert payload["blocks"][3]["text"]["text"].startswith("🟠 GPU held but idle: node-05/7 held by bob")
    assert jandi.render(n)["connectInfo"][0]["title"] == "🔴 node-03, node-06"


def test_only_resolved_is_green() -> None:
    a = with_state(held("1b1c2d3e4f5a6b7c8d9e", "node-02", 3, "carol", 130), "resolved", SINCE + 7800)
    b = with_state(held("2b1c2d3e4f5a6b7c8d9e", "node-07", 1, "dave", 50), "resolved", SINCE + 3000)
    n = group(resolved=[b, a])
    payload = slack.render(n)
    assert payload["text"] == "✅ 2 resolved — GPU held but idle"
    assert payload["blocks"][2]["text"]["text"].startswith("✅ *resolved* node-02/3")  # latest resolved first
    assert jandi.render(n)["connectColor"] == "#2EB67D"
    assert jandi.render(n)["body"] == "2 resolved — GPU held but idle\ncluster a100-prod · rule idle_held"


def test_an_empty_notification_is_refused() -> None:
    with pytest.raises(InvalidInput, match="grp-1 has no alerts"):
        slack.render(group())
    with pytest.raises(InvalidInput):
        jandi.render(group())


# ---- a long group ------------------------------------------------------------------------------

LONG_WORDS = "idle " * 800  # a summary far over any limit


def sixty_held() -> Notification:
    """60 idle GPUs on node-00 … node-07 (8 each); GPU i began 10·i seconds after SINCE."""
    found = []
    for i in range(60):
        node, index = f"node-{i // 8:02d}", i % 8
        f = dataclasses.replace(
            held(f"fp{i:018d}", node, index, f"user{i}", 50),
            since=SINCE + 10 * i,
            summary=f"{node}/{index} held by user{i} at 0% utilisation",
            evidence=Evidence(
                "GPU utilisation, last 45 min",
                "%",
                [EvidenceRow(f"{node}/{index}", [0.0] * 4, 0.0, True)],
                5.0,
                "idle threshold",
            ),
        )
        found.append(f)
    found[50] = dataclasses.replace(found[50], summary="node-06/2 " + LONG_WORDS)
    return group(firing=found, new=[f.fingerprint for f in found], mentions=["<@U123>"])


def test_slack_sixty_alerts_are_listed_newest_first_and_the_rest_summed_up() -> None:
    payload = slack.render(sixty_held())
    blocks = payload["blocks"]
    assert len(blocks) == 25 <= slack.MAX_BLOCKS
    assert blocks[0] == header("🟠 60 firing — GPU held but idle")
    listed = [b for b in blocks if b.get("block_id", "").startswith("alert-")]
    assert [b["block_id"] for b in listed] == [f"alert-{n}" for n in range(1, 21)]
    assert listed[0]["text"]["text"] == (
        "🟠 *NEW* node-07/3 held by user59 at 0% utilisation\nnode-07 GPU 3 · user user59 · for 40m 10s"
    )
    long_text = listed[9]["text"]["text"]  # GPU 50: its summary is cut at a word, its details kept
    first, details = long_text.split("\n")
    assert first.startswith("🟠 *NEW* node-06/2 idle idle") and first.endswith(" idle…")
    assert len(first) <= len("🟠 *NEW* ") + slack.MAX_SUMMARY_CHARS
    assert details == "node-06 GPU 2 · user user50 · for 41m 40s"
    assert blocks[22] == section(
        "…and 40 more (8 idle_held on node-04, 8 idle_held on node-03, 8 idle_held on node-02, "
        "8 idle_held on node-01, …)"
    )
    assert blocks[23] == section(
        "*GPU utilisation, last 45 min*\n```\n"
        "node-07/3                            0%  ▁▁▁▁  ◀\nidle threshold  █                    5%\n```"
    )
    assert blocks[24] == section("cc <@U123>")
    assert payload["text"] == "🟠 60 firing — GPU held but idle · cc <@U123>"


def test_slack_limits_hold_and_no_word_is_cut() -> None:
    n = sixty_held()
    long_title = "Held " + "very " * 40 + "idle GPU"
    n = dataclasses.replace(n, firing=[dataclasses.replace(f, title=long_title) for f in n.firing])
    payload = slack.render(n)
    blocks = payload["blocks"]
    assert len(blocks) <= slack.MAX_BLOCKS
    head = blocks[0]["text"]["text"]
    assert len(head) <= slack.MAX_HEADER_CHARS and head.endswith(" very…")
    for b in blocks:
        if b["type"] == "section" and "text" in b:
            assert len(b["text"]["text"]) <= slack.MAX_SECTION_CHARS
        for f in b.get("fields", []):
            assert len(f["text"]) <= slack.MAX_FIELD_CHARS
    words = set(LONG_WORDS.split()) | set(long_title.split())
    for text in texts(payload):
        for word in text.replace("\n", " ").split():
            if word.endswith("…"):  # whatever was cut ends in a whole word
                assert word[:-1] in words or word == "…", word


def test_jandi_sixty_alerts_list_ten_then_sum_up() -> None:
    info = jandi.render(sixty_held())["connectInfo"]
    assert len(info) == jandi.MAX_LISTED + 1
    assert info[0] == {
        "title": "🟠 node-07 GPU 3 · NEW",
        "description": "node-07/3 held by user59 at 0% utilisation\nuser user59 · for 40m 10s",
    }
    assert info[-1] == {
        "title": "…and 50 more",
        "description": "8 idle_held on node-05, 8 idle_held on node-04, 8 idle_held on node-03, "
        "8 idle_held on node-02, …",
    }
    first, details = info[9]["description"].split("\n")
    assert first.endswith(" idle…") and len(first) <= jandi.MAX_SUMMARY_CHARS
    assert details == "user user50 · for 41m 40s"
    assert all(len(i["description"]) <= jandi.MAX_DESCRIPTION_CHARS for i in info)


def test_left_out_parts_count_by_rule_state_and_place() -> None:
    node4 = held("a", "node-04", 1, "x", 10)
    wide = dataclasses.replace(imbalance(), fingerprint="b")
    gone = with_state(held("c", "node-07", 2, "y", 10), "resolved", SINCE + 700)
    parts = ev.left_out_parts([node4, wide, node4, gone, wide, node4])
    assert parts == ["3 idle_held on node-04", "2 imbalance in a100-prod", "1 resolved idle_held on node-07"]
    assert ev.left_out_parts([node4, wide, gone], most=2) == [
        "1 idle_held on node-04",
        "1 imbalance in a100-prod",
        "…",
    ]
    assert ev.left_out_line([node4, wide]) == "…and 2 more (1 idle_held on node-04, 1 imbalance in a100-prod)"


# ---- repeats -----------------------------------------------------------------------------------


def test_a_repeated_group_says_still_firing() -> None:
    carol = held("1b1c2d3e4f5a6b7c8d9e", "node-02", 3, "carol", 250)
    dave = held("2b1c2d3e4f5a6b7c8d9e", "node-07", 1, "dave", 245)
    n = group(firing=[carol, dave], repeat=True)
    assert slack.render(n) == {
        "text": "🟠 2 still firing — GPU held but idle",
        "blocks": [
            header("🟠 2 still firing — GPU held but idle"),
            {"type": "context", "elements": [md("cluster a100-prod · rule idle_held")]},
            {
                "type": "section",
                "block_id": "alert-1",
                "text": md(
                    "🟠 node-02/3 held by carol for 250m at 0% utilisation\n"
                    "node-02 GPU 3 · user carol · for 4h 10m"
                ),
            },
            {
                "type": "section",
                "block_id": "alert-2",
                "text": md(
                    "🟠 node-07/1 held by dave for 245m at 0% utilisation\n"
                    "node-07 GPU 1 · user dave · for 4h 5m"
                ),
            },
        ],
    }
    assert jandi.render(n)["body"] == "2 still firing — GPU held but idle\ncluster a100-prod · rule idle_held"


def test_a_repeated_single_alert_says_still_firing() -> None:
    n = dataclasses.replace(single(idle_held()), new=[], repeat=True)
    payload = slack.render(n)
    assert payload["text"] == f"🟠 [STILL FIRING] GPU held but idle — {IDLE_SUMMARY}"
    assert payload["blocks"][0] == header("🟠 Still firing: GPU held but idle")
    assert payload["blocks"][1:] == slack.render(single(idle_held()))["blocks"][1:]
    assert jandi.render(n)["body"] == f"[STILL FIRING] GPU held but idle — {IDLE_SUMMARY}"


# ---- truncate ----------------------------------------------------------------------------------


def test_truncate_cuts_at_any_whitespace_and_keeps_a_word_that_ends_at_the_limit() -> None:
    assert ev.truncate("*What to try*\nreallylongword", 16) == "*What to try*…"  # at the line break
    assert ev.truncate("one two three", 8) == "one two…"  # "one two" ends right at the cut
    assert ev.truncate("one two three", 9) == "one two…"
    assert ev.truncate("one\ttwo three", 9) == "one\ttwo…"
    assert ev.truncate("abcdefghijkl", 5) == "abcd…"  # one long word: a cut is unavoidable
    assert ev.truncate("x" * 10, 10) == "x" * 10


def test_a_listed_resolve_gives_its_figures_now_when_analyze_drew_the_recovery() -> None:
    from tests.unit.test_notify_render import RECOVERED_NOW, recovered_imbalance

    firing = held("fp1", "node-01", 0, "erin", 60)
    back = recovered_imbalance()
    now = RECOVERED_NOW.split(";")[0]  # the list's one line leaves out when the fault last held
    stale = dataclasses.replace(
        back, fingerprint="fp-stale", evidence=imbalance().evidence, ended=SINCE + 100
    )
    n = group(firing=[firing], resolved=[back, stale])
    assert now == "recovered: node-03 now at 80%, node-06 at 80% (group median 81%)"
    assert ev.short_details(back) == f"node-03, node-06 · user alice · was firing for 2m 10s · {now}"
    # no figure where analyze had no data to draw the recovery with
    assert ev.short_details(stale) == "node-03, node-06 · user alice · was firing for 2m 10s"
    listed = [t for t in texts(slack.render(n)) if t.startswith("✅ *resolved*")]
    assert listed[0].endswith(f"\nnode-03, node-06 · user alice · was firing for 2m 10s · {now}")
    info = jandi.render(n)["connectInfo"]
    assert info[1]["description"].endswith(f"\nuser alice · was firing for 2m 10s · {now}")
