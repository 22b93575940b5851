"""Nothing stops analysis: values no batch should hold, a corrupt chunk, a cluster whose read
fails, a rule that raises. Each failure stays where it happened and becomes one
`analysis_failed` alert through the state machine; every other cluster and rule carries on."""

from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpulse import codec
from gpulse.analyze import CONFIG_CLUSTER, Analyzer, detect_all, detection, incremental, window_for
from gpulse.config.live import StaticRules
from gpulse.detect.base import Condition, NodeSeen, Window
from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.finding import Finding
from gpulse.notify import jandi, slack
from tests.factories import GIB, batch_doc
from tests.unit.analyze_fakes import MemQueue, MemRecords, MemSeries

NOW = 1_763_800_600.0
BIG = 10**400  # an integer JSON can carry and float64 cannot


def line_of(module: Any, text: str) -> int:
    """The line of `module`'s source that holds `text` (once)."""
    lines = [i for i, line in enumerate(Path(module.__file__).read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, lines
    return lines[0]


def ship(store: MemSeries, cluster: str, node: str, start: float, seconds: int, **kw: Any) -> None:
    """`seconds` of 1 Hz samples of a healthy node, in 30-sample batches."""
    for t0 in range(int(start), int(start) + seconds, 30):
        store.add(batch_doc(cluster=cluster, node=node, t0=t0, n=30, **kw))


def two_clusters() -> MemSeries:
    """`good`: node-01..03 report up to NOW, node-04 went quiet at NOW - 400 (silent: 180 s).
    `bad`: n1 and n2 report up to NOW, healthy."""
    store = MemSeries()
    for node in ("node-01", "node-02", "node-03"):
        ship(store, "good", node, NOW - 300, 300)
    ship(store, "good", "node-04", NOW - 700, 300)
    for node in ("n1", "n2"):
        ship(store, "bad", node, NOW - 300, 300)
    return store


def analyzer(store: MemSeries, clock: list[float] | None = None) -> tuple[Analyzer, MemRecords, MemQueue]:
    """An Analyzer over `store` at NOW, or at `clock[0]` (set it to move time)."""
    records, queue, at = MemRecords(), MemQueue(), clock or [NOW]
    return Analyzer(store, records, queue, StaticRules(), clock=lambda: at[0]), records, queue


def brief(findings: list[Finding]) -> list[tuple[str, str, str, list[str]]]:
    return [(f.rule, f.state, f.cluster, f.nodes) for f in findings]


SILENT_04 = ("silent_node", "firing", "good", ["node-04"])


def test_extreme_values_and_a_corrupt_chunk_stop_nothing(caplog: pytest.LogCaptureFixture) -> None:
    store = two_clusters()
    doc = batch_doc(cluster="bad", node="n1", t0=NOW - 20, n=10, util=[[float("inf")] * 10] * 2)
    doc["host"].update(cpu_count=BIG, mem_total=BIG)
    doc["gpus"][0].update(mem_total=BIG, power_limit_w=BIG, numa_node=BIG, temp_slowdown_c=-BIG)
    doc["timestamps"][4] = float("nan")
    doc["processes"] = [{"gpu_index": 0, "pid": 7, "first_seen": BIG, "last_seen": float("nan")}]
    store.add(doc)
    good = store.add(batch_doc(cluster="bad", node="n1", t0=NOW - 30, n=10))
    # what a flipped bit leaves: the frame's checksum no longer matches
    store.chunks["bad"].append(
        type(good)("bad#1763800200/1763800590000#n1#b0#0", "n1", good.data[:-1] + bytes([good.data[-1] ^ 1]))
    )
    a, _, queue = analyzer(store)

    with caplog.at_level(logging.WARNING, logger="gpulse.analyze.run"):
        reports = a.run()

    assert [(r.cluster, r.error, r.failed_rules, r.corrupt_chunks, r.chunks) for r in reports] == [
        ("bad", None, [], 1, 22),
        ("good", None, [], 0, 40),
        (CONFIG_CLUSTER, None, [], 0, 0),
    ]
    assert brief(queue.sent) == [SILENT_04]  # the silent node elsewhere fires in this very run
    [skipped] = [r for r in caplog.records if r.getMessage() == "chunk skipped: it does not decode"]
    assert (skipped.cluster, skipped.node, skipped.key) == (  # type: ignore[attr-defined]
        "bad",
        "n1",
        "bad#1763800200/1763800590000#n1#b0#0",
    )
    assert skipped.reason == "chunk checksum mismatch: the bytes were truncated or damaged"  # type: ignore[attr-defined]

    # the rest of n1's data is used; only what could not be a reading is "no sample"
    window, _ = a.evaluate(
        "bad", [n for n in store.nodes() if n.cluster == "bad"], StaticRules().params(), NOW
    )
    assert window.nodes == ["n1", "n2"]
    assert window.host_mem_total.tolist()[1] == 512 * GIB
    assert window.cpu_count.tolist()[1] == 64
    assert window.node_last_seen.tolist() == [NOW - 1, NOW - 1]


def test_a_cluster_that_cannot_be_read_is_one_alert_and_the_others_carry_on() -> None:
    store = two_clusters()
    store.register("bad", "n3", NOW - 700)  # bad has a silent node of its own, firing before
    clock = [NOW - 300]  # good's node-04 not yet silent for 180 s
    a, records, queue = analyzer(store, clock)
    assert brief(a.run()[0].published) == [("silent_node", "firing", "bad", ["n3"])]
    queue.take()

    store.broken.add("bad")
    clock[0] = NOW
    reports = a.run()
    assert [(r.cluster, r.error) for r in reports] == [
        ("bad", "StoreError: DynamoDB ThrottlingException"),
        ("good", None),
        (CONFIG_CLUSTER, None),
    ]
    failed, silent = queue.take()
    assert brief([silent]) == [SILENT_04]  # in the same run
    at = line_of(incremental, "for s in self.store.read_chunks(")  # a warm run: only what is new
    assert (failed.rule, failed.state, failed.cluster, failed.severity, failed.title) == (
        "analysis_failed",
        "firing",
        "bad",
        "critical",
        "gpulse could not analyze a cluster",
    )
    assert failed.summary == (
        "gpulse could not analyze cluster bad: StoreError: DynamoDB ThrottlingException "
        f"(at incremental.py:{at})"
    )
    assert failed.action.startswith("No rule watches bad until this is fixed. The analyze function's log")
    # a failed run says nothing of bad's other alerts: its silent node stays firing, unresolved
    assert sorted((rec.rule, rec.state) for (c, _), rec in records.rows.items() if c == "bad") == [
        ("analysis_failed", "firing"),
        ("silent_node", "firing"),
    ]

    assert [r.error for r in a.run()] == ["StoreError: DynamoDB ThrottlingException", None, None]
    assert queue.take() == []  # still failing: told once

    store.broken.clear()
    assert [r.error for r in a.run()] == [None, None, None]
    [resolved] = queue.take()
    assert (resolved.rule, resolved.state, resolved.fingerprint, resolved.summary) == (
        "analysis_failed",
        "resolved",
        failed.fingerprint,
        failed.summary,
    )
    assert sorted(rec.rule for (c, _), rec in records.rows.items() if c == "bad") == ["silent_node"]


class Broken:
    """A 13th rule that raises while `failing`."""

    name: ClassVar[str] = "broken"
    title: ClassVar[str] = "Broken"
    description: ClassVar[str] = "raises"
    one_shot: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {"for_s": 0, "severity": "warning"}
    failing = True

    def validate(self, params: dict[str, Any]) -> None:
        pass

    def detect(self, window: Window, params: dict[str, Any]) -> list[Condition]:
        if self.failing:
            raise ZeroDivisionError("division by zero")
        return []


BOB = {"user": "bob", "container": "c0ffee", "name": "jupyter", "pid": 4242}


def faulty_window() -> Window:
    """8 nodes: node-03 and node-06 idle (imbalance), bob holding node-05's GPU 3 idle
    (idle_held), node-09 silent (silent_node): several rules with something to say."""
    docs = []
    for t0 in range(int(NOW - 300), int(NOW), 30):
        for i in range(1, 9):
            node = f"node-{i:02d}"
            idle = node in ("node-03", "node-06")
            util = [[1.0 if idle else 90.0] * 30 for _ in range(4)]
            mem = [[0.5 * GIB if idle else 60 * GIB] * 30 for _ in range(4)]
            procs: list[dict[str, Any]] = []
            if node == "node-05":
                util[3], mem[3] = [0.0] * 30, [22 * GIB] * 30
                procs = [
                    {**BOB, "gpu_index": 3, "mem_used": 22 * GIB, "first_seen": t0, "last_seen": t0 + 29}
                ]
            docs.append(batch_doc(node=node, t0=t0, n=30, gpus=4, util=util, mem_used=mem, processes=procs))
    chunks = [codec.decode(codec.encode(d)) for d in docs]
    registry = [NodeSeen(f"node-{i:02d}", None, NOW - 1) for i in range(1, 9)]
    registry.append(NodeSeen("node-09", None, NOW - 400))
    return window_for("c1", chunks, registry, NOW, window_s=600)


def test_a_rule_that_raises_is_its_own_alert_and_the_other_twelve_are_unaffected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    window = faulty_window()
    params = {name: params_for(name, {"for_s": 60} if name != "silent_node" else None) for name in CATALOGUE}
    alone = detect_all(window, params)
    assert sorted({c.rule for c in alone}) == ["idle_held", "imbalance", "silent_node"]

    broken = Broken()
    with_broken = detect_all(window, {**params, "broken": {}}, detectors={**CATALOGUE, "broken": broken})
    *rest, failed = with_broken
    assert repr(rest) == repr(alone)  # the twelve others: the very same conditions
    at = line_of(detection, "det.detect(window, params[name])")
    assert (failed.rule, failed.subject, failed.severity, failed.summary) == (
        "analysis_failed",
        {"cluster": "c1", "detector": "broken"},
        "warning",
        f"gpulse could not analyze cluster c1 with rule broken: ZeroDivisionError: division by zero "
        f"(at detection.py:{at})",
    )
    assert failed.muted_by is None  # node-09's silence mutes nothing that names no node

    # through a run: fires once, resolves once the rule runs again; the cluster's alerts stand
    monkeypatch.setitem(CATALOGUE, "broken", broken)
    store = MemSeries()
    ship(store, "c1", "node-01", NOW - 300, 300)
    a, _, queue = analyzer(store)
    [report, _] = a.run()
    assert (report.error, report.failed_rules, report.failures) == (None, ["broken"], 1)
    assert [(f.rule, f.state, f.summary) for f in queue.take()] == [
        ("analysis_failed", "firing", failed.summary)
    ]
    assert a.run()[0].failed_rules == ["broken"] and queue.take() == []
    broken.failing = False
    assert a.run()[0].failures == 0
    assert [(f.rule, f.state) for f in queue.take()] == [("analysis_failed", "resolved")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.booleans(), min_size=1, max_size=6))
def test_each_failure_streak_is_told_once_firing_and_once_resolved(fails: list[bool]) -> None:
    """Whatever the sequence of failing and healthy runs of one cluster, its `analysis_failed`
    alert fires once at the start of each streak of failures and resolves once after it; the
    other cluster's silent node fires once, in the first run, and nothing else is said."""
    store = MemSeries()
    ship(store, "good", "node-01", NOW - 60, 60)
    store.register("good", "node-02", NOW - 400)
    ship(store, "bad", "n1", NOW - 60, 60)
    a, _, queue = analyzer(store)
    said: list[tuple[str, str, str]] = []
    for failing in fails:
        store.broken = {"bad"} if failing else set()
        a.run()
        said.extend((f.rule, f.state, f.cluster) for f in queue.take())
    expected: list[tuple[str, str, str]] = []
    for i, failing in enumerate(fails):
        before = fails[i - 1] if i else False
        if failing and not before:
            expected.append(("analysis_failed", "firing", "bad"))
        if before and not failing:
            expected.append(("analysis_failed", "resolved", "bad"))
        if i == 0:
            expected.append(("silent_node", "firing", "good"))
    assert said == expected


def reframed(chunk: bytes, edit: Any) -> bytes:
    """`chunk` with its header edited by `edit(header)` and a valid checksum: a body this codec
    did not write, as only a bug or a forger could make."""
    inflater = zlib.decompressobj(-15, zdict=codec._ZDICT_V1)
    raw = inflater.decompress(chunk[codec._FRAME.size :])
    (n,) = struct.unpack_from("<I", raw)
    header = json.loads(raw[4 : 4 + n])
    edit(header)
    head = json.dumps(header).encode()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=codec._ZDICT_V1)
    body = deflater.compress(struct.pack("<I", len(head)) + head + raw[4 + n :]) + deflater.flush()
    return codec._FRAME.pack(codec.MAGIC, codec.VERSION, zlib.crc32(body)) + body


def test_a_checksummed_body_with_numbers_past_int64_is_corrupt_not_an_overflow() -> None:
    data = codec.encode(batch_doc(n=10))
    with pytest.raises(codec.ChunkCorrupt, match="OverflowError"):
        codec.decode(reframed(data, lambda h: h["series"].update(base=[BIG] * len(h["series"]["base"]))))
    with pytest.raises(codec.ChunkCorrupt, match="OverflowError"):
        codec.decode(reframed(data, lambda h: h["processes"].append({"cpu_affinity": f"0-{BIG}"})))


def test_the_failure_alert_renders_in_both_chats() -> None:
    store = MemSeries()
    store.register("bad", "n1", NOW - 1)
    store.broken.add("bad")
    a, _, queue = analyzer(store)
    a.run()
    [failed] = queue.take()
    # nothing in either renderer assumes a catalogue rule: title, summary and action as given
    said = "gpulse could not analyze cluster bad: StoreError: DynamoDB ThrottlingException"
    at = line_of(incremental, "stored = self.store.read_chunks(")
    text = slack.render_finding(failed)
    assert text["text"] == f"🔴 [FIRING] gpulse could not analyze a cluster — {said} (at incremental.py:{at})"
    assert [
        b["text"]["text"] for b in text["blocks"] if b["type"] in ("header", "section") and "text" in b
    ] == [
        "🔴 gpulse could not analyze a cluster",
        f"{said} (at incremental.py:{at})",
        f"*What to try*\n{failed.action}",
    ]
    card = jandi.render_finding(failed)
    assert card["body"] == f"[FIRING] gpulse could not analyze a cluster — {said} (at incremental.py:{at})"
    assert [(i["title"], i["description"]) for i in card["connectInfo"]][::4] == [
        ("Where", "cluster bad"),
        ("Action", failed.action),
    ]
