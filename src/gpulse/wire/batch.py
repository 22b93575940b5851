"""Batch v1: decode a request body into a validated `Batch`, or say exactly what is wrong.

The order of checks is the contract's (docs/batch-v1.md): size of the body as sent, bounded
gzip inflation, nesting depth (scanned, not parsed), JSON without NaN or Infinity, the JSON
Schema (which bounds every number), then the rules a schema cannot state (equal lengths,
increasing timestamps, unique devices, a time range the store accepts). Every message quotes at
most QUOTE_CHARS characters of what it refuses.
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn

import fastjsonschema  # Powertools' validation engine; compiled once per process, not per request

from gpulse.errors import InvalidInput
from gpulse.lazy import Lazy
from gpulse.wire.limits import MAX_AGE_S, MAX_BODY_BYTES, MAX_FUTURE_S, MAX_INFLATED_BYTES, VERSION

# A valid batch nests 5 deep (document > gpus > gpu > metrics > series). Deeper input is refused
# before json.loads, whose C scanner recurses once per level (RecursionError past ~1000).
MAX_DEPTH = 8
QUOTE_CHARS = 64  # the most of a refused key or value an answer or a log line repeats
MAX_MESSAGE_CHARS = 240  # and the most of a library's own message (schema, zlib, json)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # cluster, node, node_group
# A JSON string token: what a depth scan must skip (a "[" inside a process name is not nesting).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SCAN_BYTES = 1 << 20  # the depth scan's working set: int32 per byte of one slice at a time

SCHEMA: dict[str, Any] = json.loads(
    resources.files("gpulse_wire").joinpath("batch-v1.schema.json").read_text(encoding="utf-8")
)
# Compiled on the first parse, not at import: compiling costs ~0.1-0.2 s of a cold start, and
# a function that imports this module for its constants never parses.
_validator = Lazy(lambda: fastjsonschema.compile(SCHEMA))


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

    @property
    def spool(self) -> str | None:
        """The shipper's disk spool as of this batch (`agent.spool`), if it said."""
        spool = self.doc.get("agent", {}).get("spool")
        return str(spool) if spool is not None else None


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """A short, printable rendering of a refused value: at most `limit` characters of a string
    or number (marked when cut), only the kind of anything bigger. Never the whole of what a
    node sent: a 15 MiB key would otherwise travel into the answer and the log."""
    if isinstance(value, str):
        return repr(value[:limit]) + (f"… ({len(value)} chars)" if len(value) > limit else "")
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        digits = str(value) if abs(value) < 10**limit else None
        return digits if digits is not None else f"an integer of more than {limit} digits"
    return "an object" if isinstance(value, dict) else "an array" if isinstance(value, list) else "a value"


def clip(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A library's message (zlib, json, schema), cut to `limit` characters."""
    return message if len(message) <= limit else message[:limit] + "…"


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
        raise InvalidInput(f"unsupported Content-Encoding {quote(encoding)}; use gzip", status=415)
    inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
    try:
        out = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
    except zlib.error as e:
        raise InvalidInput(f"body is not valid gzip: {clip(str(e))}") from None
    if len(out) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
        raise InvalidInput(f"body inflates past {MAX_INFLATED_BYTES} bytes", status=413)
    if not inflater.eof:
        raise InvalidInput("body is truncated gzip")
    if inflater.unused_data:
        # a second gzip member or trailing bytes: refused rather than silently dropped
        raise InvalidInput("body has data after the end of its gzip stream")
    return out


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in a JSON text, strings skipped. Linear and flat (no
    recursion), a slice at a time; exact for valid JSON, and an upper bound of what json.loads
    would descend into before it finds an error in invalid JSON."""
    import numpy as np  # here, not at import: ingest's cold start need not load numpy (~0.1 s)

    text = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    deepest = depth = 0
    for at in range(0, len(text), _SCAN_BYTES):
        part = text[at : at + _SCAN_BYTES]
        opens = (part == ord("[")) | (part == ord("{"))
        closes = (part == ord("]")) | (part == ord("}"))
        step = opens.astype(np.int32) - closes.astype(np.int32)
        level = np.cumsum(step, dtype=np.int64) + depth
        deepest, depth = max(deepest, int(level.max())), int(level[-1])
    return deepest


def _no_constants(token: str) -> NoReturn:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON: a NaN timestamp would
    # pass every comparison. A missing sample is null.
    raise InvalidInput(f"body is not JSON: {token} is not a JSON number; send null for a missing sample")


def loads(raw_json: bytes) -> Any:
    """json.loads with the nesting bounded first and NaN/Infinity refused; InvalidInput(400) else."""
    depth = nesting_depth(raw_json)
    if depth > MAX_DEPTH:
        raise InvalidInput(f"body nests arrays and objects {depth} deep; a batch nests at most {MAX_DEPTH}")
    try:
        return json.loads(raw_json, parse_constant=_no_constants)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"body is not JSON: {clip(str(e))}") from None
    except ValueError:  # what else json.loads raises: an integer past Python's 4300-digit limit
        raise InvalidInput("body is not JSON: a number has more digits than any batch value") from None


def _schema_message(e: fastjsonschema.JsonSchemaValueException) -> str:
    """fastjsonschema's message, with the node's own text (unknown keys) cut short."""
    props = e.definition.get("properties", {}) if isinstance(e.definition, dict) else {}
    if e.rule == "additionalProperties" and isinstance(e.value, dict):
        extra = [k for k in e.value if k not in props]
        names = ", ".join(quote(k) for k in extra[:3]) + (
            f", … {len(extra)} in all" if len(extra) > 3 else ""
        )
        return f"{e.name} must not contain {{{names}}} properties"
    return clip(e.message)


def parse(raw_json: bytes, *, now: float) -> Batch:
    """Parse and validate one Batch v1 document; InvalidInput(400) says which rule failed where."""
    doc = loads(raw_json)
    if not isinstance(doc, dict):
        raise InvalidInput("body must be a JSON object")
    if type(doc.get("version")) is not int or doc["version"] != VERSION:  # not True, not 1.0
        raise InvalidInput(
            f"unsupported batch version {quote(doc.get('version'))}; this endpoint takes {VERSION}"
        )
    try:
        _validator()(doc)
    except fastjsonschema.JsonSchemaValueException as e:
        raise InvalidInput(f"schema: {_schema_message(e)}") from None
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
