"""Batches written from docs/batch-v1.md alone, posted over real HTTP to the local stack's ingest URL.

The example document and the signing snippet are taken from the page itself, so the page
cannot drift from what ingest accepts.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from devstack.stack import LocalStack

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "batch-v1.md"
SECRET = "a-secret-registered-for-dgx-017"


def example() -> dict[str, Any]:
    """The page's example document, moved to now."""
    block = re.search(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    doc: dict[str, Any] = json.loads(block.group(1))
    shift = time.time() - 10 - doc["timestamps"][-1]
    doc["timestamps"] = [t + shift for t in doc["timestamps"]]
    for p in doc["processes"]:
        p["first_seen"] += shift
        p["last_seen"] += shift
    for e in doc["events"]:
        e["ts"] += shift
    doc["batch_id"] = uuid.uuid4().hex
    return doc


def snippet() -> str:
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    return block.group(1)


def send(api: str, doc: dict[str, Any], secret: str, *, body: bytes | None = None) -> requests.Response:
    """Post exactly as the page's snippet does (its code, run as written)."""
    if body is None:
        scope: dict[str, Any] = {"doc": doc, "secret": secret, "api": api}
        code = snippet().replace("requests.post(", "response = requests.post(", 1)
        exec(code, scope)  # the page's own code
        response: requests.Response = scope["response"]
        return response
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), b"v1:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "X-Gpulse-Node": f"{doc['cluster']}/{doc['node']}",
        "X-Gpulse-Timestamp": ts,
        "X-Gpulse-Signature": "v1=" + sig,
    }
    return requests.post(f"{api}/v1/batches", data=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("stack"), sink_out=None) as s:
        s.register_node("train-east", "dgx-017", tmp_path_factory.mktemp("secrets"))
        prefix = s.specs["IngestFunction"].environment["GPULSE_NODE_SECRETS_PREFIX"]
        boto3.client("ssm").put_parameter(
            Name=f"{prefix}/train-east/dgx-017", Value=SECRET, Type="SecureString", Overwrite=True
        )
        yield s


def stored(stack: LocalStack, batch_id: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=stack.table("SeriesTable"))["Items"]
    return [i for i in items if i.get("batch_id", {}).get("S") == batch_id]


def test_the_example_signed_as_documented_is_stored_once_even_when_replayed(stack: LocalStack) -> None:
    doc = example()
    first = send(stack.api_url, doc, SECRET)
    assert (first.status_code, first.json()) == (
        200,
        {"batch_id": doc["batch_id"], "samples": 3, "chunks": 1, "duplicate": False},
    )
    replay = send(stack.api_url, doc, SECRET)
    assert (replay.status_code, replay.json()) == (  # acknowledged, nothing written again
        200,
        {"batch_id": doc["batch_id"], "samples": 3, "chunks": 0, "duplicate": True},
    )
    assert len(stored(stack, doc["batch_id"])) == 1


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("wrong secret", 401, "signature does not match the body for this node's secret"),
        ("malformed", 400, "schema: data.gpus[0].metrics.util_gpu[1] must be number or null"),
        ("short series", 400, "gpus[0].metrics.power_w has 2 values for 3 timestamps"),
        ("oversized", 413, "body is 1048577 bytes; the limit is 1048576 as sent"),
        ("other node", 401, "no secret is registered for node train-east/dgx-018"),
    ],
)
def test_bad_batches_get_the_documented_4xx_and_nothing_is_stored(
    stack: LocalStack, case: str, status: int, error: str
) -> None:
    doc = example()
    if case == "wrong secret":
        response = send(stack.api_url, doc, "not-the-secret")
    elif case == "malformed":
        doc["gpus"][0]["metrics"]["util_gpu"][1] = "97%"
        response = send(stack.api_url, doc, SECRET)
    elif case == "short series":
        doc["gpus"][0]["metrics"]["power_w"].pop()
        response = send(stack.api_url, doc, SECRET)
    elif case == "oversized":
        response = send(stack.api_url, doc, SECRET, body=b"\x1f" * (1024 * 1024 + 1))
    else:
        doc["node"] = "dgx-018"
        response = send(stack.api_url, doc, SECRET)
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert stored(stack, doc["batch_id"]) == []


def test_a_gzip_bomb_is_refused_before_parsing(stack: LocalStack) -> None:
    doc = example()
    bomb = gzip.compress(b"[" + b"0," * (9 << 20) + b"0]")
    response = send(stack.api_url, doc, SECRET, body=bomb)
    assert (response.status_code, response.json()) == (413, {"error": "body inflates past 16777216 bytes"})


def test_the_ingest_url_answers_only_post_v1_batches_as_the_page_says(stack: LocalStack) -> None:
    # the function URL passes every method and path to ingest, which names the one it serves
    for method, path, status, error in [
        ("GET", "/v1/batches", 405, "/v1/batches takes POST only"),
        ("DELETE", "/v1/batches", 405, "/v1/batches takes POST only"),
        ("POST", "/v1/batch", 404, "no such path; batches go to POST /v1/batches"),
        ("GET", "/", 404, "no such path; batches go to POST /v1/batches"),
    ]:
        response = requests.request(method, f"{stack.api_url}{path}", timeout=30)
        assert (response.status_code, response.json()) == (status, {"error": error}), (method, path)
        assert response.headers.get("Allow") == ("POST" if status == 405 else None)
    page = DOC.read_text()
    assert "| 404 |" in page and "| 405 |" in page  # ... and the page says so
    outputs = json.loads((stack.run_dir / "outputs.json").read_text())["outputs"]
    assert outputs["IngestUrl"] == f"{stack.api_url}/"  # a function URL ends in "/", as in AWS
