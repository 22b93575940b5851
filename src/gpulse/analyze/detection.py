"""Detection: the window a run evaluates, and every rule of the catalogue run over it, each
behind its own boundary (one rule that raises becomes its own `analysis_failed` condition; the
other rules' conditions are what they would have been)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from gpulse.analyze.inhibit import Inhibition, inhibit
from gpulse.analyze.own_rules import failure_condition
from gpulse.codec import Chunk
from gpulse.detect.base import Condition, Detector, NodeSeen, Window
from gpulse.detect.catalogue import CATALOGUE
from gpulse.detect.jobs import condition_nodes, job_of, node_jobs
from gpulse.window import build_window, readable, window_end

logger = logging.getLogger(__name__)
STEP_S = 5.0
# A node whose median interval is past a minute is mostly gaps (or one bad timestamp in a
# two-sample chunk): binning the whole cluster that wide would blind every rule on it.
MAX_BIN_S = 60.0


def bin_step(chunks: list[Chunk], base: float = STEP_S) -> float:
    """The bin width: `base`, or the slowest node's sample interval rounded up to a multiple of
    it (at most MAX_BIN_S). Bins narrower than the samples are mostly empty, and an empty bin
    breaks every run."""
    return step_for([float(np.median(np.diff(c.timestamps))) for c in chunks if c.timestamps.size > 1], base)


def step_for(intervals: list[float | None], base: float = STEP_S) -> float:
    """`bin_step` from each chunk's median sample interval (None: a chunk of one sample)."""
    slowest = min(max((i for i in intervals if i is not None), default=base), MAX_BIN_S)
    if not math.isfinite(slowest):  # a chunk `readable` has not seen: NaN timestamps
        slowest = base
    return max(base, math.ceil(slowest / base - 1e-6) * base)


def window_for(
    cluster: str,
    chunks: list[Chunk],
    registry: list[NodeSeen],
    now: float,
    *,
    window_s: float,
    step_s: float = STEP_S,
) -> Window:
    """The window analyze evaluates at `now`: it ends where every fresh node has reported (or at
    `now` when nothing has: empty, but the registry still speaks), in bins of `bin_step`. Samples
    that are not `readable` (a NaN or far-future timestamp) take no part."""
    chunks = [r for r in (readable(c, now) for c in chunks) if r is not None]
    step = bin_step(chunks, step_s)
    last_seen: dict[str, float] = {}
    for c in chunks:
        last_seen[c.node] = max(last_seen.get(c.node, 0.0), float(c.timestamps.max()))
    end = window_end(last_seen.values(), step) if chunks else now - now % step
    return build_window(
        cluster,
        chunks,
        end=end,
        span_s=window_s,
        step=step,
        node_groups={n.node: n.node_group for n in registry},
        registry=registry,
        now=now,
    )


def with_span(c: Condition, window: Window) -> Condition:
    """The condition with its evidence's time axis (the window's span) filled in where the
    detector left it out: a chart of the evidence needs it, the text table does not."""
    ev = c.evidence
    if ev is None or ev.start is not None:
        return c
    return replace(c, evidence=replace(ev, start=window.start, end=window.end))


def detect_all(
    window: Window,
    params: dict[str, dict[str, Any]],
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    admit: Callable[[Condition], Condition | None] | None = None,
    detectors: Mapping[str, Detector] = CATALOGUE,
    inhibitions: Iterable[Inhibition] | None = None,
) -> list[Condition]:
    """Every detector but `skip` over one window; what `admit` makes of each condition
    (labelled, or None when its rule's flag says no), the muted ones marked (`inhibit`).

    A rule that raises (its detector, its parameters, its flag) is logged with its traceback and
    stands as one `analysis_failed` condition naming it (last in the list, never muted); the
    other rules carry on."""
    out: list[Condition] = []
    failed: list[Condition] = []
    for name, det in detectors.items():
        if name in skip:
            continue
        try:
            found = [with_span(c, window) for c in det.detect(window, params[name])]
            if admit is not None:
                found = [a for a in map(admit, found) if a is not None]
        except Exception as e:  # the boundary of one rule: the others must still run
            logger.exception("rule failed", extra={"cluster": window.cluster, "rule": name})
            failed.append(failure_condition(window.cluster, e, window.end, rule=name))
            continue
        out.extend(found)
    return [*inhibit(with_jobs(out, window), inhibitions, cluster=window.cluster), *failed]


def with_jobs(conditions: list[Condition], window: Window) -> list[Condition]:
    """Each condition with `job` set (gpulse.detect.jobs) where one job holds every node it names
    and its detector has not set it already."""
    if not conditions:
        return conditions
    keys = node_jobs(window)
    out = []
    for c in conditions:
        nodes = condition_nodes(c)
        job = job_of(window, nodes, keys) if c.job is None and nodes else None
        out.append(replace(c, job=job) if job is not None else c)
    return out
