"""dcgm-exporter pages (published samples, tests/data/dcgm/README.md) → the shipper's readings → Batch v1.

No sockets: the source's HTTP session is given a transport adapter that answers with a page.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from gpulse.wire.batch import parse
from node_shipper.batch import BatchBuilder
from node_shipper.config import parse_config
from node_shipper.dcgm_exporter import (
    DcgmExporterSource,
    ScrapeError,
    XidTracker,
    gpu_metrics,
    mem_total,
    mig_reading,
    parse_page,
    processes,
)
from node_shipper.errors import ConfigError, NoGpuError
from node_shipper.host import HostCollector
from node_shipper.model import Event, ProcessInfo

DATA = Path(__file__).resolve().parents[1] / "data" / "dcgm"
MIB = 1 << 20
T0 = 1_770_000_000.0
A100 = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"


def _page(name: str) -> str:
    return (DATA / name).read_text()


class _Pages(BaseAdapter):
    """A transport that answers each GET with the next (status, body) in turn, the last one repeating."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.urls: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.urls.append(str(request.url))
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if status == 0:
            raise requests.ConnectionError("connection refused")
        response = requests.Response()
        response.status_code = status
        response._content = body.encode()
        response.encoding = "utf-8"
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


def _source(*answers: tuple[int, str]) -> tuple[DcgmExporterSource, _Pages]:
    session = requests.Session()
    adapter = _Pages(*answers)
    session.mount("http://", adapter)
    return DcgmExporterSource("http://exporter.test:9400/metrics", HostCollector(), session=session), adapter


def test_profiling_off_page_maps_like_nvml() -> None:
    page = parse_page(_page("t4-2.0.13-profiling-off.prom"))
    assert list(page.gpus) == [0] and page.mig == {}
    row = page.gpus[0]
    assert row.uuid == "GPU-8c16e996-bd76-aa91-17e7-b48bcd0208ba"
    assert gpu_metrics(row) == {
        "util_gpu": 0.0,
        "util_mem": 0.0,
        "mem_used": 1057.0 * MIB,
        "power_w": 23.528,
        "temp_c": 41.0,
        "sm_clock_mhz": 885.0,
        "throttle_reasons": None,  # not in 2.0.13's default counters
        "ecc_sbe_volatile": 0.0,
        "ecc_dbe_volatile": 0.0,
        "pcie_tx_bps": None,  # its PCIE_*_THROUGHPUT are declared but have no rows on this page
        "pcie_rx_bps": None,
        "retired_pages": 0.0,
        "remapped_rows_unc": None,
        "remap_failure": None,
    }
    assert mem_total(row) == (7064 + 1057) * MIB


def test_mig_page_gives_the_instance_and_its_sm_use() -> None:
    page = parse_page(_page("a100-mig-nvidia-docs.prom"))
    assert list(page.gpus) == [0] and list(page.mig) == [(0, 13)]
    metrics = gpu_metrics(page.gpus[0])
    # In MIG mode DCGM has no whole-GPU utilisation: util_gpu stays empty, not 0.
    assert (metrics["util_gpu"], metrics["mem_used"], metrics["power_w"]) == (None, 4845.0 * MIB, 409.692)
    assert (metrics["pcie_tx_bps"], metrics["pcie_rx_bps"]) == (33011804.0, 97863601.0)
    reading = mig_reading(page.mig[(0, 13)])
    assert (reading.info.uuid, reading.info.gi_id, reading.info.ci_id) == (f"{A100}/gi13", 13, 0)
    assert (reading.info.profile, reading.info.mem_total, reading.mem_used) == ("1g.5gb", 0, None)
    assert round(reading.metrics["util_sm"] or 0.0, 4) == 99.5687  # GR_ENGINE_ACTIVE 0.995687


def test_blank_sentinel_is_no_value_and_pods_become_pid0_processes() -> None:
    page = parse_page(_page("k8s-docs-pod-labels.prom"))
    assert "DCGM_FI_DEV_MEMORY_TEMP" not in page.gpus[0].values  # 9223372036854775794: DCGM's "not supported"
    assert page.gpus[0].values == {"DCGM_FI_DEV_SM_CLOCK": 139.0, "DCGM_FI_DEV_MEM_CLOCK": 405.0}
    assert processes(page) == [
        ProcessInfo(gpu_index=0, pid=0, user="bar", container="bar/baz/foo", name="baz")
    ]


def test_empty_pod_labels_and_the_exporter_hostname() -> None:
    page = parse_page(_page("titan-v-issue58.prom"))
    assert [r.uuid[:12] for r in page.gpus.values()] == [
        "GPU-55274b56",
        "GPU-dad58a68",
        "GPU-a29d2dc7",
        "GPU-4b2cedc3",
        "GPU-58fae45b",
    ]
    assert {r.model for r in page.gpus.values()} == {"NVIDIA TITAN V"}
    # In Kubernetes `Hostname` is the exporter pod's name, not the node's: it is never used as --node.
    assert {r.hostname for r in page.gpus.values()} == {"dcgm-exporter-lcxpl"}
    assert processes(page) == []
    assert [gpu_metrics(r)["sm_clock_mhz"] for r in page.gpus.values()] == [
        135.0,
        135.0,
        135.0,
        135.0,
        1335.0,
    ]


def test_derived_page_fills_throttle_ecc_remap_limits_and_mig_pods() -> None:
    page = parse_page(_page("derived-a100-mig-pod-xid.prom"))
    m = gpu_metrics(page.gpus[0])
    assert (m["throttle_reasons"], m["ecc_sbe_volatile"], m["ecc_dbe_volatile"]) == (4.0, 2.0, 1.0)
    assert (m["remapped_rows_unc"], m["remap_failure"]) == (1.0, 0.0)
    assert mem_total(page.gpus[0]) == (35690 + 4845 + 425) * MIB
    reading = mig_reading(page.mig[(0, 13)])
    assert (reading.mem_used, reading.info.mem_total) == (3100.0 * MIB, 4864 * MIB)
    assert reading.metrics == {"util_sm": 91.25}  # SM_ACTIVE wins over GR_ENGINE_ACTIVE
    assert processes(page) == [
        ProcessInfo(
            gpu_index=0,
            pid=0,
            user="ml-research",
            container="ml-research/bert-train-0/trainer",
            name="bert-train-0",
            mig_uuid=f"{A100}/gi13",
        )
    ]


def test_xid_gauge_change_is_one_event_and_the_start_value_is_history() -> None:
    xid = XidTracker()
    derived = parse_page(_page("derived-a100-mig-pod-xid.prom"))  # last XID 79
    clean = parse_page(_page("a100-mig-nvidia-docs.prom"))  # last XID 0
    assert xid.events(T0, derived) == []  # already 79 at start: not news
    assert xid.events(T0 + 1, clean) == []
    assert xid.events(T0 + 2, derived) == [
        Event(ts=T0 + 2, type="xid", gpu_index=0, code=79, message="Xid 79")
    ]
    assert xid.events(T0 + 3, derived) == []  # still 79: the same XID, not a new one


def test_source_turns_scrapes_into_a_valid_batch(caplog: pytest.LogCaptureFixture) -> None:
    source, adapter = _source(
        (200, _page("a100-mig-nvidia-docs.prom")),
        (200, _page("a100-mig-nvidia-docs.prom")),
        (200, _page("derived-a100-mig-pod-xid.prom")),
        (0, ""),
    )
    with caplog.at_level(logging.WARNING, logger="node_shipper.dcgm_exporter"):
        source.open()
    said = [r for r in caplog.records if r.getMessage() == "dcgm-exporter source: Batch v1 fields left empty"]
    assert len(said) == 1
    assert said[0].not_on_page == (  # type: ignore[attr-defined]
        "ecc_dbe_volatile,ecc_sbe_volatile,remap_failure,remapped_rows_unc,throttle_reasons,"
        "util_gpu,util_mem,retired_pages"
    )
    assert said[0].read_not_shipped == (  # type: ignore[attr-defined]
        "DCGM_FI_DEV_MEMORY_TEMP,DCGM_FI_DEV_MEM_CLOCK,DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL,"
        "DCGM_FI_PROF_DRAM_ACTIVE,DCGM_FI_PROF_GR_ENGINE_ACTIVE,DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"
    )
    builder = BatchBuilder(cluster="prod", node="gpu-07", node_group=None, shipper={"simulated": False})
    for k in range(3):  # the A100 page, the derived page (XID 79, pods), then the exporter down
        builder.add(source.sample(T0 + k))
    doc = builder.build(inventory=source.inventory(), seq=0, batch_id="d" * 32)
    parse(json.dumps(doc).encode(), now=T0 + 3)
    assert adapter.urls == ["http://exporter.test:9400/metrics"] * 4
    [gpu] = doc["gpus"]
    assert (gpu["index"], gpu["uuid"], gpu["name"], gpu["mig_mode"]) == (
        0,
        A100,
        "NVIDIA A100-SXM4-40GB",
        True,
    )
    assert (gpu["mem_total"], gpu["power_limit_w"]) == ((35690 + 4845 + 425) * MIB, 400.0)
    metrics = gpu["metrics"]
    assert metrics["power_w"] == [409.69, 409.69, None]
    assert metrics["mem_used"] == [4845 * MIB, 4845 * MIB, None]
    assert metrics["throttle_reasons"] == [None, 4, None]
    assert metrics["util_gpu"] == [None, None, None]
    [mig] = doc["mig"]
    assert (mig["uuid"], mig["gi_id"], mig["ci_id"], mig["profile"]) == (f"{A100}/gi13", 13, 0, "1g.5gb")
    assert mig["metrics"] == {"mem_used": [None, 3100 * MIB, None], "util_sm": [99.6, 91.2, None]}
    assert doc["events"] == [{"ts": T0 + 1, "type": "xid", "gpu_index": 0, "code": 79, "message": "Xid 79"}]
    [proc] = doc["processes"]
    assert (proc["pid"], proc["user"], proc["container"], proc["mig_uuid"]) == (
        0,
        "ml-research",
        "ml-research/bert-train-0/trainer",
        f"{A100}/gi13",
    )
    # Host metrics still come from psutil, also in the sample where the exporter was down.
    assert doc["timestamps"] == [T0, T0 + 1, T0 + 2]
    assert None not in doc["host"]["metrics"]["mem_used"]


def test_open_refuses_an_unreadable_or_empty_exporter() -> None:
    with pytest.raises(ScrapeError, match="answered HTTP 503"):
        _source((503, "busy"))[0].open()
    with pytest.raises(ScrapeError, match="ConnectionError"):
        _source((0, ""))[0].open()
    with pytest.raises(ScrapeError, match="not Prometheus text"):
        _source((200, "<html>login</html>"))[0].open()
    with pytest.raises(NoGpuError, match="lists no GPU"):
        _source((200, "# HELP up x\nup 1\n"))[0].open()


def test_the_source_flag() -> None:
    base = ["--endpoint", "https://x.test", "--cluster", "c", "--node", "n"]
    assert parse_config(base).dcgm_url is None
    assert parse_config([*base, "--source", "nvml"]).dcgm_url is None
    url = "http://127.0.0.1:9400/metrics"
    assert parse_config([*base, "--source", f"dcgm-exporter={url}"]).dcgm_url == url
    for bad in ("dcgm-exporter", "dcgm-exporter=127.0.0.1:9400", "prometheus=http://x/metrics"):
        with pytest.raises(ConfigError) as e:
            parse_config([*base, "--source", bad])
        assert str(e.value) == (
            f"--source must be nvml or dcgm-exporter=URL (the http(s) URL of its /metrics), got {bad!r}"
        )
