"""Ingest's node secrets: current and previous, cached, refreshed at most every 30 s per node,
the cache bounded — checked against a model of SSM over random rotations, clock steps and
lookups, and a bad signature re-reading SSM once after a rotation."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gpulse import ingest
from gpulse.errors import InvalidInput, StoreError
from gpulse.secrets import (
    MAX_CACHED,
    REFRESH_EVERY_S,
    SECRET_MAX_AGE_S,
    UNKNOWN_NODE_MAX_AGE_S,
    BoundedCache,
    NodeKeys,
    SsmNodeSecrets,
    parse_previous,
)
from tests.factories import batch_doc, signed_request

PREFIX = "/gpulse/test/nodes"
WALL = 1_763_800_100.0


class FakeSsm:
    """get_parameter as SSM answers it: the value, or a ClientError with SSM's code."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads: list[str] = []
        self.fail_with: str | None = None

    def get_parameter(self, *, Name: str, WithDecryption: bool) -> dict[str, Any]:
        assert WithDecryption
        self.reads.append(Name)
        if self.fail_with is not None:
            raise ClientError({"Error": {"Code": self.fail_with, "Message": "x"}}, "GetParameter")
        if Name not in self.values:
            raise ClientError({"Error": {"Code": "ParameterNotFound", "Message": "x"}}, "GetParameter")
        return {"Parameter": {"Name": Name, "Value": self.values[Name]}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def source(ssm: FakeSsm, clock: Clock, max_entries: int = MAX_CACHED) -> SsmNodeSecrets:
    return SsmNodeSecrets(PREFIX, client=ssm, clock=clock, max_entries=max_entries)  # type: ignore[arg-type]


def test_current_and_previous_until_its_time() -> None:
    ssm, clock = FakeSsm(), Clock()
    ssm.values[f"{PREFIX}/c1/n1"] = " new \n"
    ssm.values[f"{PREFIX}/c1/n1.previous"] = json.dumps({"secret": "old", "until": WALL + 10})
    keys = source(ssm, clock).node_keys("c1", "n1")
    assert keys == NodeKeys(b"new", b"old", WALL + 10)
    assert keys.accepted(WALL + 9.9) == [b"new", b"old"]
    assert keys.accepted(WALL + 10) == [b"new"]


@pytest.mark.parametrize(
    "stored",
    [
        "old",
        "[]",
        '{"secret": "old"}',
        '{"secret": "", "until": 5}',
        '{"secret": "o", "until": true}',
        '{"secret": "o", "until": Infinity}',
        '{"secret": 3, "until": 5}',
    ],
)
def test_a_previous_that_is_not_the_documented_json_is_ignored(stored: str) -> None:
    assert parse_previous(stored) is None


def test_an_unknown_node_costs_one_read_a_minute() -> None:
    ssm, clock = FakeSsm(), Clock()
    secrets = source(ssm, clock)
    for _ in range(100):
        assert secrets.node_keys("c1", "ghost") is None
    clock.t += UNKNOWN_NODE_MAX_AGE_S
    assert secrets.node_keys("c1", "ghost") is None
    assert ssm.reads == [f"{PREFIX}/c1/ghost"] * 2


def test_ssm_failures_are_retryable_store_errors() -> None:
    ssm, clock = FakeSsm(), Clock()
    ssm.fail_with = "ThrottlingException"
    with pytest.raises(StoreError) as e:
        source(ssm, clock).node_keys("c1", "n1")
    assert (e.value.retryable, str(e.value)) == (True, f"could not read SSM parameter {PREFIX}/c1/n1")


def test_the_cache_forgets_the_least_recently_used() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("b"), cache.get("a"), cache.get("c"), len(cache)) == (None, 1, 3, 2)


def verify(secrets: SsmNodeSecrets, secret: bytes, now: float = WALL) -> InvalidInput | None:
    doc = batch_doc(cluster="c1", node="n1", t0=now - 20)
    body, headers = signed_request(doc, secret, int(now))
    try:
        ingest.verify_request(body, headers, secrets=secrets, now=now)
    except InvalidInput as e:
        return e
    return None


def test_a_rotated_secret_is_accepted_at_once_and_the_old_one_until_the_overlap_ends() -> None:
    ssm, clock = FakeSsm(), Clock()
    name = f"{PREFIX}/c1/n1"
    ssm.values[name] = "old"
    secrets = source(ssm, clock)
    assert verify(secrets, b"old") is None  # cached now: old is current
    ssm.values[name + ".previous"] = json.dumps({"secret": "old", "until": WALL + 600})
    ssm.values[name] = "new"
    assert verify(secrets, b"new") is None  # no cached secret matched: one refresh found it
    assert verify(secrets, b"old") is None
    e = verify(secrets, b"old", now=WALL + 600)
    assert e is not None and (e.status, str(e)) == (
        401,
        "signature does not match the body for this node's secret",
    )
    reads_before = len(ssm.reads)
    for _ in range(50):  # a flood of bad signatures: refreshes are rate-limited per node
        assert verify(secrets, b"forged") is not None
    assert len(ssm.reads) == reads_before
    clock.t += REFRESH_EVERY_S
    assert verify(secrets, b"forged") is not None
    assert ssm.reads[reads_before:] == [name, name + ".previous"]


def test_a_node_added_after_a_miss_is_accepted_at_once() -> None:
    ssm, clock = FakeSsm(), Clock()
    secrets = source(ssm, clock)
    e = verify(secrets, b"s")
    assert e is not None and str(e) == "no secret is registered for node c1/n1"
    clock.t += REFRESH_EVERY_S
    ssm.values[f"{PREFIX}/c1/n1"] = "s"
    assert verify(secrets, b"s") is None


NODES = [("c1", "n1"), ("c1", "n2"), ("c2", "n1")]


class SecretsMachine(RuleBasedStateMachine):
    """SSM changes under the cache. A lookup answers what SSM held at some moment of the longest
    cache age; a refresh, what it held in the last REFRESH_EVERY_S (a read now, or one forced or
    made that recently); the cache never holds more than its bound."""

    def __init__(self) -> None:
        super().__init__()
        self.ssm, self.clock = FakeSsm(), Clock()
        self.secrets = source(self.ssm, self.clock, max_entries=2)
        self.history: dict[tuple[str, str], list[tuple[float, NodeKeys | None]]] = {
            n: [(-math.inf, None)] for n in NODES
        }
        self.counter = 0

    def truth(self, node: tuple[str, str]) -> NodeKeys | None:
        name = f"{PREFIX}/{node[0]}/{node[1]}"
        if name not in self.ssm.values:
            return None
        prev = self.ssm.values.get(name + ".previous")
        parsed = parse_previous(prev) if prev is not None else None
        current = self.ssm.values[name].encode()
        return NodeKeys(current, parsed[0], parsed[1]) if parsed else NodeKeys(current)

    def held_since(self, node: tuple[str, str], oldest: float) -> list[NodeKeys | None]:
        """What SSM held for `node` at any moment after `oldest`."""
        states = self.history[node]
        return [k for i, (_, k) in enumerate(states) if i + 1 == len(states) or states[i + 1][0] > oldest]

    def record(self, node: tuple[str, str]) -> None:
        self.history[node].append((self.clock.t, self.truth(node)))

    @rule(node=st.sampled_from(NODES))
    def rotate(self, node: tuple[str, str]) -> None:
        name = f"{PREFIX}/{node[0]}/{node[1]}"
        self.counter += 1
        if name in self.ssm.values:
            until = WALL + self.counter
            self.ssm.values[name + ".previous"] = json.dumps(
                {"secret": self.ssm.values[name], "until": until}
            )
        self.ssm.values[name] = f"s{self.counter}"
        self.record(node)

    @rule(node=st.sampled_from(NODES))
    def remove(self, node: tuple[str, str]) -> None:
        name = f"{PREFIX}/{node[0]}/{node[1]}"
        self.ssm.values.pop(name, None)
        self.ssm.values.pop(name + ".previous", None)
        self.record(node)

    @rule(seconds=st.sampled_from([1.0, 10.0, REFRESH_EVERY_S, UNKNOWN_NODE_MAX_AGE_S, SECRET_MAX_AGE_S]))
    def wait(self, seconds: float) -> None:
        self.clock.t += seconds

    @rule(node=st.sampled_from(NODES), refresh=st.booleans())
    def look_up(self, node: tuple[str, str], refresh: bool) -> None:
        got = self.secrets.node_keys(*node, refresh=refresh)
        window = REFRESH_EVERY_S if refresh else max(SECRET_MAX_AGE_S, UNKNOWN_NODE_MAX_AGE_S)
        assert got in self.held_since(node, self.clock.t - window)

    @invariant()
    def bounded(self) -> None:
        assert len(self.secrets._cache) <= 2


SecretsMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestSecretsModel = SecretsMachine.TestCase
