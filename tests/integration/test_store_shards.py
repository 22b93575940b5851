"""The series store's keys against moto (tables from template.yaml): sharded partition keys, the
arrival time each item carries, `read_chunks(arrived_after=...)`, and a retried batch stored once."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gpulse import codec
from gpulse.errors import DuplicateBatch
from gpulse.store import BUCKET_S, SeriesStore, bucket_of
from gpulse.wire.batch import Batch
from tests.factories import batch_doc
from tests.integration.lambdas import deploy

pytestmark = pytest.mark.integration
T0 = 1_763_800_200.0  # a bucket boundary + 0: 1_763_800_200 is a multiple of 600


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def table(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    yield deploy(moto_server, monkeypatch).tables["SeriesTable"]


def chunk_items(table: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    return sorted((i for i in items if i["pk"]["S"] != "registry"), key=lambda i: i["sk"]["S"])


def test_one_batch_is_one_item_under_its_nodes_shard(table: str) -> None:
    clock = Clock(T0 + 12.5)
    store = SeriesStore(table, shards=4, ttl_days=2, hot_ttl_s=7200, clock=clock)
    doc = batch_doc(node="node-07", t0=T0, n=10, node_group="g1", seq=3)
    assert store.put_batch(Batch(doc)) == 1
    shard = zlib.crc32(b"node-07") % 4
    assert chunk_items(table) == [
        {
            "pk": {"S": f"c1#{bucket_of(T0 + 9)}#{shard}"},
            "sk": {"S": f"{round((T0 + 9) * 1000):013d}#node-07#{doc['batch_id']}#0"},
            "node": {"S": "node-07"},
            "batch_id": {"S": doc["batch_id"]},
            "seq": {"N": "3"},
            "t_first": {"N": repr(T0)},
            "t_last": {"N": repr(T0 + 9)},
            "samples": {"N": "10"},
            "data": {"B": codec.encode(doc)},
            "expires_at": {"N": str(int(T0 + 12.5) + 7200)},  # the hot tier's TTL
            "arrived": {"N": f"{T0 + 12.5:.3f}"},
            "node_group": {"S": "g1"},
        }
    ]
    registry = boto3.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": "registry"}, "sk": {"S": "c1#node-07"}}
    )
    assert registry["Item"]["expires_at"] == {"N": str(int(T0 + 12.5) + 2 * 86400)}  # the long tier's


def test_a_retried_batch_is_stored_once_with_its_first_arrival(table: str) -> None:
    clock = Clock(T0 + 20)
    store = SeriesStore(table, shards=8, clock=clock)
    doc = batch_doc(node="node-02", t0=T0, n=10)
    store.put_batch(Batch(doc))
    clock.t = T0 + 90  # the shipper did not see the 200 and sends it again later
    with pytest.raises(DuplicateBatch):
        store.put_batch(Batch(doc))
    [item] = chunk_items(table)
    assert item["arrived"] == {"N": f"{T0 + 20:.3f}"}
    assert [c.arrived for c in store.read_chunks("c1", T0, T0 + 60)] == [T0 + 20]


def test_reads_gather_every_shard_in_order_of_last_sample(table: str) -> None:
    nodes = [f"node-{i:02d}" for i in range(12)]
    shards = {zlib.crc32(n.encode()) % 4 for n in nodes}
    assert shards == {0, 1, 2, 3}  # the nodes below really spread over every shard
    store = SeriesStore(table, shards=4, clock=Clock(T0 + 100))
    docs = [batch_doc(node=n, t0=T0 + i, n=10) for i, n in enumerate(nodes)]
    for d in docs:
        store.put_batch(Batch(d))
    got = store.read_chunks("c1", T0, T0 + 60)
    assert [c.node for c in got] == nodes  # node i's last sample is T0 + i + 9: time order
    assert [c.data for c in got] == [codec.encode(d) for d in docs]
    assert {c.key.split("/")[0] for c in got} == {f"c1#{bucket_of(T0)}#{s}" for s in range(4)}
    # a reader with another shard count would miss data: the count is one setting for both sides
    assert len(SeriesStore(table, shards=2).read_chunks("c1", T0, T0 + 60)) < len(nodes)


def test_arrived_after_returns_exactly_the_later_writes_late_samples_included(table: str) -> None:
    clock = Clock(T0 + 40)
    store = SeriesStore(table, shards=8, clock=clock)
    early = batch_doc(node="node-01", t0=T0, n=30)
    store.put_batch(Batch(early))
    clock.t = T0 + 70
    fresh = batch_doc(node="node-02", t0=T0 + 30, n=30)
    store.put_batch(Batch(fresh))
    clock.t = T0 + 700  # a spooled batch: its samples are ten minutes old, its arrival is new
    late = batch_doc(node="node-03", t0=T0 + 5, n=30)
    store.put_batch(Batch(late))

    def ids(after: float | None) -> list[tuple[str, float]]:
        return [(c.node, c.arrived) for c in store.read_chunks("c1", T0, T0 + 710, arrived_after=after)]

    assert ids(None) == [("node-01", T0 + 40), ("node-03", T0 + 700), ("node-02", T0 + 70)]
    assert ids(T0 + 40) == [("node-03", T0 + 700), ("node-02", T0 + 70)]  # strictly after
    assert ids(T0 + 69.999) == [("node-03", T0 + 700), ("node-02", T0 + 70)]
    assert ids(T0 + 70) == [("node-03", T0 + 700)]
    assert ids(T0 + 700) == []


# -- a state machine: the store against a dict of what was written --------------------------------


class StoreModel(RuleBasedStateMachine):
    """Batches from a few nodes, some retried, written at an advancing clock; every read (a window,
    with or without `arrived_after`) returns exactly the model's chunks, in order of last sample."""

    table = ""  # one table for every example; each example writes a cluster of its own

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock(T0)
        self.written: dict[str, tuple[str, float, float, float, bytes]] = {}  # id → node, t0, t_last, arrived
        self.docs: list[dict[str, Any]] = []

    @initialize(shards=st.integers(1, 5))
    def setup(self, shards: int) -> None:
        self.cluster = f"c{uuid.uuid4().hex[:8]}"
        self.store = SeriesStore(self.table, shards=shards, clock=self.clock)

    @rule(
        node=st.sampled_from(["a", "b", "c", "d"]),
        age=st.integers(0, 1500),
        n=st.integers(1, 40),
        wait=st.floats(0.001, 200),
    )
    def put(self, node: str, age: int, n: int, wait: float) -> None:
        self.clock.t += round(wait, 3)
        doc = batch_doc(cluster=self.cluster, node=node, t0=T0 + 1800 - age, n=n)
        self.store.put_batch(Batch(doc))
        self.docs.append(doc)
        ts = doc["timestamps"]
        self.written[doc["batch_id"]] = (node, ts[0], ts[-1], round(self.clock.t, 3), codec.encode(doc))

    @precondition(lambda self: bool(self.docs))
    @rule(pick=st.integers(0, 10**6), wait=st.floats(0, 100))
    def retry(self, pick: int, wait: float) -> None:
        self.clock.t += wait
        with pytest.raises(DuplicateBatch):
            self.store.put_batch(Batch(self.docs[pick % len(self.docs)]))

    @rule(start=st.integers(0, 2400), span=st.integers(0, 1800), after=st.none() | st.floats(T0, T0 + 3000))
    def read(self, start: int, span: int, after: float | None) -> None:
        lo, hi = T0 + start - 600, T0 + start - 600 + span
        got = [
            (c.node, c.arrived, c.data)
            for c in self.store.read_chunks(self.cluster, lo, hi, arrived_after=after)
        ]
        want = [
            (w[0], w[3], w[4])
            for _, w in sorted(
                self.written.items(), key=lambda kv: (bucket_of(kv[1][2]), kv[1][2], kv[1][0], kv[0])
            )
            if w[2] >= lo
            and w[1] <= hi
            and bucket_of(w[2]) <= bucket_of(hi)
            and (after is None or w[3] > round(after, 3))
        ]
        assert got == want

    @invariant()
    def one_item_per_batch(self) -> None:
        if hasattr(self, "cluster"):
            mine = [i for i in chunk_items(self.table) if i["pk"]["S"].startswith(f"{self.cluster}#")]
            assert len(mine) == len(self.written)


def test_store_state_machine(table: str) -> None:
    StoreModel.table = table
    case = StoreModel.TestCase
    case.settings = settings(
        max_examples=5, stateful_step_count=8, deadline=None, suppress_health_check=list(HealthCheck)
    )
    case().runTest()


def test_bucket_size_is_ten_minutes() -> None:
    # the sort key's time and the bucket both follow the chunk's last sample (store.py docstring)
    assert BUCKET_S == 600 and bucket_of(T0 + 599.999) == T0
