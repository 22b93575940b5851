"""The series chunk codec (contract 2): exact round trips within each metric's resolution."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpulse import codec
from gpulse.codec import Chunk, ChunkCorrupt, ChunkTooLarge, decode, encode
from gpulse.errors import GpulseError
from gpulse.wire import batch
from gpulse.wire.metrics import BY_KIND, GPU_METRICS, HOST_METRICS

NOW = 1_770_000_000.0
GPU_NAMES = [m.name for m in GPU_METRICS]
HOST_NAMES = [m.name for m in HOST_METRICS]


# ------------------------------------------------------------------------------------ helpers


def listed(processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Processes with a decoded affinity (a shared tuple) as the list the document held."""
    return [
        {**p, "cpu_affinity": list(p["cpu_affinity"])} if isinstance(p.get("cpu_affinity"), tuple) else p
        for p in processes
    ]


def validated(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as ingest holds it: through JSON and Batch v1 validation."""
    return batch.parse(json.dumps(doc).encode(), now=NOW).doc


def tolerance(values: np.ndarray, resolution: float) -> np.ndarray:
    # Half a step, plus one ulp of the value: float64 rounding, visible only past ~10**12 steps.
    with np.errstate(over="ignore"):
        return resolution / 2 + np.spacing(np.abs(values))


def assert_series(decoded: np.ndarray, shipped: list[Any], resolution: float, where: str) -> None:
    expected = np.array([np.nan if v is None else v for v in shipped], dtype=np.float64)
    assert decoded.dtype == np.float64, where
    assert decoded.shape == expected.shape, where
    nulls = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(decoded), nulls, err_msg=where)
    exact = nulls | np.isinf(expected)
    np.testing.assert_array_equal(decoded[exact & ~nulls], expected[exact & ~nulls], err_msg=where)
    err = np.abs(decoded[~exact] - expected[~exact])
    assert (err <= tolerance(expected[~exact], resolution)).all(), (where, err.max(), resolution)


def assert_round_trip(doc: dict[str, Any], chunk: Chunk) -> None:
    """Every series within its resolution, and everything else exactly as shipped."""
    assert chunk.version == doc["version"]
    assert (chunk.cluster, chunk.node, chunk.node_group) == (
        doc["cluster"],
        doc["node"],
        doc.get("node_group"),
    )
    assert (chunk.batch_id, chunk.seq) == (doc["batch_id"], doc["seq"])
    assert chunk.simulated is bool(doc.get("shipper", {}).get("simulated", False))
    assert chunk.sample_interval_s == doc.get("shipper", {}).get("sample_interval_s")
    assert_series(chunk.timestamps, doc["timestamps"], codec.TIMESTAMP_RESOLUTION, "timestamps")
    host = doc["host"]
    assert chunk.host_static == codec.HostStatic(host["cpu_count"], host["mem_total"], host.get("numa_nodes"))
    assert set(chunk.host) == set(host["metrics"])
    for name, series in host["metrics"].items():
        assert_series(chunk.host[name], series, BY_KIND["host"][name].resolution, f"host.{name}")
    assert [g.index for g in chunk.gpus] == [g["index"] for g in doc["gpus"]]
    for got, gpu in zip(chunk.gpus, doc["gpus"], strict=True):
        assert (got.uuid, got.name, got.mem_total, got.numa_node) == (
            gpu["uuid"],
            gpu.get("name"),
            gpu["mem_total"],
            gpu.get("numa_node"),
        )
        assert (got.power_limit_w, got.temp_slowdown_c, got.mig_mode) == (
            gpu.get("power_limit_w"),
            gpu.get("temp_slowdown_c"),
            gpu.get("mig_mode"),
        )
        assert set(got.metrics) == set(gpu["metrics"])
        for name, series in gpu["metrics"].items():
            assert_series(
                got.metrics[name], series, BY_KIND["gpu"][name].resolution, f"gpu{gpu['index']}.{name}"
            )
    assert len(chunk.mig) == len(doc.get("mig", []))
    for got_mig, inst in zip(chunk.mig, doc.get("mig", []), strict=True):
        assert (got_mig.gpu_index, got_mig.uuid, got_mig.gi_id, got_mig.ci_id) == (
            inst["gpu_index"],
            inst["uuid"],
            inst["gi_id"],
            inst["ci_id"],
        )
        assert (got_mig.profile, got_mig.mem_total) == (inst.get("profile"), inst["mem_total"])
        assert set(got_mig.metrics) == set(inst["metrics"])
        for name, series in inst["metrics"].items():
            assert_series(got_mig.metrics[name], series, BY_KIND["mig"][name].resolution, f"mig.{name}")
    assert listed(chunk.processes) == doc.get("processes", [])
    assert chunk.events == doc.get("events", [])


def make_doc(n: int = 5, gpus: int = 1, start: float = NOW - 600, **extra: Any) -> dict[str, Any]:
    """A small valid document with every catalogue metric, values given by position."""
    k = np.arange(n)
    doc: dict[str, Any] = {
        "version": 1,
        "batch_id": "b-0001-abcdef",
        "cluster": "lab",
        "node": "node-01",
        "node_group": "a100",
        "seq": 7,
        "shipper": {"version": "0.1.0", "simulated": True, "sample_interval_s": 1.0},
        "timestamps": (start + k + 0.0004 * (k % 3)).tolist(),
        "host": {
            "cpu_count": 128,
            "mem_total": 1 << 40,
            "numa_nodes": 2,
            "metrics": {name: (10.0 + k % 7).tolist() for name in HOST_NAMES},
        },
        "gpus": [
            {
                "index": g,
                "uuid": f"GPU-{g:08x}-0000-0000-0000-000000000000",
                "name": "NVIDIA A100-SXM4-80GB",
                "mem_total": 85899345920,
                "numa_node": g // 4,
                "power_limit_w": 400.0,
                "temp_slowdown_c": 87.0,
                "mig_mode": False,
                "metrics": {
                    name: np.minimum((k * (g + 3)) % 101, bounds("gpu", name)[1]).tolist()
                    for name in GPU_NAMES
                },
            }
            for g in range(gpus)
        ],
    }
    doc.update(extra)
    return doc


# --------------------------------------------------------------------------------- strategies

NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,11}", fullmatch=True)
TEXT = st.text(max_size=12)


def bounds(kind: str, name: str) -> tuple[float, float]:
    """The values Batch v1 admits in a `kind` metric's series (its schema definition's items)."""
    props = batch.SCHEMA["properties"]
    node = {"host": props["host"], "gpu": props["gpus"]["items"], "mig": props["mig"]["items"]}[kind]
    ref = node["properties"]["metrics"]["properties"][name]["$ref"].rsplit("/", 1)[-1]
    items = batch.SCHEMA["definitions"][ref]["items"]
    return float(items["minimum"]), float(items["maximum"])


def value(lo: float, hi: float) -> st.SearchStrategy[Any]:
    """Values a shipper sends within the metric's bounds: small and large counts, fractions, edges."""
    return st.one_of(
        st.none(),
        st.integers(min_value=int(lo), max_value=int(min(hi, lo + 100))),
        st.integers(min_value=int(lo), max_value=int(hi)),
        st.floats(min_value=lo, max_value=hi, allow_nan=False),
        st.sampled_from([lo, hi]),
    )


def series(n: int, kind: str, name: str) -> st.SearchStrategy[list[Any]]:
    lo, hi = bounds(kind, name)
    varied = st.lists(value(lo, hi), min_size=n, max_size=n)
    steady = st.tuples(value(lo, hi), st.sampled_from([0, 1, -1, 0.5, 1024, 1 << 20])).map(
        lambda p: [None if p[0] is None else min(max(p[0] + i * p[1], lo), hi) for i in range(n)]
    )
    return st.one_of(varied, steady)


def metric_set(
    kind: str, names: list[str], required: tuple[str, ...], n: int
) -> st.SearchStrategy[dict[str, Any]]:
    optional = [name for name in names if name not in required]
    return st.lists(st.sampled_from(optional), unique=True, max_size=len(optional)).flatmap(
        lambda chosen: st.fixed_dictionaries({name: series(n, kind, name) for name in (*required, *chosen)})
    )


@st.composite
def batch_docs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=12))
    steps = draw(st.lists(st.floats(min_value=0.001, max_value=120.0), min_size=n - 1, max_size=n - 1))
    start = draw(st.floats(min_value=NOW - 3 * 3600, max_value=NOW - 1500))
    timestamps = list(np.cumsum([start, *steps]))
    host: dict[str, Any] = {
        "cpu_count": draw(st.integers(1, 512)),
        "mem_total": draw(st.integers(0, 1 << 44)),
        "metrics": draw(metric_set("host", HOST_NAMES, ("cpu_util", "mem_used"), n)),
    }
    if draw(st.booleans()):
        host["numa_nodes"] = draw(st.integers(1, 8))
    indices = draw(st.lists(st.integers(0, 63), unique=True, max_size=3))
    gpus = []
    for index in indices:
        gpu: dict[str, Any] = {
            "index": index,
            "uuid": f"GPU-{draw(st.uuids())}",
            "mem_total": draw(st.integers(0, 1 << 37)),
            "metrics": draw(metric_set("gpu", GPU_NAMES, ("util_gpu", "mem_used"), n)),
        }
        optional = {
            "name": TEXT,
            "numa_node": st.one_of(st.none(), st.integers(-1, 7)),
            "power_limit_w": st.one_of(st.none(), st.floats(0, 1000)),
            "temp_slowdown_c": st.one_of(st.none(), st.floats(-50, 150)),
            "mig_mode": st.booleans(),
        }
        for key, strategy in optional.items():
            if draw(st.booleans()):
                gpu[key] = draw(strategy)
        gpus.append(gpu)
    doc: dict[str, Any] = {
        "version": 1,
        "batch_id": draw(st.from_regex(r"[A-Za-z0-9_-]{8,20}", fullmatch=True)),
        "cluster": draw(NAME),
        "node": draw(NAME),
        "seq": draw(st.integers(0, 1 << 40)),
        "timestamps": timestamps,
        "host": host,
        "gpus": gpus,
    }
    if draw(st.booleans()):
        doc["node_group"] = draw(NAME)
    if draw(st.booleans()):
        doc["shipper"] = {"version": "0.1.0", "simulated": draw(st.booleans()), "sample_interval_s": 1.0}
    with_mig, with_processes = draw(st.booleans()), draw(st.booleans())
    if indices and with_mig:
        doc["mig"] = [
            {
                "gpu_index": draw(st.sampled_from(indices)),
                "uuid": f"MIG-{i}-{draw(st.uuids())}",
                "gi_id": i,
                "ci_id": 0,
                "profile": "1g.10gb",
                "mem_total": 10 << 30,
                "metrics": {"mem_used": draw(series(n, "mig", "mem_used"))},
            }
            for i in range(draw(st.integers(1, 3)))
        ]
    if indices and with_processes:
        doc["processes"] = [
            {
                "gpu_index": draw(st.sampled_from(indices)),
                "pid": draw(st.integers(0, 1 << 22)),
                "user": draw(st.one_of(st.none(), TEXT)),
                "container": draw(st.one_of(st.none(), TEXT)),
                "mem_used": draw(st.one_of(st.none(), st.integers(0, 1 << 37))),
                "cpu_affinity": draw(st.lists(st.integers(0, 300), max_size=40)),
                "first_seen": timestamps[0],
                "last_seen": timestamps[-1],
            }
            for _ in range(draw(st.integers(1, 3)))
        ]
    if draw(st.booleans()):
        doc["events"] = [
            {"ts": timestamps[-1], "type": "xid", "gpu_index": None, "code": 79, "message": draw(TEXT)},
            {"ts": timestamps[0], "type": "mig_layout"},
        ]
    return validated(doc)


# ------------------------------------------------------------------------------- round trips


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_docs())
def test_any_valid_batch_round_trips_within_resolution(doc: dict[str, Any]) -> None:
    assert_round_trip(doc, decode(encode(doc)))


@given(st.lists(st.integers(0, 4095), max_size=200))
def test_cpu_affinity_comes_back_exactly_whatever_its_order(cpus: list[int]) -> None:
    doc = make_doc(
        processes=[{"gpu_index": 0, "pid": 1, "cpu_affinity": cpus, "first_seen": 1.0, "last_seen": 2.0}]
    )
    assert list(decode(encode(doc)).processes[0]["cpu_affinity"]) == cpus


def test_cpu_ids_that_are_not_plain_stay_a_list() -> None:
    cpus = [0, 1, 2, 1 << 70]
    doc = make_doc(
        processes=[{"gpu_index": 0, "pid": 1, "cpu_affinity": cpus, "first_seen": 1.0, "last_seen": 2.0}]
    )
    assert decode(encode(doc)).processes[0]["cpu_affinity"] == cpus


def test_nulls_come_back_as_nan_where_they_were() -> None:
    doc = make_doc(n=6)
    gpu = doc["gpus"][0]["metrics"]
    gpu["util_gpu"] = [None, None, 40, None, 42, None]
    gpu["power_w"] = [None] * 6
    gpu["temp_c"] = [55, 56, None, None, None, None]
    chunk = decode(encode(validated(doc)))
    np.testing.assert_array_equal(chunk.gpus[0].metrics["util_gpu"], [np.nan, np.nan, 40, np.nan, 42, np.nan])
    np.testing.assert_array_equal(chunk.gpus[0].metrics["power_w"], [np.nan] * 6)
    np.testing.assert_array_equal(chunk.gpus[0].metrics["temp_c"], [55, 56, np.nan, np.nan, np.nan, np.nan])
    assert_round_trip(doc, chunk)


def test_absent_metrics_are_absent_keys_not_nan_arrays() -> None:
    doc = make_doc()
    doc["host"]["metrics"] = {"cpu_util": [1.5] * 5, "mem_used": [1 << 30] * 5}
    doc["gpus"][0]["metrics"] = {"util_gpu": [0] * 5, "mem_used": [None] * 5}
    chunk = decode(encode(validated(doc)))
    assert set(chunk.host) == {"cpu_util", "mem_used"}
    assert set(chunk.gpus[0].metrics) == {"util_gpu", "mem_used"}
    np.testing.assert_array_equal(chunk.gpus[0].metrics["mem_used"], [np.nan] * 5)


def test_a_single_sample_batch_round_trips() -> None:
    doc = validated(make_doc(n=1, gpus=2))
    chunk = decode(encode(doc))
    assert chunk.timestamps.shape == (1,)
    assert_round_trip(doc, chunk)


def test_values_come_back_as_the_nearest_float_to_their_decimal() -> None:
    doc = make_doc(n=3)
    doc["gpus"][0]["metrics"]["power_w"] = [245.37, 0.01, 699.99]
    doc["host"]["metrics"]["cpu_util"] = [12.3, 0.1, 99.9]
    doc["timestamps"] = [1769999000.123, 1769999001.124, 1769999002.125]
    chunk = decode(encode(validated(doc)))
    assert chunk.gpus[0].metrics["power_w"].tolist() == [245.37, 0.01, 699.99]
    assert chunk.host["cpu_util"].tolist() == [12.3, 0.1, 99.9]
    assert chunk.timestamps.tolist() == [1769999000.123, 1769999001.124, 1769999002.125]


def test_values_finer_than_the_resolution_round_to_the_nearest_step() -> None:
    doc = make_doc(n=3)
    doc["gpus"][0]["metrics"]["mem_used"] = [(1 << 20) * 3 + 1, (1 << 20) * 3 - 1, (1 << 20) * 5.7]
    doc["gpus"][0]["metrics"]["power_w"] = [100.004, 100.006, 100.0149]
    chunk = decode(encode(validated(doc)))
    assert chunk.gpus[0].metrics["mem_used"].tolist() == [3 << 20, 3 << 20, 6 << 20]
    assert chunk.gpus[0].metrics["power_w"].tolist() == [100.0, 100.01, 100.01]


def test_infinite_and_huge_values_are_kept_exactly() -> None:
    doc = make_doc(n=4)
    doc["gpus"][0]["metrics"]["pcie_tx_bps"] = [1e300, -1e300, None, 5e-324]
    doc["gpus"][0]["metrics"]["util_gpu"] = [float("inf"), 1.0, float("-inf"), None]
    chunk = decode(encode(doc))  # JSON's Infinity passes batch.parse too; kept out of `validated` for clarity
    assert chunk.gpus[0].metrics["pcie_tx_bps"].tolist()[:2] == [1e300, -1e300]
    np.testing.assert_array_equal(chunk.gpus[0].metrics["util_gpu"], [np.inf, 1.0, -np.inf, np.nan])
    assert_round_trip(doc, chunk)


def test_a_full_hour_of_eight_gpus_round_trips() -> None:
    rng = np.random.default_rng(1)
    n = codec.MAX_SAMPLES
    doc = make_doc(n=n, gpus=8, start=NOW - 3700)
    for gpu in doc["gpus"]:
        gpu["metrics"]["util_gpu"] = rng.integers(0, 101, n).tolist()
        gpu["metrics"]["power_w"] = np.round(rng.normal(400, 30, n), 3).tolist()
        gpu["metrics"]["pcie_rx_bps"] = rng.integers(0, 25 << 30, n).tolist()
    doc = validated(doc)
    data = encode(doc)
    assert len(data) < codec.DEFAULT_MAX_BYTES
    assert_round_trip(doc, decode(data))


def test_sixty_four_gpus_round_trip() -> None:
    doc = validated(make_doc(n=30, gpus=64))
    chunk = decode(encode(doc))
    assert [g.index for g in chunk.gpus] == list(range(64))
    assert_round_trip(doc, chunk)


def test_mig_processes_and_events_are_preserved_exactly() -> None:
    doc = make_doc(n=4)
    doc["gpus"][0]["mig_mode"] = True
    doc["mig"] = [
        {
            "gpu_index": 0,
            "uuid": "MIG-5c5a3a1e-0000-0000-0000-000000000001",
            "gi_id": 1,
            "ci_id": 0,
            "profile": "3g.40gb",
            "mem_total": 40 << 30,
            "metrics": {"mem_used": [1 << 30, None, 3 << 30, 3 << 30]},
        },
        {
            "gpu_index": 0,
            "uuid": "MIG-5c5a3a1e-0000-0000-0000-000000000002",
            "gi_id": 2,
            "ci_id": 0,
            "mem_total": 40 << 30,
            "metrics": {"mem_used": [None] * 4},
        },
    ]
    doc["processes"] = [
        {
            "gpu_index": 0,
            "mig_uuid": "MIG-5c5a3a1e-0000-0000-0000-000000000001",
            "pid": 4242,
            "user": "mañana",
            "container": None,
            "name": "python train.py",
            "mem_used": 123456789,
            "cpu_affinity": [0, 1, 2, 3, 8, 10, 11, 112],
            "first_seen": NOW - 599.5,
            "last_seen": NOW - 596.25,
        },
        {"gpu_index": 0, "pid": 1, "first_seen": NOW - 600, "last_seen": NOW - 600, "cpu_affinity": [3, 1]},
    ]
    doc["events"] = [
        {
            "ts": NOW - 598.0001,
            "type": "xid",
            "gpu_index": 0,
            "code": 79,
            "message": "Xid 79: fallen off the bus",
        },
        {"ts": NOW - 597, "type": "mig_layout", "gpu_index": None, "code": None, "message": None},
    ]
    doc = validated(doc)
    chunk = decode(encode(doc))
    assert listed(chunk.processes) == doc["processes"]
    assert chunk.events == doc["events"]
    assert [(m.gi_id, m.profile) for m in chunk.mig] == [(1, "3g.40gb"), (2, None)]
    assert_round_trip(doc, chunk)


def test_a_chunk_written_by_codec_v1_still_decodes() -> None:
    # Written once by this codec and frozen here: a change that breaks stored chunks fails this test.
    chunk = decode(bytes.fromhex(GOLDEN_V1))
    assert (chunk.cluster, chunk.node, chunk.node_group, chunk.seq) == ("lab", "node-01", None, 7)
    assert chunk.timestamps.tolist() == [1769999400.0, 1769999401.0, 1769999402.0]
    np.testing.assert_array_equal(chunk.host["cpu_util"], [12.5, 13.0, np.nan])
    assert chunk.host["mem_used"].tolist() == [1 << 30, 1 << 30, 2 << 30]
    assert chunk.host_static == codec.HostStatic(8, 1 << 34, None)
    gpu = chunk.gpus[0]
    assert (gpu.index, gpu.uuid, gpu.name, gpu.mig_mode) == (0, "GPU-0", None, None)
    assert gpu.metrics["util_gpu"].tolist() == [0.0, 3.0, 6.0]
    assert gpu.metrics["mem_used"].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(gpu.metrics["power_w"], [245.37, np.nan, 0.01])
    np.testing.assert_array_equal(gpu.metrics["util_mem"], [np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(gpu.metrics["pcie_tx_bps"], [1e300, 1024.0, np.nan])
    assert chunk.processes == [
        {
            "gpu_index": 0,
            "pid": 9,
            "cpu_affinity": (0, 1, 2, 3, 8),
            "first_seen": 1769999400.0,
            "last_seen": 1769999402.0,
        }
    ]


# ------------------------------------------------------------------------------------ refusals


def test_an_unknown_metric_is_refused() -> None:
    doc = make_doc()
    doc["gpus"][0]["metrics"]["fan_rpm"] = [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match=r"gpus\[0\]\.metrics\.fan_rpm is not a gpu metric"):
        encode(doc)


def test_a_host_metric_on_a_gpu_is_refused() -> None:
    doc = make_doc()
    doc["gpus"][0]["metrics"]["cpu_util"] = [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="cpu_util is not a gpu metric"):
        encode(doc)


def test_a_series_of_the_wrong_length_is_refused() -> None:
    doc = make_doc()
    doc["host"]["metrics"]["cpu_util"] = [1.0]
    with pytest.raises(ValueError, match=r"host\.metrics\.cpu_util has 1 values for 5 timestamps"):
        encode(doc)


def test_a_chunk_over_the_limit_raises_chunk_too_large_so_the_caller_can_split() -> None:
    rng = np.random.default_rng(2)
    n = codec.MAX_SAMPLES
    doc = make_doc(n=n, gpus=64, start=NOW - 3700)
    for gpu in doc["gpus"]:
        gpu["metrics"] = {
            "util_gpu": rng.integers(0, 101, n).tolist(),
            "mem_used": rng.integers(0, 80 << 30, n).tolist(),
        }
    with pytest.raises(ChunkTooLarge) as caught:
        encode(doc)
    assert caught.value.max_bytes == codec.DEFAULT_MAX_BYTES
    assert caught.value.size > codec.DEFAULT_MAX_BYTES
    assert caught.value.samples == n
    assert isinstance(caught.value, GpulseError)
    assert "split the batch" in str(caught.value)
    assert_round_trip(doc, decode(encode(doc, max_bytes=caught.value.size)))


def test_max_bytes_is_the_callers_limit() -> None:
    data = encode(make_doc())
    assert encode(make_doc(), max_bytes=len(data)) == data
    with pytest.raises(ChunkTooLarge):
        encode(make_doc(), max_bytes=len(data) - 1)


# ------------------------------------------------------------------------------------ corruption


@pytest.fixture(scope="module")
def small_chunk() -> bytes:
    doc = make_doc(n=4, processes=[{"gpu_index": 0, "pid": 3, "first_seen": 1.0, "last_seen": 2.0}])
    return encode(doc)


def test_every_truncation_is_chunk_corrupt(small_chunk: bytes) -> None:
    for size in range(len(small_chunk)):
        with pytest.raises(ChunkCorrupt):
            decode(small_chunk[:size])


def test_every_flipped_byte_is_chunk_corrupt(small_chunk: bytes) -> None:
    for at in range(len(small_chunk)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(small_chunk)
            damaged[at] ^= mask
            with pytest.raises(ChunkCorrupt):
                decode(bytes(damaged))


def test_a_trailing_byte_is_chunk_corrupt(small_chunk: bytes) -> None:
    with pytest.raises(ChunkCorrupt, match="checksum"):
        decode(small_chunk + b"\x00")


def test_wrong_magic_and_unknown_version_are_named(small_chunk: bytes) -> None:
    with pytest.raises(ChunkCorrupt, match="magic"):
        decode(b"PK" + small_chunk[2:])
    with pytest.raises(ChunkCorrupt, match="version 2 is unknown"):
        decode(small_chunk[:2] + b"\x02" + small_chunk[3:])
    with pytest.raises(ChunkCorrupt, match="shorter than"):
        decode(b"")


def framed(raw: bytes) -> bytes:
    """A well-framed chunk around any body: what only a bug or a forger could write."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=codec._ZDICT_V1)
    body = deflater.compress(raw) + deflater.flush()
    return struct.pack("<2sBI", codec.MAGIC, codec.VERSION, zlib.crc32(body)) + body


def inner(data: bytes) -> tuple[dict[str, Any], bytes]:
    raw = zlib.decompressobj(-15, zdict=codec._ZDICT_V1).decompress(data[7:])
    (size,) = struct.unpack_from("<I", raw)
    return json.loads(raw[4 : 4 + size]), raw[4 + size :]


def reframed(header: dict[str, Any], payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return framed(struct.pack("<I", len(head)) + head + payload)


@given(st.binary(max_size=300))
def test_any_well_framed_garbage_is_chunk_corrupt(raw: bytes) -> None:
    with pytest.raises(ChunkCorrupt):
        decode(framed(raw))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, p: (h, p[:-1]), "payload ends"),
        (lambda h, p: (h, p + b"\x00"), "past its last series"),
        (lambda h, p: ({**h, "samples": 5000}, p), "5000 samples"),
        (lambda h, p: ({**h, "samples": 0}, p), "0 samples"),
        (
            lambda h, p: ({**h, "series": {**h["series"], "order": "x" * len(h["series"]["order"])}}, p),
            "order",
        ),
        (
            lambda h, p: ({**h, "series": {**h["series"], "width": "9" * len(h["series"]["width"])}}, p),
            "width",
        ),
        (lambda h, p: ({**h, "series": {**h["series"], "base": []}}, p), "bases"),
        (lambda h, p: ({**h, "series": {**h["series"], "nulls": [10_000]}}, p), "nulls"),
        (lambda h, p: ({**h, "series": {**h["series"], "step": "0"}}, p), "does not describe"),
        (
            lambda h, p: ({**h, "series": {**h["series"], "step": "z" * len(h["series"]["step"])}}, p),
            "step it does",
        ),
        (lambda h, p: ({**h, "series": {**h["series"], "steps": [0, 1, 2, 3, 4, 5]}}, p), "positive number"),
        (lambda h, p: ({k: v for k, v in h.items() if k != "host"}, p), "KeyError"),
        (lambda h, p: ({**h, "gpus": 3}, p), "TypeError"),
        (
            lambda h, p: ({**h, "processes": [{"gpu_index": 0, "pid": 1, "cpu_affinity": "0-9999"}]}, p),
            "expands past 4096",
        ),
    ],
)
def test_a_malformed_body_under_a_valid_checksum_is_chunk_corrupt(change: Any, message: str) -> None:
    doc = make_doc(n=4)
    doc["gpus"][0]["metrics"]["util_gpu"] = [1, None, 3, 4]
    header, payload = inner(encode(doc))
    with pytest.raises(ChunkCorrupt, match=message):
        decode(reframed(*change(header, payload)))


def test_a_body_that_inflates_past_the_bound_is_chunk_corrupt() -> None:
    with pytest.raises(ChunkCorrupt, match="inflates past"):
        decode(framed(bytes(codec.MAX_INFLATED_BYTES + 1)))


# ------------------------------------------------------------------------------------ the contract


def test_limits_match_batch_v1() -> None:
    schema = batch.SCHEMA
    assert schema["properties"]["timestamps"]["maxItems"] == codec.MAX_SAMPLES
    series_defs = [d for name, d in schema["definitions"].items() if name.endswith("_series")]
    assert series_defs and all(d["maxItems"] == codec.MAX_SAMPLES for d in series_defs)
    assert schema["properties"]["processes"]["items"]["properties"]["cpu_affinity"]["maxItems"] == 4096
    most = (
        1
        + len(HOST_METRICS)
        + schema["properties"]["gpus"]["maxItems"] * len(GPU_METRICS)
        + schema["properties"]["mig"]["maxItems"] * len(BY_KIND["mig"])
    )
    assert most == codec.MAX_SERIES


def test_the_v1_dictionary_is_frozen() -> None:
    # Stored chunks inflate only with this exact dictionary: change it only with a new VERSION.
    assert zlib.crc32(codec._ZDICT_V1) == ZDICT_V1_CRC


ZDICT_V1_CRC = 3798741402
# encode() of: lab/node-01 seq 7, three timestamps, host cpu_util [12.5, 13.0, null] and mem_used,
# GPU 0 util_gpu [0, 3, 6], mem_used, power_w [245.37, null, 0.01], util_mem all null,
# pcie_tx_bps [1e300, 1024, null] (stored raw), one process.
GOLDEN_V1 = (
    "4743019c4dba1d8dd53f0ec2201406f01727e3319c1ca8e1415b2071f02aaddac9b839aaaba307f0024e1ec1cb780847"
    "c1d0fa68202d0b09843fc32fdff798002413a8ceec2f30abeacd76d70471b4afea7f22b929e3980e26353299fc912e9a"
    "a2c9a4039da850195d1ad4792a9648d90c45099f8fba9cc88d72259c29b434ada0a0b86f2413e915c974af5a5095c60e"
    "1f5ca466ba0db1e4a761bbd60fe78786e0b57ab85ba47adbb75abd288a9f3c26f242aa9e5f26896064451471e7d77edf"
    "83769043c422970eebe20e700437ae002b803780ba7dceebcbccad3d610aaf2f"
)
