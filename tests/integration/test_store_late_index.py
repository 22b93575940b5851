"""The series store's late index against moto (SeriesTable from template.yaml): a chunk written
more than LATE_S after its last sample carries `late_pk` and so lies in LateIndex, an on-time one
does not; `read_chunks(arrived_after=X)` returns exactly what filtering the whole window by arrival
returns, while the table query covers only the chunks that ended after X - LATE_S."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from gpulse import codec
from gpulse.errors import DuplicateBatch
from gpulse.store import BUCKET_S, LATE_INDEX, LATE_S, SeriesStore, StoredChunk, bucket_of
from gpulse.wire.batch import Batch
from tests.factories import batch_doc
from tests.integration.lambdas import deploy

pytestmark = pytest.mark.integration
T0 = 1_763_800_200.0  # a bucket boundary


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Covered:
    """What each Query covered (`ScannedCount`: the items its key condition matched, which
    DynamoDB bills, before any filter), split into the table's and LateIndex's, counted through
    botocore's event hooks on the client the store uses."""

    def __init__(self, client: Any) -> None:
        self.table = self.index = 0
        client.meta.events.register("before-parameter-build.dynamodb.Query", self._note)
        client.meta.events.register("after-call.dynamodb.Query", self._count)

    def _note(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["index"] = params.get("IndexName")

    def _count(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if context.get("index") == LATE_INDEX:
            self.index += parsed["ScannedCount"]
        else:
            self.table += parsed["ScannedCount"]

    def reset(self) -> None:
        self.table = self.index = 0


@pytest.fixture(scope="module")
def table(moto_server: str) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        yield deploy(moto_server, mp).tables["SeriesTable"]


def items_of(table: str, cluster: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    mine = (i for i in items if i["pk"]["S"].startswith(f"{cluster}#"))
    return sorted(mine, key=lambda i: i["sk"]["S"])


def key(c: StoredChunk) -> tuple[str, str, bytes, float]:
    return (c.key, c.node, c.data, c.arrived)


def test_an_on_time_chunk_has_no_late_pk_and_a_late_one_has_it(table: str) -> None:
    cluster = f"c{uuid.uuid4().hex[:8]}"
    clock = Clock(T0 + 9 + LATE_S)  # exactly LATE_S after its last sample: still on time
    store = SeriesStore(table, shards=4, hot_ttl_s=7200, clock=clock)
    on_time = batch_doc(cluster=cluster, node="node-07", t0=T0, n=10, seq=3)
    store.put_batch(Batch(on_time))
    clock.t = T0 + 600 + 9 + LATE_S + 0.001  # a spooled batch: written just past LATE_S
    late = batch_doc(cluster=cluster, node="node-07", t0=T0 + 600, n=10, seq=4)
    store.put_batch(Batch(late))
    shard = zlib.crc32(b"node-07") % 4

    def item(doc: dict[str, Any], arrived: float) -> dict[str, Any]:
        t0 = doc["timestamps"][0]
        return {
            "pk": {"S": f"{cluster}#{bucket_of(t0 + 9)}#{shard}"},
            "sk": {"S": f"{round((t0 + 9) * 1000):013d}#node-07#{doc['batch_id']}#0"},
            "node": {"S": "node-07"},
            "batch_id": {"S": doc["batch_id"]},
            "seq": {"N": str(doc["seq"])},
            "t_first": {"N": repr(t0)},
            "t_last": {"N": repr(t0 + 9)},
            "samples": {"N": "10"},
            "data": {"B": codec.encode(doc)},
            "expires_at": {"N": str(int(arrived) + 7200)},
            "arrived": {"N": f"{arrived:.3f}"},
        }

    assert items_of(table, cluster) == [
        item(on_time, T0 + 9 + LATE_S),
        {**item(late, clock.t), "late_pk": {"S": f"{cluster}#{shard}"}},
    ]
    # the index holds the late chunk alone
    index = boto3.client("dynamodb").scan(TableName=table, IndexName=LATE_INDEX)["Items"]
    assert [i["sk"]["S"] for i in index if i["late_pk"]["S"].startswith(f"{cluster}#")] == [
        f"{round((T0 + 609) * 1000):013d}#node-07#{late['batch_id']}#0"
    ]


def test_a_retry_that_arrives_late_is_still_a_replay(table: str) -> None:
    # late_pk depends on the arrival, like `arrived`: a replay is told by its content alone
    cluster = f"c{uuid.uuid4().hex[:8]}"
    clock = Clock(T0 + 12)
    store = SeriesStore(table, shards=2, clock=clock)
    doc = batch_doc(cluster=cluster, t0=T0, n=10)
    store.put_batch(Batch(doc))
    clock.t = T0 + 3600
    with pytest.raises(DuplicateBatch):
        store.put_batch(Batch(doc))
    assert [("late_pk" in i, i["arrived"]["N"]) for i in items_of(table, cluster)] == [
        (False, f"{T0 + 12:.3f}")
    ]


def test_a_warm_read_covers_only_the_recent_range_and_the_late_chunks(table: str) -> None:
    """A 20-minute window of on-time 60 s batches from 3 nodes, and 3 spooled batches: the warm
    read returns what the whole window filtered by arrival returns, and its table query covers
    only the chunks that ended after X - LATE_S."""
    cluster = f"c{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb")
    covered = Covered(client)
    clock = Clock(T0)
    store = SeriesStore(table, shards=4, clock=clock, client=client)
    t_lasts = []
    for k in range(20):  # batches ending at T0 + 59, + 119, ... + 1199
        for node in ("n1", "n2", "n3"):
            clock.t = T0 + 60 * k + 59 + 2.5  # on time: 2.5 s after the last sample
            store.put_batch(Batch(batch_doc(cluster=cluster, node=node, t0=T0 + 60 * k, n=60, gpus=1)))
            t_lasts.append(T0 + 60 * k + 59)
    for i, node in enumerate(("n1", "n2", "n3")):  # spooled for 10 minutes, written at the end
        clock.t = T0 + 1195 + i
        store.put_batch(Batch(batch_doc(cluster=cluster, node=node, t0=T0 + 570 + 5 * i, n=30, gpus=1)))
    now = T0 + 1202
    start, after = now - 990, now - 90  # analyze's window; a warm tick's watermark less its margin

    covered.reset()
    cold = store.read_chunks(cluster, start, now)
    cold_covered = covered.table
    covered.reset()
    warm = store.read_chunks(cluster, start, now, arrived_after=after)

    assert [key(c) for c in warm] == [key(c) for c in cold if c.arrived > after]
    assert len(warm) == 2 * 3 + 3  # the last two on-time batches of each node, the spooled ones
    assert cold_covered == sum(t >= start for t in t_lasts) + 3 == 17 * 3 + 3  # the whole window
    # LATE_S 60 s: the batches ending at +1079, +1139 and +1199 of each node
    assert covered.table == sum(t >= after - LATE_S for t in t_lasts) == 3 * 3
    assert covered.index == 3


# -- the property: the same chunks as filtering the whole window by arrival ----------------------

batches = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 2400),  # last sample, s after T0
        st.integers(1, 40),  # samples
        # arrival - last sample: on time, on the edge of late, late, spooled
        st.sampled_from([0.5, 3.0, 119.0, LATE_S, 121.0, 400.0, 1800.0]) | st.floats(0, 3000),
        st.none() | st.floats(0, 3000),  # a retry, this much later
    ),
    min_size=1,
    max_size=10,
)


# no shrinking: each example is a dozen moto round trips, and a failure prints its example anyway
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)
@example(  # a chunk spooled half an hour, in the window, written just after X: LateIndex alone has it
    written=[("a", 600, 10, 1800.0, None)], start=0, span=1200, pick=0, offset=-1.0, reach=0.0, shards=2
)
@example(  # on time by the smallest margin (written LATE_S after its last sample), X just before that
    written=[("a", 600, 10, LATE_S, None)], start=0, span=1200, pick=0, offset=-0.001, reach=0.0, shards=2
)
@given(
    written=batches,
    start=st.integers(-600, 2400),
    span=st.integers(0, 2400),
    pick=st.integers(0, 9),  # X near the arrival of one of the batches: where the answer changes
    offset=st.sampled_from([-0.001, -0.0004, 0.0, 0.0004]) | st.floats(-300, 300),
    reach=st.sampled_from([0.0, float(BUCKET_S)]),
    shards=st.integers(1, 3),
)
def test_a_warm_read_equals_the_window_filtered_by_arrival(
    table: str,
    written: list[tuple[str, int, int, float, float | None]],
    start: int,
    span: int,
    pick: int,
    offset: float,
    reach: float,
    shards: int,
) -> None:
    cluster = f"c{uuid.uuid4().hex[:8]}"  # one table for every example: a cluster of its own
    clock = Clock(T0)
    store = SeriesStore(table, shards=shards, clock=clock)
    arrivals = []
    for node, last, n, delay, retry in written:
        doc = batch_doc(cluster=cluster, node=node, t0=T0 + last - n + 1, n=n, gpus=1)
        clock.t = T0 + last + delay
        store.put_batch(Batch(doc))
        arrivals.append(clock.t)
        if retry is not None:
            clock.t += retry
            with pytest.raises(DuplicateBatch):
                store.put_batch(Batch(doc))
    lo, hi, x = T0 + start, T0 + start + span, arrivals[pick % len(arrivals)] + offset
    everything = store.read_chunks(cluster, lo, hi, reach_s=reach)
    want = [key(c) for c in everything if c.arrived > float(f"{x:.3f}")]
    assert [key(c) for c in store.read_chunks(cluster, lo, hi, arrived_after=x, reach_s=reach)] == want
