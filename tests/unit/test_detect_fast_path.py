"""The detectors' fast path gives what the plain one gives, bit for bit: evidence downsampled for many
rows at once, memory_pressure judging only the rows that could hold, imbalance judging jobs of one
size together, and what several rules derive from one window (its jobs) derived once.

(bench/profile_detect.py compares every rule's findings with the code before the fast path on a
fleet of 250 or 1,250 nodes.)"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpulse.detect import jobs as jobs_module
from gpulse.detect.base import ProcessSeen, downsample, downsample_rows
from gpulse.detect.catalogue import params_for
from gpulse.detect.imbalance import ImbalanceDetector, _judge_group, _parse, node_levels
from gpulse.detect.jobs import find_jobs
from gpulse.detect.memory_pressure import _fit, _running_sums, judge
from gpulse.detect.memory_pressure import _parse as parse_memory
from tests.unit.test_detect_imbalance import make_window as levels_window
from tests.unit.test_detect_memory_pressure import GIB, T0
from tests.unit.test_detect_memory_pressure import make_window as memory_window


def slice_means(values: np.ndarray, points: int) -> list[float | None]:
    """The plain downsample: each slice's finite values averaged on their own."""
    n = values.shape[-1]
    if n == 0:
        return []
    edges = np.linspace(0, n, min(points, n) + 1).astype(int)
    out: list[float | None] = []
    for a, b in itertools.pairwise(edges):
        finite = values[a:b][np.isfinite(values[a:b])]
        out.append(round(float(finite.mean()), 1) if finite.size else None)
    return out


cells = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([np.nan, 0.0, -0.0, 100.0, 0.05, 0.15, 1e-9]),
)


@settings(max_examples=100, deadline=None)
@given(
    values=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(0, 300)), elements=cells),
    points=st.integers(1, 40),
)
def test_downsample_rows_is_each_slice_averaged_alone(values: np.ndarray, points: int) -> None:
    expected = [slice_means(row, points) for row in values]
    got = downsample_rows(values, points)
    # repr: the same float to the bit (a -0.0 is not a 0.0), None where a slice has no data
    assert [list(map(repr, r)) for r in got] == [list(map(repr, r)) for r in expected]
    assert [list(map(repr, downsample(row, points))) for row in values] == [
        list(map(repr, r)) for r in expected
    ]


def test_downsample_of_integers_takes_the_plain_path() -> None:
    counts = np.array([3, 3, 2, 0, 1, 1])
    assert downsample(counts, 3) == slice_means(counts, 3) == [3.0, 1.0, 1.0]


series = st.tuples(
    st.floats(0.05, 0.9),  # level at the window's start (share of the total)
    st.floats(-0.002, 0.004),  # change per bin
    st.floats(0.0, 0.01),  # noise
    st.sampled_from(["line", "step", "full", "gap", "saw", "late"]),
)


def memory_series(spec: tuple[float, float, float, str], t: int, rng: np.random.Generator) -> np.ndarray:
    start, slope, noise, kind = spec
    x = start + slope * np.arange(t) + rng.normal(0.0, noise, t)
    if kind == "step":
        x[t // 2 :] += 0.3
    elif kind == "full":
        x[-t // 3 :] = 0.97
    elif kind == "gap":
        x[rng.random(t) < 0.3] = np.nan
    elif kind == "late":  # level, then a leak over the last 25 bins: only the quick fit sees it soon
        x = start + rng.normal(0.0, noise / 10, t) + 0.004 * np.maximum(np.arange(t) - (t - 25), 0)
    elif kind == "saw":
        x = start + 0.2 * ((np.arange(t) % 20) / 20)
    return np.clip(x, 0.0, 1.2) * 80 * GIB


# a leak only the quick fit sees yet (the long fit's r² is 0.4): a row the fast path must keep
@example(
    specs=[(0.5, 0.0, 0.002, "late"), (0.3, 0.0, 0.0, "line")],
    host=(0.2, 0.0, 0.0, "line"),
    t=150,
    seed=1,
    fit_s=600,
    min_r2=0.8,
)
@settings(max_examples=40, deadline=None)
@given(
    specs=st.lists(series, min_size=1, max_size=6),
    host=series,
    t=st.integers(2, 200),
    seed=st.integers(0, 2**16),
    fit_s=st.sampled_from([120, 300, 600]),
    min_r2=st.sampled_from([0.0, 0.5, 0.8]),
)
def test_memory_pressure_judges_only_rows_that_could_hold_and_finds_the_same(
    specs: list[tuple[float, float, float, str]],
    host: tuple[float, float, float, str],
    t: int,
    seed: int,
    fit_s: int,
    min_r2: float,
) -> None:
    rng = np.random.default_rng(seed)
    gpu = np.stack([memory_series(s, t, rng) for s in specs])
    # processes that started inside the window: the quick fit waits out their warm-up
    started = [
        ProcessSeen(100 + g, "alice", None, "python", None, T0 + 400, T0 + 5 * t) for g in range(len(specs))
    ]
    window = memory_window(gpu, host_mem=memory_series(host, t, rng) * 6.4, processes=[[q] for q in started])
    p = parse_memory(
        params_for("memory_pressure", {"fit_s": fit_s, "min_fit_s": min(fit_s, 300), "min_r2": min_r2})
    )
    assert judge(window, p) == judge(window, p, every_row=True)


@settings(max_examples=30, deadline=None)
@given(
    y=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 5), st.integers(1, 120)),
        elements=st.one_of(st.floats(0, 1), st.just(np.nan)),
    ),
    w=st.integers(2, 150),
)
def test_a_fit_at_some_bins_or_rows_is_the_full_fit_there(y: np.ndarray, w: int) -> None:
    sums = _running_sums(y)
    full = _fit(sums, w)
    cols = np.array([y.shape[1] - 1, 0])
    rows = np.array([y.shape[0] - 1])
    for name in ("slope", "r2", "at_end", "points"):
        np.testing.assert_array_equal(getattr(_fit(sums, w, cols), name), getattr(full, name)[:, cols])
        np.testing.assert_array_equal(getattr(_fit(sums.rows(rows), w), name), getattr(full, name)[rows])


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    jobs=st.integers(1, 4),
    size=st.sampled_from([3, 4, 6]),
    t=st.integers(20, 120),
    overrides=st.sampled_from([{}, {"min_corr": -1.0, "exit_corr": 0.1}, {"slow_ratio": 0.0}, {"for_s": 0}]),
)
def test_imbalance_judges_jobs_of_one_size_together_as_each_alone(
    seed: int, jobs: int, size: int, t: int, overrides: dict[str, float]
) -> None:
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(jobs):
        level = rng.uniform(40, 95) + rng.uniform(0, 25) * np.sin(np.arange(t) / rng.uniform(1, 5))
        lv = level + rng.normal(0, rng.uniform(0.5, 6), (size, t))
        for _ in range(int(rng.integers(0, 3))):  # a rank drops, slows or goes silent
            lv[int(rng.integers(0, size)), int(rng.integers(0, t)) :] = rng.choice(
                [1.0, 0.5 * level.mean(), np.nan]
            )
        blocks.append(np.clip(lv, 0, 100))
    groups: list[str | None] = [f"train-{j}" for j in range(jobs) for _ in range(size)]
    window = levels_window(np.concatenate(blocks), groups=groups)
    params = params_for("imbalance", overrides)
    p = _parse(params)
    levels = node_levels(window.gpu["util_gpu"], window.gpu_node, len(window.nodes))
    alone = [_judge_group(window, job, levels[list(job.rows)], p) for job in find_jobs(window, p.jobs)]
    assert ImbalanceDetector().detect(window, params) == [c for c in alone if c is not None]


def test_a_windows_jobs_are_found_once_and_forgotten_with_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    plain = jobs_module._find_jobs

    def counted(window, mode):  # type: ignore[no-untyped-def]
        calls.append(id(window))
        return plain(window, mode)

    monkeypatch.setattr(jobs_module, "_find_jobs", counted)
    window = levels_window(np.full((4, 10), 80.0), groups=["a", "a", "b", "b"])
    first = find_jobs(window)
    first.clear()  # a caller's list is its own
    assert find_jobs(window) == find_jobs(window) != []
    assert len(calls) == 1
    copy = replace(window)  # another window (the next tick's): found again
    assert find_jobs(copy) == find_jobs(window)
    assert len(calls) == 2
    assert find_jobs(window, "node_group") and len(calls) == 3  # per mode
    size = len(jobs_module_shared())
    del window, copy
    gc.collect()
    assert len(jobs_module_shared()) == size - 2


def jobs_module_shared() -> Mapping[int, object]:
    from gpulse.detect import base

    return base._SHARED
