"""The shared picture: bars, sparklines, the evidence table and its summary, the facts."""

from __future__ import annotations

import dataclasses

import pytest

from gpulse.finding import Evidence, EvidenceRow, Finding
from gpulse.notify import evidence as ev
from tests.factories import eight_node_evidence

SINCE = 1714566720.0  # 2024-05-01 12:32:00 UTC


# ---- bar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, " " * 20),
        (-5.0, " " * 20),
        (100.0, "█" * 20),
        (250.0, "█" * 20),  # above scale_max: full, never longer
        (50.0, "█" * 10 + " " * 10),
        (81.3, "█" * 16 + "▎" + " " * 3),  # 130.08 eighths -> 16 full + 2/8
        (8.0, "█▋" + " " * 18),  # 12.8 eighths -> 1 full + 5/8
        (0.6, "▏" + " " * 19),  # 0.96 eighth rounds to one
        (0.3, " " * 20),  # 0.48 eighth rounds to none
    ],
)
def test_bar_fills_eighths_of_a_fixed_width(value: float, expected: str) -> None:
    assert ev.bar(value, 100.0) == expected
    assert len(ev.bar(value, 100.0)) == ev.BAR_WIDTH


def test_bar_with_other_scale_and_width() -> None:
    assert ev.bar(40.0, 80.0, width=4) == "██  "
    assert ev.bar(10.0, 0.0, width=4) == "    "  # a non-positive scale draws nothing


# ---- sparkline ---------------------------------------------------------------------------------


def test_sparkline_uses_the_fixed_scale_and_marks_gaps() -> None:
    assert ev.sparkline([0.0, 100.0, 50.0, None, 7.0, 8.0], 100.0) == "▁█▅·▁▂"


def test_sparkline_clamps_values_outside_the_scale() -> None:
    assert ev.sparkline([-10.0, 150.0, 100.0], 100.0) == "▁██"


def test_sparkline_all_gaps_and_empty() -> None:
    assert ev.sparkline([None, None], 100.0) == "··"
    assert ev.sparkline([], 100.0) == ""


def test_sparkline_averages_a_long_series_down() -> None:
    # 8 points into 4: pairs averaged, a pair of gaps stays a gap, a half gap uses the other value
    assert ev.sparkline([0.0, 0.0, 100.0, 100.0, None, None, None, 100.0], 100.0, width=4) == "▁█·█"


# ---- values and times --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(81.3, "%", "81%"), (8.24, "%", "8.2%"), (0.0, "%", "0%"), (71.0, "°C", "71 °C"), (3.5, "", "3.5")],
)
def test_format_value(value: float, unit: str, expected: str) -> None:
    assert ev.format_value(value, unit) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (45, "45s"),
        (130, "2m 10s"),
        (120, "2m"),
        (3900, "1h 5m"),
        (3601, "1h"),
        (273600, "3d 4h"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert ev.format_duration(seconds) == expected


def test_format_time_is_utc() -> None:
    assert ev.format_time(SINCE) == "2024-05-01 12:32:00 UTC"


def test_truncate_never_cuts_a_word() -> None:
    assert ev.truncate("short", 10) == "short"
    assert ev.truncate("one two three four", 12) == "one two…"
    assert ev.truncate("abcdefghijkl", 5) == "abcd…"  # one long word: cut is unavoidable


# ---- the table ---------------------------------------------------------------------------------


eight_nodes = eight_node_evidence


EIGHT_NODES_TABLE = (
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


def test_table_aligns_rows_and_names_the_reference() -> None:
    assert ev.table(eight_nodes()) == EIGHT_NODES_TABLE
    assert ev.table(eight_nodes(), max_chars=len(EIGHT_NODES_TABLE)) == EIGHT_NODES_TABLE


def test_table_without_reference_or_rows() -> None:
    rows = [EvidenceRow("node-05/7", [None, 35.0, 0.0], 0.0, True)]
    assert ev.table(Evidence("t", "%", rows)) == "node-05/7" + " " * 23 + "0%  ·▃▁  ◀"
    assert ev.table(Evidence("t", "%", [])) == ""


def test_table_too_long_keeps_flagged_rows_and_summarises_the_rest() -> None:
    e = eight_nodes()
    text = ev.table(e, max_chars=300)
    assert text == (
        "node-01       ████████████████▎    81%  ▇▇▇▇▇▇\n"
        "node-02       ████████████████▏    80%  ▇▇▇▇·▇\n"
        "node-03       █▋                    8%  ▆▄▂▂▁▂  ◀\n"
        "node-06       █▊                    9%  ▇▆▂▂▂▂  ◀\n"
        "… and 4 more nodes within 2% of the group median\n"
        "group median  ████████████████▎    81%"
    )
    assert len(text) <= 300


def sixty_four_gpus(flagged: set[int]) -> Evidence:
    rows = [
        EvidenceRow(
            f"node-{i // 8:02d}/{i % 8}",
            [5.0 if i in flagged else 80.0] * 30,
            5.0 if i in flagged else 80.0 + (i % 5) * 0.7,
            i in flagged,
        )
        for i in range(64)
    ]
    return Evidence("GPU utilisation per GPU, last 10 min", "%", rows, 80.5, "group median")


def test_sixty_four_rows_are_summarised_to_a_picture() -> None:
    text = ev.table(sixty_four_gpus({9, 17}))
    lines = text.split("\n")
    assert [line[:9] for line in lines[:12]] == [
        "node-00/0", "node-00/1", "node-00/2", "node-00/3", "node-00/4", "node-00/5",
        "node-00/6", "node-00/7", "node-01/0", "node-01/1", "node-01/2", "node-02/1",
    ]  # fmt: skip
    assert [line.endswith("◀") for line in lines[:12]].count(True) == 2
    assert lines[12] == "… and 52 more GPUs within 3% of the group median"
    assert lines[13] == "group median  ████████████████▏    80%"
    assert len(lines) == 14


def test_many_flagged_rows_beyond_the_budget_are_counted_not_cut() -> None:
    e = sixty_four_gpus(set(range(50)))
    text = ev.table(e, max_chars=1000)
    lines = text.split("\n")
    whole_rows = ev.table(dataclasses.replace(e, rows=e.rows[:16])).split("\n")
    shown = lines[:-2]
    assert shown == whole_rows[:11]  # the first flagged rows, each whole
    assert all(line.endswith("◀") for line in shown)  # flagged rows first
    assert lines[-2] == "… and 39 more flagged GPUs at 5% and 14 more GPUs within 3% of the group median"
    assert len(text) <= 1000


def test_fit_table_accounts_for_escaping() -> None:
    plain = eight_nodes()
    rows = [dataclasses.replace(r, label=r.label.replace("-", "&")) for r in plain.rows]
    e = dataclasses.replace(plain, rows=rows, reference_label="p50 & mean")

    def escaped(t: str) -> int:
        return len(t.replace("&", "&amp;"))

    assert escaped(ev.table(e, max_chars=280)) > 280  # why fit_table exists
    text = ev.fit_table(e, 280, measure=escaped)
    assert escaped(text) <= 280
    assert text == (
        "node&01     ████████████████▎    81%  ▇▇▇▇▇▇\n"
        "node&03     █▋                    8%  ▆▄▂▂▁▂  ◀\n"
        "node&06     █▊                    9%  ▇▆▂▂▂▂  ◀\n"
        "… and 5 more nodes within 2% of the p50 & mean\n"
        "p50 & mean  ████████████████▎    81%"
    )


# ---- facts -------------------------------------------------------------------------------------


def finding(**kw: object) -> Finding:
    base = Finding(
        rule="idle_held",
        title="GPU held but idle",
        severity="warning",
        state="firing",
        fingerprint="0b1c2d3e4f5a6b7c8d9e",
        cluster="a100-prod",
        since=SINCE,
        at=SINCE + 130,
        summary="idle",
        action="stop it",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_facts_of_a_bare_finding() -> None:
    assert ev.facts(finding()) == ev.Facts(
        headline="[FIRING] GPU held but idle — idle",
        where="cluster a100-prod",
        who="—",
        since="2024-05-01 12:32:00 UTC (for 2m 10s)",
        severity="Warning",
        context="rule idle_held · fingerprint 0b1c2d3e4f5a6b7c8d9e · cluster a100-prod",
    )


def test_facts_list_names_shorten_containers_and_cap_long_lists() -> None:
    f = finding(
        node_group="train",
        nodes=[f"node-{i:02d}" for i in range(10)],
        gpus=["node-05/7"],
        mig="node-05/7/mig1",
        users=["alice", "bob"],
        containers=["ab" * 32],
    )
    facts = ev.facts(f)
    assert facts.where == (
        "cluster a100-prod · group train\n"
        "nodes node-00, node-01, node-02, node-03, node-04, node-05, node-06, node-07, … (+2 more)\n"
        "GPU node-05/7\n"
        "MIG node-05/7/mig1"
    )
    assert facts.who == "users alice, bob\ncontainer abababababab"


def test_facts_of_a_resolved_finding() -> None:
    facts = ev.facts(finding(state="resolved"))
    assert facts.headline == "[RESOLVED] GPU held but idle — was: idle"
    assert facts.since == "2024-05-01 12:32:00 → 12:34:10 UTC (was firing for 2m 10s)"
    assert facts.severity == "Resolved (was warning)"


def test_resolved_across_midnight_shows_both_dates() -> None:
    facts = ev.facts(finding(state="resolved", since=SINCE, at=SINCE + 86400 + 60))
    assert facts.since == "2024-05-01 12:32:00 → 2024-05-02 12:33:00 UTC (was firing for 1d)"
