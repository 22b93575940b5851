"""What every command is given: its arguments, where to print, the clock, and a connection made
on first use (so that arguments are checked, and a URL refused, before anything is contacted).

`save` and `remove` are the one write path: validate, show the change, honour --dry-run and
--if-version, write through ConfigStore (which records who and when in the audit trail).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from gpulse.cli import format as fmt
from gpulse.cli.connect import Connection, caller
from gpulse.config.documents import parse
from gpulse.config.store import ConfigStore, RawItem

Resolver = Callable[[argparse.Namespace], Connection]


@dataclass
class Context:
    args: argparse.Namespace
    resolver: Resolver
    clock: Callable[[], float]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _conn: Connection | None = None
    _store: ConfigStore | None = None
    _who: str | None = None

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            self._conn = self.resolver(self.args)
        return self._conn

    @property
    def store(self) -> ConfigStore:
        if self._store is None:
            table = self.conn.output("ConfigTableName")
            self._store = ConfigStore(table, client=self.conn.client("dynamodb"), clock=self.clock)
        return self._store

    def who(self) -> str:
        """--who, else the caller's identity (asked once)."""
        if self._who is None:
            self._who = getattr(self.args, "who", None) or caller(self.conn)
        return self._who

    def print(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out)

    def json(self, obj: Any) -> None:
        print(fmt.dumps(obj), file=self.out)

    @property
    def wants_json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def dry_run(self) -> bool:
        return bool(getattr(self.args, "dry_run", False))


def current_doc(item: RawItem | None) -> dict[str, Any]:
    """The stored document to change, or a new one. A stored doc that is not a JSON object (a bad
    write that got in) is replaced, not merged."""
    return dict(item.doc) if item is not None and isinstance(item.doc, dict) else {}


def _expected(ctx: Context, item: RawItem | None) -> int | None:
    """The version the write is conditional on: --if-version (0 = must not exist), else the one read."""
    given = getattr(ctx.args, "if_version", None)
    if given is not None:
        return None if given == 0 else int(given)
    return item.version if item is not None else None


def save(ctx: Context, kind: str, name: str, doc: dict[str, Any], item: RawItem | None) -> int | None:
    """Validate `doc`, show it against the stored one, and write it (not with --dry-run, nor when
    nothing changed). Returns the new version, or None when nothing was written."""
    parse(kind, name, doc)  # InvalidInput before anything is shown or written
    old = item.doc if item is not None else None
    label = f"{kind}/{name}"
    before = f"{label} v{item.version}" if item is not None else f"{label} (none)"
    changes = fmt.diff(old, doc, before, f"{label} (new)")
    if ctx.dry_run:
        ctx.print(f"{kind} {name}: would write:", fmt.doc_text(doc))
        ctx.print(*(changes or ["(no change)"]))
        ctx.print("dry run: nothing written")
        return None
    if item is not None and old == doc and getattr(ctx.args, "if_version", None) is None:
        ctx.print(f"{kind} {name}: unchanged (version {item.version})")
        return None
    ctx.print(*changes)
    version = ctx.store.put(kind, name, doc, who=ctx.who(), expected_version=_expected(ctx, item))
    ctx.print(f"{kind} {name}: version {version} written by {ctx.who()}")
    return version


def remove(ctx: Context, kind: str, item: RawItem) -> None:
    """Delete a stored item (conditional on its version; --dry-run shows what would go)."""
    if ctx.dry_run:
        ctx.print(f"{kind} {item.name}: would delete version {item.version}:", fmt.doc_text(item.doc))
        ctx.print("dry run: nothing written")
        return
    expected = _expected(ctx, item)
    ctx.store.delete(kind, item.name, who=ctx.who(), expected_version=expected if expected else 0)
    ctx.print(f"{kind} {item.name}: deleted (was version {item.version}) by {ctx.who()}")
