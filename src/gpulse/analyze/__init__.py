"""Analyze: for every cluster, read the recent window, run the detector catalogue, move alerts
through their states and publish each transition to the findings queue once.

`run` orchestrates (one boundary per cluster), `detection` builds the window and runs the rules
(one boundary per rule), `admission` labels conditions and asks the flags, `inhibit` mutes what
another alert covers, `staleness` says which nodes nothing is known of, `own_rules` holds
analyze's alerts about gpulse itself, `heartbeat` tells an outside watcher that a run completed.
"""

from gpulse.analyze.admission import RuleSource, admitter
from gpulse.analyze.detection import MAX_BIN_S, STEP_S, bin_step, detect_all, window_for
from gpulse.analyze.inhibit import INHIBITIONS, SILENT_RULE, announced, inhibit, nodes_of
from gpulse.analyze.own_rules import (
    ANALYSIS_FAILED,
    BAD_CONFIG,
    CONFIG_CLUSTER,
    OWN_RULES,
    config_condition,
    failure_condition,
)
from gpulse.analyze.run import REGISTRY_S, Analyzer, ClusterReport
from gpulse.analyze.staleness import reported_last_bin, unseen

__all__ = [
    "ANALYSIS_FAILED",
    "BAD_CONFIG",
    "CONFIG_CLUSTER",
    "INHIBITIONS",
    "MAX_BIN_S",
    "OWN_RULES",
    "REGISTRY_S",
    "SILENT_RULE",
    "STEP_S",
    "Analyzer",
    "ClusterReport",
    "RuleSource",
    "admitter",
    "announced",
    "bin_step",
    "config_condition",
    "detect_all",
    "failure_condition",
    "inhibit",
    "nodes_of",
    "reported_last_bin",
    "unseen",
    "window_for",
]
