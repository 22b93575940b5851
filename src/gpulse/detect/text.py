"""The phrases detectors' summaries share: durations, short lists, who holds a GPU."""

from __future__ import annotations

import re
from collections.abc import Iterable

from gpulse.detect.base import ProcessSeen

MAX_LISTED = 3  # users, containers and process names named in a one-line summary
_CONTAINER_ID = re.compile(r"[0-9a-f]{13,64}")  # a full Docker/containerd id: shown as its 12-char short id


def duration(seconds: float) -> str:
    """'45s', '5m', '5m 10s', '2h 5m'."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s" if s % 60 else f"{s // 60}m"
    return f"{s // 3600}h {s % 3600 // 60}m"


def unique(items: Iterable[str | None]) -> list[str]:
    """Distinct non-empty strings in first-seen order."""
    return list(dict.fromkeys(i for i in items if i))


def listed(items: list[str]) -> str:
    """At most MAX_LISTED items, then how many more."""
    shown = ", ".join(items[:MAX_LISTED])
    return shown if len(items) <= MAX_LISTED else f"{shown} +{len(items) - MAX_LISTED} more"


def short_container(container: str | None) -> str | None:
    if container and _CONTAINER_ID.fullmatch(container):
        return container[:12]
    return container


def holders(procs: list[ProcessSeen]) -> str:
    """'bob (container 3f2a1b9c8d7e, jupyter)': who holds the GPU, in one short phrase."""
    if not procs:
        return "an unrecorded process"
    users = unique(q.user for q in procs)
    who = listed(users) if users else "pid " + listed(unique(str(q.pid) for q in procs))
    containers = unique(short_container(q.container) for q in procs)
    names = unique(q.name for q in procs)
    details = []
    if containers:
        details.append(("container " if len(containers) == 1 else "containers ") + listed(containers))
    if names:
        details.append(listed(names))
    return f"{who} ({', '.join(details)})" if details else who
