"""The shipper waits for a driver that is not loaded yet (boot), with a fake clock; and stops on SIGTERM."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_shipper.config import parse_config
from node_shipper.driver import open_when_loaded
from node_shipper.errors import ConfigError, DriverNotLoaded, DriverWaitStopped, NoGpuError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> bool:
        self.slept.append(seconds)
        self.now += seconds
        return False


def opener(
    failures: int, clock: Clock, error: Exception | None = None
) -> tuple[list[float], Callable[[], str]]:
    tried: list[float] = []

    def open_() -> str:
        tried.append(clock.now)
        if len(tried) <= failures:
            raise error or DriverNotLoaded("no GPU/NVML found: Driver Not Loaded")
        return "gpus"

    return tried, open_


def test_a_late_driver_is_waited_for_with_capped_backoff(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tried, open_ = opener(8, clock)
    with caplog.at_level(logging.WARNING, logger="node_shipper.driver"):
        got = open_when_loaded(open_, wait_s=math.inf, clock=lambda: clock.now, sleep=clock.sleep)
    assert got == "gpus"
    assert clock.slept == [1, 2, 4, 8, 16, 30, 30, 30]
    assert tried == [100, 101, 103, 107, 115, 131, 161, 191, 221]
    # said once that it waits, once that the driver came: not a line per try
    assert [
        (r.getMessage(), r.__dict__.get("waited_s"), r.__dict__.get("tries")) for r in caplog.records
    ] == [
        ("NVIDIA driver not loaded yet: waiting for it", None, None),
        ("NVIDIA driver loaded", 121.0, 9),
    ]


def test_the_wait_ends_at_its_bound_with_the_driver_s_error() -> None:
    clock = Clock()
    tried, open_ = opener(100, clock)
    with pytest.raises(DriverNotLoaded, match="Driver Not Loaded"):
        open_when_loaded(open_, wait_s=10, clock=lambda: clock.now, sleep=clock.sleep)
    assert clock.slept == [1, 2, 4, 3]  # the last sleep is cut to the bound
    assert tried == [100, 101, 103, 107, 110]


def test_no_wait_by_default_and_no_wait_for_a_node_without_gpus(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tried, open_ = opener(1, clock)
    with caplog.at_level(logging.WARNING), pytest.raises(DriverNotLoaded):
        open_when_loaded(open_, wait_s=0, clock=lambda: clock.now, sleep=clock.sleep)
    assert (tried, clock.slept, caplog.records) == ([100], [], [])
    # NVML loaded and sees 0 devices: waiting cannot help
    tried, open_ = opener(1, clock, NoGpuError("no GPU/NVML found: NVML sees 0 devices"))
    with pytest.raises(NoGpuError, match="0 devices"):
        open_when_loaded(open_, wait_s=math.inf, clock=lambda: clock.now, sleep=clock.sleep)
    assert (len(tried), clock.slept) == (1, [])


def test_a_stop_during_the_wait_is_a_clean_stop() -> None:
    clock = Clock()
    tried, open_ = opener(100, clock)
    answers = iter([False, False, True])
    with pytest.raises(DriverWaitStopped):
        open_when_loaded(open_, wait_s=math.inf, clock=lambda: clock.now, sleep=lambda s: next(answers))
    assert len(tried) == 3


def test_sigterm_ends_the_wait_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    tried: list[int] = []

    def never() -> None:
        tried.append(1)
        raise DriverNotLoaded("no GPU/NVML found: Driver Not Loaded")

    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(DriverWaitStopped):
            open_when_loaded(never, wait_s=math.inf)
    finally:
        timer.cancel()
    assert len(tried) == 1  # the first wait (1 s) was cut short by the signal
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_wait_for_driver_flag_is_checked(value: str) -> None:
    with pytest.raises(ConfigError, match="--wait-for-driver must be 0 or more"):
        parse_config(["--endpoint", "https://x", "--cluster", "c", "--wait-for-driver", value])
    assert parse_config(["--endpoint", "https://x", "--cluster", "c"]).wait_for_driver_s == 0
    assert (
        parse_config(
            ["--endpoint", "https://x", "--cluster", "c", "--wait-for-driver", "inf"]
        ).wait_for_driver_s
        == math.inf
    )


@settings(max_examples=200, deadline=None)
@given(
    failures=st.integers(0, 40),
    wait_s=st.one_of(st.just(math.inf), st.floats(0, 2_000, allow_nan=False)),
)
def test_the_wait_agrees_with_a_reference_model(failures: int, wait_s: float) -> None:
    """Any number of refusals and any bound: the sleeps are 1, 2, 4 … capped at 30, the last one
    cut to the bound; the driver is used when it comes within the bound, else its error is raised."""
    expected_sleeps: list[float] = []
    t, delay, opens = 0.0, 1.0, True
    for _ in range(failures):  # the model: one refusal per try
        if t >= wait_s:
            opens = False
            break
        expected_sleeps.append(min(delay, wait_s - t))
        t += expected_sleeps[-1]
        delay = min(30.0, delay * 2)
    clock = Clock()
    clock.now = 0.0
    tried, open_ = opener(failures, clock)
    if opens:
        assert open_when_loaded(open_, wait_s=wait_s, clock=lambda: clock.now, sleep=clock.sleep) == "gpus"
        assert len(tried) == failures + 1
    else:
        with pytest.raises(DriverNotLoaded):
            open_when_loaded(open_, wait_s=wait_s, clock=lambda: clock.now, sleep=clock.sleep)
    assert clock.slept == pytest.approx(expected_sleeps)
