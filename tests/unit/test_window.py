"""The window builder's derived series."""

from __future__ import annotations

import numpy as np

from gpulse import codec
from gpulse.window import build_window
from tests.factories import batch_doc

T0 = 1_763_800_000.0


def test_throttle_reasons_become_the_fraction_of_each_bin_throttled_for_heat_and_for_power() -> None:
    doc = batch_doc(n=10, gpus=1)
    # 0x04 SW power cap (normal at full load), 0x40 HW thermal, 0x08 alone (older GPUs: heat),
    # 0x88 HW slowdown caused by the power brake
    doc["gpus"][0]["metrics"]["throttle_reasons"] = [0x04, 0x04, 0x40, 0x08, 0x44, 0x88, 0x88, 0x88, 0x80, 0]
    chunk = codec.decode(codec.encode(doc))
    w = build_window("c1", [chunk], end=T0 + 10, span_s=10, step=5)
    assert "throttle_reasons" not in w.gpu
    np.testing.assert_allclose(w.gpu["throttle_thermal"], [[0.6, 0.0]])
    np.testing.assert_allclose(w.gpu["throttle_power"], [[0.0, 0.8]])


def test_bins_widen_to_the_slowest_nodes_sample_interval() -> None:
    from gpulse.analyze import bin_step

    every_second = codec.decode(codec.encode(batch_doc(n=10)))
    slow = batch_doc(n=4)
    slow["timestamps"] = [T0 + 15 * i for i in range(4)]
    every_15s = codec.decode(codec.encode(slow))
    assert bin_step([every_second]) == 5.0
    assert bin_step([every_second, every_15s]) == 15.0
    assert bin_step([]) == 5.0


def _chunk(node: str, t0: float, n: int, util: float, *, process: bool = True) -> codec.Chunk:
    procs = [{"pid": 7, "gpu_index": 0, "first_seen": t0, "last_seen": t0 + n - 1}] if process else None
    doc = batch_doc(node=node, t0=t0, n=n, gpus=1, util=[[util] * n], processes=procs)
    return codec.decode(codec.encode(doc))


def test_a_short_hole_takes_the_values_before_it_and_a_long_one_stays_empty() -> None:
    chunks = [
        _chunk("node-01", T0, 100, 10.0),
        # a 30 s batch of node-01 lost (or late): bins 20..25 are a hole
        _chunk("node-01", T0 + 130, 70, 30.0),
        _chunk("node-02", T0, 100, 50.0),
        # node-02 sends nothing for 90 s: 60 s of it (12 bins, 20..31) carry on, bins 32..37 stay empty
        _chunk("node-02", T0 + 190, 10, 70.0, process=False),
    ]
    w = build_window("c1", chunks, end=T0 + 200, span_s=200, step=5)
    util, mem = w.gpu["util_gpu"], w.host["mem_used"]
    np.testing.assert_array_equal(util[0], [10.0] * 26 + [30.0] * 14)
    np.testing.assert_array_equal(w.gpu_has_process[0], [True] * 40)
    np.testing.assert_array_equal(util[1], [50.0] * 32 + [np.nan] * 6 + [70.0] * 2)
    np.testing.assert_array_equal(w.gpu_has_process[1], [True] * 32 + [False] * 8)
    np.testing.assert_array_equal(np.isfinite(mem[1]), [True] * 32 + [False] * 6 + [True] * 2)
    assert "util_sm" not in w.gpu  # a metric nobody reports is not made up


def test_a_row_s_bins_before_its_first_report_stay_empty() -> None:
    w = build_window("c1", [_chunk("node-01", T0 + 50, 50, 10.0)], end=T0 + 100, span_s=100, step=5)
    np.testing.assert_array_equal(np.isfinite(w.gpu["util_gpu"][0]), [False] * 10 + [True] * 10)
