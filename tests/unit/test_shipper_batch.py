"""BatchBuilder: samples in, a Batch v1 document out that gpulse.wire.batch.parse accepts."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from gpulse.wire.batch import inflate, parse
from gpulse.wire.metrics import GPU_METRICS, HOST_METRICS, MIG_METRICS
from node_shipper.batch import BatchBuilder, encode
from node_shipper.model import Event, GpuInfo, HostInfo, Inventory, MigInfo, MigReading, ProcessInfo, Sample

T0 = 1_770_000_000.0
MIB = 1 << 20
INVENTORY = Inventory(
    host=HostInfo(cpu_count=224, mem_total=2048 << 30, numa_nodes=2),
    gpus=(
        GpuInfo(0, "GPU-0", 81559 * MIB, "NVIDIA H100 80GB HBM3", 0, 700.0, 87.0, False),
        GpuInfo(1, "GPU-1", 81559 * MIB, "NVIDIA H100 80GB HBM3", 1, 700.0, 87.0, True),
    ),
)
MIG = MigInfo(gpu_index=1, uuid="MIG-1", gi_id=7, ci_id=0, mem_total=10 << 30, profile="1g.10gb")


def _sample(k: int, **extra: Any) -> Sample:
    host = {"cpu_util": 20.04, "cpu_busy_cores": 44.9, "mem_used": 100.0 * MIB, "net_rx_bps": 1000.0}
    gpu0 = {"util_gpu": 90.0 + k, "mem_used": 62000.0 * MIB, "power_w": 612.3456}
    return Sample(ts=T0 + k, host=host, gpus={0: gpu0, 1: {"util_gpu": None}}, **extra)


def _builder() -> BatchBuilder:
    return BatchBuilder(
        cluster="prod",
        node="gpu-07",
        node_group="a100-pool",
        shipper={"version": "0.1.0", "simulated": False},
    )


def test_document_shape_and_contract() -> None:
    b = _builder()
    proc = ProcessInfo(
        gpu_index=0,
        pid=42,
        user="alice",
        container="c" * 64,
        name="python",
        mem_used=60 << 30,
        cpu_affinity=(0, 1),
        cpu_numa_nodes=(0,),
    )
    b.add(_sample(0, processes=[proc]))
    b.add(_sample(1, processes=[proc], mig=[MigReading(MIG, 3.0 * (1 << 30))]))
    b.add(_sample(2, events=[Event(ts=T0 + 2, type="xid", gpu_index=0, code=79, message="Xid 79")]))
    doc = b.build(inventory=INVENTORY, seq=12, batch_id="b" * 32)
    parse(json.dumps(doc).encode(), now=T0 + 3)
    assert {
        k: doc[k] for k in ("version", "batch_id", "cluster", "node", "node_group", "seq", "shipper")
    } == {
        "version": 1,
        "batch_id": "b" * 32,
        "cluster": "prod",
        "node": "gpu-07",
        "node_group": "a100-pool",
        "seq": 12,
        "shipper": {"version": "0.1.0", "simulated": False},
    }
    assert doc["timestamps"] == [T0, T0 + 1, T0 + 2]
    host = doc["host"]
    assert (host["cpu_count"], host["mem_total"], host["numa_nodes"]) == (224, 2048 << 30, 2)
    assert host["metrics"]["cpu_util"] == [20.0, 20.0, 20.0]
    assert host["metrics"]["disk_read_bps"] == [None, None, None]
    gpu0, gpu1 = doc["gpus"]
    assert gpu0["metrics"]["util_gpu"] == [90, 91, 92]
    assert gpu0["metrics"]["power_w"] == [612.35, 612.35, 612.35]
    assert gpu0["metrics"]["ecc_dbe_volatile"] == [None, None, None]
    assert (gpu1["mig_mode"], gpu1["numa_node"], gpu1["power_limit_w"]) == (True, 1, 700.0)
    assert doc["mig"] == [
        {
            "gpu_index": 1,
            "uuid": "MIG-1",
            "gi_id": 7,
            "ci_id": 0,
            "profile": "1g.10gb",
            "mem_total": 10 << 30,
            "metrics": {"mem_used": [None, 3 << 30, None]},
        }
    ]
    assert doc["processes"] == [
        {
            "gpu_index": 0,
            "mig_uuid": None,
            "pid": 42,
            "user": "alice",
            "container": "c" * 64,
            "name": "python",
            "mem_used": 60 << 30,
            "cpu_affinity": [0, 1],
            "cpu_numa_nodes": [0],
            "first_seen": T0,
            "last_seen": T0 + 1,
        }
    ]
    assert doc["events"] == [{"ts": T0 + 2, "type": "xid", "gpu_index": 0, "code": 79, "message": "Xid 79"}]


def test_every_catalogue_metric_is_emitted_and_nothing_else() -> None:
    b = _builder()
    b.add(_sample(0))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="c" * 32)
    # an optional metric no sample reported is not sent: a node without InfiniBand sends no nulls
    assert set(doc["host"]["metrics"]) == {m.name for m in HOST_METRICS if not m.optional}
    for gpu in doc["gpus"]:
        assert set(gpu["metrics"]) == {m.name for m in GPU_METRICS if not m.optional}


def test_an_optional_metric_is_sent_when_one_sample_has_it() -> None:
    b = _builder()
    b.add(_sample(0))
    plain = _sample(1)
    host = {**plain.host, "ib_rx_bps": 4096.0, "ib_tx_bps": 0.0, "cpu_quota_cores": 4.0}
    gpus = {**plain.gpus, 0: {**plain.gpus[0], "mem_temp_c": 71.0}}
    b.add(Sample(ts=plain.ts, host=host, gpus=gpus))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="c" * 32)
    parse(json.dumps(doc).encode(), now=T0 + 2)  # ingest's schema takes them
    assert set(doc["host"]["metrics"]) == {m.name for m in HOST_METRICS}
    host = doc["host"]["metrics"]
    assert (host["ib_rx_bps"], host["ib_tx_bps"], host["cpu_quota_cores"]) == (
        [None, 4096],
        [None, 0],
        [None, 4.0],
    )
    assert doc["gpus"][0]["metrics"]["mem_temp_c"] == [None, 71]
    assert "mem_temp_c" not in doc["gpus"][1]["metrics"]  # GPU 1 has no memory sensor


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="catalogue"):
        _builder().add(Sample(ts=T0, host={}, gpus={0: {"util_pct": 3.0}}))


def test_unknown_mig_metric_is_refused_and_the_batch_is_untouched() -> None:
    b = _builder()
    b.add(_sample(0))
    with pytest.raises(ValueError, match=r"MIG metrics \['util_gpu'\] are not in the Batch v1 catalogue"):
        b.add(_sample(1, mig=[MigReading(MIG, 0.0, {"util_gpu": 5.0})]))
    assert len(b) == 1
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="k" * 32)
    parse(json.dumps(doc).encode(), now=T0)


def test_mig_util_sm_is_sent_only_where_reported() -> None:
    b = _builder()
    other = MigInfo(gpu_index=1, uuid="MIG-2", gi_id=8, ci_id=0, mem_total=10 << 30, profile="1g.10gb")
    b.add(_sample(0, mig=[MigReading(MIG, 0.0, {"util_sm": None}), MigReading(other, 0.0)]))
    b.add(_sample(1, mig=[MigReading(MIG, 0.0, {"util_sm": 37.46}), MigReading(other, 0.0)]))
    b.add(_sample(2, mig=[MigReading(other, 0.0)]))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="l" * 32)
    parse(json.dumps(doc).encode(), now=T0 + 3)
    by_uuid = {m["uuid"]: m["metrics"] for m in doc["mig"]}
    # MIG-1 went away after sample 1: nulls; MIG-2 never reported util_sm: no series at all.
    assert by_uuid == {
        "MIG-1": {"mem_used": [0, 0, None], "util_sm": [None, 37.5, None]},
        "MIG-2": {"mem_used": [0, 0, 0]},
    }
    for mig in doc["mig"]:
        assert set(mig["metrics"]) <= {m.name for m in MIG_METRICS}


def test_numa_nodes_are_left_out_when_unknown() -> None:
    b = _builder()
    b.add(_sample(0, processes=[ProcessInfo(gpu_index=0, pid=7, cpu_affinity=(0,))]))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="m" * 32)
    assert "cpu_numa_nodes" not in doc["processes"][0]


def test_a_sample_going_back_in_time_is_skipped() -> None:
    b = _builder()
    assert b.add(_sample(1))
    assert not b.add(_sample(0))
    assert not b.add(_sample(1))
    assert len(b) == 1


def test_build_starts_a_new_batch() -> None:
    b = _builder()
    b.add(_sample(0))
    b.build(inventory=INVENTORY, seq=0, batch_id="d" * 32)
    assert len(b) == 0 and b.first_ts is None
    b.add(_sample(5))
    doc = b.build(inventory=INVENTORY, seq=1, batch_id="e" * 32)
    assert doc["timestamps"] == [T0 + 5]
    assert "processes" not in doc and "mig" not in doc and "events" not in doc
    with pytest.raises(ValueError, match="no samples"):
        b.build(inventory=INVENTORY, seq=2, batch_id="f" * 32)


def test_a_gpu_missing_from_a_sample_gets_nulls() -> None:
    b = _builder()
    b.add(Sample(ts=T0, host={}, gpus={0: {"util_gpu": 5.0}}))
    b.add(Sample(ts=T0 + 1, host={}, gpus={0: {"util_gpu": 6.0}, 1: {"util_gpu": 7.0}}))
    b.add(Sample(ts=T0 + 2, host={}, gpus={1: {"util_gpu": 8.0}}))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="g" * 32)
    parse(json.dumps(doc).encode(), now=T0)
    assert doc["gpus"][0]["metrics"]["util_gpu"] == [5, 6, None]
    assert doc["gpus"][1]["metrics"]["util_gpu"] == [None, 7, 8]


def test_long_strings_are_clipped_to_the_schema() -> None:
    b = _builder()
    proc = ProcessInfo(gpu_index=0, pid=1, user="u" * 100, name="n" * 300, container="c" * 200)
    b.add(_sample(0, processes=[proc]))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="h" * 32)
    parse(json.dumps(doc).encode(), now=T0)
    p = doc["processes"][0]
    assert (len(p["user"]), len(p["name"]), len(p["container"])) == (64, 256, 128)


def test_encode_is_gzip_json_and_deterministic() -> None:
    b = _builder()
    b.add(_sample(0))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="i" * 32)
    body = encode(doc)
    assert body == encode(doc)
    assert json.loads(gzip.decompress(body)) == doc
    assert parse(inflate(body, "gzip"), now=T0).batch_id == "i" * 32


def test_nan_and_infinity_become_null() -> None:
    b = _builder()
    b.add(Sample(ts=T0, host={"cpu_util": float("nan"), "mem_used": float("inf")}, gpus={}))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="j" * 32)
    assert (doc["host"]["metrics"]["cpu_util"], doc["host"]["metrics"]["mem_used"]) == ([None], [None])
    parse(inflate(encode(doc), "gzip"), now=T0)


def test_a_reading_out_of_the_contracts_range_is_sent_as_null_not_the_batch_refused() -> None:
    b = _builder()
    b.add(Sample(ts=T0, host={"cpu_util": 100.0}, gpus={0: {"util_gpu": 100.0, "temp_c": 512.0}}))
    b.add(Sample(ts=T0 + 1, host={"cpu_util": 101.5}, gpus={0: {"util_gpu": -3.0, "temp_c": 300.0}}))
    b.add(Sample(ts=T0 + 2, host={"cpu_util": 5.0}, gpus={0: {"util_gpu": 7.0, "temp_c": 1e9}}))
    doc = b.build(inventory=INVENTORY, seq=0, batch_id="r" * 32)
    parse(json.dumps(doc).encode(), now=T0 + 3)
    assert doc["host"]["metrics"]["cpu_util"] == [100.0, None, 5.0]
    assert doc["gpus"][0]["metrics"]["util_gpu"] == [100, None, 7]
    assert doc["gpus"][0]["metrics"]["temp_c"] == [None, 300, None]
