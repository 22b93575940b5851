"""The crash report's rate limit against the state table in moto, with an injected clock: one
report per function and file:line per window, across concurrent invocations too."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from gpulse.alerting.settle import FindingsQueue
from gpulse.finding import Finding
from gpulse.health import crash
from tests.integration.lambdas import deploy

pytestmark = pytest.mark.integration
T0 = 1_767_225_600.0
HERE = {Path(__file__).parent: "tests/integration"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def fail_here() -> None:
    raise RuntimeError("disk full")


def fail_there() -> None:
    raise RuntimeError("disk full")


def line_of(fn: object) -> str:
    return f"tests/integration/test_health_crash.py:{fn.__code__.co_firstlineno + 1}"  # type: ignore[attr-defined]


@pytest.fixture
def setup(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    d = deploy(moto_server, monkeypatch)
    return d.tables["StateTable"], d.queues["FindingsQueue"]["url"]


def reports(queue_url: str) -> list[str]:
    """The summaries of the crash reports queued so far (taken off the queue)."""
    sqs = boto3.client("sqs")
    out = []
    while got := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for m in got:
            out.append(Finding.from_json(m["Body"]).summary)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return sorted(out)


def run(reporter: crash.CrashReporter, fn: Callable[[], None]) -> None:
    with pytest.raises(RuntimeError, match="disk full"):
        reporter(fn)()


def test_the_same_crash_is_reported_once_per_window(setup: tuple[str, str]) -> None:
    table, queue = setup
    clock = Clock()
    alert = crash.CrashReporter("alert", table, FindingsQueue(queue), code=HERE, clock=clock)
    analyze = crash.CrashReporter("analyze", table, FindingsQueue(queue), code=HERE, clock=clock)
    here, there = line_of(fail_here), line_of(fail_there)

    run(alert, fail_here)
    assert reports(queue) == [f"gpulse's alert function raised RuntimeError: disk full at {here}"]
    clock.now = T0 + crash.WINDOW_S - 0.5  # still inside the window
    run(alert, fail_here)
    assert reports(queue) == []
    # another place, or another function at the same place, is another crash
    run(alert, fail_there)
    run(analyze, fail_here)
    assert reports(queue) == [
        f"gpulse's alert function raised RuntimeError: disk full at {there}",
        f"gpulse's analyze function raised RuntimeError: disk full at {here}",
    ]
    clock.now = T0 + crash.WINDOW_S  # the first report's window is over
    run(alert, fail_here)
    run(alert, fail_there)  # reported at T0 + 899.5: its window runs on
    assert reports(queue) == [f"gpulse's alert function raised RuntimeError: disk full at {here}"]


def test_concurrent_invocations_crashing_alike_send_one_report(setup: tuple[str, str]) -> None:
    table, queue = setup
    reporter = crash.CrashReporter("alert", table, FindingsQueue(queue), code=HERE, clock=Clock())
    start = threading.Barrier(8)

    def invocation() -> None:
        start.wait()
        run(reporter, fail_here)

    threads = [threading.Thread(target=invocation) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reports(queue) == [
        f"gpulse's alert function raised RuntimeError: disk full at {line_of(fail_here)}"
    ]
