"""Who runs a GPU process: user, container, command name, CPU affinity and its NUMA nodes.

Read from /proc; the NUMA topology comes from /sys/devices/system/node once, at start.

Every reader answers None when the process is gone or unreadable: a process may exit between
NVML listing it and us reading /proc, and that must never stop a sample.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from node_shipper.host import numa_cpus, numa_nodes_of
from node_shipper.jobid import job_identity

# A container id is 64 lowercase hex digits in a cgroup path: docker ("docker-<id>.scope",
# ".../docker/<id>"), containerd ("cri-containerd-<id>.scope", ".../kubepods/.../<id>"),
# cri-o ("crio-<id>.scope"), podman ("libpod-<id>.scope").
_CONTAINER_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")


def container_id(cgroup_text: str) -> str | None:
    """The container id named in a /proc/<pid>/cgroup file (v1 or v2), or None if there is none."""
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        found = _CONTAINER_ID.findall(parts[2])
        if found:
            return str(found[-1])  # the innermost id: nested paths name the container last
    return None


def real_uid(status_text: str) -> int | None:
    """The real uid from a /proc/<pid>/status file ("Uid:\\treal\\teffective\\tsaved\\tfs")."""
    for line in status_text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
    return None


@dataclass(frozen=True)
class ProcFacts:
    user: str | None
    container: str | None
    name: str | None
    cpu_affinity: tuple[int, ...] | None
    cpu_numa_nodes: tuple[int, ...] | None = None
    job: str | None = None  # the scheduler's identity of its job (node_shipper.jobid)


def _user_name(uid: int, getpwuid: Callable[[int], pwd.struct_passwd]) -> str:
    try:
        return getpwuid(uid).pw_name
    except KeyError:
        return str(uid)  # a uid with no passwd entry (typical inside containers): the number itself


class ProcReader:
    """Reads the facts of a pid under `root` (default /proc), caching them while the pid lives.

    The NUMA topology is read once from `sysfs` (default /sys): CPUs do not change nodes while
    the machine runs, and a process's affinity is mapped onto it at every new pid.
    """

    def __init__(
        self,
        root: Path = Path("/proc"),
        *,
        getaffinity: Callable[[int], Iterable[int]] = os.sched_getaffinity,
        getpwuid: Callable[[int], pwd.struct_passwd] = pwd.getpwuid,
        sysfs: Path = Path("/sys"),
    ) -> None:
        self._root = root
        self._getaffinity = getaffinity
        self._getpwuid = getpwuid
        self._numa = numa_cpus(sysfs)
        self._cache: dict[int, ProcFacts] = {}

    def _read(self, pid: int, name: str) -> str | None:
        try:
            return (self._root / str(pid) / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def facts(self, pid: int) -> ProcFacts:
        """User, container id, comm, affinity and its NUMA nodes of `pid`; each None when unknown."""
        cached = self._cache.get(pid)
        if cached is not None:
            return cached
        status = self._read(pid, "status")
        uid = real_uid(status) if status is not None else None
        cgroup = self._read(pid, "cgroup")
        comm = self._read(pid, "comm")
        try:
            affinity: tuple[int, ...] | None = tuple(sorted(self._getaffinity(pid)))
        except OSError:  # ProcessLookupError, PermissionError
            affinity = None
        facts = ProcFacts(
            user=_user_name(uid, self._getpwuid) if uid is not None else None,
            container=container_id(cgroup) if cgroup is not None else None,
            name=(comm.strip() or None) if comm is not None else None,
            cpu_affinity=affinity,
            cpu_numa_nodes=numa_nodes_of(affinity, self._numa) if affinity is not None else None,
            job=job_identity(self._read(pid, "environ"), cgroup),
        )
        if status is not None:  # only a process we could see is worth remembering
            self._cache[pid] = facts
        return facts

    def forget_except(self, live: set[int]) -> None:
        """Drop cached facts of pids no longer seen, so a reused pid is read afresh."""
        for pid in set(self._cache) - live:
            del self._cache[pid]
