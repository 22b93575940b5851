"""The scheduler's identity of a process's job (Batch v1 `processes[].job`), read from /proc.

- Slurm sets SLURM_JOB_ID in the environment of every task of a job, on every node it spans:
  `slurm:<id>` joins the job's nodes (analyze's gpulse.detect.jobs judges them together).
  /proc/<pid>/environ is readable by root, as the shipper runs.
- Kubernetes puts a pod's containers under a cgroup named after the pod's UID
  (".../kubepods/burstable/pod<uid>/<container>" with the cgroupfs driver,
  ".../kubepods-burstable-pod<uid_with_underscores>.slice/..." with the systemd driver):
  `pod:<uid>` tells independent pods on one node apart.

Anything else (a process outside any scheduler, an unreadable file) is None: never a guess.
"""

from __future__ import annotations

import re

_SLURM_JOB_ID = re.compile(r"[0-9]{1,20}(?:_[0-9]{1,20})?")  # "4242", or an array task "4242_7"
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


def slurm_job(environ: str) -> str | None:
    """`slurm:<SLURM_JOB_ID>` from a /proc/<pid>/environ file (NUL-separated), or None."""
    for entry in environ.split("\0"):
        key, sep, value = entry.partition("=")
        if sep and key == "SLURM_JOB_ID" and _SLURM_JOB_ID.fullmatch(value):
            return f"slurm:{value}"
    return None


def pod(cgroup_text: str) -> str | None:
    """`pod:<uid>` from a /proc/<pid>/cgroup file naming a Kubernetes pod, or None."""
    found = _POD_UID.findall(cgroup_text)
    return f"pod:{found[-1].replace('_', '-')}" if found else None


def job_identity(environ: str | None, cgroup_text: str | None) -> str | None:
    """The Slurm job first (it spans nodes), else the pod; None when neither is known."""
    job = slurm_job(environ) if environ is not None else None
    if job is None and cgroup_text is not None:
        job = pod(cgroup_text)
    return job
