"""Ingest's checks, in the order docs/batch-v1.md gives them, without AWS."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from gpulse import ingest
from gpulse.errors import DuplicateBatch, InvalidInput
from gpulse.secrets import NodeKeys
from gpulse.wire import batch as wire
from gpulse.wire.batch import Batch
from gpulse.wire.signing import signature
from tests.factories import batch_doc, signed_request

SECRET = b"s3cret-node-01"
NOW = 1_763_800_100.0


class Secrets:
    def __init__(self, known: dict[tuple[str, str], bytes]) -> None:
        self.known = known

    def node_keys(self, cluster: str, node: str, *, refresh: bool = False) -> NodeKeys | None:
        secret = self.known.get((cluster, node))
        return NodeKeys(secret) if secret is not None else None


SECRETS = Secrets({("c1", "node-01"): SECRET})


def verify(body: bytes, headers: dict[str, str]) -> ingest.Verified:
    return ingest.verify_request(body, headers, secrets=SECRETS, now=NOW)


def reject(body: bytes, headers: dict[str, str]) -> InvalidInput:
    with pytest.raises(InvalidInput) as e:
        verify(body, headers)
    return e.value


def test_a_correctly_signed_batch_is_accepted() -> None:
    doc = batch_doc()
    v = verify(*signed_request(doc, SECRET, int(NOW)))
    assert v.batch.doc == doc
    assert v.digest == hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def test_wrong_secret_is_401() -> None:
    e = reject(*signed_request(batch_doc(), b"another", int(NOW)))
    assert (e.status, str(e)) == (401, "signature does not match the body for this node's secret")


def test_tampered_body_is_401() -> None:
    body, headers = signed_request(batch_doc(), SECRET, int(NOW))
    e = reject(gzip.compress(json.dumps(batch_doc(n=3)).encode()), headers)
    assert e.status == 401
    assert body != gzip.compress(json.dumps(batch_doc(n=3)).encode())


@pytest.mark.parametrize("skew", [301, -301])
def test_timestamp_outside_five_minutes_is_401(skew: int) -> None:
    e = reject(*signed_request(batch_doc(), SECRET, int(NOW) + skew))
    assert e.status == 401
    assert f"is {-skew} s away from the server clock (limit 300 s)" in str(e)


def test_unknown_node_is_401() -> None:
    e = reject(*signed_request(batch_doc(node="node-99"), SECRET, int(NOW)))
    assert (e.status, str(e)) == (401, "no secret is registered for node c1/node-99")


NODE_HEADER = (
    "x-gpulse-node header must be '<cluster>/<node>', each 1-128 of [A-Za-z0-9._-] "
    "starting with a letter or digit"
)
SIGNATURE_FORM = "x-gpulse-signature must be 'v1=' and 64 lowercase hex digits"


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("x-gpulse-node", "c1", NODE_HEADER),
        ("x-gpulse-node", "c1/a/b", NODE_HEADER),
        ("x-gpulse-node", "c1/" + "n" * 129, NODE_HEADER),
        ("x-gpulse-node", "c1/-n", NODE_HEADER),
        ("x-gpulse-node", "../etc/passwd", NODE_HEADER),
        ("x-gpulse-node", "c1/node-01.previous", "node names ending in '.previous' are reserved"),
        ("x-gpulse-timestamp", "soon", "x-gpulse-timestamp must be integer unix seconds"),
        ("x-gpulse-timestamp", "9" * 5000, "x-gpulse-timestamp must be integer unix seconds"),
        ("x-gpulse-signature", "", "missing x-gpulse-signature header"),
        ("x-gpulse-signature", "v1=" + "A" * 64, SIGNATURE_FORM),
        ("x-gpulse-signature", "v1=" + "a" * 6000, SIGNATURE_FORM),
    ],
)
def test_malformed_auth_headers_are_401(header: str, value: str, message: str) -> None:
    body, headers = signed_request(batch_doc(), SECRET, int(NOW))
    headers[header] = value
    e = reject(body, headers)
    assert (e.status, str(e)) == (401, message)


def test_oversized_body_is_413_before_anything_else() -> None:
    body = b"\0" * (wire.MAX_BODY_BYTES + 1)
    e = reject(body, {})  # no headers at all: size is checked first
    assert (e.status, str(e)) == (
        413,
        f"body is {len(body)} bytes; the limit is {wire.MAX_BODY_BYTES} as sent",
    )


def test_gzip_bomb_is_413() -> None:
    bomb = gzip.compress(b"{" + b" " * (wire.MAX_INFLATED_BYTES + 10) + b"}")
    assert len(bomb) < wire.MAX_BODY_BYTES
    e = reject(*signed_request(batch_doc(), SECRET, int(NOW), body=bomb))
    assert (e.status, str(e)) == (413, f"body inflates past {wire.MAX_INFLATED_BYTES} bytes")


def test_not_gzip_is_400() -> None:
    e = reject(*signed_request(batch_doc(), SECRET, int(NOW), body=b"not gzip at all"))
    assert e.status == 400
    assert str(e).startswith("body is not valid gzip")


def test_not_json_is_400() -> None:
    e = reject(*signed_request(batch_doc(), SECRET, int(NOW), body=gzip.compress(b"{nope")))
    assert e.status == 400
    assert str(e).startswith("body is not JSON")


def test_schema_violation_names_the_place() -> None:
    doc = batch_doc()
    doc["gpus"][0]["metrics"]["util_gpu"][3] = "high"
    e = reject(*signed_request(doc, SECRET, int(NOW)))
    assert (e.status, str(e)) == (400, "schema: data.gpus[0].metrics.util_gpu[3] must be number or null")


def test_unknown_property_is_refused() -> None:
    doc = batch_doc()
    doc["gpus"][0]["metrics"]["utl_gpu"] = [1] * 10
    e = reject(*signed_request(doc, SECRET, int(NOW)))
    assert e.status == 400
    assert "must not contain {'utl_gpu'} properties" in str(e)


def test_length_mismatch_is_400() -> None:
    doc = batch_doc()
    doc["gpus"][1]["metrics"]["util_gpu"].pop()
    e = reject(*signed_request(doc, SECRET, int(NOW)))
    assert (e.status, str(e)) == (400, "gpus[1].metrics.util_gpu has 9 values for 10 timestamps")


def test_unsorted_timestamps_are_400() -> None:
    doc = batch_doc()
    doc["timestamps"][4] = doc["timestamps"][3]
    e = reject(*signed_request(doc, SECRET, int(NOW)))
    assert (e.status, str(e)) == (400, "timestamps must be strictly increasing")


def test_old_batch_is_400() -> None:
    doc = batch_doc(t0=NOW - wire.MAX_AGE_S - 100)
    e = reject(*signed_request(doc, SECRET, int(NOW)))
    assert e.status == 400
    assert "batches older than 21600 s are refused" in str(e)


def test_duplicate_gpu_index_is_400() -> None:
    doc = batch_doc()
    doc["gpus"][1]["index"] = 0
    e = reject(*signed_request(doc, SECRET, int(NOW)))
    assert (e.status, str(e)) == (400, "gpus[1].index 0 appears twice")


def test_batch_for_another_node_is_403() -> None:
    doc = batch_doc(node="node-02")
    raw, headers = signed_request(doc, SECRET, int(NOW))
    headers["x-gpulse-node"] = "c1/node-01"
    headers["x-gpulse-signature"] = signature(SECRET, int(NOW), raw)
    e = reject(raw, headers)
    assert (e.status, str(e)) == (403, "batch is for c1/node-02 but was signed by c1/node-01")


class Sink:
    def __init__(self) -> None:
        self.stored: list[str] = []

    def put_batch(self, batch: Batch) -> int:
        if batch.batch_id in self.stored:
            raise DuplicateBatch(batch.batch_id)
        self.stored.append(batch.batch_id)
        return 1


def test_a_replay_is_acknowledged_and_stored_once() -> None:
    sink = Sink()
    doc = batch_doc()
    body, headers = signed_request(doc, SECRET, int(NOW))
    first = ingest.ingest(body, headers, secrets=SECRETS, sink=sink, clock=lambda: NOW)
    again = ingest.ingest(body, headers, secrets=SECRETS, sink=sink, clock=lambda: NOW)
    assert first == ingest.Accepted(doc["batch_id"], 10, 1, duplicate=False)
    assert again == ingest.Accepted(doc["batch_id"], 10, 0, duplicate=True)
    assert sink.stored == [doc["batch_id"]]
