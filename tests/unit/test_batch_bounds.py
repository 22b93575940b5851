"""Batch v1 bounds: every number, string and array in the schema is bounded, docs/batch-v1.md
gives each bound, and what breaks one is a 400 that quotes little of it."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpulse.errors import InvalidInput
from gpulse.wire import batch as wire
from gpulse.wire.metrics import BY_KIND
from tests.factories import batch_doc

NOW = 1_763_800_100.0
DOC = Path(__file__).resolve().parents[2] / "docs" / "batch-v1.md"


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    resolved: dict[str, Any] = wire.SCHEMA["definitions"][ref.rsplit("/", 1)[1]]
    return resolved


def walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, schema) of every node of the schema, $refs followed; `[]` for an array's items."""
    node = resolve(node)
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += walk(sub, f"{path}.{name}" if path else name)
    if "items" in node:
        out += walk(node["items"], f"{path}[]")
    return out


NODES = walk(wire.SCHEMA, "")


def types(node: dict[str, Any]) -> set[str]:
    t = node.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def test_every_number_is_bounded_on_both_sides() -> None:
    numbers = [(p, n) for p, n in NODES if types(n) & {"number", "integer"}]
    assert len(numbers) > 40
    for path, node in numbers:
        assert "minimum" in node or "exclusiveMinimum" in node, path
        assert "maximum" in node, path
        assert abs(node["maximum"]) <= 2**53 - 1, path  # exact in float64, and finite


def test_every_string_and_array_is_bounded() -> None:
    for path, node in NODES:
        if "string" in types(node):
            pattern = node.get("pattern", "")
            assert "maxLength" in node or re.search(r"\{\d+,\d+\}\$$", pattern), path
        if "array" in types(node):
            assert "maxItems" in node, path
        if "object" in types(node):
            assert node.get("additionalProperties") is False, path


def test_the_page_gives_every_bound_the_schema_sets() -> None:
    """docs/batch-v1.md's bounds table has one row per bounded number, with the schema's numbers."""
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| `([a-z_.\[\]]+)` \| ([^|]+) \|", text, re.M))
    for path, node in NODES:
        if not types(node) & {"number", "integer"}:
            continue
        low = node.get("minimum", node.get("exclusiveMinimum"))
        expected = f"{'>' if 'exclusiveMinimum' in node else ''}{low} – {node['maximum']}"
        assert path in rows, path
        assert rows[path].strip() == expected, (path, rows[path])


def parse(doc: dict[str, Any]) -> wire.Batch:
    return wire.parse(json.dumps(doc).encode(), now=NOW)


def refuse(raw: bytes) -> InvalidInput:
    with pytest.raises(InvalidInput) as e:
        wire.parse(raw, now=NOW)
    assert e.value.status == 400
    return e.value


def text_with(old: str, new: str) -> bytes:
    raw = json.dumps(batch_doc())
    assert old in raw
    return raw.replace(old, new, 1).encode()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"mem_total": 549755813888', '"mem_total": 1e400', "schema: data.host.mem_total must be integer"),
        (
            '"mem_total": 549755813888',
            '"mem_total": 1125899906842625',
            "schema: data.host.mem_total must be smaller than or equal to 1125899906842624",
        ),
        (
            '"cpu_count": 64',
            '"cpu_count": 65537',
            "schema: data.host.cpu_count must be smaller than or equal to 65536",
        ),
        (
            '"mem_total": 85899345920',
            '"mem_total": ' + "9" * 400,
            "schema: data.gpus[0].mem_total must be smaller than or equal to 1125899906842624",
        ),
        (
            '"seq": 0',
            '"seq": 9007199254740992',
            "schema: data.seq must be smaller than or equal to 9007199254740991",
        ),
        (
            '"seq": 0',
            '"seq": ' + "9" * 5000,
            "body is not JSON: a number has more digits than any batch value",
        ),
        (
            '"util_gpu": [90.0',
            '"util_gpu": [1e400',
            "schema: data.gpus[0].metrics.util_gpu[0] must be smaller than or equal to 100",
        ),
        (
            '"util_gpu": [90.0',
            '"util_gpu": [-1',
            "schema: data.gpus[0].metrics.util_gpu[0] must be bigger than or equal to 0",
        ),
        (
            '"util_gpu": [90.0',
            '"util_gpu": [true',
            "schema: data.gpus[0].metrics.util_gpu[0] must be number or null",
        ),
        (
            "1763800003.0",
            "NaN",
            "body is not JSON: NaN is not a JSON number; send null for a missing sample",
        ),
        (
            "1763800000.0",
            "-Infinity",
            "body is not JSON: -Infinity is not a JSON number; send null for a missing sample",
        ),
        ("1763800000.0", "1e400", "schema: data.timestamps[0] must be smaller than or equal to 4102444800"),
        ('"version": 1', '"version": true', "unsupported batch version True; this endpoint takes 1"),
        ('"version": 1', '"version": 1.0', "unsupported batch version 1.0; this endpoint takes 1"),
    ],
)
def test_out_of_bounds_is_a_400_that_names_the_place(old: str, new: str, message: str) -> None:
    assert str(refuse(text_with(old, new))) == message


def test_every_bound_itself_is_accepted() -> None:
    doc = batch_doc()
    doc["seq"] = 2**53 - 1
    doc["host"]["cpu_count"] = 65536
    doc["host"]["mem_total"] = 2**50
    doc["host"]["numa_nodes"] = 1024
    doc["gpus"][0]["metrics"]["util_gpu"] = [0, 100] * 5
    doc["gpus"][0]["mem_total"] = 2**50
    doc["gpus"][0]["metrics"]["temp_c"] = [-100, 300] * 5
    doc["gpus"][0]["metrics"]["throttle_reasons"] = [2**53 - 1] * 10
    doc["agent"] = {"spool": "full"}
    batch = parse(doc)
    assert (batch.spool, batch.doc["seq"]) == ("full", 2**53 - 1)


@pytest.mark.parametrize("depth", [9, 100, 100_000])
def test_deep_nesting_is_refused_before_parsing(depth: int) -> None:
    raw = text_with('"seq": 0', '"seq": ' + "[" * depth + "]" * depth)
    assert str(refuse(raw)) == f"body nests arrays and objects {depth + 1} deep; a batch nests at most 8"


def test_brackets_inside_strings_are_not_nesting() -> None:
    doc = batch_doc(
        processes=[{"gpu_index": 0, "pid": 1, "first_seen": 1_763_800_000.0, "last_seen": 1_763_800_001.0}]
    )
    doc["processes"][0]["name"] = '[[[[[[[[[[[[ "\\ {{{{{{{{{{'
    assert parse(doc).doc == doc


def test_a_long_unknown_key_is_quoted_short() -> None:
    key = "k" * (15 << 20)
    e = refuse(text_with('"seq": 0', f'"seq": 0, "{key}": 1, "b": 2, "c": 3, "d": 4'))
    assert str(e) == (
        "schema: data must not contain {"
        + repr("k" * 64)
        + "… (15728640 chars), 'b', 'c', … 4 in all} properties"
    )


def test_a_long_version_is_quoted_short() -> None:
    e = refuse(text_with('"version": 1', '"version": "' + "v" * 10_000 + '"'))
    assert str(e) == f"unsupported batch version {'v' * 64!r}… (10000 chars); this endpoint takes 1"


def test_data_after_the_gzip_stream_is_refused() -> None:
    body = gzip.compress(json.dumps(batch_doc()).encode())
    with pytest.raises(InvalidInput) as e:
        wire.inflate(body + gzip.compress(b"{}"), "gzip")
    assert (e.value.status, str(e.value)) == (400, "body has data after the end of its gzip stream")


def test_an_unknown_encoding_is_quoted_short() -> None:
    with pytest.raises(InvalidInput) as e:
        wire.inflate(b"x", "br" * 1000)
    assert (e.value.status, str(e.value)) == (
        415,
        f"unsupported Content-Encoding {'br' * 32!r}… (2000 chars); use gzip",
    )


def depth_of(value: Any) -> int:
    """The reference: nesting depth by recursion over the parsed value."""
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_the_depth_scan_agrees_with_the_parsed_depth(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert wire.nesting_depth(raw) == depth_of(value)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.integers(), st.floats(), st.lists(st.integers()), st.none()))
def test_quote_is_always_short(value: Any) -> None:
    assert len(wire.quote(value)) <= 10 * wire.QUOTE_CHARS + 30  # repr escapes at most 10 chars each


def test_the_metric_catalogue_gives_each_series_the_schemas_bounds() -> None:
    props = wire.SCHEMA["properties"]
    devices = {"host": props["host"], "gpu": props["gpus"]["items"], "mig": props["mig"]["items"]}
    for kind, device in devices.items():
        for name, ref in device["properties"]["metrics"]["properties"].items():
            items = wire.SCHEMA["definitions"][ref["$ref"].rsplit("/", 1)[-1]]["items"]
            assert BY_KIND[kind][name].bounds == (items["minimum"], items["maximum"]), (kind, name)
