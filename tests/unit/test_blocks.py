"""Long-tier blocks: block(decode(chunks)) gives back every value of every chunk exactly, at its
step; minute rollups are the exact min/max/last and the mean to half a step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpulse import blocks, codec
from tests.factories import GIB, batch_doc

T0 = 1_763_802_000.0  # an hour boundary: 1_763_802_000 = 489_945 × 3600

# (kind, metric, step): values are drawn as whole counts of the step, as the shipper sends them
SERIES = [("gpu", "util_gpu", 1.0), ("gpu", "power_w", 0.01), ("gpu", "mem_used", float(1 << 20))]
HOST = [("host", "cpu_util", 0.1), ("host", "net_rx_bps", 1024.0)]


@st.composite
def node_batches(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A node's batches: 1–3 GPUs, 1–6 batches of 1–40 samples at 1 Hz with gaps, values at each
    step with nulls, and a metric some batches do not ship."""
    gpus = draw(st.integers(1, 3))
    docs = []
    t = T0 + draw(st.integers(-50, 50))
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 40))
        doc = batch_doc(node="n1", t0=t, n=n, gpus=gpus)
        counts = st.one_of(st.none(), st.integers(0, 10**7))
        for i in range(gpus):
            metrics = {}
            for _, name, step in SERIES:
                if name == "power_w" and draw(st.booleans()):
                    continue  # not shipped by this batch
                vals = draw(st.lists(counts, min_size=n, max_size=n))
                metrics[name] = [None if v is None else v * step for v in vals]
            doc["gpus"][i]["metrics"] = metrics or {"util_gpu": [1.0] * n}
        for _, name, step in HOST:
            vals = draw(st.lists(counts, min_size=n, max_size=n))
            doc["host"]["metrics"][name] = [None if v is None else v * step for v in vals]
        docs.append(doc)
        t += n + draw(st.integers(0, 30))
    return docs


def decoded_block(
    docs: list[dict[str, Any]], start: float, end: float
) -> tuple[list[codec.Chunk], codec.Chunk]:
    chunks = [codec.decode(codec.encode(d)) for d in docs]
    merged = blocks.merge(chunks, start, end)
    assert merged is not None
    [data] = blocks.encode_block(merged)
    return chunks, blocks.decode_block(data)


def expected(chunks: list[codec.Chunk], start: float, end: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The chunks' own decoded samples in [start, end), concatenated: key "gpu{i}.{name}"."""
    chunks = [c for c in chunks if ((c.timestamps >= start) & (c.timestamps < end)).any()]
    if not chunks:
        return np.empty(0), {}
    ts = np.concatenate([c.timestamps for c in chunks])
    keep = (ts >= start) & (ts < end)
    series: dict[str, np.ndarray] = {}
    for key in {f"gpu{g.index}.{m}" for c in chunks for g in c.gpus for m in g.metrics} | {
        f"host.{m}" for c in chunks for m in c.host
    }:
        parts = []
        for c in chunks:
            where, _, name = key.partition(".")
            src = c.host if where == "host" else c.gpus[int(where[3:])].metrics
            parts.append(src.get(name, np.full(len(c.timestamps), np.nan)))
        series[key] = np.concatenate(parts)[keep]
    return ts[keep], series


def got_series(block: codec.Chunk) -> dict[str, np.ndarray]:
    out = {f"host.{m}": v for m, v in block.host.items()}
    out |= {f"gpu{g.index}.{m}": v for g in block.gpus for m, v in g.metrics.items()}
    return out


@settings(max_examples=25, deadline=None)
@given(docs=node_batches(), cut=st.integers(0, 120))
def test_a_block_gives_back_every_value_exactly(docs: list[dict[str, Any]], cut: int) -> None:
    start, end = T0 - 60 + cut, T0 + 3600  # sometimes a chunk straddles the start: it is cut
    chunks = [codec.decode(codec.encode(d)) for d in docs]
    ts, want = expected(chunks, start, end)
    if len(ts) == 0:
        assert blocks.merge(chunks, start, end) is None
        return
    _, block = decoded_block(docs, start, end)
    np.testing.assert_array_equal(block.timestamps, ts)
    got = got_series(block)
    assert set(got) == set(want)
    for key, values in want.items():
        np.testing.assert_array_equal(got[key], values, err_msg=key)  # NaN where NaN, exact elsewhere


def test_static_fields_names_and_timestamps_are_written_once() -> None:
    docs = [batch_doc(node="n1", t0=T0 + 30 * i, n=30, gpus=8) for i in range(120)]
    chunks = [codec.encode(d) for d in docs]
    merged = blocks.merge([codec.decode(c) for c in chunks], T0, T0 + 3600)
    assert merged is not None
    [data] = blocks.encode_block(merged)
    # 120 headers become one: the block is far smaller than its chunks together
    assert len(data) * 10 < sum(len(c) for c in chunks)
    block = blocks.decode_block(data)
    assert (len(block.timestamps), len(block.gpus)) == (3600, 8)
    assert block.gpus[0].metrics["mem_used"][0] == 60 * GIB


def test_a_sample_shipped_twice_is_kept_once_from_the_first_chunk() -> None:
    first = batch_doc(node="n1", t0=T0, n=10, util=[[50.0] * 10, [50.0] * 10])
    again = batch_doc(node="n1", t0=T0 + 5, n=10, util=[[70.0] * 10, [70.0] * 10])  # overlaps 5 s
    _, block = decoded_block([first, again], T0, T0 + 3600)
    assert block.timestamps.tolist() == [T0 + i for i in range(15)]
    assert block.gpus[0].metrics["util_gpu"].tolist() == [50.0] * 10 + [70.0] * 5


def test_processes_merge_into_one_record_per_process() -> None:
    proc = {"gpu_index": 0, "pid": 7, "user": "ann", "container": None, "name": "train"}
    docs = [
        batch_doc(
            node="n1",
            t0=T0,
            n=10,
            processes=[{**proc, "mem_used": GIB, "first_seen": T0, "last_seen": T0 + 9}],
        ),
        batch_doc(
            node="n1",
            t0=T0 + 10,
            n=10,
            processes=[{**proc, "mem_used": 3 * GIB, "first_seen": T0 + 10, "last_seen": T0 + 19}],
        ),
    ]
    _, block = decoded_block(docs, T0, T0 + 3600)
    assert block.processes == [{**proc, "mem_used": 3 * GIB, "first_seen": T0, "last_seen": T0 + 19}]


def test_minute_rollups_are_min_mean_max_last() -> None:
    util = [[float(i % 60) if i != 61 else None for i in range(120)]]
    doc = batch_doc(node="n1", t0=T0, n=120, gpus=1, util=util)
    merged = blocks.merge([codec.decode(codec.encode(doc))], T0, T0 + 3600)
    assert merged is not None
    stats = {k: codec.decode(v) for k, v in blocks.rollup(merged).items()}
    assert set(stats) == set(blocks.STATS)
    for s in stats.values():
        assert s.timestamps.tolist() == [T0, T0 + 60]
    col = {k: s.gpus[0].metrics["util_gpu"].tolist() for k, s in stats.items()}
    second = [float(i % 60) for i in range(60, 120) if i != 61]
    assert col["min"] == [0.0, 0.0]
    assert col["max"] == [59.0, 59.0]
    assert col["last"] == [59.0, 59.0]
    assert col["mean"] == [float(np.rint(29.5)), float(np.rint(sum(second) / len(second)))]  # step 1: ±0.5


def test_chunks_of_two_nodes_are_refused() -> None:
    a = codec.decode(codec.encode(batch_doc(node="n1", t0=T0)))
    b = codec.decode(codec.encode(batch_doc(node="n2", t0=T0)))
    with pytest.raises(ValueError, match="one node"):
        blocks.merge([a, b], T0, T0 + 3600)


def test_rollup_statistics_are_the_stores_item_attributes() -> None:
    from gpulse import store

    assert blocks.STATS == store.STATS


def test_a_damaged_block_is_refused_with_a_reason() -> None:
    merged = blocks.merge([codec.decode(codec.encode(batch_doc(node="n1", t0=T0)))], T0, T0 + 3600)
    assert merged is not None
    [data] = blocks.encode_block(merged)
    flipped = data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]
    with pytest.raises(blocks.BlockCorrupt, match="checksum"):
        blocks.decode_block(flipped)
    with pytest.raises(blocks.BlockCorrupt, match="not a version 1 block"):
        blocks.decode_block(b"GC" + data[2:])
    with pytest.raises(blocks.BlockCorrupt, match="shorter"):
        blocks.decode_block(data[:3])
    assert isinstance(blocks.BlockCorrupt("x"), codec.ChunkCorrupt)  # one family for readers


def test_a_block_too_large_for_an_item_is_split_in_time_order() -> None:
    noise = np.random.default_rng(1).integers(0, 101, (6, 600)).astype(float)
    docs = [batch_doc(node="n1", t0=T0 + 600 * i, n=600, util=[noise[i].tolist()] * 2) for i in range(6)]
    merged = blocks.merge([codec.decode(codec.encode(d)) for d in docs], T0, T0 + 3600)
    assert merged is not None
    [whole] = blocks.encode_block(merged)
    parts = blocks.encode_block(merged, max_bytes=len(whole) // 2)
    assert len(parts) > 2 and all(len(p) <= len(whole) // 2 for p in parts)
    ts = np.concatenate([blocks.decode_block(p).timestamps for p in parts])
    assert ts.tolist() == [T0 + i for i in range(3600)]


# -- the long tier's S3 objects (gpulse.store.LongTier): layout only, no bucket here ---------------


def test_an_hour_object_holds_the_block_parts_then_the_rollups_exactly() -> None:
    from gpulse.store import LongTier, _unpack

    doc = batch_doc(node="n1", t0=T0, n=120, gpus=2)
    merged = blocks.merge([codec.decode(codec.encode(doc))], T0, T0 + 3600)
    assert merged is not None
    parts, rollups = blocks.encode_block(merged), blocks.rollup(merged)
    obj = LongTier.block_object("c1", "n1", T0, parts, rollups, source="ab" * 16, t_first=T0, t_last=T0 + 119)
    assert obj.key == f"long/c1/n1/h/{int(T0):010d}"
    assert obj.metadata == {"source": "ab" * 16}
    header, sections = _unpack(obj.body)
    assert header == {
        "v": 1,
        "kind": "hour",
        "start": int(T0),
        "t_first": T0,
        "t_last": T0 + 119,
        "parts": 1,
        "rollups": list(blocks.STATS),
        "source": "ab" * 16,
        "sizes": [len(parts[0]), *(len(rollups[k]) for k in blocks.STATS)],
    }
    assert sections == [*parts, *(rollups[k] for k in blocks.STATS)]
    # S3 Standard bills the body, the key and the user metadata; nothing per object beyond
    assert obj.billed_bytes() == len(obj.body) + len(obj.key) + len("x-amz-meta-source") + 32


@pytest.mark.parametrize("cut", ["truncated", "other_version", "not_json"])
def test_a_damaged_long_object_is_refused_as_corrupt(cut: str) -> None:
    from gpulse.store import LongTier, _unpack

    obj = LongTier.day_block_object("c1", "n1", T0, [b"abc", b"de"], hours={"1": "x"}, t_first=T0, t_last=T0)
    assert _unpack(obj.body)[1] == [b"abc", b"de"]
    body = {
        "truncated": obj.body[:-1],
        "other_version": obj.body.replace(b'"v":1', b'"v":2'),
        "not_json": b"\x00" + obj.body,
    }[cut]
    with pytest.raises(codec.ChunkCorrupt):
        _unpack(body)
