"""Settle conditions into alert records and publish each transition once (analyze and ingest).

The state machine's decisions are written conditionally; then every record with an outbox is
published to the findings queue and the outbox cleared — only after SQS accepted it, so a crash
in between re-publishes on the next run instead of losing the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import boto3

from gpulse.alerting.records import AlertRecords, finding_message
from gpulse.alerting.state import Decision, Rule, decide
from gpulse.aws import translated
from gpulse.detect.base import Condition
from gpulse.errors import StoreError
from gpulse.finding import Finding, fingerprint

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)
MAX_DECIDED_WITH = 200  # fingerprints named per finding (20 characters each): a few KB at most


class FindingsQueue:
    """Publishes findings to SQS, ten to a call."""

    def __init__(self, queue_url: str, *, client: SQSClient | None = None) -> None:
        self.url = queue_url
        self.client: SQSClient = client or boto3.client("sqs")

    def publish(self, findings: list[Finding]) -> None:
        for i in range(0, len(findings), 10):
            entries = [finding_message(f) for f in findings[i : i + 10]]
            with translated("SQS"):
                resp = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)  # type: ignore[arg-type]
            if resp.get("Failed"):
                raise StoreError(f"SQS refused {len(resp['Failed'])} findings")


def settle(
    records: AlertRecords,
    queue: FindingsQueue,
    cluster: str,
    conditions: list[Condition],
    rules: dict[str, Rule],
    now: float,
    *,
    whole_cluster: bool = True,
    unseen: frozenset[str] = frozenset(),
    redraw: Callable[[Decision], Decision] | None = None,
) -> list[Finding]:
    """Move the cluster's alerts to where `conditions` put them and publish the transitions.

    With `whole_cluster` False (ingest's fast path, which sees one batch), only the alerts of
    these conditions are touched: the absence of the others there says nothing. Firing alerts
    about `unseen` nodes only are held (`decide`). `redraw` may re-word each decision before it is
    written (analyze: a resolve shows the recovery, `gpulse.analyze.recovery.redrawer`)."""
    stored = records.load(cluster)
    if not whole_cluster:
        wanted = {fingerprint(c.rule, **c.subject) for c in conditions}
        stored = {fp: rec for fp, rec in stored.items() if fp in wanted}
    for d in decide(cluster, conditions, stored, rules, now, unseen=unseen):
        d = redraw(d) if redraw is not None else d
        if records.apply(d, now):
            stored[d.record.fingerprint] = d.record
        else:
            logger.info("alert changed by another writer, left alone: %s", d.record.fingerprint)
    published = []
    # each transition names the others of this run, so the alert side can wait for them all
    # before it tells a group: "15 firing · 1 resolved" when 16 resolved together is never sent
    together = sorted(rec.fingerprint for rec in stored.values() if rec.outbox is not None)
    together = together if 1 < len(together) <= MAX_DECIDED_WITH else []
    for rec in list(stored.values()):
        if rec.outbox is None:
            continue
        out = replace(rec.outbox, decided_with=together)
        queue.publish([out])
        published.append(out)
        cleared = replace(rec, outbox=None, version=rec.version + 1)
        records.apply(Decision(cleared, rec.version, delete=rec.state == "resolved"), now)
    return published
