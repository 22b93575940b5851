"""Crash reports without AWS: the scrub and cap of the message, the file:line of the innermost
frame in gpulse's code, the finding, and that the crash always propagates. The rate limit (a
conditional put) is tested against moto in tests/integration/test_health_crash.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

import gpulse
from gpulse.finding import Finding, fingerprint
from gpulse.health import crash

CORE = Path(gpulse.__file__).resolve().parent
APP = Path("/opt/gpulse-test/functions/alert")  # a function's directory: only a name, never read
LIB = Path("/opt/gpulse-test/site-packages/lib.py")


def chain(*frames: tuple[Path, int]) -> BaseException:
    """An exception raised through `frames` (outermost first), each a (file, line) of its own:
    code compiled under those names, so the traceback says exactly those places."""
    namespace: dict[str, Any] = {}
    for depth, (path, line) in enumerate(frames):
        call = f"f{depth + 1}()" if depth + 1 < len(frames) else "raise ValueError('boom')"
        src = "\n" * (line - 2) + f"def f{depth}():\n    {call}\n"
        exec(compile(src, str(path), "exec"), namespace)
    try:
        namespace["f0"]()
    except ValueError as e:
        return e
    raise AssertionError("did not raise")


# -- the message --------------------------------------------------------------------------------


def test_urls_are_scrubbed_and_whitespace_folded() -> None:
    text = "POST https://hooks.slack.com/services/T0/B0/SECRET failed:\n  http://x/y?token=1 too"
    assert crash.scrub(text) == "POST <url> failed: <url> too"


def test_the_message_is_capped_with_an_ellipsis() -> None:
    assert crash.scrub("x" * 300) == "x" * 300
    capped = crash.scrub("x" * 301)
    assert (len(capped), capped[-1]) == (300, "…")
    assert crash.scrub("abcdef", limit=4) == "abc…"


@given(st.text())
def test_a_scrubbed_message_holds_no_url_and_fits(text: str) -> None:
    out = crash.scrub(text)
    assert "http://" not in out and "https://" not in out
    assert len(out) <= crash.MESSAGE_CHARS and "\n" not in out


# -- where --------------------------------------------------------------------------------------


def test_where_is_the_innermost_frame_in_gpulse_code() -> None:
    e = chain((APP / "app.py", 40), (CORE / "alerting" / "x.py", 17), (LIB, 5))
    assert crash.where(e, {APP: "functions/alert"}) == "gpulse/alerting/x.py:17"


def test_a_function_frame_counts_when_it_is_the_innermost_of_ours() -> None:
    e = chain((CORE / "x.py", 3), (APP / "app.py", 40), (LIB, 5), (LIB, 9))
    assert crash.where(e, {APP: "functions/alert"}) == "functions/alert/app.py:40"


def test_the_core_package_counts_without_being_named() -> None:
    e = chain((CORE / "store.py", 12), (LIB, 5))
    assert crash.where(e, {}) == "gpulse/store.py:12"


def test_no_frame_of_ours_is_unknown() -> None:
    assert crash.where(chain((LIB, 5)), {APP: "functions/alert"}) == "unknown"
    assert crash.where(ValueError("never raised"), {}) == "unknown"


# -- the finding --------------------------------------------------------------------------------


def test_the_crash_finding_says_function_error_message_and_place() -> None:
    e = KeyError("https://hooks.slack.com/services/T0/B0/SECRET is gone")
    f = crash.crash_finding("alert", e, "gpulse/alerting/inbox.py:150", 1000.0)
    assert f == Finding(
        rule="gpulse_crash",
        title="gpulse crashed",
        severity="critical",
        state="firing",
        fingerprint=fingerprint("gpulse_crash", function="alert", where="gpulse/alerting/inbox.py:150"),
        cluster="gpulse",
        since=1000.0,
        at=1000.0,
        one_shot=True,
        summary="gpulse's alert function raised KeyError: '<url> is gone' at gpulse/alerting/inbox.py:150",
        action="Read the alert function's log at this time for the whole traceback. What failed is "
        "retried; findings that keep failing end in the dead-letter queue (`gpulse dlq list`). "
        "The same crash is reported again after 15 minutes at the earliest.",
    )
    bare = crash.crash_finding("analyze", RuntimeError(), "gpulse/x.py:1", 1000.0)
    assert bare.summary == "gpulse's analyze function raised RuntimeError at gpulse/x.py:1"
    # the fingerprint is the place, not the message: the same crash with other data is the same alert
    other = crash.crash_finding("alert", KeyError("another key"), "gpulse/alerting/inbox.py:150", 2000.0)
    assert other.fingerprint == f.fingerprint


# -- the wrapper --------------------------------------------------------------------------------


class Published:
    """A findings queue that keeps what it was given (or fails, when told)."""

    def __init__(self, fail: bool = False) -> None:
        self.findings: list[Finding] = []
        self.fail = fail

    def publish(self, findings: list[Finding]) -> None:
        if self.fail:
            raise ConnectionError("queue unreachable")
        self.findings.extend(findings)


class Table:
    """The conditional put, as DynamoDB answers it: the slot is taken until `until`."""

    def __init__(self, error: str | None = None) -> None:
        self.slots: dict[str, float] = {}
        self.error = error

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": ""}}, "PutItem")
        sk, now = kwargs["Item"]["sk"]["S"], float(kwargs["ExpressionAttributeValues"][":now"]["N"])
        if sk in self.slots and self.slots[sk] > now:
            raise ClientError(
                {"Error": {"Code": "ConditionalCheckFailedException", "Message": ""}}, "PutItem"
            )
        self.slots[sk] = float(kwargs["Item"]["until"]["N"])
        return {}


def reporter(queue: Published, table: Table, **kwargs: Any) -> crash.CrashReporter:
    return crash.CrashReporter("alert", "state", queue, client=table, clock=lambda: 1000.0, **kwargs)  # type: ignore[arg-type]


def test_the_exception_propagates_after_one_report() -> None:
    queue, table = Published(), Table()
    boom = KeyError("x")

    @reporter(queue, table, code={Path(__file__).parent: "tests/unit"})
    def handler() -> None:
        raise boom

    with pytest.raises(KeyError) as e:
        handler()
    assert e.value is boom
    [f] = queue.findings
    line = handler.__wrapped__.__code__.co_firstlineno + 2  # type: ignore[attr-defined]  # the raise
    assert (
        f.summary == f"gpulse's alert function raised KeyError: 'x' at tests/unit/test_health_crash.py:{line}"
    )
    with pytest.raises(KeyError):
        handler()
    assert len(queue.findings) == 1  # the same place within the window: not again


def test_ignored_exceptions_and_results_pass_through_unreported() -> None:
    queue = Published()
    wrap = reporter(queue, Table(), ignore=(LookupError,))

    @wrap
    def lookup() -> None:
        raise IndexError("reported elsewhere")

    @wrap
    def fine(x: int) -> int:
        return x + 1

    with pytest.raises(IndexError):
        lookup()
    assert fine(1) == 2
    assert queue.findings == []


@pytest.mark.parametrize(
    ("queue", "table"),
    [(Published(fail=True), Table()), (Published(), Table(error="ProvisionedThroughputExceededException"))],
)
def test_a_report_that_fails_never_replaces_the_crash(queue: Published, table: Table) -> None:
    @reporter(queue, table)
    def handler() -> None:
        raise ValueError("the real failure")

    with pytest.raises(ValueError, match="the real failure"):
        handler()
    assert queue.findings == []
