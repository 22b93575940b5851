"""The window kept between analyze ticks equals a rebuild from the same chunks, bit for bit.

A Hypothesis state machine stores batches as ingest would (in order, late from a spool, twice
under two batch ids, a node appearing or going silent, a MIG layout changing, processes and
events) and moves the clock by less or more than the window; after every tick the warm window
(`ClusterWindows`, incremental) must equal a cold rebuild from the store (`incremental=False`):
every bin array, the node registry, statics, processes, layouts and events.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gpulse import codec
from gpulse.analyze import detect_all, reported_last_bin
from gpulse.analyze.incremental import ClusterWindows, TickStats
from gpulse.detect.base import NodeSeen, Window
from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.store import SeriesStore, StoredChunk, encode_parts
from gpulse.window import build_window
from scenarios import suite
from scenarios.fleet import deliveries, planned

T0 = 1_763_800_000.0
WINDOW_S = 120.0
NODES = ("n1", "n2", "n3", "n4")
GIB = 1 << 30


class ArrivalStore(SeriesStore):
    """Chunks with their arrival, read as the real store reads them (span and `arrived_after`);
    a chunk becomes visible when the clock reaches its arrival."""

    def __init__(self) -> None:  # nothing here reaches AWS
        self.items: list[tuple[StoredChunk, float, float]] = []  # chunk, first and last sample
        self.now = 0.0

    def put(self, doc: dict[str, Any], arrived: float) -> None:
        key = f"{doc['timestamps'][-1] * 1000:013.0f}#{doc['node']}#{doc['batch_id']}#0"
        if any(c.key == key for c, _, _ in self.items):
            return  # the conditional write: one item per key
        ts = doc["timestamps"]
        self.items.append((StoredChunk(key, doc["node"], codec.encode(doc), arrived), ts[0], ts[-1]))

    def read_chunks(
        self,
        cluster: str,
        start: float,
        end: float,
        *,
        arrived_after: float | None = None,
        reach_s: float = 0.0,
    ) -> list[StoredChunk]:
        return sorted(
            (
                c
                for c, first, last in self.items
                if last >= start
                and first <= end
                and c.arrived <= self.now
                and (arrived_after is None or c.arrived > arrived_after)
            ),
            key=lambda c: c.key,
        )


def doc_for(node: str, t0: float, n: int, seed: int, batch: int, *, mig: bool) -> dict[str, Any]:
    """A batch of `n` 1 Hz samples of a 2-GPU node: values drawn from `seed` at each metric's
    resolution (so that sums of several chunks in one bin exercise the exact arithmetic)."""
    rng = np.random.default_rng(seed)
    ts = [t0 + i for i in range(n)]

    def series(lo: float, hi: float, step: float, nulls: bool = True) -> list[float | None]:
        out: list[float | None] = [round(float(v) / step) * step for v in rng.uniform(lo, hi, n)]
        if nulls and rng.random() < 0.3:
            out[int(rng.integers(n))] = None
        return out

    gpus = []
    for g in range(2):
        gpus.append(
            {
                "index": g,
                "uuid": f"GPU-{node}-{g}",
                "mem_total": 80 * GIB,
                "numa_node": g,
                "power_limit_w": 700.0,
                "mig_mode": mig and g == 1,
                "metrics": {
                    "util_gpu": series(0, 100, 1),
                    "power_w": series(60, 700, 0.01),
                    "mem_used": [float(v) for v in rng.integers(0, 80, n) * GIB],
                    "throttle_reasons": [float(v) for v in rng.choice([0, 1, 4, 32, 40, 128], n)],
                },
            }
        )
    doc: dict[str, Any] = {
        "version": 1,
        "batch_id": f"{node}-{batch:08d}-{seed % 997:03d}",
        "cluster": "c1",
        "node": node,
        "node_group": "g1" if node != "n4" else None,
        "seq": batch,
        "timestamps": ts,
        "host": {
            "cpu_count": 64 + (batch % 2) * 64,  # a static field that changes: the later chunk wins
            "mem_total": 512 * GIB,
            "metrics": {"cpu_util": series(0, 100, 0.1), "mem_used": [float(100 * GIB)] * n},
        },
        "gpus": gpus,
        "processes": [
            {
                "gpu_index": int(rng.integers(2)),
                "pid": 100 + int(rng.integers(3)),
                "user": str(rng.choice(["alice", "bob"])),
                "mem_used": int(rng.integers(1, 40)) * GIB,
                "cpu_affinity": list(range(0, 8 * int(rng.integers(1, 4)))),
                "first_seen": t0 - float(rng.integers(0, 300)),
                "last_seen": ts[-1] - float(rng.integers(0, 3)),
            }
            for _ in range(int(rng.integers(0, 3)))
        ],
        "events": (
            [{"ts": ts[-1], "type": "xid", "gpu_index": 0, "code": 48, "message": "Xid 48"}]
            if rng.random() < 0.2
            else []
        ),
    }
    if mig:  # the layout flips with the batch's parity: a layout change every batch
        profile = "1g.10gb" if batch % 2 else "2g.20gb"
        doc["mig"] = [
            {
                "gpu_index": 1,
                "uuid": f"MIG-{node}-{profile}",
                "gi_id": 1,
                "ci_id": 0,
                "profile": profile,
                "mem_total": 10 * GIB,
                "metrics": {"mem_used": [float(v) for v in rng.integers(0, 10, n) * GIB]},
            }
        ]
        doc["processes"].append(
            {
                "gpu_index": 1,
                "mig_uuid": f"MIG-{node}-{profile}",
                "pid": 7,
                "first_seen": t0,
                "last_seen": ts[-1],
            }
        )
    return doc


def assert_same(a: Window, b: Window) -> None:
    """Every field of two windows equal: arrays bit for bit (NaN where NaN)."""
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, name
            np.testing.assert_array_equal(x, y, err_msg=name, strict=True)
        elif isinstance(x, dict) and x and isinstance(next(iter(x.values())), np.ndarray):
            assert list(x) == list(y), name
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}.{k}", strict=True)
        elif isinstance(x, float) and math.isnan(x):
            assert math.isnan(y), name
        else:
            assert x == y, name
    # and what the window hands on of the series it leaves out (window.UNREAD_GPU)
    np.testing.assert_array_equal(reported_last_bin(a), reported_last_bin(b), strict=True)


class IncrementalWindow(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = ArrivalStore()
        self.warm = ClusterWindows(self.store, window_s=WINDOW_S)
        self.now = T0
        self.batches = 0
        self.last: dict[str, float] = {}  # each node's next sample time when shipping in order
        self.sent: list[dict[str, Any]] = []
        self.ticks = 0

    @initialize()
    def start(self) -> None:
        self.store.now = self.now

    @rule(
        node=st.sampled_from(NODES),
        samples=st.integers(1, 40),
        seed=st.integers(0, 2**16),
        delay=st.sampled_from([0.0, 0.5, 20.0]),
    )
    def ship(self, node: str, samples: int, seed: int, delay: float) -> None:
        """The node's next batch, in order, arriving now (or a little after)."""
        t0 = max(self.last.get(node, self.now - samples - 5), self.now - WINDOW_S - 200)
        self.put(doc_for(node, t0, samples, seed, self.batches, mig=node == "n3"), self.now + delay)
        self.last[node] = t0 + samples

    @rule(
        node=st.sampled_from(NODES),
        back=st.floats(0, WINDOW_S + 300),
        samples=st.integers(1, 30),
        seed=st.integers(0, 2**16),
    )
    def late(self, node: str, back: float, samples: int, seed: int) -> None:
        """A batch from the node's spool: its samples up to `back` seconds old, arriving now."""
        t0 = math.floor(self.now - back)
        self.put(doc_for(node, t0, samples, seed, self.batches, mig=node == "n3"), self.now)

    @precondition(lambda self: bool(self.sent))
    @rule(which=st.integers(0, 10**6), same_id=st.booleans())
    def duplicate(self, which: int, same_id: bool) -> None:
        """A batch sent again: under its own id (one item) or a new one (two items)."""
        doc = dict(self.sent[which % len(self.sent)])
        if not same_id:
            doc["batch_id"] = f"{doc['batch_id']}-again"
        self.put(doc, self.now)

    @rule(
        node=st.sampled_from(NODES),
        ahead=st.floats(1, 200),
        samples=st.integers(1, 20),
        seed=st.integers(0, 2**16),
    )
    def ahead(self, node: str, ahead: float, samples: int, seed: int) -> None:
        """A node whose clock runs ahead: its samples are in the future when they arrive."""
        t0 = math.floor(self.now + ahead)
        self.put(doc_for(node, t0, samples, seed, self.batches, mig=False), self.now)

    @rule(advance=st.sampled_from([1.0, 5.0, 17.0, 30.0, 60.0, WINDOW_S + 60, 3 * WINDOW_S, 1000.0]))
    def tick(self, advance: float) -> None:
        self.now += advance
        self.store.now = self.now
        self.ticks += 1
        registry = [NodeSeen(n, "g1", self.now - 10) for n in NODES]
        warm = self.warm.window("c1", registry, self.now)
        cold = ClusterWindows(self.store, window_s=WINDOW_S, incremental=False).window(
            "c1", registry, self.now
        )
        assert_same(warm, cold)

    def put(self, doc: dict[str, Any], arrived: float) -> None:
        self.batches += 1
        self.sent.append(doc)
        self.store.put(doc, arrived)

    @invariant()
    def arrivals_are_monotone(self) -> None:
        assert self.store.now == self.now


IncrementalWindow.TestCase.settings = settings(
    max_examples=int(os.environ.get("GPULSE_WINDOW_EXAMPLES", "25")),
    stateful_step_count=30,
    deadline=None,
)
TestIncrementalWindow = IncrementalWindow.TestCase


def test_a_window_built_at_once_equals_one_built_from_the_same_chunks_in_any_order() -> None:
    docs = [
        doc_for(n, T0 + 13 * k, 20, k * 7 + i, k, mig=n == "n3")
        for k in range(8)
        for i, n in enumerate(NODES)
    ]
    chunks = [codec.decode(codec.encode(d)) for d in docs]
    end = T0 + 100.0
    one = build_window("c1", chunks, end=end, span_s=60.0, step=5.0)
    other = build_window("c1", chunks[::-1], end=end, span_s=60.0, step=5.0)
    assert_same(one, other)
    # and the sums are the samples': a bin's mean is the mean of the samples in it
    g = one.gpu_index.tolist().index(0)
    in_bin = [
        (t, v)
        for d in docs
        if d["node"] == one.nodes[int(one.gpu_node[g])]
        for t, v in zip(d["timestamps"], d["gpus"][0]["metrics"]["mem_used"], strict=True)
        if v is not None and one.start + 5.0 <= t < one.start + 10.0
    ]
    mib = 2.0**-20  # mem_used's counts per byte
    assert one.gpu["mem_used"][g, 1] == np.float64(sum(round(v * mib) for _, v in in_bin)) / len(in_bin) / mib
    assert "power_w" not in one.gpu  # no rule reads it (window.UNREAD_GPU)


# The default suite replays two scenarios' first 15 minutes; GPULSE_WINDOW_SCENARIOS=all (make
# bench-fleet) replays five for 25 minutes each.
ALL = os.environ.get("GPULSE_WINDOW_SCENARIOS") == "all"
SCENARIOS = (
    ("imbalance_lost", "mig_layout", "silent_node", "hardware_errors", "healthy_mixed")
    if ALL
    else ("imbalance_lost", "mig_layout")
)
SPAN_S = 1500.0 if ALL else 900.0


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_scenarios_rules_find_the_same_conditions_warm_and_cold(name: str) -> None:
    """A quick scenario's batches, stored as they arrive; at every analyze run (each minute) the
    warm window equals the cold one and the rules' conditions are the same, field for field: the
    alert state machine, fed the same conditions, then makes the same transitions."""
    scenario = getattr(suite, name)(True)
    fleet, faults = planned(scenario.fleet, scenario.faults), scenario.faults
    store = ArrivalStore()
    warm = ClusterWindows(store, window_s=600.0)
    params = {n: params_for(n) for n in CATALOGUE}
    seen: dict[str, float] = {}
    now = fleet.start + 20.0
    runs = found = 0
    for d in [*deliveries(fleet, faults), None]:
        while d is None or d.at > now:
            if now > fleet.start + min(fleet.duration_s, SPAN_S):
                break
            store.now = now
            registry = [NodeSeen(n, None, s) for n, s in sorted(seen.items())]
            a = warm.window(fleet.cluster, registry, now)
            b = ClusterWindows(store, window_s=600.0, incremental=False).window(fleet.cluster, registry, now)
            assert_same(a, b)
            conditions = detect_all(a, params)
            assert conditions == detect_all(b, params)
            runs, found, now = runs + 1, found + len(conditions), now + 60.0
        if d is None or d.at > now:
            break
        for i, (piece, data) in enumerate(encode_parts(d.doc)):
            key = f"{piece['timestamps'][-1] * 1000:013.0f}#{d.node}#{d.doc['batch_id']}#{i}"
            ts = piece["timestamps"]
            store.items.append((StoredChunk(key, d.node, data, d.at), ts[0], ts[-1]))
        seen[d.node] = max(seen.get(d.node, 0.0), d.doc["timestamps"][-1])
    assert runs >= SPAN_S // 60 - 1
    if name != "healthy_mixed":
        assert found > 0  # the fault was seen: the comparison covered conditions, not only silence


def test_binning_whole_matrices_by_layout_equals_binning_series_by_series() -> None:
    """A decoded chunk carries its matrix and `Layout`: `WindowState` bins chunks of one layout
    as one stacked matrix. Chunks without them (built by hand, or cut by `readable`) go series by
    series: both give the same window, bit for bit, mixed in one state or not."""
    from dataclasses import replace

    scenario = suite.mig_layout(True)
    fleet = planned(scenario.fleet, scenario.faults)
    chunks = [
        codec.decode(data)
        for d in deliveries(fleet, scenario.faults)
        if d.at < fleet.start + 400.0
        for _, data in encode_parts(d.doc)
    ]
    assert all(c.values is not None and c.layout is not None for c in chunks)
    bare = [replace(c, values=None, layout=None) for c in chunks]
    mixed = [c if i % 3 else b for i, (c, b) in enumerate(zip(chunks, bare, strict=True))]
    end = fleet.start + 360.0
    whole, by_series, both = (
        build_window(fleet.cluster, cs, end=end, span_s=300.0, step=5.0) for cs in (chunks, bare, mixed)
    )
    assert len(whole.gpu_index) and whole.mig and any(whole.gpu_processes) and "throttle_power" in whole.gpu
    assert_same(whole, by_series)
    assert_same(whole, both)


def test_a_container_forgets_its_least_recently_used_windows_past_keep_nodes() -> None:
    """Clusters a, b, c of 2 nodes each, `keep_nodes` 4: the third window used forgets the least
    recently used one; a forgotten window comes back as a rebuild equal to a cold one; the one just
    used is kept even when it alone holds more."""
    store = ArrivalStore()
    for cluster in ("a", "b", "c"):
        for i, node in enumerate(("n1", "n2")):
            doc = doc_for(node, T0, 20, i, 0, mig=False) | {"cluster": cluster}
            doc["batch_id"] = f"{cluster}-{node}"
            store.put(doc, T0 + 25)
    store.now = T0 + 30
    windows = ClusterWindows(store, window_s=WINDOW_S, keep_nodes=4)

    def tick(cluster: str) -> TickStats:
        stats = TickStats()
        windows.window(cluster, [], T0 + 30, stats)
        return stats

    assert [tick(c).cold for c in ("a", "b")] == [True, True]
    assert tick("a").cold is False  # a is now the most recently used
    assert tick("c").cold is True
    assert windows.kept() == [("a", None), ("c", None)]  # b, least recently used, forgotten
    assert tick("b").cold is True  # rebuilt from the store
    assert windows.kept() == [("c", None), ("b", None)]
    windows.keep_nodes = 1
    tick("a")
    assert windows.kept() == [("a", None)]  # 2 nodes, more than 1: kept, being the one just used
