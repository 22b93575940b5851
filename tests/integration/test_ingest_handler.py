"""The ingest Lambda against moto (tables and SSM), driven with its function URL's events."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from gpulse.wire.signing import signature
from tests.events import load_event
from tests.factories import batch_doc, signed_request
from tests.integration.lambdas import FakeContext, deploy, env_of, load_function

pytestmark = pytest.mark.integration
SECRET = "node-01-secret"


@pytest.fixture
def ingest(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, str]]:
    deployment = deploy(moto_server, monkeypatch)
    prefix = env_of("IngestFunction", deployment)["GPULSE_NODE_SECRETS_PREFIX"]
    boto3.client("ssm").put_parameter(
        Name=f"{prefix}/c1/node-01", Value=SECRET, Type="SecureString", Overwrite=True
    )
    yield load_function("IngestFunction", deployment, monkeypatch), deployment.tables["SeriesTable"]


def post(
    module: ModuleType, body: bytes, headers: dict[str, str], *, sample: str = "ingest_function_url"
) -> tuple[int, dict[str, Any]]:
    event = load_event(sample)
    event["headers"] = {
        k: v for k, v in event["headers"].items() if not k.startswith("x-gpulse") and k != "content-encoding"
    } | headers
    event["headers"]["content-length"] = str(len(body))
    event["body"] = base64.b64encode(body).decode()
    resp = module.handler(event, FakeContext())
    return resp["statusCode"], json.loads(resp["body"])


def chunks(table: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    return sorted((i for i in items if i["pk"]["S"] != "registry"), key=lambda i: i["sk"]["S"])


def test_sample_event_shape_is_accepted_once_resigned(ingest: tuple[ModuleType, str]) -> None:
    module, table = ingest
    doc = batch_doc(t0=time.time() - 20)
    status, body = post(module, *signed_request(doc, SECRET.encode(), int(time.time())))
    assert (status, body) == (
        200,
        {"batch_id": doc["batch_id"], "samples": 10, "chunks": 1, "duplicate": False},
    )
    [item] = chunks(table)
    assert item["batch_id"]["S"] == doc["batch_id"]
    assert item["node"]["S"] == "node-01"
    assert int(item["samples"]["N"]) == 10


def test_the_old_http_api_route_is_answered_as_the_url_is(ingest: tuple[ModuleType, str]) -> None:
    """Shippers not yet moved to IngestUrl post through the HTTP API's PostBatch route (payload 2.0,
    routeKey "POST /v1/batches"): stored, and a replay of it through the URL is the duplicate."""
    module, table = ingest
    doc = batch_doc(t0=time.time() - 20)
    via_api = post(module, *signed_request(doc, SECRET.encode(), int(time.time())), sample="ingest_http_api")
    via_url = post(module, *signed_request(doc, SECRET.encode(), int(time.time())))
    assert via_api == (200, {"batch_id": doc["batch_id"], "samples": 10, "chunks": 1, "duplicate": False})
    assert via_url == (200, {"batch_id": doc["batch_id"], "samples": 10, "chunks": 0, "duplicate": True})
    [item] = chunks(table)
    assert (item["batch_id"]["S"], item["node"]["S"]) == (doc["batch_id"], "node-01")


def test_replay_is_stored_once_with_the_same_answer(ingest: tuple[ModuleType, str]) -> None:
    module, table = ingest
    doc = batch_doc(t0=time.time() - 20)
    first = post(module, *signed_request(doc, SECRET.encode(), int(time.time())))
    again = post(module, *signed_request(doc, SECRET.encode(), int(time.time())))
    assert first == (200, {"batch_id": doc["batch_id"], "samples": 10, "chunks": 1, "duplicate": False})
    assert again == (200, {"batch_id": doc["batch_id"], "samples": 10, "chunks": 0, "duplicate": True})
    assert len(chunks(table)) == 1


def test_a_replayed_multi_chunk_batch_is_a_duplicate_even_with_a_chunk_gone(
    ingest: tuple[ModuleType, str],
) -> None:
    """The replay's transaction is cancelled by the chunk still there; the other's key is free (TTL
    deletes a batch's chunks one by one; DynamoDB need not report past the first failed condition).
    One chunk found is the batch found: a 200 duplicate, nothing written, not a 409."""
    module, table = ingest
    doc = big_batch_with_xid()
    first = post(module, *signed_request(doc, SECRET.encode(), int(time.time())))
    assert first == (200, {"batch_id": doc["batch_id"], "samples": 3600, "chunks": 2, "duplicate": False})
    kept, gone = chunks(table)
    boto3.client("dynamodb").delete_item(TableName=table, Key={"pk": gone["pk"], "sk": gone["sk"]})
    again = post(module, *signed_request(doc, SECRET.encode(), int(time.time())))
    assert again == (200, {"batch_id": doc["batch_id"], "samples": 3600, "chunks": 0, "duplicate": True})
    assert chunks(table) == [kept]


def test_a_transaction_cancelled_by_a_concurrent_copy_is_a_503_to_retry(
    ingest: tuple[ModuleType, str],
) -> None:
    """moto runs one transaction at a time, so the cancellation a concurrent copy of the batch
    causes (TransactionConflict on every chunk) is DynamoDB's documented answer, given to the
    client in moto's place."""
    module, table = ingest
    doc = big_batch_with_xid()
    reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}] * 2

    def conflict(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"}
        return AWSResponse("http://127.0.0.1", 400, HTTPHeaders(), None), {
            "Error": error,
            "CancellationReasons": reasons,
        }

    client = module.store.client
    client.meta.events.register("before-call.dynamodb.TransactWriteItems", conflict)
    try:
        event_body, headers = signed_request(doc, SECRET.encode(), int(time.time()))
        event = load_event("ingest_function_url")
        event["headers"] = {k: v for k, v in event["headers"].items() if not k.startswith("x-gpulse")}
        event["headers"] |= headers
        event["body"] = base64.b64encode(event_body).decode()
        resp = module.handler(event, FakeContext())
    finally:
        client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", conflict)
    assert (resp["statusCode"], json.loads(resp["body"]), resp["headers"]["Retry-After"]) == (
        503,
        {"error": "storage is unavailable; retry later"},
        "5",
    )
    assert chunks(table) == []


def big_batch_with_xid() -> dict[str, Any]:
    """Two chunks (test_ingest_fuzz's batch; imported here, as that module imports this one)."""
    from tests.integration.test_ingest_fuzz import big_batch_with_xid as big

    return big()


def test_same_batch_id_other_content_is_409(ingest: tuple[ModuleType, str]) -> None:
    module, table = ingest
    doc = batch_doc(t0=time.time() - 20)
    post(module, *signed_request(doc, SECRET.encode(), int(time.time())))
    doc["gpus"][0]["metrics"]["util_gpu"][0] = 3
    status, body = post(module, *signed_request(doc, SECRET.encode(), int(time.time())))
    assert (status, body) == (409, {"error": "batch_id was already used for a batch with different content"})
    assert len(chunks(table)) == 1


@pytest.mark.parametrize(
    ("mutate", "status", "error"),
    [
        ("bad_signature", 401, "signature does not match the body for this node's secret"),
        ("schema", 400, "schema: data.timestamps[0] must be bigger than or equal to 1000000000"),
        (
            "not_gzip",
            400,
            "body is not valid gzip: Error -3 while decompressing data: incorrect header check",
        ),
        ("oversized", 413, "body is 1048577 bytes; the limit is 1048576 as sent"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    ingest: tuple[ModuleType, str], mutate: str, status: int, error: str
) -> None:
    module, table = ingest
    now = int(time.time())
    doc = batch_doc(t0=time.time() - 20)
    body, headers = signed_request(doc, SECRET.encode(), now)
    if mutate == "bad_signature":
        headers["x-gpulse-signature"] = signature(b"wrong", now, body)
    elif mutate == "schema":
        doc["timestamps"][0] = 5
        body, headers = signed_request(doc, SECRET.encode(), now)
    elif mutate == "not_gzip":
        body, headers = signed_request(doc, SECRET.encode(), now, body=json.dumps(doc).encode())
    elif mutate == "oversized":
        body, headers = signed_request(doc, SECRET.encode(), now, body=b"x" * (1024 * 1024 + 1))
    assert post(module, body, headers) == (status, {"error": error})
    assert chunks(table) == []


def test_uncompressed_body_without_encoding_header_is_accepted(ingest: tuple[ModuleType, str]) -> None:
    module, _ = ingest
    doc = batch_doc(t0=time.time() - 20)
    raw = json.dumps(doc).encode()
    body, headers = signed_request(doc, SECRET.encode(), int(time.time()), body=raw)
    del headers["content-encoding"]
    assert post(module, body, headers) == (
        200,
        {"batch_id": doc["batch_id"], "samples": 10, "chunks": 1, "duplicate": False},
    )


# a function URL passes every method and path; ingest serves one of each
NOT_A_BATCH = [
    ("GET", "/v1/batches", 405, {"Allow": "POST"}, "/v1/batches takes POST only"),
    ("PUT", "/v1/batches", 405, {"Allow": "POST"}, "/v1/batches takes POST only"),
    ("POST", "/", 404, {}, "no such path; batches go to POST /v1/batches"),
    ("POST", "/v1/batches/", 404, {}, "no such path; batches go to POST /v1/batches"),
    ("GET", "/v1/charts/x.png", 404, {}, "no such path; batches go to POST /v1/batches"),
]


def test_other_methods_and_paths_are_a_clear_404_or_405_and_write_nothing(
    ingest: tuple[ModuleType, str],
) -> None:
    module, table = ingest
    doc = batch_doc(t0=time.time() - 20)
    body, signed = signed_request(doc, SECRET.encode(), int(time.time()))
    for method, path, status, headers, error in NOT_A_BATCH:
        event = load_event("ingest_function_url")
        event["headers"] = {
            k: v for k, v in event["headers"].items() if not k.startswith("x-gpulse")
        } | signed
        event["body"] = base64.b64encode(body).decode()
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        resp = module.handler(event, FakeContext())
        assert (resp["statusCode"], json.loads(resp["body"])) == (status, {"error": error}), (method, path)
        assert {k: v for k, v in resp["headers"].items() if k == "Allow"} == headers
        assert resp["headers"]["Content-Type"] == "application/json"
    assert chunks(table) == []
