"""Batch v1: decode a request body into a validated `Batch`, or say exactly what is wrong.

The order of checks is the contract's (docs/batch-v1.md): size of the body as sent, bounded
gzip inflation, JSON, the JSON Schema, then the rules a schema cannot state (equal lengths,
increasing timestamps, unique devices, a time range the store accepts).
"""

from __future__ import annotations

import itertools
import json
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import fastjsonschema  # Powertools' validation engine; compiled once here, not per request

from gpulse.errors import InvalidInput

VERSION = 1
MAX_BODY_BYTES = 1 << 20  # as sent (gzip): far under Lambda's 6 MB once API Gateway base64-encodes it
MAX_INFLATED_BYTES = 16 << 20  # a gzip bomb stops here, before json.loads sees it
MAX_AGE_S = 6 * 3600  # spooled batches older than this are refused (the analysis window is minutes)
MAX_FUTURE_S = 300

SCHEMA: dict[str, Any] = json.loads(
    resources.files("gpulse.wire").joinpath("batch-v1.schema.json").read_text(encoding="utf-8")
)
_validate = fastjsonschema.compile(SCHEMA)


@dataclass(frozen=True)
class Batch:
    """A validated Batch v1 document. `doc` is the JSON as received (schema-valid)."""

    doc: dict[str, Any]

    @property
    def batch_id(self) -> str:
        return str(self.doc["batch_id"])

    @property
    def cluster(self) -> str:
        return str(self.doc["cluster"])

    @property
    def node(self) -> str:
        return str(self.doc["node"])

    @property
    def node_group(self) -> str | None:
        group = self.doc.get("node_group")
        return str(group) if group is not None else None

    @property
    def timestamps(self) -> list[float]:
        return list(self.doc["timestamps"])

    @property
    def samples(self) -> int:
        return len(self.doc["timestamps"])


def inflate(body: bytes, content_encoding: str | None) -> bytes:
    """The request body, gunzipped when so encoded; 413 past MAX_INFLATED_BYTES, 400 if not gzip."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInput(f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES} as sent", status=413)
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        if len(body) > MAX_INFLATED_BYTES:
            raise InvalidInput(f"body exceeds {MAX_INFLATED_BYTES} bytes", status=413)
        return body
    if encoding != "gzip":
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}; use gzip", status=415)
    inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
    try:
        out = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
    except zlib.error as e:
        raise InvalidInput(f"body is not valid gzip: {e}") from None
    if len(out) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
        raise InvalidInput(f"body inflates past {MAX_INFLATED_BYTES} bytes", status=413)
    if not inflater.eof:
        raise InvalidInput("body is truncated gzip")
    return out


def parse(raw_json: bytes, *, now: float) -> Batch:
    """Parse and validate one Batch v1 document; InvalidInput(400) says which rule failed where."""
    try:
        doc = json.loads(raw_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("body must be a JSON object")
    if doc.get("version") != VERSION:
        raise InvalidInput(f"unsupported batch version {doc.get('version')!r}; this endpoint takes {VERSION}")
    try:
        _validate(doc)
    except fastjsonschema.JsonSchemaValueException as e:
        raise InvalidInput(f"schema: {e.message}") from None
    _check_semantics(doc, now)
    return Batch(doc)


def _check_semantics(doc: dict[str, Any], now: float) -> None:
    ts = doc["timestamps"]
    n = len(ts)
    if any(b <= a for a, b in itertools.pairwise(ts)):
        raise InvalidInput("timestamps must be strictly increasing")
    if ts[-1] > now + MAX_FUTURE_S:
        raise InvalidInput(f"timestamps reach {ts[-1] - now:.0f} s into the future; check the node's clock")
    if ts[0] < now - MAX_AGE_S:
        raise InvalidInput(
            f"timestamps start {now - ts[0]:.0f} s ago; batches older than {MAX_AGE_S} s are refused"
        )

    def lengths(where: str, metrics: dict[str, list[Any]]) -> None:
        for name, values in metrics.items():
            if len(values) != n:
                raise InvalidInput(f"{where}.metrics.{name} has {len(values)} values for {n} timestamps")

    lengths("host", doc["host"]["metrics"])
    seen: set[int] = set()
    for i, gpu in enumerate(doc["gpus"]):
        if gpu["index"] in seen:
            raise InvalidInput(f"gpus[{i}].index {gpu['index']} appears twice")
        seen.add(gpu["index"])
        lengths(f"gpus[{i}]", gpu["metrics"])
    mig_ids: set[str] = set()
    for i, inst in enumerate(doc.get("mig", [])):
        if inst["gpu_index"] not in seen:
            raise InvalidInput(f"mig[{i}].gpu_index {inst['gpu_index']} names no GPU in this batch")
        if inst["uuid"] in mig_ids:
            raise InvalidInput(f"mig[{i}].uuid appears twice")
        mig_ids.add(inst["uuid"])
        lengths(f"mig[{i}]", inst["metrics"])
    for i, proc in enumerate(doc.get("processes", [])):
        if proc["gpu_index"] not in seen:
            raise InvalidInput(f"processes[{i}].gpu_index {proc['gpu_index']} names no GPU in this batch")
        if proc["last_seen"] < proc["first_seen"]:
            raise InvalidInput(f"processes[{i}].last_seen is before first_seen")
