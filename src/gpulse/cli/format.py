"""Plain-text output: aligned tables, UTC times, short durations, documents and their diffs."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gpulse.cli.inputs import looks_like_url

# shown instead of a channel's secret that holds a URL (a write that went around the CLI)
WITHHELD = "<webhook URL withheld: store it in SSM and name the parameter>"


def iso(t: float) -> str:
    """A unix time as ISO 8601 UTC to the second: 2025-11-22T10:00:00Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(s: float) -> str:
    """Seconds the way an operator writes them: 45s, 5m, 1h30m, 2d."""
    if s != int(s):
        return f"{s:g}s"
    n, out = int(s), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if n >= size:
            out += f"{n // size}{unit}"
            n %= size
    return out + (f"{n}s" if n or not out else "")


def withhold_urls(obj: Any) -> Any:
    """`obj` with every `secret` that holds a URL replaced by WITHHELD: nothing the CLI prints
    shows a webhook URL, even one written into the table around it."""
    if isinstance(obj, dict):
        return {
            k: WITHHELD if k == "secret" and isinstance(v, str) and looks_like_url(v) else withhold_urls(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [withhold_urls(v) for v in obj]
    return obj


def doc_text(doc: Any) -> str:
    """A document as the CLI shows it: JSON, keys sorted, indented (URLs withheld)."""
    return json.dumps(withhold_urls(doc), indent=2, sort_keys=True)


def diff(old: Any, new: Any, before: str, after: str) -> list[str]:
    """The unified diff between two documents' JSON (empty when they are equal)."""
    a = doc_text(old).splitlines() if old is not None else []
    b = doc_text(new).splitlines() if new is not None else []
    return [line.rstrip("\n") for line in difflib.unified_diff(a, b, before, after, lineterm="")]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def value(v: Any) -> str:
    """A parameter's value in a table: JSON, except bare strings."""
    return v if isinstance(v, str) else json.dumps(v)


def assignments(params: dict[str, Any] | None) -> str:
    """`{"a": 1, "b": "x"}` → "a=1 b=x" (sorted), or "-"."""
    return " ".join(f"{k}={value(params[k])}" for k in sorted(params)) if params else "-"


def dumps(obj: Any) -> str:
    """Machine output (--json; URLs withheld)."""
    return json.dumps(withhold_urls(obj), indent=2, sort_keys=True, default=str)
