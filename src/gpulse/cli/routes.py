"""`gpulse routes …`: which channels alerts go to, how they are grouped, and whom they mention.

A channel is a secret reference (`slack:/gpulse/<stage>/webhooks/<name>`, the SSM parameter that
holds the webhook); a URL is refused before anything is read, written or printed.
"""

from __future__ import annotations

import argparse
from typing import Any

from gpulse.alerting.routes import DEFAULT_ROUTE, GROUP_BY, GROUP_INTERVAL_S, GROUP_WAIT_S, REPEAT_INTERVAL_S
from gpulse.cli import format as fmt
from gpulse.cli import inputs
from gpulse.cli.context import Context, current_doc, remove, save
from gpulse.cli.rules import read_json_file
from gpulse.errors import InvalidInput

_FIELD_OPTIONS = (
    "match",
    "channel",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "resolved",
    "order",
    "continue_",
    "mention_user",
    "mention_team",
)


def route_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The fields `routes set` options give (only those given), checked without the table.
    With --file, the whole document. Channels holding a URL are refused here."""
    given = [o for o in _FIELD_OPTIONS if getattr(args, o, None) is not None]
    if args.file is not None:
        if given:
            raise InvalidInput("routes set: --file gives the whole route; drop the other options")
        doc = read_json_file(args.file)
        inputs.check_channels(doc)
        if not isinstance(doc, dict):
            raise InvalidInput(f"{args.file}: a route is a JSON object")
        return doc
    changes: dict[str, Any] = {}
    if args.channel is not None:
        changes["channels"] = [inputs.parse_channel(c) for c in args.channel]
    if args.match is not None:
        changes["matchers"] = inputs.canonical_matchers(args.match)
    if args.group_by is not None:
        changes["group_by"] = inputs.split_list(args.group_by)
    for opt, key in (
        ("group_wait", "group_wait_s"),
        ("group_interval", "group_interval_s"),
        ("repeat_interval", "repeat_interval_s"),
    ):
        if getattr(args, opt) is not None:
            changes[key] = inputs.seconds(getattr(args, opt))
    if args.resolved is not None:
        changes["send_resolved"] = args.resolved
    if args.order is not None:
        changes["order"] = args.order
    if args.continue_ is not None:
        changes["continue"] = args.continue_
    for opt, key in (("mention_user", "users"), ("mention_team", "teams")):
        if getattr(args, opt) is not None:
            changes.setdefault("mentions", {})[key] = dict(
                inputs.parse_mention(m) for m in getattr(args, opt)
            )
    if not changes:
        raise InvalidInput("routes set: nothing to set (give --channel, --match, … or --file)")
    return changes


def cmd_set(ctx: Context) -> int:
    changes = route_changes(ctx.args)  # before connecting: a URL never leaves this process
    name = ctx.args.name
    item = ctx.store.get("route", name)
    if ctx.args.file is not None:
        doc = changes
    else:
        doc = current_doc(item)
        mentions = {**(doc.get("mentions") or {}), **changes.pop("mentions", {})}
        doc.update(changes)
        if mentions:
            doc["mentions"] = mentions
    save(ctx, "route", name, doc, item)
    return 0


def _channels(doc: dict[str, Any]) -> str:
    channels = fmt.withhold_urls(doc.get("channels", []))
    return ", ".join(f"{c.get('kind')}:{c.get('secret')}" for c in channels) or "-"


def cmd_list(ctx: Context) -> int:
    items = sorted(
        ctx.store.items("route"),
        key=lambda i: (
            i.name == DEFAULT_ROUTE,
            i.doc.get("order", 100) if isinstance(i.doc, dict) else 0,
            i.name,
        ),
    )
    if ctx.wants_json:
        ctx.json(
            [{"route": i.name, "doc": i.doc, "version": i.version, "updated_by": i.updated_by} for i in items]
        )
        return 0
    if not items:
        ctx.print(
            "no routes: alerts go to the webhooks the template names (/gpulse/<stage>/webhooks/slack, …)"
        )
        return 0
    rows = []
    for i in items:
        d = i.doc if isinstance(i.doc, dict) else {}
        timing = "/".join(
            fmt.duration(float(d.get(k, default)))
            for k, default in (
                ("group_wait_s", GROUP_WAIT_S),
                ("group_interval_s", GROUP_INTERVAL_S),
                ("repeat_interval_s", REPEAT_INTERVAL_S),
            )
        )
        flags = [] if d.get("send_resolved", True) else ["no-resolved"]
        flags += ["continue"] if d.get("continue") else []
        rows.append(
            [
                i.name,
                str(d.get("order", 100)),
                " ".join(d.get("matchers", [])) or "*",
                _channels(d),
                ",".join(d.get("group_by", GROUP_BY)),
                timing,
                ",".join(flags) or "-",
                str(i.version),
            ]
        )
    headers = [
        "ROUTE",
        "ORDER",
        "MATCHERS",
        "CHANNELS",
        "GROUP_BY",
        "WAIT/INTERVAL/REPEAT",
        "FLAGS",
        "VERSION",
    ]
    ctx.print(*fmt.table(headers, rows))
    return 0


def cmd_show(ctx: Context) -> int:
    item = ctx.store.get("route", ctx.args.name)
    if item is None:
        raise InvalidInput(f"no route named {ctx.args.name!r}")
    if ctx.wants_json:
        ctx.json(
            {"route": item.name, "doc": item.doc, "version": item.version, "updated_by": item.updated_by}
        )
        return 0
    ctx.print(
        f"route {item.name}: version {item.version}, by {item.updated_by} at {fmt.iso(item.updated_at)}"
    )
    ctx.print(*fmt.doc_text(item.doc).splitlines())
    return 0


def cmd_delete(ctx: Context) -> int:
    item = ctx.store.get("route", ctx.args.name)
    if item is None:
        raise InvalidInput(f"no route named {ctx.args.name!r}")
    remove(ctx, "route", item)
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    routes = sub.add_parser("routes", help="where alerts go: channels, matchers, grouping, mentions")
    rs = routes.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = rs.add_parser("list", parents=common, help="every route, in the order they are tried")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_list)

    p = rs.add_parser("show", parents=common, help="one route's document")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_show)

    p = rs.add_parser("delete", parents=[*common, *write], help="delete a route")
    p.add_argument("name")
    p.set_defaults(func=cmd_delete)

    p = rs.add_parser(
        "set", parents=[*common, *write], help="create or change a route (options given replace their field)"
    )
    p.add_argument("name")
    p.add_argument("--file", help="the whole route document as JSON ('-' for stdin)")
    p.add_argument("--match", action="append", metavar="MATCHER", help='e.g. cluster="a" or team=~"ml|cv"')
    p.add_argument(
        "--channel",
        action="append",
        metavar="KIND:PARAM",
        help="slack:/gpulse/<stage>/webhooks/<name>, jandi:…, "
        "or alertmanager:/gpulse/<stage>/alertmanager/<name> (never a URL)",
    )
    p.add_argument("--group-by", metavar="LABELS", help="e.g. cluster,rule")
    p.add_argument("--group-wait", metavar="DURATION", help="e.g. 30s")
    p.add_argument("--group-interval", metavar="DURATION", help="e.g. 5m")
    p.add_argument("--repeat-interval", metavar="DURATION", help="e.g. 4h")
    p.add_argument("--resolved", action=argparse.BooleanOptionalAction, help="send resolved messages")
    p.add_argument("--order", type=int, help="routes are tried in this order (default 100)")
    p.add_argument(
        "--continue",
        dest="continue_",
        action=argparse.BooleanOptionalAction,
        help="keep matching after this one",
    )
    p.add_argument("--mention-user", action="append", metavar="USER=HANDLE", help="e.g. alice=<@U123>")
    p.add_argument("--mention-team", action="append", metavar="TEAM=HANDLE", help="e.g. ml=<!subteam^S1>")
    p.set_defaults(func=cmd_set)
