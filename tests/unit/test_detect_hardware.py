"""Golden tests for the hardware-errors detector and ingest's fast-path pre-check."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpulse import codec
from gpulse.detect.base import Condition, Window
from gpulse.detect.catalogue import params_for
from gpulse.detect.hardware import ECC_ACTION, XID_ACTION, HardwareErrorsDetector
from gpulse.fastpath import STEP_S, worth_checking
from gpulse.window import build_window
from tests.factories import batch_doc

T0 = 1_763_800_000.0
DET = HardwareErrorsDetector()
PARAMS = params_for("hardware_errors")


def window_of(*docs: dict[str, Any]) -> Window:
    chunks = [codec.decode(codec.encode(d)) for d in docs]
    end = max(float(c.timestamps[-1]) for c in chunks)
    end = end - end % STEP_S + STEP_S
    return build_window("c1", chunks, end=end, span_s=end - T0, step=STEP_S)


def test_a_hardware_xid_fires_critical_and_an_application_xid_does_not() -> None:
    doc = batch_doc(n=30)
    doc["events"] = [
        {"ts": T0 + 7.5, "type": "xid", "gpu_index": 1, "code": 79, "message": "GPU has fallen off the bus"},
        {"ts": T0 + 9.0, "type": "xid", "gpu_index": 0, "code": 13, "message": "Graphics Exception"},
        {"ts": T0 + 12.0, "type": "xid", "gpu_index": 1, "code": 79, "message": "again"},
    ]
    assert DET.detect(window_of(doc), PARAMS) == [
        Condition(
            rule="hardware_errors",
            subject={"cluster": "c1", "node": "node-01", "gpu": 1, "fault": "xid-79"},
            since=T0 + 7.5,
            severity="critical",
            summary="node-01 GPU 1 reported XID 79: GPU has fallen off the bus",
            action=XID_ACTION,
            nodes=["node-01"],
            gpus=["node-01/1"],
            values={"xid": 79.0},
        )
    ]
    assert worth_checking(doc)


def test_an_unknown_xid_is_a_warning() -> None:
    doc = batch_doc(n=10)
    doc["events"] = [{"ts": T0 + 1, "type": "xid", "gpu_index": 0, "code": 999}]
    [c] = DET.detect(window_of(doc), PARAMS)
    assert (c.severity, c.summary) == ("warning", "node-01 GPU 0 reported XID 999")


def test_a_new_double_bit_error_fires_at_the_bin_where_it_rose() -> None:
    doc = batch_doc(n=30)
    doc["gpus"][0]["metrics"]["ecc_dbe_volatile"] = [0] * 17 + [2] * 13
    doc["gpus"][1]["metrics"]["ecc_dbe_volatile"] = [5] * 30  # old damage, already known: silent
    [c] = DET.detect(window_of(doc), PARAMS)
    assert c == Condition(
        rule="hardware_errors",
        subject={"cluster": "c1", "node": "node-01", "gpu": 0, "fault": "ecc_dbe_volatile"},
        since=T0 + 15,
        severity="critical",
        summary="node-01 GPU 0: 2 new uncorrectable (double-bit) ECC errors (now 2)",
        action=ECC_ACTION,
        nodes=["node-01"],
        gpus=["node-01/0"],
        values={"before": 0.0, "after": 2.0},
    )


def test_a_rise_between_two_batches_is_seen_over_the_window() -> None:
    first = batch_doc(n=10)
    second = batch_doc(n=10, t0=T0 + 10)
    first["gpus"][0]["metrics"]["remapped_rows_unc"] = [0] * 10
    second["gpus"][0]["metrics"]["remapped_rows_unc"] = [1] * 10
    assert not worth_checking(second)  # invisible to a one-batch look: analyze's job
    [c] = DET.detect(window_of(first, second), PARAMS)
    assert (c.subject["fault"], c.since, c.summary) == (
        "remapped_rows_unc",
        T0 + 10,
        "node-01 GPU 0: 1 new rows remapped for uncorrectable errors (now 1)",
    )


def test_a_failed_remap_fires() -> None:
    doc = batch_doc(n=10)
    doc["gpus"][1]["metrics"]["remap_failure"] = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    [c] = DET.detect(window_of(doc), PARAMS)
    assert (c.subject["gpu"], c.since, c.summary) == (
        1,
        T0 + 5,
        "node-01 GPU 1: row remapping failed: the GPU cannot repair its memory",
    )


def test_nothing_fires_on_a_healthy_batch_and_the_pre_check_says_so() -> None:
    doc = batch_doc(n=30)
    doc["gpus"][0]["metrics"]["ecc_dbe_volatile"] = [0] * 30
    doc["gpus"][0]["metrics"]["remap_failure"] = [0] * 30
    assert DET.detect(window_of(doc), PARAMS) == []
    assert not worth_checking(doc)


def test_all_nan_counters_never_raise() -> None:
    doc = batch_doc(n=10)
    doc["gpus"][0]["metrics"]["retired_pages"] = [None] * 10
    w = window_of(doc)
    assert np.isnan(w.gpu["retired_pages"][0]).all()
    assert DET.detect(w, PARAMS) == []


def test_a_memory_xid_and_its_counter_rise_are_one_alert() -> None:
    doc = batch_doc(n=30)
    doc["events"] = [{"ts": T0 + 17.2, "type": "xid", "gpu_index": 0, "code": 48, "message": "DBE"}]
    doc["gpus"][0]["metrics"]["ecc_dbe_volatile"] = [0] * 17 + [1] * 13
    doc["gpus"][1]["metrics"]["ecc_dbe_volatile"] = [0] * 20 + [1] * 10  # no XID on this one: its own alert
    found = DET.detect(window_of(doc), PARAMS)
    assert [(c.subject["gpu"], c.subject["fault"]) for c in found] == [(0, "xid-48"), (1, "ecc_dbe_volatile")]
