"""The defaults keep anomaly → chat within `for` + 45 s, and the margins a warm analyze tick
re-reads are the ones their reasons give: the template, the shipper and bench/cost_model.py (which
prices these defaults and prints each interval's worst case) must agree."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.template import TEMPLATE_PATH, load_template
from gpulse.alerting.routes import GROUP_WAIT_S
from gpulse.analyze.detection import STEP_S
from gpulse.analyze.incremental import ARRIVAL_MARGIN_S
from gpulse.store import LATE_S
from node_shipper import retry, sender
from node_shipper.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import cost_model  # noqa: E402

TEMPLATE: dict[str, Any] = load_template(TEMPLATE_PATH)
PARAMS, RESOURCES = TEMPLATE["Parameters"], TEMPLATE["Resources"]


def default_batch_s() -> float:
    return parse_config(["--endpoint", "https://gpulse.example", "--cluster", "c", "--node", "n"]).batch_s


def test_the_defaults_alert_within_for_plus_45_s() -> None:
    ticks = PARAMS["AnalyzeTicksPerMinute"]["Default"]
    assert (ticks, default_batch_s()) == (6, 30.0)
    # the last sample waits a batch, its 5 s bin, the next tick (10 s); group_wait counts that
    assert cost_model.worst_case_latency_s(default_batch_s(), ticks) == 30.0 + 5.0 + 10.0 == 45.0


def test_the_latency_table_of_docs_operations() -> None:
    batches = (10, 20, 30, 60)
    assert [cost_model.worst_case_latency_s(b, 6) for b in batches] == [30.0, 35.0, 45.0, 75.0]
    assert [cost_model.worst_case_latency_s(b, 2) for b in batches] == [45.0, 55.0, 65.0, 95.0]


def test_the_cost_model_prices_what_the_template_and_the_code_do() -> None:
    worker = RESOURCES["AnalyzeWorkerFunction"]["Properties"]
    assert PARAMS["AnalyzeTicksPerMinute"]["Default"] == cost_model.ANALYZE_TICKS
    assert PARAMS["AnalyzeShardNodes"]["Default"] == cost_model.SHARD_NODES
    assert worker["MemorySize"] == cost_model.ANALYZE_MB
    assert (cost_model.BIN_S, cost_model.GROUP_WAIT_S) == (STEP_S, GROUP_WAIT_S)
    assert cost_model.WARM_READ_S == 10.0 + ARRIVAL_MARGIN_S + LATE_S == 100.0


def test_the_arrival_margin_covers_an_ingest_write_and_late_s_a_retried_post() -> None:
    ingest_timeout = RESOURCES["IngestFunction"]["Properties"]["Timeout"]
    # a write stamped `arrived` commits inside ingest's timeout; as much again for the read's
    # length, the eventually consistent index and clock skew
    assert ARRIVAL_MARGIN_S == 2 * ingest_timeout == 30.0
    # five quick retries' backoff and one post that timed out, with room to spare
    backoff = sum(retry.BASE_S * 2**k for k in range(5))
    timed_out = sender.CONNECT_TIMEOUT_S + sender.READ_TIMEOUT_S
    assert backoff == 31.0
    assert backoff + timed_out == pytest.approx(44.05)
    assert backoff + timed_out < LATE_S == 60.0
