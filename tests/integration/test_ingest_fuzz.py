"""Signed but hostile input against the real ingest handler over moto: only 2xx or 4xx ever, and
exactly the accepted batches stored, once.

A corpus of every input an outsider found answering 5xx or stored when it should not be, each
with its exact answer; then Hypothesis mutations of a valid signed batch (numbers replaced by
huge, negative, NaN, infinite, boolean or string tokens, keys added and removed, deep nesting,
long strings, truncated gzip, a wrong Content-Encoding). A short run is part of every test run;
`make fuzz` runs a long one (marker `fuzz`, GPULSE_FUZZ_EXAMPLES examples).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.events import load_event
from tests.factories import batch_doc, signed_request
from tests.integration.lambdas import FakeContext, deploy, env_of, load_function
from tests.integration.test_hardware_fast_path import drain
from tests.integration.test_ingest_handler import post

pytestmark = pytest.mark.integration
SECRET = b"fuzz-node-secret"
SHORT_EXAMPLES = 150
LONG_EXAMPLES = int(os.environ.get("GPULSE_FUZZ_EXAMPLES", "3000"))


@dataclass
class Stack:
    ingest: ModuleType
    table: str
    queue: str

    def stored(self, batch_id: str | None = None) -> int:
        """Chunk items in the series table (registry entries aside), of one batch if named."""
        kwargs: dict[str, Any] = {"TableName": self.table, "Select": "COUNT"}
        kwargs["FilterExpression"] = "pk <> :r" + (" AND batch_id = :b" if batch_id else "")
        kwargs["ExpressionAttributeValues"] = {":r": {"S": "registry"}} | (
            {":b": {"S": batch_id}} if batch_id else {}
        )
        count, client = 0, boto3.client("dynamodb")
        while True:
            page = client.scan(**kwargs)
            count += page["Count"]
            if "LastEvaluatedKey" not in page:
                return count
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.fixture(scope="module")
def stack(moto_server: str) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as mp:
        deployment = deploy(moto_server, mp)
        prefix = env_of("IngestFunction", deployment)["GPULSE_NODE_SECRETS_PREFIX"]
        boto3.client("ssm").put_parameter(
            Name=f"{prefix}/c1/node-01", Value=SECRET.decode(), Type="SecureString", Overwrite=True
        )
        module = load_function("IngestFunction", deployment, mp)
        yield Stack(module, deployment.tables["SeriesTable"], deployment.queues["FindingsQueue"]["url"])


def send(stack: Stack, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Post one request; check the property (2xx/4xx only, exactly what was accepted stored once)."""
    before = stack.stored()
    status, answer = post(stack.ingest, body, headers)
    assert 200 <= status < 300 or 400 <= status < 500, (status, answer)
    written = stack.stored() - before
    if status == 200:
        assert written == answer["chunks"]
        assert stack.stored(answer["batch_id"]) >= 1
        if not answer["duplicate"]:
            assert stack.stored(answer["batch_id"]) == answer["chunks"]
    else:
        assert written == 0
        assert set(answer) == {"error"} and len(answer["error"]) <= 480
    return status, answer


def raw_request(text: str, *, encoding: str = "gzip") -> tuple[bytes, dict[str, str]]:
    """A signed request whose JSON is `text` exactly (tokens json.dumps cannot write included)."""
    raw = text.encode("utf-8", "surrogatepass")
    body = gzip.compress(raw, mtime=0) if encoding == "gzip" else raw
    body, headers = signed_request({"cluster": "c1", "node": "node-01"}, SECRET, int(time.time()), body=body)
    if encoding == "identity":
        del headers["content-encoding"]
    return body, headers


def valid_text(**kw: Any) -> str:
    return json.dumps(batch_doc(t0=time.time() - 30, **kw))


def swap(old: str, new: str) -> Callable[[], str]:
    def make() -> str:
        text = valid_text()
        assert old in text
        return text.replace(old, new, 1)

    return make


T3 = '"timestamps": ['


def nan_timestamp(i: int) -> Callable[[], str]:
    def make() -> str:
        doc = batch_doc(t0=time.time() - 30)
        marker = "\u0000NAN"
        doc["timestamps"][i] = marker
        return json.dumps(doc).replace(json.dumps(marker), "NaN")

    return make


NAN_MESSAGE = "body is not JSON: NaN is not a JSON number; send null for a missing sample"
CORPUS: list[tuple[str, Callable[[], str], int, str]] = [
    ("host mem_total 1e400", swap('"mem_total": 549755813888', '"mem_total": 1e400'), 400,
     "schema: data.host.mem_total must be integer"),
    ("host cpu_count 1e400", swap('"cpu_count": 64', '"cpu_count": 1e400'), 400,
     "schema: data.host.cpu_count must be integer"),
    ("gpu mem_total 1e400", swap('"mem_total": 85899345920', '"mem_total": 1e400'), 400,
     "schema: data.gpus[0].mem_total must be integer"),
    ("an integer beyond float64", swap('"util_gpu": [90.0', '"util_gpu": [' + "9" * 400), 400,
     "schema: data.gpus[0].metrics.util_gpu[0] must be smaller than or equal to 100"),
    ("an integer past 4300 digits", swap('"seq": 0', '"seq": ' + "9" * 5000), 400,
     "body is not JSON: a number has more digits than any batch value"),
    ("NaN timestamp in the middle", nan_timestamp(5), 400, NAN_MESSAGE),
    ("NaN first timestamp", nan_timestamp(0), 400, NAN_MESSAGE),
    ("Infinity in a series", swap('"cpu_util": [20.0', '"cpu_util": [Infinity'), 400,
     "body is not JSON: Infinity is not a JSON number; send null for a missing sample"),
    ("deep nesting", swap('"seq": 0', '"seq": ' + "[" * 100_000 + "]" * 100_000), 400,
     "body nests arrays and objects 100001 deep; a batch nests at most 8"),
    ("huge seq", swap('"seq": 0', '"seq": ' + "9" * 30), 400,
     "schema: data.seq must be smaller than or equal to 9007199254740991"),
    ("a 15 MiB key", swap('"seq": 0', '"seq": 0, "' + "k" * (15 << 20) + '": 1'), 400,
     "schema: data must not contain {" + repr("k" * 64) + "… (15728640 chars)} properties"),
    ("version true", swap('"version": 1', '"version": true'), 400,
     "unsupported batch version True; this endpoint takes 1"),
    ("a pid as a string", swap('"seq": 0', '"seq": "0"'), 400, "schema: data.seq must be integer"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "status", "error"), CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus(stack: Stack, name: str, make: Callable[[], str], status: int, error: str) -> None:
    assert send(stack, *raw_request(make())) == (status, {"error": error})


def test_truncated_gzip_and_a_wrong_encoding_are_4xx(stack: Stack) -> None:
    body, headers = raw_request(valid_text())
    truncated = body[: len(body) // 2]
    _, headers_t = signed_request(
        {"cluster": "c1", "node": "node-01"}, SECRET, int(time.time()), body=truncated
    )
    assert send(stack, truncated, headers_t) == (400, {"error": "body is truncated gzip"})
    headers["content-encoding"] = "br"
    assert send(stack, body, headers) == (415, {"error": "unsupported Content-Encoding 'br'; use gzip"})


def big_batch_with_xid() -> dict[str, Any]:
    """Incompressible readings of 10 GPUs × 3600 s: 580 KB gzipped, two chunks; an XID in it."""
    rng = random.Random(7)
    n = 3600
    t0 = time.time() - n - 10
    doc = batch_doc(t0=t0, n=n, gpus=10)
    for g in doc["gpus"]:
        g["metrics"]["power_w"] = [round(rng.uniform(0, 700), 2) for _ in range(n)]
        g["metrics"]["pcie_tx_bps"] = [rng.randrange(1 << 30) * 1024 for _ in range(n)]
        g["metrics"]["pcie_rx_bps"] = [rng.randrange(1 << 30) * 1024 for _ in range(n)]
    doc["events"] = [{"ts": t0 + 3000.5, "type": "xid", "gpu_index": 3, "code": 79, "message": "fell off"}]
    return doc


def emitted(out: str) -> list[str]:
    """The metric names of the EMF lines a handler printed."""
    names = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            doc = json.loads(line)
            names += [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    return sorted(names)


def test_a_multi_chunk_batch_with_an_xid_is_stored_and_announced_once(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = big_batch_with_xid()
    body, headers = signed_request(doc, SECRET, int(time.time()))
    assert len(body) < 1 << 20
    capsys.readouterr()
    first = send(stack, body, headers)
    assert first == (200, {"batch_id": doc["batch_id"], "samples": 3600, "chunks": 2, "duplicate": False})
    assert emitted(capsys.readouterr().out) == ["BatchesStored", "FindingsPublished", "SamplesStored"]
    [finding] = drain(stack.queue)
    assert (finding.rule, finding.gpus, finding.since) == (
        "hardware_errors",
        ["node-01/3"],
        doc["events"][0]["ts"],
    )
    body, headers = signed_request(doc, SECRET, int(time.time()))
    again = send(stack, body, headers)
    assert again == (200, {"batch_id": doc["batch_id"], "samples": 3600, "chunks": 0, "duplicate": True})
    assert emitted(capsys.readouterr().out) == ["BatchesDuplicate"]
    assert drain(stack.queue) == []
    assert stack.stored(doc["batch_id"]) == 2


# -- generated mutations ------------------------------------------------------------------------

TOKENS = [
    "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "-1", "1e308", "9" * 30, "9" * 5000, "-0",
    "true", "false", "null", '"x"', '""', "[]", "{}", "0", "0.5", "4102444801", '"' + "s" * 20_000 + '"',
    "[" * 60 + "]" * 60, '{"a":' * 20 + "1" + "}" * 20, '"\\ud800"', "1" + "0" * 300,
]  # fmt: skip


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at] if at else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):  # a few items of a long series are enough
            out += paths(v, (*at, i))
    return out


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def mutated(data: st.DataObject) -> tuple[bytes, dict[str, str]]:
    """A valid batch, a few mutations of its JSON, then a transport; signed as sent."""
    doc = batch_doc(t0=time.time() - 60, n=data.draw(st.integers(1, 30)), gpus=data.draw(st.integers(0, 3)))
    if doc["gpus"] and data.draw(st.booleans()):
        doc["events"] = [{"ts": doc["timestamps"][0], "type": "xid", "gpu_index": 0, "code": 48}]
    if data.draw(st.booleans()):
        doc["agent"] = {"spool": data.draw(st.sampled_from(["ok", "full", "unwritable", "disabled", "?"]))}
    tokens: dict[str, str] = {}
    for _ in range(data.draw(st.integers(0, 3))):
        where = paths(doc)
        if not where:
            break
        path = data.draw(st.sampled_from(where))
        kind = data.draw(st.sampled_from(["replace", "remove", "add"]))
        parent = at(doc, path[:-1])
        if kind == "remove" and isinstance(parent, dict):
            del parent[path[-1]]
            continue
        marker = f"\u0000T{len(tokens)}"
        tokens[json.dumps(marker)] = data.draw(st.sampled_from(TOKENS))
        if kind == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["extra", "x" * 300, "gpus", "seq", ""]))] = marker
        else:
            parent[path[-1]] = marker
    text = json.dumps(doc)
    for marker, token in tokens.items():
        text = text.replace(marker, token)
    raw = text.encode("utf-8", "surrogatepass")
    transport = data.draw(
        st.sampled_from(["gzip", "gzip", "identity", "truncated", "trailing", "br", "bomb"])
    )
    if transport == "identity":
        body = raw
    elif transport == "bomb":
        body = gzip.compress(raw[:-1] + b" " * (17 << 20) + raw[-1:], compresslevel=1)
    else:
        body = gzip.compress(raw)
        body = body[: len(body) // 2] if transport == "truncated" else body
        body = body + gzip.compress(b"{}") if transport == "trailing" else body
    body, headers = signed_request({"cluster": "c1", "node": "node-01"}, SECRET, int(time.time()), body=body)
    if transport == "identity":
        del headers["content-encoding"]
    elif transport == "br":
        headers["content-encoding"] = "br"
    return body, headers


def run_fuzz(stack: Stack, examples: int) -> Counter[int]:
    """Run `examples` mutations; returns how many got each status."""
    answers: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def one(data: st.DataObject) -> None:
        status, _ = send(stack, *mutated(data))
        answers[status] += 1

    one()
    print(f"ingest fuzz: {examples} examples, answers {dict(sorted(answers.items()))}")
    return answers


def test_mutations_get_2xx_or_4xx_and_exactly_the_accepted_are_stored(stack: Stack) -> None:
    answers = run_fuzz(stack, SHORT_EXAMPLES)
    assert answers[200] > 0 and sum(n for status, n in answers.items() if status >= 400) > 0  # both paths


# what a function URL passes on: any of these methods, any path (it routes nothing itself)
URL_METHODS = ["GET", "POST", "PUT", "HEAD", "OPTIONS", "PATCH", "DELETE"]
NEAR_PATHS = ["/", "/v1/batches/", "/v1/batches/x", "/V1/batches", "/v1//batches", "/v1/charts/a"]


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(URL_METHODS),
    path=st.one_of(
        st.sampled_from(NEAR_PATHS),
        st.text(st.characters(codec="utf-8", exclude_characters="?#"), max_size=300).map(lambda t: "/" + t),
    ),
)
def test_any_other_method_or_path_is_404_or_405_and_stores_nothing(
    stack: Stack, method: str, path: str
) -> None:
    if (method, path) == ("POST", "/v1/batches"):
        return  # the one route: the tests above
    body, headers = raw_request(valid_text())
    event = load_event("ingest_function_url")
    event["headers"] = {k: v for k, v in event["headers"].items() if not k.startswith("x-gpulse")} | headers
    event["body"] = base64.b64encode(body).decode()
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    before = stack.stored()
    resp = stack.ingest.handler(event, FakeContext())
    expected = (
        (405, {"error": "/v1/batches takes POST only"})
        if path == "/v1/batches"
        else (404, {"error": "no such path; batches go to POST /v1/batches"})
    )
    assert (resp["statusCode"], json.loads(resp["body"])) == expected
    assert stack.stored() == before


@pytest.mark.fuzz
def test_mutations_long_run(stack: Stack, request: pytest.FixtureRequest) -> None:
    if "fuzz" not in str(request.config.getoption("markexpr")):
        pytest.skip("the long fuzz run: `make fuzz` (pytest -m fuzz)")
    run_fuzz(stack, LONG_EXAMPLES)
