"""Ingest's fast path: hardware errors in a batch become alerts at once, not at the next analyze.

A cheap look at the document decides whether there is anything to check (an XID, a counter that
moved, a failed remap: rare); only then is the batch turned into a one-batch window and run
through the same detector analyze uses, and settled through the same alert records, so the two
paths announce one error once.
"""

from __future__ import annotations

import math
from typing import Any

from gpulse import codec
from gpulse.alerting.records import AlertRecords
from gpulse.alerting.settle import FindingsQueue, settle
from gpulse.alerting.state import Rule
from gpulse.analyze import RuleSource, admitter
from gpulse.detect.catalogue import params_for
from gpulse.detect.hardware import APPLICATION_XIDS, COUNTERS, HardwareErrorsDetector
from gpulse.finding import Finding
from gpulse.store import encode_parts
from gpulse.window import build_window

STEP_S = 5.0  # analyze's bin width: the same bins give the same `since`, so one alert, not two
DETECTOR = HardwareErrorsDetector()


def worth_checking(doc: dict[str, Any]) -> bool:
    """True if the batch holds an XID the detector reports, a counter that rose, or a failed remap."""
    for e in doc.get("events", []):
        if e.get("type") == "xid" and e.get("code") is not None and e["code"] not in APPLICATION_XIDS:
            return True
    for g in doc["gpus"]:
        for name in (*COUNTERS, "remap_failure"):
            values = [v for v in g["metrics"].get(name, []) if v is not None]
            if values and (max(values) > values[0] or (name == "remap_failure" and max(values) > 0)):
                return True
    return False


def hardware_alerts(
    doc: dict[str, Any], records: AlertRecords, queue: FindingsQueue, config: RuleSource | None = None
) -> list[Finding]:
    """Announce the batch's hardware errors; returns the findings published (none if nothing new).
    With `config`, the rule's parameters and flag apply as in analyze (a rule switched off for
    this cluster stays off here too)."""
    if not worth_checking(doc) or (config is not None and config.switched_off(DETECTOR.name)):
        return []
    # The chunks the store wrote (a large batch is several): analyze sees these very values.
    chunks = [codec.decode(data) for _, data in encode_parts(doc)]
    first, last = float(chunks[0].timestamps[0]), float(chunks[-1].timestamps[-1])
    end = math.floor(last / STEP_S) * STEP_S + STEP_S
    start = math.floor(first / STEP_S) * STEP_S
    cluster = chunks[0].cluster
    window = build_window(cluster, chunks, end=end, span_s=end - start, step=STEP_S)
    p = config.params()[DETECTOR.name] if config is not None else params_for(DETECTOR.name)
    conditions = DETECTOR.detect(window, p)
    if config is not None:
        admit = admitter(config, window)
        conditions = [a for a in map(admit, conditions) if a is not None]
    if not conditions:
        return []
    rule = Rule(DETECTOR.name, DETECTOR.title, float(p["for_s"]), one_shot=True)
    return settle(records, queue, cluster, conditions, {rule.name: rule}, end, whole_cluster=False)
