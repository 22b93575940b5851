"""`gpulse teams …`: who belongs to a team, and which node groups it owns. An alert about one
of its users or node groups carries the team's name (for routes, silences, rule targeting and
mentions)."""

from __future__ import annotations

import argparse
from typing import Any

from gpulse.cli import format as fmt
from gpulse.cli.context import Context, current_doc, remove, save
from gpulse.errors import InvalidInput


def cmd_set(ctx: Context) -> int:
    a = ctx.args
    if a.user is None and a.node_group is None:
        raise InvalidInput("teams set: nothing to set (give --user and/or --node-group)")
    item = ctx.store.get("team", a.name)
    doc = current_doc(item)
    # options given replace their list; dict.fromkeys drops repeats and keeps the order given
    if a.user is not None:
        doc["users"] = list(dict.fromkeys(a.user))
    if a.node_group is not None:
        doc["node_groups"] = list(dict.fromkeys(a.node_group))
    save(ctx, "team", a.name, doc, item)
    return 0


def cmd_list(ctx: Context) -> int:
    items = sorted(ctx.store.items("team"), key=lambda i: i.name)
    docs = [(i, i.doc if isinstance(i.doc, dict) else {}) for i in items]
    if ctx.wants_json:
        ctx.json(
            [{"team": i.name, "doc": i.doc, "version": i.version, "updated_by": i.updated_by} for i in items]
        )
        return 0
    if not items:
        ctx.print("no teams")
        return 0
    rows = [
        [
            i.name,
            ",".join(d.get("users", [])) or "-",
            ",".join(d.get("node_groups", [])) or "-",
            str(i.version),
        ]
        for i, d in docs
    ]
    ctx.print(*fmt.table(["TEAM", "USERS", "NODE_GROUPS", "VERSION"], rows))
    return 0


def cmd_delete(ctx: Context) -> int:
    item = ctx.store.get("team", ctx.args.name)
    if item is None:
        raise InvalidInput(f"no team named {ctx.args.name!r}")
    remove(ctx, "team", item)
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    teams = sub.add_parser("teams", help="teams: users and the node groups they own")
    ts = teams.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = ts.add_parser("set", parents=[*common, *write], help="create or change a team")
    p.add_argument("name")
    p.add_argument("--user", action="append", metavar="U", help="a member (repeat); replaces the list")
    p.add_argument(
        "--node-group", action="append", metavar="G", help="an owned node group; replaces the list"
    )
    p.set_defaults(func=cmd_set)

    p = ts.add_parser("list", parents=common, help="every team")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_list)

    p = ts.add_parser("delete", parents=[*common, *write], help="delete a team")
    p.add_argument("name")
    p.set_defaults(func=cmd_delete)
