"""InfiniBand/RoCE port counters: read from a fake sysfs tree (4-byte words → bytes), turned into
rates by the host collector, carried by Batch v1 through ingest's parser, the chunk codec and the
window, and judged by the network rule: a node whose NCCL traffic over IB collapses is flagged,
though /proc/net/dev never saw that traffic."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import psutil

from gpulse.codec import decode, encode
from gpulse.detect.network import NetworkDetector
from gpulse.window import build_window
from gpulse.wire import batch
from node_shipper.host import HostCollector
from node_shipper.infiniband import ib_bytes
from tests.factories import batch_doc

GB = 1e9


def port(root: Path, device: str, number: int, rcv_words: int | str, xmit_words: int | str) -> None:
    counters = root / device / "ports" / str(number) / "counters"
    counters.mkdir(parents=True, exist_ok=True)
    (counters / "port_rcv_data").write_text(f"{rcv_words}\n")
    (counters / "port_xmit_data").write_text(f"{xmit_words}\n")
    (counters / "symbol_error").write_text("0\n")  # other counters are not read


def test_counters_are_4_byte_words_summed_over_ports(tmp_path: Path) -> None:
    root = tmp_path / "infiniband"
    port(root, "mlx5_0", 1, 1000, 250)
    port(root, "mlx5_1", 1, 10, 20)
    port(root, "mlx5_1", 2, 1, 2)
    assert ib_bytes(root) == (4 * 1011, 4 * 272)


def test_no_rdma_device_or_unreadable_ports(tmp_path: Path) -> None:
    assert ib_bytes(tmp_path / "absent") is None  # no RDMA core: a node without IB
    root = tmp_path / "infiniband"
    (root / "mlx5_0").mkdir(parents=True)  # a device without ports (yet)
    assert ib_bytes(root) is None
    port(root, "mlx5_1", 1, "garbage", 5)  # a port being reset: left out
    port(root, "mlx5_1", 2, 3, 5)
    assert ib_bytes(root) == (12, 20)


def _psutil() -> Any:
    ps: Any = mock.create_autospec(psutil)
    ps.cpu_count.return_value = 4
    ps.virtual_memory.return_value = SimpleNamespace(total=64 << 30, available=40 << 30)
    ps.cpu_percent.return_value = [0.0] * 4
    ps.disk_io_counters.return_value = None
    ps.net_io_counters.return_value = {"eth0": SimpleNamespace(bytes_recv=0, bytes_sent=0)}
    ps.net_if_stats.return_value = {"eth0": SimpleNamespace(flags="up,broadcast,running")}
    return ps


def test_the_host_collector_reports_bytes_per_second(tmp_path: Path) -> None:
    root = tmp_path / "infiniband"
    port(root, "mlx5_0", 1, 1_000_000, 500_000)
    now = [100.0]
    host = HostCollector(_psutil(), sysfs=tmp_path, infiniband=root, monotonic=lambda: now[0])
    first = host.sample()
    assert (first["ib_rx_bps"], first["ib_tx_bps"]) == (None, None)  # no rate before two readings
    now[0] += 2.0
    port(root, "mlx5_0", 1, 1_000_000 + 500_000_000, 500_000 + 250_000_000)  # NCCL moving ~1 GB/s
    second = host.sample()
    assert (second["ib_rx_bps"], second["ib_tx_bps"]) == (1_000_000_000, 500_000_000)
    assert (second["net_rx_bps"], second["net_tx_bps"]) == (0, 0)  # what /proc/net/dev sees of it
    now[0] += 1.0
    port(root, "mlx5_0", 1, 7, 7)  # counters reset (HCA reset): no rate, never a negative one
    third = host.sample()
    assert (third["ib_rx_bps"], third["ib_tx_bps"]) == (None, None)


def _window(ib_of: dict[str, list[float]] | None) -> Any:
    """Four nodes of one group, 10 minutes at 1 Hz; Ethernet quiet (50 kB/s: NCCL runs over IB),
    IB traffic per node as given; through ingest's parser, the chunk codec and the window."""
    t0, n = 1_770_000_000.0, 600
    chunks = []
    for k in range(4):
        node = f"node-{k + 1:02d}"
        doc = batch_doc(node=node, node_group="trainers", t0=t0, n=n)
        metrics = doc["host"]["metrics"]
        metrics["net_rx_bps"] = [25_000.0] * n
        metrics["net_tx_bps"] = [25_000.0] * n
        if ib_of is not None:
            metrics["ib_rx_bps"] = ib_of[node]
            metrics["ib_tx_bps"] = ib_of[node]
        parsed = batch.parse(json.dumps(doc).encode(), now=t0 + n).doc
        chunks.append(decode(encode(parsed)))
    return build_window("c1", chunks, end=t0 + n, span_s=600, step=5.0)


def test_a_node_whose_ib_traffic_collapses_is_flagged() -> None:
    n = 600
    busy = [1.5 * GB] * n
    collapsed = [1.5 * GB] * 300 + [1000.0] * 300  # node-03's rank stalled 5 minutes ago
    ib = {"node-01": busy, "node-02": busy, "node-03": collapsed, "node-04": busy}
    detector = NetworkDetector()
    params = dict(NetworkDetector.defaults)
    [cond] = detector.detect(_window(ib), params)
    assert (cond.nodes, cond.since) == (["node-03"], 1_770_000_300.0)
    # the same nodes seen through /proc/net/dev only: all of them idle, nothing to judge
    assert detector.detect(_window(None), params) == []
