"""Staleness: the nodes nothing is known of now, whose firing alerts the state machine holds
(`alerting.state.decide`'s `unseen`) instead of resolving them for lack of data."""

from __future__ import annotations

import numpy as np

from gpulse.analyze.inhibit import SILENT_RULE, nodes_of
from gpulse.detect.base import Condition, Window, shared
from gpulse.window import UNREAD_REPORTED


def unseen(conditions: list[Condition], window: Window | None = None) -> frozenset[str]:
    """The nodes nothing is known of now: those a silent-node condition names, and the window's
    nodes with no sample in its last bin (a batch late past STALE_S, a retry arriving after its
    successor: their conditions vanish for lack of data, not because the fault ended)."""
    silent = {n for c in conditions if c.rule == SILENT_RULE for n in nodes_of(c)}
    if window is not None:
        with np.errstate(invalid="ignore"):
            behind = ~(window.node_last_seen >= window.end - window.step)  # NaN: never seen, behind
        silent.update(n for n, b in zip(window.nodes, behind | ~reported_last_bin(window), strict=True) if b)
    return frozenset(silent)


def reported_last_bin(window: Window) -> np.ndarray:
    """(nodes,) whether any host or GPU series of the node has a sample in the window's last bin.
    A node can be past the window's end and still miss it: the batch that covers it is late while
    the next one is in (a retry after its successor). The series the window leaves out
    (`window.UNREAD_GPU`) count too: the window builder hands on which nodes they reported."""
    seen = np.zeros(len(window.nodes), dtype=bool)
    if window.bins == 0:
        return seen
    unread = shared(window, UNREAD_REPORTED, lambda: seen.copy())  # a window built by hand: none
    if unread.shape == seen.shape:
        seen |= unread
    for m in window.host.values():
        if m.shape == (len(window.nodes), window.bins):
            seen |= np.isfinite(m[:, -1])
    for m in window.gpu.values():
        if m.shape[0] == window.gpu_node.shape[0] and m.shape[1] == window.bins:
            np.logical_or.at(seen, window.gpu_node, np.isfinite(m[:, -1]))
    return seen
