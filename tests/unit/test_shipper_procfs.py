"""Who holds a GPU: /proc parsing of user, container id, command name and affinity, from tmp files."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from node_shipper.procfs import ProcFacts, ProcReader, container_id, real_uid
from tests.unit.test_shipper_host import write_numa

CID = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"

CGROUPS = {
    "docker v1": f"12:memory:/docker/{CID}\n11:cpuset:/docker/{CID}\n1:name=systemd:/docker/{CID}\n",
    "docker v2 (systemd driver)": f"0::/system.slice/docker-{CID}.scope\n",
    "containerd v1 (kubernetes)": (
        f"12:memory:/kubepods/burstable/pod8d0d3c55-2a0e-4f0b-9d7b-6f3f1a2b3c4d/{CID}\n"
        f"11:cpu,cpuacct:/kubepods/burstable/pod8d0d3c55-2a0e-4f0b-9d7b-6f3f1a2b3c4d/{CID}\n"
    ),
    "containerd v2 (systemd driver)": (
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8d0d3c55_2a0e_4f0b_9d7b_6f3f1a2b3c4d.slice/"
        f"cri-containerd-{CID}.scope\n"
    ),
    "cri-o": f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-p1.slice/crio-{CID}.scope\n",
    "podman (rootless)": f"0::/user.slice/user-1000.slice/user@1000.service/libpod-{CID}.scope/container\n",
}


@pytest.mark.parametrize("runtime", sorted(CGROUPS))
def test_container_id_of_each_runtime(runtime: str) -> None:
    assert container_id(CGROUPS[runtime]) == CID


@pytest.mark.parametrize(
    "text",
    [
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        "12:memory:/\n11:cpuset:/\n",
        "0::/system.slice/sshd.service\n",
        "",
    ],
)
def test_no_container(text: str) -> None:
    assert container_id(text) is None


def test_a_65_hex_run_is_not_an_id() -> None:
    assert container_id(f"0::/docker/{CID}0\n") is None


def test_real_uid_from_status() -> None:
    status = (
        "Name:\tpython\nState:\tS (sleeping)\nUid:\t1001\t1001\t1001\t1001\nGid:\t1001\t1001\t1001\t1001\n"
    )
    assert real_uid(status) == 1001
    assert real_uid("Name:\tpython\n") is None


def _write_proc(root: Path, pid: int, *, uid: int, cgroup: str, comm: str) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (d / "cgroup").write_text(cgroup)
    (d / "comm").write_text(comm + "\n")


def _passwd(name: str, uid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, uid, "", f"/home/{name}", "/bin/bash"))


def _getpwuid(uid: int) -> pwd.struct_passwd:
    users = {1001: _passwd("alice", 1001)}
    if uid not in users:
        raise KeyError(f"getpwuid(): uid not found: {uid}")
    return users[uid]


def _sysfs(tmp_path: Path) -> Path:
    """A two-socket node: NUMA 0 holds CPUs 0-3 and their siblings 8-11, NUMA 1 the rest."""
    return write_numa(tmp_path / "sys", {"node0": "0-3,8-11\n", "node1": "4-7,12-15\n"})


def test_reader_facts(tmp_path: Path) -> None:
    _write_proc(tmp_path, 4242, uid=1001, cgroup=CGROUPS["docker v2 (systemd driver)"], comm="python")
    _write_proc(tmp_path, 5151, uid=2000, cgroup="0::/user.slice/session-1.scope\n", comm="jupyter")
    affinity = {4242: {3, 1, 2}, 5151: set(range(16))}
    reader = ProcReader(
        tmp_path, getaffinity=lambda pid: affinity[pid], getpwuid=_getpwuid, sysfs=_sysfs(tmp_path)
    )
    assert reader.facts(4242) == ProcFacts(
        user="alice", container=CID, name="python", cpu_affinity=(1, 2, 3), cpu_numa_nodes=(0,)
    )
    # A uid without a passwd entry (common inside containers) is reported as the number.
    assert reader.facts(5151) == ProcFacts(
        user="2000", container=None, name="jupyter", cpu_affinity=tuple(range(16)), cpu_numa_nodes=(0, 1)
    )


def test_numa_nodes_are_unknown_without_a_topology(tmp_path: Path) -> None:
    _write_proc(tmp_path, 4242, uid=1001, cgroup="", comm="python")
    reader = ProcReader(tmp_path, getaffinity=lambda pid: {0}, getpwuid=_getpwuid, sysfs=tmp_path / "no-sys")
    assert reader.facts(4242).cpu_numa_nodes is None


def test_the_topology_is_read_once(tmp_path: Path) -> None:
    _write_proc(tmp_path, 4242, uid=1001, cgroup="", comm="python")
    _write_proc(tmp_path, 4343, uid=1001, cgroup="", comm="python")
    sysfs = _sysfs(tmp_path)
    reader = ProcReader(tmp_path, getaffinity=lambda pid: {5}, getpwuid=_getpwuid, sysfs=sysfs)
    (sysfs / "devices/system/node/node0/cpulist").write_text("0-15\n")
    (sysfs / "devices/system/node/node1/cpulist").write_text("\n")
    assert reader.facts(4242).cpu_numa_nodes == reader.facts(4343).cpu_numa_nodes == (1,)


def test_vanished_process_gives_nulls(tmp_path: Path) -> None:
    def gone(pid: int) -> set[int]:
        raise ProcessLookupError(pid)

    reader = ProcReader(tmp_path, getaffinity=gone, getpwuid=_getpwuid, sysfs=_sysfs(tmp_path))
    assert reader.facts(999) == ProcFacts(
        user=None, container=None, name=None, cpu_affinity=None, cpu_numa_nodes=None
    )


def test_facts_are_cached_until_the_pid_is_gone(tmp_path: Path) -> None:
    _write_proc(tmp_path, 4242, uid=1001, cgroup="", comm="python")
    reader = ProcReader(tmp_path, getaffinity=lambda pid: {0}, getpwuid=_getpwuid)
    assert reader.facts(4242).name == "python"
    (tmp_path / "4242" / "comm").write_text("torchrun\n")
    assert reader.facts(4242).name == "python"  # the same process: no re-read each second
    reader.forget_except(set())
    assert reader.facts(4242).name == "torchrun"  # the pid was reused by a new process
