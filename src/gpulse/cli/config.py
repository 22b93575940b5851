"""`gpulse config …`: the items analyze and alert rejected when they read them, and the audit
trail of every change (who, what, when)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from gpulse.cli import format as fmt
from gpulse.cli.context import Context
from gpulse.config.flags import DynamoDBStore


def cmd_problems(ctx: Context) -> int:
    problems = DynamoDBStore(ctx.store).snapshot().problems
    if ctx.wants_json:
        ctx.json([asdict(p) for p in problems])
        return 0
    if not problems:
        ctx.print("no problems: every config item is valid")
        return 0
    rows = [[p.kind, p.name, str(p.version), p.updated_by, p.reason] for p in problems]
    ctx.print(*fmt.table(["KIND", "NAME", "VERSION", "UPDATED_BY", "REASON"], rows))
    ctx.print(
        f"{len(problems)} item(s) rejected: their last good version (or the defaults) stays in force "
        "until they are fixed"
    )
    return 0


def cmd_audit(ctx: Context) -> int:
    entries = ctx.store.audit(ctx.args.limit)
    if ctx.wants_json:
        ctx.json(entries)
        return 0
    if not entries:
        ctx.print("no changes recorded")
        return 0
    rows = [[e["at"], e["who"], e["action"], e["kind"], e["name"], str(e["version"])] for e in entries]
    ctx.print(*fmt.table(["AT", "WHO", "ACTION", "KIND", "NAME", "VERSION"], rows))
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="rejected items and the audit trail")
    cs = config.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = cs.add_parser("problems", parents=common, help="items rejected when read")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_problems)

    p = cs.add_parser("audit", parents=common, help="the latest changes, newest first")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_audit)
