"""The window builder's derived series."""

from __future__ import annotations

import contextlib
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpulse import codec, window
from gpulse.window import build_window, readable
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


# Static fields: a number in these bounds is read as is; anything else is "no sample" (NaN).
STATIC_BOUNDS = {
    ("host", "cpu_count"): ("cpu_count", 1, window.MAX_CPUS),
    ("host", "mem_total"): ("host_mem_total", 1, window.MAX_HOST_BYTES),
    ("gpu", "mem_total"): ("gpu_mem_total", 1, window.MAX_GPU_BYTES),
    ("gpu", "numa_node"): ("gpu_numa", 0, window.MAX_DEVICE_INDEX),
    ("gpu", "power_limit_w"): ("gpu_power_limit", 5e-324, window.MAX_POWER_W),
    ("gpu", "temp_slowdown_c"): ("gpu_temp_slowdown", 5e-324, window.MAX_TEMP_C),
}
ANY_NUMBER = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.integers(min_value=-5, max_value=1 << 62),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(STATIC_BOUNDS)), ANY_NUMBER), ANY_NUMBER)
def test_static_fields_beyond_any_reading_are_no_sample_and_never_raise(
    values: dict[tuple[str, str], int | float], series_value: int | float
) -> None:
    doc = batch_doc(n=10, gpus=1)
    for (where, key), value in values.items():
        (doc["host"] if where == "host" else doc["gpus"][0])[key] = value
    with contextlib.suppress(OverflowError):  # past float64: no batch can carry it as a series value
        doc["gpus"][0]["metrics"]["util_gpu"][3] = float(series_value)
    w = build_window("c1", [codec.decode(codec.encode(doc))], end=T0 + 10, span_s=10, step=5)
    for (where, key), (attr, lo, hi) in STATIC_BOUNDS.items():
        default = doc["host"].get(key) if where == "host" else doc["gpus"][0].get(key, math.nan)
        value = values.get((where, key), default)
        got = float(getattr(w, attr)[0])
        ok = isinstance(value, int | float) and -math.inf < value < math.inf and lo <= value <= hi
        assert (got == float(value)) if ok else math.isnan(got), (attr, value, got)
    assert np.isfinite(w.gpu["util_gpu"]).all()  # an inf or NaN sample is left out of its bin


def test_samples_that_are_no_time_are_left_out_with_their_values_and_the_rest_is_used() -> None:
    doc = batch_doc(n=10, gpus=1, util=[[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]])
    doc["timestamps"][2] = float("nan")
    doc["timestamps"][7] = float("inf")
    doc["processes"] = [
        {"gpu_index": 0, "pid": 1, "first_seen": 10**400, "last_seen": T0 + 9},
        {"gpu_index": 0, "pid": 2, "first_seen": T0, "last_seen": T0 + 4, "mem_used": 10**400},
    ]
    doc["events"] = [{"ts": float("nan"), "type": "xid", "gpu_index": 0, "code": 79, "message": "x"}]
    chunk = codec.decode(codec.encode(doc))
    w = build_window("c1", [chunk], end=T0 + 10, span_s=10, step=5)
    np.testing.assert_allclose(w.gpu["util_gpu"], [[(10 + 20 + 40 + 50) / 4, (60 + 70 + 90 + 100) / 4]])
    assert [(p.pid, p.mem_used) for p in w.gpu_processes[0]] == [(2, None)]
    assert w.events == []
    assert w.node_last_seen.tolist() == [T0 + 9]
    assert readable(chunk) is not chunk and readable(codec.decode(codec.encode(batch_doc()))) is not None
    future = batch_doc(n=3)
    future["timestamps"] = [T0, T0 + 1, T0 + 10**6]
    kept = readable(codec.decode(codec.encode(future)), now=T0 + 2)
    assert kept is not None and kept.timestamps.tolist() == [T0, T0 + 1]


def test_bins_past_the_narrow_state_types_widen_and_keep_every_mean_exact() -> None:
    """The state holds sums as int32 and counts as uint8 until a cell could overflow: then the
    family widens, and the means stay those of float64 arithmetic on the same whole counts."""
    n = 600  # 600 samples in one 600 s bin: past uint8's 255
    mib = 2.0**20
    first = batch_doc(n=n, gpus=1, util=[[37.0] * n], mem_used=[[mib * (i % 7) for i in range(n)]])
    # a second chunk of the same GPU and bin, 1 PB used: ~1e9 counts of 1 MiB a sample, past int32
    # in a bin of 400 samples
    second = batch_doc(
        n=n, gpus=1, util=[[91.0] * n], mem_used=[[1e15 + mib * i for i in range(n)]], t0=T0 + 0.5
    )
    state = window.WindowState(600.0, capacity_s=1200.0, floor=T0 - T0 % 600)
    state.add([(codec.decode(codec.encode(first)), "a")])
    assert (state.gpu.sums.dtype, state.gpu.n.dtype) == (np.int32, np.uint16)
    state.add([(codec.decode(codec.encode(second)), "b")])
    assert (state.gpu.sums.dtype, state.gpu.n.dtype) == (np.int64, np.uint16)
    end = T0 - T0 % 600 + 1200
    w = state.window("c1", end=end, span_s=1200)
    # the reference: every sample a whole count of its resolution, summed and divided in float64
    ts = np.array(first["timestamps"] + second["timestamps"])
    in_first_bin = ts < end - 600
    for name, scale in (("mem_used", 1 / mib), ("util_gpu", 1.0)):
        values = np.array(first["gpus"][0]["metrics"][name] + second["gpus"][0]["metrics"][name])
        counts = np.rint(values * scale)
        expect = [counts[b].sum() / b.sum() / scale for b in (in_first_bin, ~in_first_bin)]
        assert w.gpu[name].tolist() == [expect], name


def test_the_series_the_window_leaves_out_are_read_by_no_rule_and_still_say_a_node_reported() -> None:
    """UNREAD_GPU series are not binned: no detector, recovery check or notifier names one, and a
    node whose only samples in the last bin are theirs has still reported (staleness)."""
    import pathlib

    from gpulse.analyze import reported_last_bin

    src = pathlib.Path(window.__file__).parent
    readers = [*src.glob("detect/*.py"), *src.glob("notify/**/*.py"), src / "analyze" / "recovery.py"]
    named = {(p.name, name) for p in readers for name in window.UNREAD_GPU if f'"{name}"' in p.read_text()}
    assert named == set()
    doc = batch_doc(n=10, gpus=1)
    nan = [float("nan")] * 10
    doc["host"]["metrics"] = {"cpu_util": nan, "mem_used": nan}
    doc["gpus"][0]["metrics"] = {"util_gpu": nan, "mem_used": nan, "power_w": [float("nan")] * 9 + [300.0]}
    w = build_window("c1", [codec.decode(codec.encode(doc))], end=T0 + 10, span_s=10, step=5)
    assert sorted(w.gpu) == ["mem_used", "util_gpu"]
    assert reported_last_bin(w).tolist() == [True]
    doc["gpus"][0]["metrics"]["power_w"] = [300.0] + [float("nan")] * 9  # in the first bin only
    w = build_window("c1", [codec.decode(codec.encode(doc))], end=T0 + 10, span_s=10, step=5)
    assert reported_last_bin(w).tolist() == [False]
