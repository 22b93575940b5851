"""Host metrics: psutil autospecced (its signatures checked), the clock stepped by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import psutil
import pytest

from node_shipper.host import HostCollector, numa_cpus, numa_node_count, numa_nodes_of, parse_cpulist

GIB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _nic(rx: int, tx: int) -> Any:
    return SimpleNamespace(bytes_recv=rx, bytes_sent=tx)


@pytest.fixture
def fake_psutil() -> Any:
    ps = mock.create_autospec(psutil)
    ps.cpu_count.return_value = 4
    ps.virtual_memory.return_value = SimpleNamespace(total=64 * GIB, available=40 * GIB)
    ps.cpu_percent.return_value = [50.0, 100.0, 0.0, 50.0]
    ps.disk_io_counters.return_value = SimpleNamespace(read_bytes=1000, write_bytes=5000)
    ps.net_io_counters.return_value = {"lo": _nic(10**9, 10**9), "eth0": _nic(2000, 1000), "ib0": _nic(0, 0)}
    ps.net_if_stats.return_value = {
        "lo": SimpleNamespace(flags="up,loopback,running"),
        "eth0": SimpleNamespace(flags="up,broadcast,running,multicast"),
        "ib0": SimpleNamespace(flags="up,broadcast,running,multicast"),
    }
    return ps


def test_static_facts(fake_psutil: Any, tmp_path: Path) -> None:
    for name in ("node0", "node1", "possible", "online"):
        (tmp_path / "devices/system/node" / name).mkdir(parents=True)
    host = HostCollector(fake_psutil, sysfs=tmp_path)
    info = host.info()
    assert (info.cpu_count, info.mem_total, info.numa_nodes) == (4, 64 * GIB, 2)
    fake_psutil.cpu_percent.assert_called_once_with(percpu=True)  # primes psutil's interval


def test_first_sample_has_no_rates_then_rates_per_second(fake_psutil: Any, tmp_path: Path) -> None:
    clock = Clock()
    # a node without InfiniBand and without GPU processes: those optional metrics are None
    host = HostCollector(fake_psutil, sysfs=tmp_path, monotonic=clock, infiniband=tmp_path / "no-ib")
    assert host.sample() == {
        "cpu_util": 50.0,
        "cpu_busy_cores": 2.0,
        "mem_used": 24.0 * GIB,
        "cpu_quota_cores": None,
        "disk_read_bps": None,
        "disk_write_bps": None,
        "net_rx_bps": None,
        "net_tx_bps": None,
        "ib_rx_bps": None,
        "ib_tx_bps": None,
    }
    clock.now += 2.0
    fake_psutil.disk_io_counters.return_value = SimpleNamespace(read_bytes=3000, write_bytes=5000)
    fake_psutil.net_io_counters.return_value = {
        "lo": _nic(9 * 10**9, 9 * 10**9),
        "eth0": _nic(6000, 3000),
        "ib0": _nic(0, 1000),
    }
    values = host.sample()
    # loopback traffic is excluded, even though it grew by 8 GB
    assert [values[k] for k in ("disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")] == [
        1000,
        0,
        2000,
        1500,
    ]


def test_counter_reset_gives_null_not_negative(fake_psutil: Any, tmp_path: Path) -> None:
    clock = Clock()
    host = HostCollector(fake_psutil, sysfs=tmp_path, monotonic=clock)
    host.sample()
    clock.now += 1.0
    fake_psutil.disk_io_counters.return_value = SimpleNamespace(read_bytes=10, write_bytes=6000)
    values = host.sample()
    assert (values["disk_read_bps"], values["disk_write_bps"]) == (None, 1000)


def test_no_disks_is_null(fake_psutil: Any, tmp_path: Path) -> None:
    fake_psutil.disk_io_counters.return_value = None
    clock = Clock()
    host = HostCollector(fake_psutil, sysfs=tmp_path, monotonic=clock)
    host.sample()
    clock.now += 1
    assert host.sample()["disk_read_bps"] is None


def test_numa_unknown_without_sysfs(tmp_path: Path) -> None:
    assert numa_node_count(tmp_path / "missing") is None
    assert numa_cpus(tmp_path / "missing") == {}


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-55,112-167\n", set(range(56)) | set(range(112, 168))),  # a DGX H100 socket
        ("3\n", {3}),
        ("0,2,4-5", {0, 2, 4, 5}),
        ("\n", set()),  # a memory-only node (CXL, or a Grace Hopper's GPU memory)
    ],
)
def test_parse_cpulist(text: str, cpus: set[int]) -> None:
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["0-", "5-3", "a", "0-3:2", "-1"])
def test_parse_cpulist_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpulist(text)


def write_numa(sysfs: Path, cpulists: dict[str, str]) -> Path:
    """node<N>/cpulist files under sysfs/devices/system/node, as the kernel lays them out."""
    for name, text in cpulists.items():
        node = sysfs / "devices/system/node" / name
        node.mkdir(parents=True)
        (node / "cpulist").write_text(text)
    (sysfs / "devices/system/node/possible").write_text("0-1\n")  # a file beside the nodes, ignored
    return sysfs


def test_numa_topology_of_a_two_socket_node(tmp_path: Path) -> None:
    sysfs = write_numa(tmp_path, {"node1": "56-111,168-223\n", "node0": "0-55,112-167\n", "node2": "\n"})
    topology = numa_cpus(sysfs)
    assert list(topology) == [0, 1, 2]
    assert (len(topology[0]), len(topology[1]), topology[2]) == (112, 112, frozenset())
    assert numa_nodes_of(range(56, 112), topology) == (1,)
    assert numa_nodes_of([0, 200], topology) == (0, 1)
    assert numa_nodes_of(range(224), topology) == (0, 1)  # unpinned: both sockets
    assert numa_nodes_of([], topology) == ()
    assert numa_nodes_of([0], {}) is None  # no topology: unknown, not "none"


def test_an_unreadable_cpulist_leaves_that_node_out(tmp_path: Path) -> None:
    sysfs = write_numa(tmp_path, {"node0": "0-3\n", "node1": "garbage\n"})
    assert numa_cpus(sysfs) == {0: frozenset({0, 1, 2, 3})}


def test_real_psutil_answers_every_metric() -> None:
    host = HostCollector()
    host.sample()
    values = host.sample()
    assert set(values) == {
        "cpu_util",
        "cpu_busy_cores",
        "mem_used",
        "disk_read_bps",
        "disk_write_bps",
        "net_rx_bps",
        "net_tx_bps",
        "ib_rx_bps",
        "ib_tx_bps",
        "cpu_quota_cores",
    }
    assert values["mem_used"] is not None and 0 < values["mem_used"] <= host.info().mem_total
