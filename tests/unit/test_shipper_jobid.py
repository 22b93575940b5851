"""The scheduler's identity of a process's job, from /proc (tmp files), and on the wire."""

from __future__ import annotations

import json
from pathlib import Path

from gpulse.wire.batch import parse
from node_shipper.jobid import job_identity, pod, slurm_job
from node_shipper.model import ProcessInfo
from node_shipper.procfs import ProcReader
from tests.unit.test_shipper_batch import INVENTORY, T0, _builder, _sample
from tests.unit.test_shipper_procfs import CGROUPS, _getpwuid, _write_proc

UID = "8d0d3c55-2a0e-4f0b-9d7b-6f3f1a2b3c4d"


def test_slurm_job_id_from_the_environment() -> None:
    env = "PATH=/usr/bin\0SLURM_JOB_ID=4242\0SLURM_PROCID=3\0"
    assert slurm_job(env) == "slurm:4242"
    assert slurm_job("SLURM_JOB_ID=4242_7\0") == "slurm:4242_7"  # an array task
    assert slurm_job("SLURM_JOBID=4242\0HOME=/root") is None  # only SLURM_JOB_ID counts
    assert slurm_job("SLURM_JOB_ID=$(rm -rf)\0") is None  # not an id: never sent
    assert slurm_job("") is None


def test_pod_uid_from_either_cgroup_driver() -> None:
    assert pod(CGROUPS["containerd v1 (kubernetes)"]) == f"pod:{UID}"
    assert pod(CGROUPS["containerd v2 (systemd driver)"]) == f"pod:{UID}"  # underscores in the slice
    assert pod(CGROUPS["docker v1"]) is None
    assert pod(CGROUPS["cri-o"]) is None  # "p1" is no pod uid


def test_slurm_wins_over_the_pod() -> None:
    cgroup = CGROUPS["containerd v1 (kubernetes)"]
    assert job_identity("SLURM_JOB_ID=9\0", cgroup) == "slurm:9"
    assert job_identity("HOME=/\0", cgroup) == f"pod:{UID}"
    assert job_identity(None, None) is None


def test_the_reader_reads_environ_and_cgroup(tmp_path: Path) -> None:
    _write_proc(tmp_path, 4242, uid=1001, cgroup=CGROUPS["docker v1"], comm="python")
    (tmp_path / "4242" / "environ").write_bytes(b"SLURM_JOB_ID=77\0SLURM_NODEID=1\0")
    _write_proc(tmp_path, 5151, uid=1001, cgroup=CGROUPS["containerd v1 (kubernetes)"], comm="python")
    _write_proc(tmp_path, 6161, uid=1001, cgroup="0::/user.slice/session-1.scope\n", comm="python")
    reader = ProcReader(tmp_path, getaffinity=lambda pid: {0}, getpwuid=_getpwuid, sysfs=tmp_path / "none")
    assert [reader.facts(pid).job for pid in (4242, 5151, 6161)] == ["slurm:77", f"pod:{UID}", None]


def test_the_batch_carries_the_job_only_where_known() -> None:
    b = _builder()
    known = ProcessInfo(gpu_index=0, pid=42, user="alice", name="python", job="slurm:77")
    unknown = ProcessInfo(gpu_index=0, pid=43, user="bob", name="python")
    b.add(_sample(0, processes=[known, unknown]))
    doc = b.build(inventory=INVENTORY, seq=1, batch_id="b" * 32)
    parse(json.dumps(doc).encode(), now=T0 + 1)  # ingest's schema takes it
    assert [(p["pid"], p.get("job")) for p in doc["processes"]] == [(42, "slurm:77"), (43, None)]
    assert "job" not in doc["processes"][1]
