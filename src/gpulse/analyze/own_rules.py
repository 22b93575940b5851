"""Analyze's own rules: alerts about gpulse itself, settled through the same state machine as
the catalogue's (so each fires once and resolves when the cause is gone), never switched off by
a flag. `bad_config`: a config item was rejected. `analysis_failed`: a cluster, or one rule on a
cluster, could not be analysed this run.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from gpulse.alerting.state import Rule
from gpulse.config.flags import Problem
from gpulse.detect.base import Condition

CONFIG_CLUSTER = "gpulse-config"  # where alerts about the config itself live (no real cluster)
BAD_CONFIG = Rule(name="bad_config", title="Config item rejected", for_s=0.0)
# for_s 0: a run that could not look at a cluster is a minute nobody watched it; a pending state
# cannot help, as a failure has no start of its own to hold it against (the next run decides).
ANALYSIS_FAILED = Rule(name="analysis_failed", title="gpulse could not analyze a cluster", for_s=0.0)
OWN_RULES: dict[str, Rule] = {r.name: r for r in (BAD_CONFIG, ANALYSIS_FAILED)}

MESSAGE_CHARS = 200  # of an exception's message kept in the summary (the log has all of it)
_CODE_ROOTS = (str(Path(__file__).resolve().parents[1]), "/functions/")  # gpulse's own files


def config_condition(p: Problem, now: float) -> Condition:
    return Condition(
        rule=BAD_CONFIG.name,
        subject={"cluster": CONFIG_CLUSTER, "kind": p.kind, "name": p.name},
        since=now,
        severity="warning",
        summary=(
            f"{p.kind} {p.name!r} version {p.version} (written by {p.updated_by}) was rejected: {p.reason}. "
            "Its last good version, or the defaults, stay in force."
        ),
        action="Fix it with the gpulse CLI, which checks what it writes (`gpulse config problems` lists it).",
        values={"version": float(p.version)},
    )


def raised_at(error: BaseException) -> str:
    """`file.py:line` of the deepest frame of gpulse's own code the error passed through (numpy's
    or boto's frames below it say less), or of the deepest frame; "unknown" without a traceback."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "unknown"
    ours = [f for f in frames if any(root in f.filename for root in _CODE_ROOTS)]
    frame = (ours or frames)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


def describe(error: BaseException) -> str:
    """`Type: first line of the message` (cut to MESSAGE_CHARS), or just the type."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 1] + "…"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def failure_condition(
    cluster: str, error: BaseException, now: float, *, rule: str | None = None
) -> Condition:
    """The `analysis_failed` condition for `cluster` (all of it, or only `rule` on it) that
    `error` stopped this run. Its subject names the cluster and the rule, never the error: the
    same alert stays firing while the failure lasts, whatever its message says each run."""
    cause = f"{describe(error)} (at {raised_at(error)})"
    if rule is None:
        subject: dict[str, str | int | None] = {"cluster": cluster}
        summary = f"gpulse could not analyze cluster {cluster}: {cause}"
        action = (
            f"No rule watches {cluster} until this is fixed. The analyze function's log has the "
            f"traceback (cluster={cluster}); `gpulse dry-run --cluster {cluster}` runs the same "
            "analysis and shows it. A chunk holding what no batch should, a config change or a bug "
            "are the usual causes. This resolves at the first run that analyses the cluster again."
        )
    else:
        subject = {"cluster": cluster, "detector": rule}
        summary = f"gpulse could not analyze cluster {cluster} with rule {rule}: {cause}"
        action = (
            f"Rule {rule} does not watch {cluster} until this is fixed; the other rules do. The "
            f"analyze function's log has the traceback (cluster={cluster}, rule={rule}); check the "
            f"rule's parameters (`gpulse rules show {rule}`). This resolves at the first run in "
            "which the rule runs again."
        )
    return Condition(
        rule=ANALYSIS_FAILED.name,
        subject=subject,
        since=now,
        severity="critical" if rule is None else "warning",
        summary=summary,
        action=action,
    )
