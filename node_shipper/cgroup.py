"""The CPU quota of the cgroups that hold the GPU processes (cgroup v2 `cpu.max`), in cores.

A job throttled by a CPU limit (a Kubernetes pod's limits.cpu, Slurm's cgroup plugin, `docker
--cpus`) may run on all 64 cores of a node yet get only 4 cores' worth of time: its affinity says
64, its quota says 4. The input_bound rule needs the second to tell that the job's CPU is
saturated. `cpu.max` holds "<quota> <period>" (microseconds) or "max <period>"; a cgroup is held to
the tightest quota on its path up to the root.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
CGROUPFS = Path("/sys/fs/cgroup")


def cgroup_of(pid: int, proc: Path = PROC) -> str | None:
    """The cgroup v2 path of `pid` ("/kubepods.slice/…"), from the "0::" line of /proc/<pid>/cgroup;
    None when the process is gone, the host is on cgroup v1 only, or the path is outside this
    cgroup namespace ("/.." : a containerised shipper without the host's cgroup namespace)."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            path = line[3:].strip()
            return path if path.startswith("/") and not path.startswith("/..") else None
    return None


def quota_cores(cgroup: str, cgroupfs: Path = CGROUPFS) -> float | None:
    """The tightest `cpu.max` quota on the path from `cgroup` up to the root, in cores; inf when none
    of them is limited; None when the cgroup cannot be read (gone, or cgroupfs not mounted)."""
    parts = [p for p in cgroup.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    if not (cgroupfs / "cgroup.controllers").exists() or not (cgroupfs.joinpath(*parts)).is_dir():
        return None
    tightest = math.inf
    for depth in range(len(parts), 0, -1):  # the root cgroup has no cpu.max
        try:
            words = (cgroupfs.joinpath(*parts[:depth]) / "cpu.max").read_text().split()
        except OSError:
            continue  # no cpu controller enabled at this level: no limit here
        if len(words) != 2 or words[0] == "max":
            continue
        try:
            quota, period = int(words[0]), int(words[1])
        except ValueError:
            continue
        if quota > 0 and period > 0:
            tightest = min(tightest, quota / period)
    return tightest


def cpu_quota_cores(pids: Iterable[int], *, proc: Path = PROC, cgroupfs: Path = CGROUPFS) -> float | None:
    """The CPU quota the processes `pids` share, in cores: the sum over their distinct cgroups of
    each one's quota (`quota_cores`). None when there are no pids, when any cgroup is unlimited
    (the processes may use every core their affinity allows) or unknown."""
    cgroups = set()
    for pid in pids:
        cgroup = cgroup_of(pid, proc)
        if cgroup is None:
            return None
        cgroups.add(cgroup)
    if not cgroups:
        return None
    # a cgroup nested in another of the set is held by its parent's quota too: count the outer one
    outer = {c for c in cgroups if not any(c != o and c.startswith(o.rstrip("/") + "/") for o in cgroups)}
    total = 0.0
    for cgroup in sorted(outer):
        cores = quota_cores(cgroup, cgroupfs)
        if cores is None or math.isinf(cores):
            return None
        total += cores
    return total
