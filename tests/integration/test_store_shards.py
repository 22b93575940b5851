"""The series store's keys against moto (tables from template.yaml): sharded partition keys, the
arrival time each item carries, `read_chunks(arrived_after=...)`, a retried batch stored once and
the same batch_id with other content refused (the conditional write alone: no idempotency record),
and the node registry rewritten every few minutes, not once per batch."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gpulse import codec
from gpulse.errors import DuplicateBatch, InvalidInput
from gpulse.store import BUCKET_S, REGISTRY_REFRESH_S, SeriesStore, bucket_of
from gpulse.wire.batch import Batch
from tests.factories import batch_doc
from tests.integration.lambdas import deploy
from tests.integration.test_ingest_fuzz import big_batch_with_xid

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


def test_the_same_batch_id_with_other_content_is_refused_and_nothing_changes(table: str) -> None:
    store = SeriesStore(table, clock=Clock(T0 + 20))
    doc = batch_doc(node="node-02", t0=T0, n=10)
    store.put_batch(Batch(doc))
    before = chunk_items(table)
    other = {
        **doc,
        "gpus": [{**doc["gpus"][0], "metrics": {**doc["gpus"][0]["metrics"], "util_gpu": [3.0] * 10}}],
    }
    with pytest.raises(InvalidInput) as refused:
        store.put_batch(Batch(other))
    assert (refused.value.status, str(refused.value)) == (
        409,
        "batch_id was already used for a batch with different content",
    )
    assert chunk_items(table) == before


def test_a_retried_multi_chunk_batch_is_stored_once_and_a_changed_one_refused(table: str) -> None:
    doc = big_batch_with_xid()  # two chunks, written in one transaction
    store = SeriesStore(table, clock=Clock(doc["timestamps"][-1] + 20))
    assert store.put_batch(Batch(doc)) == 2
    with pytest.raises(DuplicateBatch):
        store.put_batch(Batch(doc))
    doc["gpus"][3]["metrics"]["power_w"][-1] = 1.0  # only the last chunk differs
    with pytest.raises(InvalidInput) as refused:
        store.put_batch(Batch(doc))
    assert refused.value.status == 409
    assert len(chunk_items(table)) == 2


def registry_writes(store: SeriesStore) -> list[str]:
    """Record the sort keys of the registry items the store's client puts (chunks aside)."""
    seen: list[str] = []

    def on_put(params: dict[str, Any], **_: Any) -> None:
        if params["Item"]["pk"]["S"] == "registry":
            seen.append(params["Item"]["last_seen"]["N"])

    store.client.meta.events.register("provide-client-params.dynamodb.PutItem", on_put)
    return seen


def test_the_registry_is_rewritten_every_few_minutes_or_when_group_or_spool_change(table: str) -> None:
    clock = Clock(T0)
    store = SeriesStore(table, clock=clock)
    writes = registry_writes(store)
    for i in range(60):  # ten minutes of 10 s batches
        clock.t = T0 + 10 * i + 12
        store.put_batch(Batch(batch_doc(node="n1", t0=T0 + 10 * i, n=10, node_group="g1")))
    assert writes == [repr(T0 + 9), repr(T0 + 9 + REGISTRY_REFRESH_S)]
    moved = batch_doc(node="n1", t0=T0 + 600, n=10, node_group="g2")  # the node changed group
    store.put_batch(Batch(moved))
    full = batch_doc(node="n1", t0=T0 + 610, n=10, node_group="g2")
    full["agent"] = {"spool": "full"}
    store.put_batch(Batch(full))
    assert writes[2:] == [repr(T0 + 609), repr(T0 + 619)]
    [info] = store.nodes()
    assert (info.node_group, info.last_seen, info.spool) == ("g2", T0 + 619, "full")
    # another container (a new store, empty cache) reads the entry once and does not rewrite it
    other = SeriesStore(table, clock=clock)
    other_writes = registry_writes(other)
    again = batch_doc(node="n1", t0=T0 + 620, n=10, node_group="g2")
    again["agent"] = {"spool": "full"}
    other.put_batch(Batch(again))
    assert other_writes == []
    assert store.nodes()[0].last_seen == T0 + 619


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
        # two ingest containers: each with its own registry cache, one table
        self.stores = [SeriesStore(self.table, shards=shards, clock=self.clock) for _ in range(2)]
        self.store = self.stores[0]
        self.latest: dict[str, float] = {}  # node → its latest stored sample

    @rule(
        node=st.sampled_from(["a", "b"]),
        age=st.integers(0, 1500),
        n=st.integers(1, 40),
        wait=st.floats(0.001, 200),
        container=st.integers(0, 1),
    )
    def put(self, node: str, age: int, n: int, wait: float, container: int) -> None:
        self.clock.t += round(wait, 3)
        doc = batch_doc(cluster=self.cluster, node=node, t0=T0 + 1800 - age, n=n)
        self.stores[container].put_batch(Batch(doc))
        self.latest[node] = max(self.latest.get(node, 0.0), doc["timestamps"][-1])
        self.docs.append(doc)
        ts = doc["timestamps"]
        self.written[doc["batch_id"]] = (node, ts[0], ts[-1], round(self.clock.t, 3), codec.encode(doc))

    @precondition(lambda self: bool(self.docs))
    @rule(pick=st.integers(0, 10**6), wait=st.floats(0, 100))
    def retry(self, pick: int, wait: float) -> None:
        self.clock.t += wait
        with pytest.raises(DuplicateBatch):
            self.store.put_batch(Batch(self.docs[pick % len(self.docs)]))

    @precondition(lambda self: bool(self.docs))
    @rule(pick=st.integers(0, 10**6), container=st.integers(0, 1))
    def conflict(self, pick: int, container: int) -> None:
        doc = self.docs[pick % len(self.docs)]
        other = {
            **doc,
            "host": {
                **doc["host"],
                "metrics": {**doc["host"]["metrics"], "cpu_util": [1.0] * len(doc["timestamps"])},
            },
        }
        with pytest.raises(InvalidInput):
            self.stores[container].put_batch(Batch(other))

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

    @invariant()
    def registry_lags_less_than_its_refresh(self) -> None:
        if hasattr(self, "cluster"):
            got = {n.node: n.last_seen for n in self.store.nodes() if n.cluster == self.cluster}
            assert set(got) == set(self.latest)
            for node, last in self.latest.items():
                assert last - REGISTRY_REFRESH_S < got[node] <= last


def test_store_state_machine(table: str) -> None:
    StoreModel.table = table
    case = StoreModel.TestCase
    case.settings = settings(
        max_examples=5,
        stateful_step_count=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],  # no shrinking: the table outlives an example, so a replay differs
    )
    case().runTest()


def test_bucket_size_is_ten_minutes() -> None:
    # the sort key's time and the bucket both follow the chunk's last sample (store.py docstring)
    assert BUCKET_S == 600 and bucket_of(T0 + 599.999) == T0
