"""gpulse.lazy: a handler's wiring is built once, on first use, and a failed build is retried;
gpulse.telemetry.tracer gives a Tracer without the X-Ray SDK when tracing is off."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpulse import telemetry
from gpulse.lazy import Lazy, attributes, deferred


class Boom(Exception):
    pass


@given(st.lists(st.booleans(), min_size=1, max_size=20))
def test_the_first_build_that_succeeds_is_kept_and_failures_are_built_again(outcomes: list[bool]) -> None:
    """Each call builds until one build succeeds (`outcomes[k]`: whether build k succeeds);
    from then on every call returns that value and builds nothing."""
    builds: list[int] = []

    def build() -> int:
        builds.append(len(builds))
        if not outcomes[len(builds) - 1]:
            raise Boom
        return len(builds) - 1

    lazy = Lazy(build)
    kept: int | None = None
    for k in range(len(outcomes)):
        expected_builds = k + 1 if kept is None else len(builds)
        if kept is None and not outcomes[k]:
            with pytest.raises(Boom):
                lazy()
            assert not lazy.built
        else:
            value = lazy()
            kept = value if kept is None else kept
            assert value == kept
            assert lazy.built
        assert len(builds) == expected_builds
    first_success = outcomes.index(True) if True in outcomes else None
    assert kept == first_success
    assert len(builds) == (len(outcomes) if first_success is None else first_success + 1)


def test_a_built_none_is_kept() -> None:
    calls: list[None] = []
    lazy: Lazy[None] = Lazy(lambda: calls.append(None))
    assert lazy() is None and lazy() is None
    assert len(calls) == 1


def test_threads_that_ask_at_once_get_one_build() -> None:
    release = threading.Event()
    builds: list[object] = []

    def build() -> object:
        release.wait(timeout=30)  # holds every other thread at the lock until all have asked
        builds.append(object())
        return builds[-1]

    lazy = Lazy(build)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(lazy())) for _ in range(8)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(timeout=30)
    assert len(builds) == 1
    assert got == builds * 8


def test_deferred_applies_the_decorator_it_is_given_at_each_call() -> None:
    seen: list[str] = []

    def tagging(tag: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                seen.append(tag)
                return fn(*args, **kwargs)

            return call

        return decorate

    current = ["a"]

    @deferred(lambda: tagging(current[0]))
    def add(x: int, y: int = 0) -> int:
        """Adds."""
        return x + y

    assert not seen  # nothing asked for at decoration
    assert add(1, y=2) == 3
    current[0] = "b"
    assert add(2) == 2
    assert seen == ["a", "b"]
    assert (add.__name__, add.__doc__) == ("add", "Adds.")


def test_the_tracer_of_a_function_whose_tracing_is_off_records_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    tracer = telemetry.tracer()
    assert isinstance(tracer.provider, telemetry.NoTracing)
    assert tracer.disabled

    @tracer.capture_method
    def double(x: int) -> int:
        return 2 * x

    @tracer.capture_lambda_handler
    def handler(event: int, context: object) -> int:
        if event < 0:
            raise Boom
        return double(event)

    assert handler(21, None) == 42
    with pytest.raises(Boom):
        handler(-1, None)


def test_attributes_serve_the_named_parts_and_refuse_the_rest() -> None:
    built: list[int] = []

    def wire() -> SimpleNamespace:
        built.append(1)
        return SimpleNamespace(dispatcher="d", other="o")

    getattr_ = attributes(Lazy(wire), ("dispatcher",), "app")
    assert built == []
    assert getattr_("dispatcher") == "d" and built == [1]
    with pytest.raises(AttributeError, match="module 'app' has no attribute 'other'"):
        getattr_("other")
