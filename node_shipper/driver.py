"""Wait for the NVIDIA driver at start-up instead of giving up on a node that is still booting.

At boot the shipper can start before the kernel module is loaded (nvmlInit answers Driver Not
Loaded) or before the library is mounted into a container (Library Not Found). Exiting 2 would
tell systemd (RestartPreventExitStatus=2) and an operator that the node is misconfigured for good.
With `--wait-for-driver SECONDS` the shipper tries nvmlInit again with capped exponential backoff,
logs once that it waits and once when the driver came, and stops waiting on SIGTERM/SIGINT (a
container's PID 1 ignores SIGTERM unless it handles it). A node where NVML loads but sees no GPU
is still refused at once: waiting cannot help there.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TypeVar

from node_shipper.errors import DriverNotLoaded, DriverWaitStopped

log = logging.getLogger(__name__)

T = TypeVar("T")
BASE_S = 1.0
CAP_S = 30.0  # a driver that comes late is seen within half a minute


def open_when_loaded(
    open_: Callable[[], T],
    *,
    wait_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], bool] | None = None,
    base_s: float = BASE_S,
    cap_s: float = CAP_S,
) -> T:
    """`open_()`, tried again while it raises DriverNotLoaded, for at most `wait_s` seconds
    (0: once; inf: for ever). Waits 1, 2, 4 … `cap_s` s between tries. `sleep(s)` returns True
    when asked to stop (DriverWaitStopped is raised then); by default SIGTERM or SIGINT asks."""
    if sleep is None:
        with _stop_on_signals() as stop:
            return open_when_loaded(
                open_, wait_s=wait_s, clock=clock, sleep=stop.wait, base_s=base_s, cap_s=cap_s
            )
    started = clock()
    delay = base_s
    tries = 0
    while True:
        tries += 1
        try:
            opened = open_()
        except DriverNotLoaded as e:
            left = started + wait_s - clock()
            if left <= 0:
                raise
            if tries == 1:
                log.warning(
                    "NVIDIA driver not loaded yet: waiting for it", extra={"error": str(e), "wait_s": wait_s}
                )
            if sleep(min(delay, left)):
                raise DriverWaitStopped("stopped while waiting for the NVIDIA driver") from None
            delay = min(cap_s, delay * 2)
            continue
        if tries > 1:
            log.warning(
                "NVIDIA driver loaded", extra={"waited_s": round(clock() - started, 1), "tries": tries}
            )
        return opened


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An Event set by SIGTERM or SIGINT while inside; the previous handlers come back after.
    Outside the main thread (where signals cannot be handled) the Event is never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
