"""What every chat format shows, rendered once: the evidence picture and the plain facts.

The picture is a monospace table, one row per node (or GPU): a level bar in eighth blocks
scaled to `scale_max`, the level, and a sparkline of the window, flagged rows marked.
Slack puts it in a code block, Jandi in a description; both call `table` with their own size
limit, so a long table is summarised the same way everywhere (flagged rows first, never a
row cut in half). A group of alerts is worded here too (`group_facts`): its headline, the
order it lists its alerts in, and the one line that sums up those it cannot list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gpulse.errors import InvalidInput
from gpulse.finding import SEVERITIES, Evidence, EvidenceRow, Finding, Severity
from gpulse.notification import Notification

BAR_WIDTH = 20
SPARK_WIDTH = 30  # the most points a sparkline draws; longer series are averaged down
EIGHTHS = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")
FULL = "█"
SPARKS = "▁▂▃▄▅▆▇█"
GAP = "·"  # a sparkline point with no data
FLAG = "◀"
CONTAINER_ID_CHARS = 12  # as `docker ps` shows them
MAX_LISTED = 8  # names listed in Where/Who before "(+N more)"
MAX_ROWS = 16  # a longer table is summarised even where it would fit: a picture, not a dump
SUMMARY_ROWS = 12  # rows a summarised table shows: every flagged row, then context rows up to this

SEVERITY_WORD = {"critical": "Critical", "warning": "Warning", "info": "Info"}
SEVERITY_EMOJI = {"critical": "🔴", "warning": "🟠", "info": "🔵"}  # chat has no colour everywhere
RESOLVED_EMOJI = "✅"
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}  # 0 is the worst
WHITESPACE = (" ", "\n", "\t")
SHORT_LISTED = 3  # names in a group's one-line where/who before "(+N more)"
LEFT_OUT_PARTS = 4  # kinds of left-out alerts a group summary names before "…"


def bar(value: float, scale_max: float, width: int = BAR_WIDTH) -> str:
    """A bar of exactly `width` characters: `value / scale_max` of it filled in eighths.

    Values at or above `scale_max` fill it, zero or below (or a non-positive scale) leave it blank.
    """
    fraction = value / scale_max if scale_max > 0 and math.isfinite(value) else 0.0
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    return (FULL * full + EIGHTHS[part]).ljust(width)


def _squeeze(values: Sequence[float | None], width: int) -> list[float | None]:
    """Average a long series down to `width` points (None where a slice has no data)."""
    if len(values) <= width:
        return list(values)
    out: list[float | None] = []
    for i in range(width):
        chunk = [
            v for v in values[i * len(values) // width : (i + 1) * len(values) // width] if v is not None
        ]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out


def sparkline(values: Sequence[float | None], scale_max: float, width: int = SPARK_WIDTH) -> str:
    """One character per point (at most `width`), on the fixed scale 0..scale_max so that rows
    compare with each other; None is drawn as GAP, values outside the scale are clamped."""
    chars = []
    for v in _squeeze(values, width):
        if v is None or not math.isfinite(v):
            chars.append(GAP)
            continue
        fraction = v / scale_max if scale_max > 0 else 0.0
        chars.append(SPARKS[round(min(max(fraction, 0.0), 1.0) * (len(SPARKS) - 1))])
    return "".join(chars)


def format_value(value: float, unit: str) -> str:
    """`78%`, `8.2%`, `71 °C`: whole numbers from 10 up, one decimal below."""
    text = f"{value:.0f}" if abs(value) >= 10 or value == round(value) else f"{value:.1f}"
    if not unit:
        return text
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


def _noun(rows: Sequence[EvidenceRow]) -> str:
    gpus = all("/" in r.label for r in rows)
    word = "GPU" if gpus else "node"
    return word if len(rows) == 1 else word + "s"


def _range(rows: Sequence[EvidenceRow], ev: Evidence) -> str:
    lo, hi = min(r.level for r in rows), max(r.level for r in rows)
    if format_value(lo, ev.unit) == format_value(hi, ev.unit):
        return f"at {format_value(lo, ev.unit)}"
    return f"at {format_value(lo, ev.unit)}–{format_value(hi, ev.unit)}"


def _spread(rows: Sequence[EvidenceRow], ev: Evidence) -> str:
    """How left-out unflagged rows sit: against the reference when there is one, else their range."""
    ref = ev.reference
    if ref is None or ref == 0:
        return _range(rows, ev)
    pct = math.ceil(max(abs(r.level - ref) for r in rows) / abs(ref) * 100)
    return f"within {pct}% of the {ev.reference_label or 'reference'}"


def _omitted_line(flagged: Sequence[EvidenceRow], other: Sequence[EvidenceRow], ev: Evidence) -> str:
    parts = []
    if flagged:
        parts.append(f"{len(flagged)} more flagged {_noun(flagged)} {_range(flagged, ev)}")
    if other:
        parts.append(f"{len(other)} more {_noun(other)} {_spread(other, ev)}")
    return "… and " + " and ".join(parts)


def table(evidence: Evidence, max_chars: int | None = None) -> str:
    """The evidence as aligned monospace lines (no trailing spaces), at most `max_chars` long.

    Up to MAX_ROWS rows are all shown if they fit. Otherwise every flagged row that fits is
    kept, then other rows in order up to SUMMARY_ROWS in all, and one line summarises the rest
    ("… and 52 more nodes within 5% of the group median"). Rows keep their original order; a
    row is shown whole or not at all.
    """
    rows = evidence.rows
    values = [format_value(r.level, evidence.unit) for r in rows]
    ref_label = evidence.reference_label or "reference"
    labels = [r.label for r in rows] + ([ref_label] if evidence.reference is not None else [])
    label_w = max((len(s) for s in labels), default=0)
    ref_value = format_value(evidence.reference, evidence.unit) if evidence.reference is not None else ""
    value_w = max((len(s) for s in [*values, ref_value]), default=0)

    def line(label: str, level: float, value: str, spark: str, mark: str) -> str:
        text = f"{label.ljust(label_w)}  {bar(level, evidence.scale_max)} {value.rjust(value_w)}  {spark}"
        return f"{text}  {mark}" if mark else text.rstrip()

    row_lines = [
        line(r.label, r.level, v, sparkline(r.values, evidence.scale_max), FLAG if r.flagged else "")
        for r, v in zip(rows, values, strict=True)
    ]
    tail = []
    if evidence.reference is not None:
        tail.append(line(ref_label, evidence.reference, ref_value, "", ""))

    def render(shown: set[int]) -> str:
        left_out = [i for i in range(len(rows)) if i not in shown]
        body = [row_lines[i] for i in sorted(shown)]
        if left_out:
            body.append(
                _omitted_line(
                    [rows[i] for i in left_out if rows[i].flagged],
                    [rows[i] for i in left_out if not rows[i].flagged],
                    evidence,
                )
            )
        return "\n".join(body + tail)

    everything = set(range(len(rows)))
    full = render(everything)
    if len(rows) <= MAX_ROWS and (max_chars is None or len(full) <= max_chars):
        return full
    limit = len(full) if max_chars is None else max_chars
    shown: set[int] = set()
    for i in [i for i, r in enumerate(rows) if r.flagged]:  # re-rendering is cheap and exact
        if len(render(shown | {i})) <= limit:
            shown.add(i)
    for i in [i for i, r in enumerate(rows) if not r.flagged]:
        if len(shown) >= SUMMARY_ROWS:
            break
        if len(render(shown | {i})) <= limit:
            shown.add(i)
    return render(shown)


def fit_table(evidence: Evidence, limit: int, measure: Callable[[str], int]) -> str:
    """`table` sized so that `measure(table) <= limit`, for formats whose wrapping or escaping
    makes the sent text longer than the table itself."""
    budget = limit
    while True:
        text = table(evidence, max_chars=budget)
        over = measure(text) - limit
        if over <= 0 or budget <= 0:
            return text
        budget -= over


def format_duration(seconds: float) -> str:
    """`45s`, `2m 10s`, `1h 5m`, `3d 4h`: the two largest units, zero parts left out."""
    s = max(int(seconds), 0)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next((i for i, (n, _) in enumerate(parts) if n), len(parts) - 1)
    return " ".join(f"{n}{u}" for n, u in parts[first : first + 2] if n) or "0s"


def format_time(ts: float) -> str:
    """`2024-05-01 12:32:00 UTC`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_container(container_id: str) -> str:
    """A container id as `docker ps` shows it (the first 12 characters)."""
    return container_id[:CONTAINER_ID_CHARS]


def listing(names: Sequence[str], most: int = MAX_LISTED) -> str:
    """`a, b, c` or `a, b, … (+5 more)`."""
    shown = ", ".join(names[:most])
    return f"{shown}, … (+{len(names) - most} more)" if len(names) > most else shown


def joined_mark(finding: Finding) -> str:
    """`+ node-06 JOINED`: the nodes whose joining is this transition's news."""
    return f"+ {listing(finding.newly_joined, SHORT_LISTED)} JOINED"


def truncate(text: str, limit: int) -> str:
    """`text` if it fits, else at most `limit` characters ending in `…`, cut at whitespace
    (a space or a line break) so that no word is cut; only a single word longer than the
    whole limit is cut inside."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if not text[limit - 1].isspace():  # the cut falls inside a word: drop that word
        last = max(cut.rfind(c) for c in WHITESPACE)
        if last > 0:
            cut = cut[:last]
    return cut.rstrip() + "…"


@dataclass(frozen=True)
class Facts:
    """The plain-text facts of a finding, worded once for every format."""

    headline: str  # "[FIRING] Cross-node imbalance — 2 of 8 nodes ..."
    where: str
    who: str
    since: str
    severity: str
    context: str  # "rule imbalance · fingerprint … · cluster …"
    # a resolve's figures now: "recovered: node-03 now at 88% (peers' median 92%)…", or why the
    # picture is still the fault's; None for a firing alert, or a resolve without a picture
    now: str | None = None


def facts(finding: Finding, *, repeat: bool = False) -> Facts:
    """Word what, where, who, since when and how bad, with no markup. `repeat`: the alert is
    announced again because it kept firing (the headline says "still firing")."""
    resolved = finding.state == "resolved"
    where = [f"cluster {finding.cluster}" + (f" · group {finding.node_group}" if finding.node_group else "")]
    if finding.nodes:
        where.append(f"{'node' if len(finding.nodes) == 1 else 'nodes'} {listing(finding.nodes)}")
    if finding.joined:  # nodes that joined after the first announcement (alerting.state)
        where.append(f"joined since: {listing(finding.joined)}")
    if finding.gpus:
        where.append(f"{'GPU' if len(finding.gpus) == 1 else 'GPUs'} {listing(finding.gpus)}")
    if finding.mig:
        where.append(f"MIG {finding.mig}")
    who = []
    if finding.users:
        who.append(f"{'user' if len(finding.users) == 1 else 'users'} {listing(finding.users)}")
    if finding.containers:
        ids = [short_container(c) for c in finding.containers]
        who.append(f"{'container' if len(ids) == 1 else 'containers'} {listing(ids)}")
    duration = format_duration(finding.at - finding.since)
    if resolved:
        start, end = format_time(finding.since), format_time(finding.at)
        if start[:10] == end[:10]:
            end = end[11:]  # same day: the time is enough
        since = f"{start[:-4]} → {end} (was firing for {duration})"
    else:
        since = f"{format_time(finding.since)} (for {duration})"
    word = SEVERITY_WORD[finding.severity]
    return Facts(
        headline=(
            f"[RESOLVED] {finding.title} — was: {finding.summary}"
            if resolved
            else f"[{_firing_word(finding, repeat)}] {finding.title} — {finding.summary}"
        ),
        where="\n".join(where),
        who="\n".join(who) or "—",
        since=since,
        severity=f"Resolved (was {word.lower()})" if resolved else word,
        context=f"rule {finding.rule} · fingerprint {finding.fingerprint} · cluster {finding.cluster}",
        now=recovery_line(finding) if resolved else None,
    )


def recovery_line(finding: Finding, *, when: bool = True) -> str | None:
    """A resolve's figures as they are now, from the evidence analyze re-drew when it resolved
    it: "recovered: node-03 now at 88% (peers' median 92%); the fault last held at 12:10:50 UTC".
    When the picture was not re-drawn it says the picture is from while it fired, and gives no
    figure; that no data came since the fault last held only when `recovery_note` says that was
    why. None without evidence. `when`: say when the fault last held."""
    ev = finding.evidence
    if ev is None:
        return None
    if not ev.recovery:
        if finding.ended is None or ev.recovery_note != "no_data":
            return "the picture is from while it fired"
        held = _clock(finding.ended, finding.at)
        return f"no data since the fault last held at {held}: the picture is from then"
    flagged = [r for r in ev.rows if r.flagged] or list(ev.rows)
    shown = [
        f"{r.label} {'now ' if i == 0 else ''}at {format_value(r.level, ev.unit)}"
        for i, r in enumerate(flagged[:MAX_LISTED])
    ]
    if len(flagged) > MAX_LISTED:
        shown.append(f"… (+{len(flagged) - MAX_LISTED} more)")
    line = "recovered: " + ", ".join(shown)
    if ev.reference is not None:
        line += f" ({ev.reference_label or 'reference'} {format_value(ev.reference, ev.unit)})"
    if when and finding.ended is not None:
        line += f"; the fault last held at {_clock(finding.ended, finding.at)}"
    return line


def _clock(ts: float, at: float) -> str:
    """`12:10:50 UTC`, with the date when it is not the day of `at`."""
    text, day = format_time(ts), format_time(at)
    return text[11:] if text[:10] == day[:10] else text


def picture_note(finding: Finding) -> str:
    """How old the picture is, for a title: "" while firing; " · now, after the fault" for a
    resolve's re-drawn picture; " · while it fired" for one that could not be re-drawn."""
    if finding.state != "resolved" or finding.evidence is None:
        return ""
    if finding.evidence.recovery:
        return f" · now, after the fault ({FLAG}: the rows at fault)"
    return " · while it fired"


def _firing_word(finding: Finding, repeat: bool) -> str:
    """FIRING, STILL FIRING, ESCALATED (a firing alert told again because it turned more severe),
    and/or "+ node-06 JOINED" (told again because nodes joined it)."""
    if repeat:
        return "STILL FIRING"
    word = f"ESCALATED from {finding.escalated_from}" if finding.escalated_from else "FIRING"
    if finding.newly_joined:
        word += f" {joined_mark(finding)}"
    return word


MAX_SYMPTOMS_SHOWN = 10  # symptom lines in a message before "and N more"


def symptoms_text(finding: Finding, most: int = MAX_SYMPTOMS_SHOWN) -> str | None:
    """The incident's symptoms under its root cause, one line each (`idle_held · n3/0 · GPU 0
    idle …`), then how many more; None when the finding has none."""
    if not finding.symptoms:
        return None
    lines = [f"• {s['rule']} · {s['subject']} · {s['summary']}" for s in finding.symptoms[:most]]
    rest = len(finding.symptoms) - most
    if rest > 0:
        lines.append(f"… and {rest} more")
    n = len(finding.symptoms)
    head = f"{n} symptom{'s' if n != 1 else ''} of this cause, not told apart:"
    return "\n".join([head, *lines])


# ---- groups ------------------------------------------------------------------------------------


def worst_severity(findings: Sequence[Finding]) -> Severity | None:
    """The highest severity among the firing findings; None when none is firing."""
    firing: list[Severity] = [f.severity for f in findings if f.state == "firing"]
    if not firing:
        return None
    worst: Severity = min(firing, key=SEVERITY_RANK.__getitem__)
    return worst


def listing_order(notification: Notification) -> list[Finding]:
    """The order a group message lists its alerts: firing before resolved; among firing, the
    most severe first, then the new ones, then the most recent `since`; resolved ones most
    recently resolved first. Ties keep the notification's order."""
    new = set(notification.new)
    firing = sorted(
        notification.firing, key=lambda f: (SEVERITY_RANK[f.severity], f.fingerprint not in new, -f.since)
    )
    resolved = sorted(notification.resolved, key=lambda f: -f.at)
    return firing + resolved


def gpu_name(label: str) -> str:
    """`node-03/2` as `node-03 GPU 2`; a label without a slash as it is."""
    node, slash, index = label.rpartition("/")
    return f"{node} GPU {index}" if slash else label


def short_where(finding: Finding) -> str:
    """Where, in a few words: its GPUs, else its nodes, else its cluster (plus the MIG slice)."""
    if finding.gpus:
        place = listing([gpu_name(g) for g in finding.gpus], SHORT_LISTED)
    elif finding.nodes:
        place = listing(finding.nodes, SHORT_LISTED)
    else:
        place = f"cluster {finding.cluster}"
    return f"{place} MIG {finding.mig}" if finding.mig else place


def short_who(finding: Finding) -> str:
    """Who, in a few words: its users, else its containers; "" when nobody is known."""
    if finding.users:
        word = "user" if len(finding.users) == 1 else "users"
        return f"{word} {listing(finding.users, SHORT_LISTED)}"
    if finding.containers:
        ids = [short_container(c) for c in finding.containers]
        return f"{'container' if len(ids) == 1 else 'containers'} {listing(ids, SHORT_LISTED)}"
    return ""


def short_details(finding: Finding, *, where: bool = True) -> str:
    """`node-05 GPU 7 · user bob · for 45m 5s`: one alert's where (unless the format shows it
    elsewhere), who and how long, one line; a resolve adds its figures now (`recovery_line`)
    when analyze could draw them."""
    duration = format_duration(finding.at - finding.since)
    since = f"was firing for {duration}" if finding.state == "resolved" else f"for {duration}"
    ev = finding.evidence
    shown = finding.state == "resolved" and ev is not None and ev.recovery  # figures of now, not "no data"
    recovered = (recovery_line(finding, when=False) or "") if shown else ""
    parts = (short_where(finding) if where else "", short_who(finding), since, recovered)
    return " · ".join(part for part in parts if part)


def _place(finding: Finding) -> str:
    return f"on {finding.nodes[0]}" if len(finding.nodes) == 1 else f"in {finding.cluster}"


def left_out_parts(findings: Sequence[Finding], most: int = LEFT_OUT_PARTS) -> list[str]:
    """What a group message could not list, counted by rule, state and place, largest first:
    ["23 idle_held on node-04", "2 resolved idle_held on node-07", "…"] ("…" when more kinds
    than `most` were left out)."""
    counts: dict[str, int] = {}
    for f in findings:
        key = f"{'resolved ' if f.state == 'resolved' else ''}{f.rule} {_place(f)}"
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: first seen first among equals
    parts = [f"{n} {key}" for key, n in ranked[:most]]
    return [*parts, "…"] if len(ranked) > most else parts


def left_out_line(findings: Sequence[Finding]) -> str:
    """`…and 37 more (23 idle_held on node-04, 14 idle_held on node-05)`."""
    return f"…and {len(findings)} more ({', '.join(left_out_parts(findings))})"


@dataclass(frozen=True)
class GroupFacts:
    """The plain-text facts of a group of alerts, worded once for every format."""

    headline: str  # "3 firing · 1 resolved — GPU held but idle"
    labels: str  # "cluster a100-prod · rule idle_held" ("" for a group without labels)
    severity: Severity | None  # the worst among firing; None when only resolved ones are left
    listed: list[Finding]  # what the message lists, in listing order
    left_out: list[Finding]  # the rest, summarised in one line
    titles: list[str]  # the distinct titles, first listed first
    action: str | None  # the firing alerts' action when they all share one, else None


def group_facts(notification: Notification, most: int) -> GroupFacts:
    """Word a group: counts and title, labels, and which alerts are listed (at most `most`).
    InvalidInput if the notification holds no alert at all (nothing to say)."""
    ordered = listing_order(notification)
    if not ordered:
        raise InvalidInput(f"notification {notification.id} has no alerts")
    titles = list(dict.fromkeys(f.title for f in ordered))
    counts = []
    if notification.firing:
        counts.append(f"{len(notification.firing)} {'still firing' if notification.repeat else 'firing'}")
    if notification.resolved:
        counts.append(f"{len(notification.resolved)} resolved")
    actions = {f.action for f in notification.firing}
    return GroupFacts(
        headline=f"{' · '.join(counts)} — {', '.join(titles)}",
        labels=" · ".join(f"{k.replace('_', ' ')} {v}" for k, v in notification.group.items()),
        severity=worst_severity(notification.firing),
        listed=ordered[:most],
        left_out=ordered[most:],
        titles=titles,
        action=actions.pop() if len(actions) == 1 else None,
    )
