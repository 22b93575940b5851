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
