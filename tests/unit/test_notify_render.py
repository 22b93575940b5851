"""The exact Slack and Jandi payloads for the findings operators see most (each one alone: a
notification of a group of one), and the size limits."""

from __future__ import annotations

import dataclasses

from gpulse.finding import Evidence, EvidenceRow, Finding, with_state
from gpulse.notification import single
from gpulse.notify import jandi, slack
from tests.factories import eight_node_evidence

SINCE = 1714566720.0  # 2024-05-01 12:32:00 UTC
IMBALANCE_ACTION = "Look for a straggler on node-03 and node-06: py-spy dump the idle ranks, check NCCL logs."
IDLE_ACTION = "If the job is done, stop container 4d2f8a1c9b7e; otherwise check it is not waiting on input."
CONTAINER = "4d2f8a1c9b7e0a5f3c6d2e1b8a7f9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b"


def imbalance() -> Finding:
    return Finding(
        rule="imbalance",
        title="Cross-node imbalance",
        severity="critical",
        state="firing",
        fingerprint="3f9c2a7d5e1b8c4a6d0e",
        cluster="a100-prod",
        since=SINCE,
        at=SINCE + 130,
        summary="2 of 8 nodes in train-pool at 8% GPU utilisation while the group median is 81%",
        action=IMBALANCE_ACTION,
        node_group="train-pool",
        nodes=["node-03", "node-06"],
        users=["alice"],
        values={"level": 8.0, "median": 81.0},
        evidence=eight_node_evidence(),
    )


def idle_held() -> Finding:
    return Finding(
        rule="idle_held",
        title="GPU held but idle",
        severity="warning",
        state="firing",
        fingerprint="0b1c2d3e4f5a6b7c8d9e",
        cluster="a100-prod",
        since=SINCE,
        at=SINCE + 2705,
        summary="node-05/7 held by bob for 45m at 0% utilisation (38 GiB allocated)",
        action=IDLE_ACTION,
        node_group="interactive",
        nodes=["node-05"],
        gpus=["node-05/7"],
        users=["bob"],
        containers=[CONTAINER],
        values={"util_pct": 0.0, "held_s": 2705.0},
        evidence=Evidence(
            "GPU utilisation, last 45 min",
            "%",
            [EvidenceRow("node-05/7", [None, 35.0, 12.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.0, True)],
            5.0,
            "idle threshold",
        ),
    )


def recovered_imbalance() -> Finding:
    """The imbalance alert resolved, its picture re-drawn by analyze from the window that resolved
    it (`gpulse.analyze.recovery`): the fault, then the climb back; the fault last held at 12:33:40."""
    rows = [
        EvidenceRow("node-01", [80.0, 82.0, 81.0, 83.0, 80.0, 82.0], 81.0, False),
        EvidenceRow("node-02", [80.0, 81.0, None, 80.0, 82.0, 80.0], 80.5, False),
        EvidenceRow("node-03", [8.0, 7.0, 8.0, 60.0, 79.0, 80.0], 79.5, True),
        EvidenceRow("node-04", [82.0, 83.0, 82.0, 81.0, 82.0, 81.0], 81.5, False),
        EvidenceRow("node-05", [81.0, 80.0, 81.0, 82.0, 82.0, 81.0], 81.5, False),
        EvidenceRow("node-06", [9.0, 8.0, 9.0, 70.0, 80.0, 81.0], 80.5, True),
        EvidenceRow("node-07", [80.0, 82.0, 80.0, 80.0, 81.0, 80.0], 80.5, False),
        EvidenceRow("node-08", [82.0, 84.0, 82.0, 83.0, 81.0, 82.0], 81.5, False),
    ]
    now = Evidence("GPU utilisation per node, last 10 min", "%", rows, 81.0, "group median", recovery=True)
    return dataclasses.replace(
        with_state(imbalance(), "resolved", SINCE + 130), ended=SINCE + 100, evidence=now
    )


RECOVERED_TABLE = (  # both flagged nodes back near their peers; the sparkline shows the climb
    "node-01       ████████████████▎    81%  ▇▇▇▇▇▇\n"
    "node-02       ████████████████▏    80%  ▇▇·▇▇▇\n"
    "node-03       ███████████████▉     80%  ▂▁▂▅▇▇  ◀\n"
    "node-04       ████████████████▎    82%  ▇▇▇▇▇▇\n"
    "node-05       ████████████████▎    82%  ▇▇▇▇▇▇\n"
    "node-06       ████████████████▏    80%  ▂▂▂▆▇▇  ◀\n"
    "node-07       ████████████████▏    80%  ▇▇▇▇▇▇\n"
    "node-08       ████████████████▎    82%  ▇▇▇▇▇▇\n"
    "group median  ████████████████▎    81%"
)
RECOVERED_NOW = (
    "recovered: node-03 now at 80%, node-06 at 80% (group median 81%); the fault last held at 12:33:40 UTC"
)
TABLE_NOTE = " · now, after the fault (◀: the rows at fault)"
IMBALANCE_TABLE = (
    "node-01       ████████████████▎    81%  ▇▇▇▇▇▇\n"
    "node-02       ████████████████▏    80%  ▇▇▇▇·▇\n"
    "node-03       █▋                    8%  ▆▄▂▂▁▂  ◀\n"
    "node-04       ████████████████▍    82%  ▇▇▇▇▇▇\n"
    "node-05       ████████████████▎    82%  ▇▇▇▇▇▇\n"
    "node-06       █▊                    9%  ▇▆▂▂▂▂  ◀\n"
    "node-07       ████████████████▏    81%  ▇▇▇▇▇▇\n"
    "node-08       ████████████████▌    82%  ▇▇▇▇▇▇\n"
    "group median  ████████████████▎    81%"
)
IDLE_TABLE = "node-05/7                            0%  ·▃▂▁▁▁▁▁  ◀\nidle threshold  █                    5%"
IMBALANCE_SUMMARY = "2 of 8 nodes in train-pool at 8% GPU utilisation while the group median is 81%"
IDLE_SUMMARY = "node-05/7 held by bob for 45m at 0% utilisation (38 GiB allocated)"


def md(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def header(text: str) -> dict[str, object]:
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def section(text: str) -> dict[str, object]:
    return {"type": "section", "text": md(text)}


# ---- Slack -------------------------------------------------------------------------------------


def test_slack_firing_imbalance() -> None:
    assert slack.render(single(imbalance())) == {
        "text": f"🔴 [FIRING] Cross-node imbalance — {IMBALANCE_SUMMARY}",
        "blocks": [
            header("🔴 Cross-node imbalance"),
            section(IMBALANCE_SUMMARY),
            {
                "type": "section",
                "fields": [
                    md("*Where*\ncluster a100-prod · group train-pool\nnodes node-03, node-06"),
                    md("*Who*\nuser alice"),
                    md("*Since*\n2024-05-01 12:32:00 UTC (for 2m 10s)"),
                    md("*Severity*\n🔴 Critical"),
                ],
            },
            section(f"*GPU utilisation per node, last 10 min*\n```\n{IMBALANCE_TABLE}\n```"),
            section(f"*What to try*\n{IMBALANCE_ACTION}"),
            {
                "type": "context",
                "elements": [md("rule imbalance · fingerprint 3f9c2a7d5e1b8c4a6d0e · cluster a100-prod")],
            },
        ],
    }


def test_slack_firing_idle_held() -> None:
    assert slack.render(single(idle_held())) == {
        "text": f"🟠 [FIRING] GPU held but idle — {IDLE_SUMMARY}",
        "blocks": [
            header("🟠 GPU held but idle"),
            section(IDLE_SUMMARY),
            {
                "type": "section",
                "fields": [
                    md("*Where*\ncluster a100-prod · group interactive\nnode node-05\nGPU node-05/7"),
                    md("*Who*\nuser bob\ncontainer 4d2f8a1c9b7e"),
                    md("*Since*\n2024-05-01 12:32:00 UTC (for 45m 5s)"),
                    md("*Severity*\n🟠 Warning"),
                ],
            },
            section(f"*GPU utilisation, last 45 min*\n```\n{IDLE_TABLE}\n```"),
            section(f"*What to try*\n{IDLE_ACTION}"),
            {
                "type": "context",
                "elements": [md("rule idle_held · fingerprint 0b1c2d3e4f5a6b7c8d9e · cluster a100-prod")],
            },
        ],
    }


def test_slack_resolved_imbalance_shows_the_recovery() -> None:
    assert slack.render(single(recovered_imbalance())) == {
        "text": f"✅ [RESOLVED] Cross-node imbalance — was: {IMBALANCE_SUMMARY}",
        "blocks": [
            header("✅ RESOLVED: Cross-node imbalance"),
            section(f"*Resolved, no action needed.* It was: {IMBALANCE_SUMMARY}\n*Now:* {RECOVERED_NOW}"),
            {
                "type": "section",
                "fields": [
                    md("*Where*\ncluster a100-prod · group train-pool\nnodes node-03, node-06"),
                    md("*Who*\nuser alice"),
                    md("*Since*\n2024-05-01 12:32:00 → 12:34:10 UTC (was firing for 2m 10s)"),
                    md("*Severity*\n✅ Resolved (was critical)"),
                ],
            },
            section(f"*GPU utilisation per node, last 10 min*{TABLE_NOTE}\n```\n{RECOVERED_TABLE}\n```"),
            {
                "type": "context",
                "elements": [md("rule imbalance · fingerprint 3f9c2a7d5e1b8c4a6d0e · cluster a100-prod")],
            },
        ],
    }


def test_slack_resolved_idle_held_has_no_action() -> None:
    payload = slack.render(single(with_state(idle_held(), "resolved", SINCE + 2705)))
    assert payload["text"] == f"✅ [RESOLVED] GPU held but idle — was: {IDLE_SUMMARY}"
    assert payload["blocks"][0] == header("✅ RESOLVED: GPU held but idle")
    assert payload["blocks"][2]["fields"] == [
        md("*Where*\ncluster a100-prod · group interactive\nnode node-05\nGPU node-05/7"),
        md("*Who*\nuser bob\ncontainer 4d2f8a1c9b7e"),
        md("*Since*\n2024-05-01 12:32:00 → 13:17:05 UTC (was firing for 45m 5s)"),
        md("*Severity*\n✅ Resolved (was warning)"),
    ]
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "section", "section", "context"]
    assert not any("What to try" in b.get("text", {}).get("text", "") for b in payload["blocks"])


def test_slack_info_emoji_and_no_evidence() -> None:
    f = dataclasses.replace(idle_held(), severity="info", evidence=None)
    payload = slack.render(single(f))
    assert payload["blocks"][0] == header("🔵 GPU held but idle")
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "section", "section", "context"]


def test_slack_escapes_its_control_characters() -> None:
    f = dataclasses.replace(idle_held(), summary="util <5% & held", users=["<!channel>"], evidence=None)
    payload = slack.render(single(f))
    assert payload["blocks"][1] == section("util &lt;5% &amp; held")
    assert payload["blocks"][2]["fields"][1] == md("*Who*\nuser &lt;!channel&gt;\ncontainer 4d2f8a1c9b7e")
    assert payload["text"] == "🟠 [FIRING] GPU held but idle — util &lt;5% &amp; held"


def sixty_four_gpus() -> Finding:
    flagged = {3, 17, 40}
    rows = [
        EvidenceRow(
            f"dgx-h100-{i // 8:02d}/gpu{i % 8}",
            [5.0 if i in flagged else 80.0 + (t % 4) for t in range(48)],
            5.0 if i in flagged else 80.0 + (i % 5) * 0.5,
            i in flagged,
        )
        for i in range(64)
    ]
    ev = Evidence("GPU utilisation per GPU, last 10 min", "%", rows, 81.0, "group median")
    return dataclasses.replace(
        imbalance(),
        title="Cross-GPU imbalance " + "very " * 40 + "long title",
        gpus=[rows[i].label for i in sorted(flagged)],
        nodes=[f"dgx-h100-{n:02d}" for n in range(8)],
        evidence=ev,
    )


def test_slack_limits_with_sixty_four_rows() -> None:
    payload = slack.render(single(sixty_four_gpus()))
    blocks = payload["blocks"]
    assert len(blocks) <= slack.MAX_BLOCKS
    head = blocks[0]["text"]["text"]
    assert len(head) <= 150
    assert head.endswith("very…")  # cut at a word, marked
    for b in blocks:
        if b["type"] == "section" and "text" in b:
            assert len(b["text"]["text"]) <= 3000
        for f in b.get("fields", []):
            assert len(f["text"]) <= 2000
    code = blocks[3]["text"]["text"]
    rows = code.split("\n")[2:-1]  # between the title + ``` and the closing ```
    assert len([r for r in rows if r.endswith("◀")]) == 3  # every flagged row kept
    assert rows[-2] == "… and 52 more GPUs within 2% of the group median"
    assert all(len(r) == len(rows[0]) or r.endswith("◀") or r.startswith(("…", "group")) for r in rows)
    assert code.endswith("\n```")


def test_slack_code_block_is_summarised_to_3000_chars_when_flagged_rows_overflow() -> None:
    f = sixty_four_gpus()
    assert f.evidence is not None
    rows = [dataclasses.replace(r, flagged=True, level=5.0) for r in f.evidence.rows]
    f = dataclasses.replace(f, evidence=dataclasses.replace(f.evidence, rows=rows))
    text = slack.render(single(f))["blocks"][3]["text"]["text"]
    assert len(text) <= 3000
    lines = text.split("\n")
    assert lines[:2] == ["*GPU utilisation per GPU, last 10 min*", "```"]
    assert lines[-1] == "```"
    shown = lines[2:-3]
    assert all(r.endswith("◀") and r.startswith("dgx-h100-") for r in shown)  # whole rows only
    assert lines[-3] == f"… and {64 - len(shown)} more flagged GPUs at 5%"
    assert len(text) + len(shown[0]) + 1 > 3000  # one more row would not have fitted


# ---- Jandi -------------------------------------------------------------------------------------


def test_jandi_firing_imbalance() -> None:
    assert jandi.render(single(imbalance())) == {
        "body": f"[FIRING] Cross-node imbalance — {IMBALANCE_SUMMARY}",
        "connectColor": "#E01E5A",
        "connectInfo": [
            {"title": "Where", "description": "cluster a100-prod · group train-pool\nnodes node-03, node-06"},
            {"title": "Who", "description": "user alice"},
            {"title": "Since", "description": "2024-05-01 12:32:00 UTC (for 2m 10s)"},
            {"title": "Severity", "description": "Critical"},
            {"title": "GPU utilisation per node, last 10 min", "description": IMBALANCE_TABLE},
            {
                "title": "Action",
                "description": IMBALANCE_ACTION,
            },
            {
                "title": "Details",
                "description": "rule imbalance · fingerprint 3f9c2a7d5e1b8c4a6d0e · cluster a100-prod",
            },
        ],
    }


def test_jandi_firing_idle_held() -> None:
    assert jandi.render(single(idle_held())) == {
        "body": f"[FIRING] GPU held but idle — {IDLE_SUMMARY}",
        "connectColor": "#ECB22E",
        "connectInfo": [
            {
                "title": "Where",
                "description": "cluster a100-prod · group interactive\nnode node-05\nGPU node-05/7",
            },
            {"title": "Who", "description": "user bob\ncontainer 4d2f8a1c9b7e"},
            {"title": "Since", "description": "2024-05-01 12:32:00 UTC (for 45m 5s)"},
            {"title": "Severity", "description": "Warning"},
            {"title": "GPU utilisation, last 45 min", "description": IDLE_TABLE},
            {
                "title": "Action",
                "description": IDLE_ACTION,
            },
            {
                "title": "Details",
                "description": "rule idle_held · fingerprint 0b1c2d3e4f5a6b7c8d9e · cluster a100-prod",
            },
        ],
    }


def test_jandi_resolved_imbalance_shows_the_recovery() -> None:
    assert jandi.render(single(recovered_imbalance())) == {
        "body": f"[RESOLVED] Cross-node imbalance — was: {IMBALANCE_SUMMARY}",
        "connectColor": "#2EB67D",
        "connectInfo": [
            {"title": "Where", "description": "cluster a100-prod · group train-pool\nnodes node-03, node-06"},
            {"title": "Who", "description": "user alice"},
            {"title": "Since", "description": "2024-05-01 12:32:00 → 12:34:10 UTC (was firing for 2m 10s)"},
            {"title": "Severity", "description": "Resolved (was critical)"},
            {"title": "Now", "description": RECOVERED_NOW},
            {"title": f"GPU utilisation per node, last 10 min{TABLE_NOTE}", "description": RECOVERED_TABLE},
            {"title": "Action", "description": "No action needed: resolved."},
            {
                "title": "Details",
                "description": "rule imbalance · fingerprint 3f9c2a7d5e1b8c4a6d0e · cluster a100-prod",
            },
        ],
    }


def test_jandi_resolved_idle_held() -> None:
    payload = jandi.render(single(with_state(idle_held(), "resolved", SINCE + 2705)))
    assert payload["body"] == f"[RESOLVED] GPU held but idle — was: {IDLE_SUMMARY}"
    assert payload["connectColor"] == "#2EB67D"
    assert payload["connectInfo"][1] == {"title": "Who", "description": "user bob\ncontainer 4d2f8a1c9b7e"}
    # a resolve from before pictures were re-drawn says its picture is the fault's
    assert payload["connectInfo"][4] == {"title": "Now", "description": "the picture is from while it fired"}
    assert payload["connectInfo"][5]["title"] == "GPU utilisation, last 45 min · while it fired"
    assert payload["connectInfo"][6] == {"title": "Action", "description": "No action needed: resolved."}


def test_jandi_info_colour() -> None:
    assert (
        jandi.render(single(dataclasses.replace(idle_held(), severity="info")))["connectColor"] == "#36C5F0"
    )


def test_jandi_descriptions_stay_under_2000_chars() -> None:
    payload = jandi.render(single(sixty_four_gpus()))
    for item in payload["connectInfo"]:
        assert len(item["description"]) < 2000
    table = payload["connectInfo"][4]["description"].split("\n")
    assert len([r for r in table if r.endswith("◀")]) == 3
    assert table[-2] == "… and 52 more GPUs within 2% of the group median"
