"""The compactor against moto (table and bucket from template.yaml): an hour of chunks per node
becomes one S3 object (block and rollups), exactly; a re-run writes nothing; a late chunk rebuilds
its node's object; the bucket is private, encrypted and expires the long tier; the Lambda handler
runs it from the template's environment."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest

from gpulse import blocks, codec, store
from gpulse.compact import DEFAULT_GRACE_S, Compactor
from gpulse.store import BLOCK_S, LongTier, SeriesStore
from gpulse.wire.batch import Batch
from tests.events import load_event
from tests.factories import GIB, batch_doc
from tests.integration.lambdas import FakeContext, check_private_bucket, deploy, load_function

pytestmark = pytest.mark.integration
H = 1_763_802_000.0  # an hour boundary
HOT_TTL_S = 3 * 3600
NODES = ("n1", "n2")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def tiers(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, LongTier]]:
    """The series table and the long tier's bucket, as the template makes them."""
    deployment = deploy(moto_server, monkeypatch)
    yield deployment.tables["SeriesTable"], LongTier(deployment.buckets["LongTierBucket"])


def ship_hour(s: SeriesStore, clock: Clock, start: float, *, cluster: str = "c1") -> list[dict[str, Any]]:
    """An hour and a bit of 10-minute batches from each node, util varying, each written as it
    ends (the first one minute before the hour, so the hour before has a minute too)."""
    docs = []
    for t0 in range(int(start) - 60, int(start) + BLOCK_S + 60, 600):
        for k, node in enumerate(NODES):
            util = [[float((t0 + i + 7 * k) % 101) for i in range(600)] for _ in range(2)]
            doc = batch_doc(cluster=cluster, node=node, t0=t0, n=600, util=util)
            clock.t = t0 + 601
            s.put_batch(Batch(doc))
            docs.append(doc)
    return docs


def source_of(s: SeriesStore, node: str, hour: float) -> str:
    """The digest an hour object must carry: of the keys of the node's chunks the hour reads."""
    chunks = s.read_chunks("c1", hour, hour + BLOCK_S - 0.001, reach_s=store.BUCKET_S)
    return blocks.source_digest([c.key for c in chunks if c.node == node])


def long_objects(long: LongTier) -> dict[str, tuple[str, dict[str, str]]]:
    """Every object of the long tier: key → (ETag, user metadata)."""
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=long.bucket).get("Contents", [])]
    heads = {k: s3.head_object(Bucket=long.bucket, Key=k) for k in keys}
    return {k: (h["ETag"], h["Metadata"]) for k, h in heads.items()}


def put_keys(long: LongTier) -> list[str]:
    """Record the keys the long tier's client PUTs from now on."""
    seen: list[str] = []
    long.client.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: seen.append(params["Key"])
    )
    return seen


def test_an_hour_becomes_one_block_per_node_once(tiers: tuple[str, LongTier]) -> None:
    table, long = tiers
    check_private_bucket(long.bucket, rule="ExpireLongTier", prefix="long/", days=14)  # SeriesTtlDays
    clock = Clock(H)
    s = SeriesStore(table, shards=1, ttl_days=30, hot_ttl_s=HOT_TTL_S, clock=clock)
    docs = ship_hour(s, clock, H)
    clock.t = H + BLOCK_S + DEFAULT_GRACE_S + 1
    compactor = Compactor(s, long, clock=clock)
    assert compactor.hours_due(clock.t) == [H - BLOCK_S, H]  # the hour before may hold late chunks

    report = compactor.run()
    assert (report.hours, report.nodes, report.written, report.unchanged) == (2, 4, 4, 0)
    assert report.corrupt == [] and report.failed == []
    day = int(H // 86400 * 86400)
    # the hour before holds one minute: too sparse for an hour block, it went to the day's block
    stored = long_objects(long)
    assert {k: meta for k, (_, meta) in stored.items()} == {
        key: meta
        for node in NODES
        for key, meta in (
            (f"long/c1/{node}/d/{day:010d}", {}),
            (
                f"long/c1/{node}/h/{int(H):010d}",
                {"source": source_of(s, node, H)},
            ),
        )
    }
    for node in NODES:
        [blk] = long.read_blocks("c1", node, H, H + BLOCK_S - 1)
        assert blk.start == H
        block = blocks.decode_block(blk.parts[0])
        # exactly the samples shipped in [H, H + 1 h), at their steps, every metric
        mine = [d for d in docs if d["node"] == node]
        ts = [t for d in mine for t in d["timestamps"] if H <= t < H + BLOCK_S]
        assert block.timestamps.tolist() == ts
        util = [
            u
            for d in mine
            for u, t in zip(d["gpus"][1]["metrics"]["util_gpu"], d["timestamps"], strict=True)
            if H <= t < H + BLOCK_S
        ]
        assert block.gpus[1].metrics["util_gpu"].tolist() == util
        [roll] = long.read_rollups("c1", node, H, H + BLOCK_S - 1)
        assert roll.start == H and set(roll.stats) == set(blocks.STATS)
        mx = codec.decode(roll.stats["max"])
        assert mx.timestamps.tolist() == [H + 60 * m for m in range(60)]
        assert mx.gpus[1].metrics["util_gpu"].tolist() == [max(util[60 * m : 60 * m + 60]) for m in range(60)]

    puts = put_keys(long)
    again = compactor.run()  # idempotent: the same chunks, nothing written
    assert (again.written, again.unchanged) == (0, 4)
    assert puts == [] and long_objects(long) == stored


def test_one_nodes_failed_write_is_reported_and_the_others_are_written(tiers: tuple[str, LongTier]) -> None:
    """n1's PUT goes to a bucket that does not exist (moto answers NoSuchBucket): the run goes on,
    n2's block is written, n1's failure is in the report, and the next run writes n1's."""
    table, long = tiers
    clock = Clock(H)
    s = SeriesStore(table, shards=1, hot_ttl_s=HOT_TTL_S, clock=clock)
    ship_hour(s, clock, H)
    clock.t = H + BLOCK_S + DEFAULT_GRACE_S + 1
    compactor = Compactor(s, long, clock=clock)
    n1_hour = f"long/c1/n1/h/{int(H):010d}"

    def misdirect(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == n1_hour:
            params["Bucket"] = f"{long.bucket}-missing"

    long.client.meta.events.register("provide-client-params.s3.PutObject", misdirect)
    report = compactor.run()
    long.client.meta.events.unregister("provide-client-params.s3.PutObject", misdirect)
    assert (report.hours, report.nodes, report.written, report.unchanged) == (2, 4, 3, 0)
    [failure] = report.failed
    assert failure.startswith(f"c1/n1@{int(H)}: ")
    assert sorted(k for k in long_objects(long) if "/h/" in k) == [f"long/c1/n2/h/{int(H):010d}"]

    again = compactor.run()
    assert (again.written, again.unchanged, again.failed) == (1, 3, [])
    assert n1_hour in long_objects(long)


def test_a_late_chunk_rebuilds_only_its_nodes_block(tiers: tuple[str, LongTier]) -> None:
    table, long = tiers
    clock = Clock(H)
    s = SeriesStore(table, shards=1, hot_ttl_s=HOT_TTL_S, clock=clock)
    ship_hour(s, clock, H)
    clock.t = H + BLOCK_S + DEFAULT_GRACE_S + 1
    compactor = Compactor(s, long, clock=clock)
    compactor.run()
    # a spooled batch of n1 with samples the hour did not have yet (a gap filled late)
    late = batch_doc(node="n1", t0=H + 1800.5, n=10)
    clock.t += 600
    s.put_batch(Batch(late))
    puts = put_keys(long)
    report = compactor.run()
    assert (report.written, report.unchanged) == (1, 3)
    assert puts == [f"long/c1/n1/h/{int(H):010d}"]
    got = long.read_blocks("c1", "n1", H, H + BLOCK_S - 1)
    assert [(b.start, len(b.parts)) for b in got] == [(H, 2)]
    [blk] = got  # 3,610 samples: past the codec's 3,600, so two parts
    ts = np.concatenate([blocks.decode_block(p).timestamps for p in blk.parts])
    assert len(ts) == BLOCK_S + 10 and set(late["timestamps"]) <= set(ts.tolist())


def test_chunks_expire_with_the_hot_ttl_and_the_compactor_needs_them_an_hour_and_more(
    tiers: tuple[str, LongTier],
) -> None:
    table, long = tiers
    clock = Clock(H + 5)
    s = SeriesStore(table, hot_ttl_s=HOT_TTL_S, clock=clock)
    s.put_batch(Batch(batch_doc(t0=H)))
    [item] = [
        i for i in boto3.client("dynamodb").scan(TableName=table)["Items"] if i["pk"]["S"] != "registry"
    ]
    assert item["expires_at"]["N"] == str(int(H + 5) + HOT_TTL_S)
    with pytest.raises(ValueError, match="must exceed a block"):
        Compactor(SeriesStore(table, hot_ttl_s=BLOCK_S), long)


def test_the_handler_compacts_from_the_templates_environment(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deploy(moto_server, monkeypatch)
    table = deployment.tables["SeriesTable"]
    long = LongTier(deployment.buckets["LongTierBucket"])
    module = load_function("CompactorFunction", deployment, monkeypatch)
    now = time.time()
    hour = (now - DEFAULT_GRACE_S) // BLOCK_S * BLOCK_S - BLOCK_S  # the latest closed hour
    s = SeriesStore(table, hot_ttl_s=store.DEFAULT_HOT_TTL_S)
    for node in NODES:
        s.put_batch(Batch(batch_doc(node=node, t0=hour + 600, n=30)))
    result = module.handler(load_event("analyze_schedule"), FakeContext())
    assert {k: result[k] for k in ("nodes", "chunks", "written", "unchanged", "corrupt", "failed")} == {
        "nodes": 2,
        "chunks": 2,
        "written": 2,
        "unchanged": 0,
        "corrupt": 0,
        "failed": 0,
    }
    for node in NODES:
        [blk] = long.read_blocks("c1", node, hour, hour + BLOCK_S)
        np.testing.assert_array_equal(
            blocks.decode_block(blk.parts[0]).timestamps, hour + 600 + np.arange(30)
        )


def test_a_sparse_nodes_hours_fold_into_one_day_block_once(tiers: tuple[str, LongTier]) -> None:
    table, long = tiers
    clock = Clock(H)
    s = SeriesStore(table, shards=1, hot_ttl_s=HOT_TTL_S, clock=clock)
    sent = []
    for t0 in range(int(H - BLOCK_S), int(H + BLOCK_S), 240):  # two hours, a sample every 15 s
        doc = batch_doc(node="sparse", t0=t0, n=1)
        doc["timestamps"] = [t0 + 15.0 * i for i in range(16)]
        for g in doc["gpus"]:
            g["metrics"] = {"util_gpu": [float(t0 % 97)] * 16, "mem_used": [float(GIB)] * 16}
        doc["host"]["metrics"] = {"cpu_util": [None] * 16, "mem_used": [None] * 16}
        clock.t = t0 + 241
        s.put_batch(Batch(doc))
        sent.extend(doc["timestamps"])
    clock.t = H + BLOCK_S + DEFAULT_GRACE_S + 1
    compactor = Compactor(s, long, clock=clock)
    report = compactor.run()
    assert (report.nodes, report.written, report.unchanged, report.failed) == (2, 2, 0, [])
    day = H // 86400 * 86400
    assert list(long_objects(long)) == [f"long/c1/sparse/d/{int(day):010d}"]  # no hour objects, no rollups
    [blk] = long.read_blocks("c1", "sparse", H - BLOCK_S, H + BLOCK_S)
    assert blk.start == day
    block = blocks.decode_block(blk.parts[0])
    assert block.timestamps.tolist() == sent
    assert block.gpus[0].metrics["util_gpu"].tolist() == [float((t // 240 * 240) % 97) for t in sent]
    assert long.read_rollups("c1", "sparse", H - BLOCK_S, H + BLOCK_S) == []
    again = compactor.run()
    assert (again.written, again.unchanged) == (0, 2)


def test_ingest_writes_chunks_with_the_templates_hot_ttl(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deploy(moto_server, monkeypatch)
    module = load_function("IngestFunction", deployment, monkeypatch)
    monkeypatch.setenv("GPULSE_SERIES_HOT_TTL_S", "7200")  # read when the first request wires the store
    store = module.wired().store
    assert (store.hot_ttl_s, store.ttl_s, store.shards) == (7200, 14 * 86400, 8)
