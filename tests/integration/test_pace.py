"""TablePacer against the alert function's real state table on moto: one send slot per interval
per key, never the same slot twice, however many senders ask at once.

The clock is held still and sleep only records, so every wait is an exact number of intervals.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import boto3
import pytest
from botocore.exceptions import ClientError

from gpulse import env
from gpulse.alerting.pace import TablePacer
from gpulse.errors import StoreError
from tests.integration.lambdas import deploy, env_of

pytestmark = pytest.mark.integration

THREADS = 4
WAITS_PER_THREAD = 5


@pytest.fixture
def table(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The alert function's state table, deployed from the template."""
    deployment = deploy(moto_server, monkeypatch)
    name: str = env_of("AlertFunction", deployment)[env.STATE_TABLE]
    return name


@pytest.fixture
def now() -> float:
    """A whole second near the real time (the pacer's TTL is taken from it): sums stay exact."""
    return float(int(time.time()))


def next_at(table: str, key: str) -> float:
    """The next free slot stored for `key`."""
    item = boto3.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"pace#{key}"}, "sk": {"S": "slot"}}, ConsistentRead=True
    )["Item"]
    return float(item["next_at"]["N"])


def test_one_sender_waits_one_interval_more_each_time_and_keys_are_independent(
    table: str, now: float
) -> None:
    sleeps: list[float] = []
    pacer = TablePacer(table, 1.0, clock=lambda: now, sleep=sleeps.append)
    assert [pacer.wait("slack#x") for _ in range(3)] == [0.0, 1.0, 2.0]
    assert pacer.wait("slack#y") == 0.0
    assert sleeps == [1.0, 2.0]  # a wait of 0 does not sleep
    assert (next_at(table, "slack#x"), next_at(table, "slack#y")) == (now + 3.0, now + 1.0)


def test_senders_at_once_never_share_a_slot(table: str, now: float) -> None:
    total = THREADS * WAITS_PER_THREAD
    sleeps: list[float] = []
    waited: list[float] = []
    # one pacer and one client per thread, made here (creating boto3 clients is not thread-safe):
    # each thread stands for another alert invocation
    pacers = [
        TablePacer(table, 1.0, client=boto3.client("dynamodb"), clock=lambda: now, sleep=sleeps.append)
        for _ in range(THREADS)
    ]
    start = threading.Barrier(THREADS)

    def send(pacer: TablePacer) -> None:
        start.wait()
        for _ in range(WAITS_PER_THREAD):
            waited.append(pacer.wait("slack#shared"))

    threads = [threading.Thread(target=send, args=(p,)) for p in pacers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the reserved starts are now + waited: all distinct, and exactly now, now+1, ..., now+total-1
    assert sorted(waited) == [float(i) for i in range(total)]
    assert Counter(sleeps) == Counter(float(i) for i in range(1, total))  # every wait but the 0
    assert next_at(table, "slack#shared") == now + total


def test_a_slot_already_past_is_not_waited_for(table: str, now: float) -> None:
    sleeps: list[float] = []
    clock = [now]
    pacer = TablePacer(table, 1.0, clock=lambda: clock[0], sleep=sleeps.append)
    assert [pacer.wait("jandi#x"), pacer.wait("jandi#x")] == [0.0, 1.0]  # next free slot: now + 2
    clock[0] = now + 10.0
    assert pacer.wait("jandi#x") == 0.0
    assert sleeps == [1.0]
    assert next_at(table, "jandi#x") == now + 11.0  # the slot after now, not after the stale one


def test_a_dynamodb_error_other_than_a_lost_race_is_a_store_error(table: str) -> None:
    pacer = TablePacer(f"{table}-missing", 1.0, clock=lambda: 0.0, sleep=lambda s: None)
    with pytest.raises(StoreError, match=r"^DynamoDB ResourceNotFoundException$") as caught:
        pacer.wait("slack#x")
    assert not isinstance(caught.value, ClientError)
    assert isinstance(caught.value.__cause__, ClientError)
