"""Incidents: the findings about one fault, told as one message.

The inhibition graph says what explains what: a condition muted by an inhibit rule is a symptom
of the alert that muted it (the root cause). Each muted condition is placed under the unmuted
condition of its `muted_by` rule that shares a node with it, or failing that, its job; the root's
Finding lists them (`Finding.symptoms`), and they are never announced alone. The root fires,
resolves and is routed as itself: one message, one resolution.

The advice follows the cause: a root whose symptoms show a rank stalled with its memory held
says to look at that rank (its logs, NCCL), not to end a notebook kernel.
"""

from __future__ import annotations

from gpulse.detect.base import Condition

MAX_SYMPTOMS = 50  # a message lists this many; the finding stays far under SQS's 1 MiB

# (root rule, a symptom rule it has) → the advice that fits the cause, in place of the root's own
ADVICE: dict[tuple[str, str], str] = {
    ("imbalance", "idle_held"): (
        "The nodes out of step hold their GPU memory while idle: ranks of the job are stalled "
        "(a hang in a collective, a dead data loader, a deadlock), not an idle notebook. Read those "
        "ranks' logs and dump their stacks (py-spy dump --pid …); with NCCL_DEBUG=INFO, look for the "
        "collective they wait in. Then restart the job from its last checkpoint."
    ),
    ("imbalance", "mig_idle"): (
        "The nodes out of step hold their MIG slices while idle: ranks of the job are stalled. "
        "Read those ranks' logs and dump their stacks; with NCCL_DEBUG=INFO, look for the collective "
        "they wait in. Then restart the job from its last checkpoint."
    ),
}


def _nodes(c: Condition) -> set[str]:
    node = c.subject.get("node")
    return set(c.nodes) | ({str(node)} if node is not None else set())


def _where(c: Condition) -> str:
    """The symptom's subject in a few words: its GPUs, else its nodes, else its labels."""
    if c.gpus:
        return ", ".join(c.gpus)
    if c.nodes:
        return ", ".join(c.nodes)
    return ", ".join(f"{k}={v}" for k, v in sorted(c.subject.items()) if v is not None)


def symptoms(conditions: list[Condition]) -> dict[int, list[dict[str, str]]]:
    """Index of each root condition (unmuted) → the symptoms placed under it, in order."""
    roots = [(i, c) for i, c in enumerate(conditions) if c.muted_by is None]
    out: dict[int, list[dict[str, str]]] = {}
    for c in conditions:
        if c.muted_by is None:
            continue
        mine = [(i, r) for i, r in roots if r.rule == c.muted_by]
        by_node = next((i for i, r in mine if _nodes(r) & _nodes(c)), None)
        job = getattr(c, "job", None)
        by_job = next((i for i, r in mine if job and getattr(r, "job", None) == job), None)
        root = by_node if by_node is not None else by_job
        if root is None:
            continue  # a wider alert of its own rule covers it: no incident to join
        listed = out.setdefault(root, [])
        if len(listed) < MAX_SYMPTOMS:
            listed.append({"rule": c.rule, "subject": _where(c), "summary": c.summary})
    return out


def advice(root: Condition, listed: list[dict[str, str]]) -> str:
    """The action for the root, given its symptoms: the fitting advice, else its own."""
    for s in listed:
        fitting = ADVICE.get((root.rule, s["rule"]))
        if fitting is not None:
            return fitting
    return root.action
