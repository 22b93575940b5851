"""A job's cgroup CPU quota (cgroup v2 cpu.max): read from fake /proc and cgroupfs trees, carried by
Batch v1 (`cpu_quota_cores`) through ingest's parser, the chunk codec and the window, and judged by
the input_bound rule: a job held to 4 of 64 cores is CPU-saturated at 4 busy cores."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import psutil

from gpulse.codec import decode, encode
from gpulse.detect.input_bound import InputBoundDetector
from gpulse.window import build_window
from gpulse.wire import batch
from node_shipper.cgroup import cgroup_of, cpu_quota_cores, quota_cores
from node_shipper.host import HostCollector
from tests.factories import batch_doc

POD = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
CONTAINER = POD + "/cri-containerd-abc.scope"


def fs(tmp_path: Path, procs: dict[int, str], limits: dict[str, str]) -> tuple[Path, Path]:
    """/proc/<pid>/cgroup for each pid (its whole text) and a cgroup v2 tree with cpu.max files."""
    proc, cgroupfs = tmp_path / "proc", tmp_path / "cgroup"
    cgroupfs.mkdir(parents=True)
    (cgroupfs / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for pid, text in procs.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(text)
    for path, cpu_max in limits.items():
        where = cgroupfs / path.lstrip("/")
        where.mkdir(parents=True, exist_ok=True)
        if cpu_max:
            (where / "cpu.max").write_text(cpu_max + "\n")
    return proc, cgroupfs


def test_the_tightest_quota_on_the_path_in_cores(tmp_path: Path) -> None:
    proc, cgroupfs = fs(
        tmp_path,
        {7: f"0::{CONTAINER}\n"},
        {"/kubepods.slice": "max 100000", POD: "400000 100000", CONTAINER: "max 100000"},
    )
    assert cgroup_of(7, proc) == CONTAINER
    assert quota_cores(CONTAINER, cgroupfs) == 4.0  # the pod's limits.cpu: 4
    assert cpu_quota_cores([7], proc=proc, cgroupfs=cgroupfs) == 4.0
    (cgroupfs / CONTAINER.lstrip("/") / "cpu.max").write_text("150000 100000\n")
    assert quota_cores(CONTAINER, cgroupfs) == 1.5  # tighter below wins
    assert quota_cores("/kubepods.slice", cgroupfs) == math.inf


def test_processes_of_one_cgroup_share_its_quota_and_distinct_ones_add(tmp_path: Path) -> None:
    other = "/system.slice/slurmstepd.scope/job_42"
    proc, cgroupfs = fs(
        tmp_path,
        {1: f"0::{CONTAINER}\n", 2: f"0::{CONTAINER}\n", 3: f"0::{other}\n", 4: f"0::{other}/step_0\n"},
        {POD: "400000 100000", CONTAINER: "", other: "200000 100000", other + "/step_0": "100000 100000"},
    )
    assert cpu_quota_cores([1, 2], proc=proc, cgroupfs=cgroupfs) == 4.0  # not 8: one cgroup
    # job_42's step is inside job_42: the job's quota holds both, counted once
    assert cpu_quota_cores([1, 2, 3, 4], proc=proc, cgroupfs=cgroupfs) == 6.0


def test_unlimited_unknown_or_none_is_no_quota(tmp_path: Path) -> None:
    proc, cgroupfs = fs(
        tmp_path,
        {
            1: f"0::{CONTAINER}\n",
            2: "0::/user.slice/user-1000.slice\n",  # no limit anywhere
            3: "12:cpu,cpuacct:/job\n",  # cgroup v1 only
            4: "0::/../../kubepods.slice/x\n",  # outside our cgroup namespace
        },
        {POD: "400000 100000", CONTAINER: "", "/user.slice/user-1000.slice": "max 100000"},
    )
    assert cpu_quota_cores([], proc=proc, cgroupfs=cgroupfs) is None
    assert cpu_quota_cores([1, 2], proc=proc, cgroupfs=cgroupfs) is None  # one job may use every core
    assert cpu_quota_cores([3], proc=proc, cgroupfs=cgroupfs) is None
    assert cpu_quota_cores([4], proc=proc, cgroupfs=cgroupfs) is None
    assert cpu_quota_cores([99], proc=proc, cgroupfs=cgroupfs) is None  # gone
    # cgroupfs not mounted (v1 host, or a container without it)
    assert cpu_quota_cores([1], proc=proc, cgroupfs=tmp_path / "nowhere") is None


def test_the_host_collector_reports_the_quota_of_the_gpu_processes(tmp_path: Path) -> None:
    proc, cgroupfs = fs(tmp_path, {7: f"0::{CONTAINER}\n"}, {POD: "400000 100000", CONTAINER: ""})
    ps: Any = mock.create_autospec(psutil)
    ps.cpu_count.return_value = 64
    ps.virtual_memory.return_value = SimpleNamespace(total=512 << 30, available=256 << 30)
    ps.cpu_percent.return_value = [100.0] * 4 + [0.0] * 60
    ps.disk_io_counters.return_value = None
    ps.net_io_counters.return_value = {}
    host = HostCollector(ps, sysfs=tmp_path, infiniband=tmp_path / "no-ib", proc=proc, cgroupfs=cgroupfs)
    values = host.sample(gpu_pids=[7])
    assert (values["cpu_busy_cores"], values["cpu_quota_cores"]) == (4.0, 4.0)
    assert host.sample()["cpu_quota_cores"] is None  # no GPU process this sample


def _job_window(quota: float | None) -> Any:
    """One node, 64 cores, 2 GPUs at 12 % held by a job of unknown affinity, 4 cores busy for 10 min;
    through Batch v1 (ingest's parser), the chunk codec and the window, as analyze reads it."""
    t0, n = 1_770_000_000.0, 600
    procs = [
        {
            "pid": 100 + g,
            "gpu_index": g,
            "user": "alice",
            "container": "train",
            "name": "python",
            "mem_used": 10 << 30,
            "first_seen": t0,
            "last_seen": t0 + n - 1,
        }
        for g in range(2)
    ]
    doc = batch_doc(t0=t0, n=n, util=[[12.0] * n, [12.0] * n], processes=procs)
    doc["host"]["metrics"]["cpu_busy_cores"] = [3.9] * n
    if quota is not None:
        doc["host"]["metrics"]["cpu_quota_cores"] = [quota] * n
    parsed = batch.parse(json.dumps(doc).encode(), now=t0 + n).doc
    return build_window("c1", [decode(encode(parsed))], end=t0 + n, span_s=600, step=5.0)


def test_a_job_held_to_4_of_64_cores_is_cpu_saturated_at_4_busy() -> None:
    detector = InputBoundDetector()
    [cond] = detector.detect(_job_window(4.0), dict(InputBoundDetector.defaults))
    assert (cond.values["cpu_allowed_cores"], cond.values["cpu_busy_cores"]) == (4.0, 3.9)
    assert cond.summary == (
        "node-01: GPUs 12 % busy while 3.9 of 4 allowed CPU cores are saturated"
        " — the input pipeline is the bottleneck"
    )
    # without the quota the same node looks 6 % busy: nothing to say
    assert detector.detect(_job_window(None), dict(InputBoundDetector.defaults)) == []
