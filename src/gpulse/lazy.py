"""A value built on first use, once per process: what a Lambda handler builds for its requests.

Importing a handler is its cold start; boto3 clients, stores and the core's numpy code cost
hundreds of milliseconds there. A handler keeps them in a `Lazy` instead, so the import builds
nothing that the first request can build, and every later request reuses what that one built.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Lazy(Generic[T]):
    """`build()` on the first call, its result on every call after. A build that raises is not
    kept: the next call builds again (a throttled first request must not poison the container).
    Thread-safe, because the local stack serves one function's requests from several threads."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._box: tuple[T] | None = None  # a tuple, so that a built None is told from not built

    def __call__(self) -> T:
        box = self._box
        if box is None:
            with self._lock:
                box = self._box
                if box is None:
                    box = self._box = (self._build(),)
        return box[0]

    @property
    def built(self) -> bool:
        return self._box is not None


def deferred(decorator: Callable[[], Callable[[F], F]]) -> Callable[[F], F]:
    """Decorate with what `decorator()` returns, asked for at each call rather than at import:
    `@deferred(lambda: wired().crash)` wraps a handler in a reporter that a `Lazy` builds."""

    def apply(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return decorator()(fn)(*args, **kwargs)

        return cast(F, call)

    return apply


def attributes(wired: Lazy[Any], names: Iterable[str], module: str) -> Callable[[str], Any]:
    """A module-level `__getattr__` that serves `names` from what `wired` builds (so tests and
    tools still reach `app.dispatcher`), built on first use; any other name is an AttributeError."""
    served = frozenset(names)

    def getattr_(name: str) -> Any:
        if name in served:
            return getattr(wired(), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return getattr_
