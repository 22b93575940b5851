"""`gpulse silence …`: mute alerts that match, for a while. Analyze still evaluates them (they
fire and resolve on time); only their delivery waits until the silence ends."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from gpulse.cli import format as fmt
from gpulse.cli import inputs
from gpulse.cli.context import Context, remove, save
from gpulse.config.store import RawItem
from gpulse.errors import InvalidInput


def silence_doc(
    matchers: list[str], start: float, end: float, who: str, comment: str | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"matchers": matchers, "starts_at": start, "ends_at": end, "created_by": who}
    if comment:
        doc["comment"] = comment
    return doc


def state_of(doc: dict[str, Any], now: float) -> str:
    if now < doc["starts_at"]:
        return "future"
    return "active" if now < doc["ends_at"] else "expired"


def cmd_add(ctx: Context) -> int:
    a = ctx.args
    matchers = inputs.canonical_matchers(a.match)
    now = ctx.clock()
    start = inputs.parse_time(a.start) if a.start else now
    end = start + inputs.parse_duration(a.for_) if a.for_ is not None else inputs.parse_time(a.until)
    if end <= now:
        raise InvalidInput(f"the silence would end at {fmt.iso(end)}, which has passed")
    sid = uuid.uuid4().hex[:8]
    doc = silence_doc(matchers, start, end, ctx.who(), a.comment)
    save(ctx, "silence", sid, doc, None)
    if not ctx.dry_run:
        ctx.print(sid)
    return 0


def cmd_list(ctx: Context) -> int:
    now = ctx.clock()
    items = [i for i in ctx.store.items("silence") if isinstance(i.doc, dict) and "ends_at" in i.doc]
    items = sorted(items, key=lambda i: (i.doc["starts_at"], i.name))
    if not ctx.args.all:
        items = [i for i in items if i.doc["ends_at"] > now]
    rows = [
        {
            "id": i.name,
            "state": state_of(i.doc, now),
            "matchers": i.doc.get("matchers", []),
            "starts_at": i.doc["starts_at"],
            "ends_at": i.doc["ends_at"],
            "created_by": i.doc.get("created_by"),
            "comment": i.doc.get("comment", ""),
            "version": i.version,
        }
        for i in items
    ]
    if ctx.wants_json:
        ctx.json(rows)
        return 0
    if not rows:
        ctx.print(
            "no silences" if ctx.args.all else "no active or future silences (--all shows expired ones)"
        )
        return 0
    table = [
        [
            r["id"],
            r["state"],
            fmt.iso(r["starts_at"]),
            fmt.iso(r["ends_at"]),
            r["created_by"] or "-",
            " ".join(r["matchers"]),
            r["comment"] or "-",
        ]
        for r in rows
    ]
    ctx.print(*fmt.table(["ID", "STATE", "STARTS", "ENDS", "BY", "MATCHERS", "COMMENT"], table))
    return 0


def cmd_expire(ctx: Context) -> int:
    item: RawItem | None = ctx.store.get("silence", ctx.args.id)
    if item is None or not isinstance(item.doc, dict):
        raise InvalidInput(f"no silence with id {ctx.args.id!r}")
    now = ctx.clock()
    state = state_of(item.doc, now)
    if state == "expired":
        raise InvalidInput(f"silence {item.name} already ended at {fmt.iso(item.doc['ends_at'])}")
    if state == "future" or now <= item.doc["starts_at"]:
        # it never took effect, and a silence cannot end when it starts: withdraw it
        ctx.print(
            f"silence {item.name} had not started (starts {fmt.iso(item.doc['starts_at'])}): deleting it"
        )
        remove(ctx, "silence", item)
        return 0
    save(ctx, "silence", item.name, {**item.doc, "ends_at": now}, item)
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    silence = sub.add_parser("silence", aliases=["silences"], help="mute matching alerts for a while")
    ss = silence.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = ss.add_parser("add", parents=[*common, *write], help="a new silence; prints its id")
    p.add_argument(
        "--match", action="append", required=True, metavar="MATCHER", help='e.g. cluster="a" (all must hold)'
    )
    span = p.add_mutually_exclusive_group(required=True)
    span.add_argument("--for", dest="for_", metavar="DURATION", help="e.g. 2h")
    span.add_argument("--until", metavar="ISO8601", help="e.g. 2025-11-22T18:00:00Z")
    p.add_argument("--start", metavar="ISO8601", help="later than now (default now)")
    p.add_argument("--comment", help="why (shown with the silence)")
    p.set_defaults(func=cmd_add)

    p = ss.add_parser("list", parents=common, help="active and future silences")
    p.add_argument("--all", action="store_true", help="expired ones too")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_list)

    p = ss.add_parser("expire", parents=[*common, *write], help="end a silence now")
    p.add_argument("id")
    p.set_defaults(func=cmd_expire)
