"""`gpulse inhibit …`: inhibit rules, Alertmanager's kind. While an alert matching a rule's
source matchers fires, alerts of other rules matching its target matchers that agree with it on
the `equal` labels are muted, and listed under it as the symptoms of one incident (see
docs/operations.md, "Incidents and inhibition").

The built-in rules hold until an item of the same name replaces them (`add` with that name) or
disables them (`remove` of a built-in writes `{"disabled": true}`); removing that item brings
the built-in back. Analyze reads the rules live (within a minute, like the rest of the config).
"""

from __future__ import annotations

import argparse
from typing import Any

from gpulse.alerting.inhibition import DEFAULT_INHIBITIONS, Inhibition
from gpulse.cli import format as fmt
from gpulse.cli import inputs
from gpulse.cli.context import Context, remove, save
from gpulse.config.documents import InhibitConfig, parse
from gpulse.config.store import RawItem
from gpulse.errors import InvalidInput


def _doc_of(rule: Inhibition) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "source_matchers": [str(m) for m in rule.source],
        "target_matchers": [str(m) for m in rule.target],
        "equal": list(rule.equal),
    }
    if rule.description:
        doc["description"] = rule.description
    return doc


def _rows(items: list[RawItem]) -> list[dict[str, Any]]:
    """Every rule, built-in or stored, with where it comes from and whether it is in force. A
    stored item that does not parse is shown as rejected (analyze keeps its last good version)."""
    stored = {i.name: i for i in items}
    rows = []
    for name in sorted(set(DEFAULT_INHIBITIONS) | set(stored)):
        item, builtin = stored.get(name), DEFAULT_INHIBITIONS.get(name)
        parsed: InhibitConfig | None = None
        problem = None
        if item is not None:
            try:
                p = parse("inhibit", name, item.doc)
                assert isinstance(p, InhibitConfig)
                parsed = p
            except InvalidInput as e:
                problem = str(e)
        rule = parsed.rule if parsed is not None else (builtin if item is None else None)
        if item is None:
            origin = "built-in"
        elif problem is not None:
            origin = "rejected"
        elif parsed is not None and parsed.rule is None:
            origin = "built-in, disabled"
        else:
            origin = "table, over built-in" if builtin is not None else "table"
        shown = rule or builtin
        rows.append(
            {
                "name": name,
                "origin": origin,
                "active": rule is not None,
                "source_matchers": [str(m) for m in shown.source] if shown else [],
                "target_matchers": [str(m) for m in shown.target] if shown else [],
                "equal": list(shown.equal) if shown else [],
                "description": shown.description if shown else "",
                "version": item.version if item is not None else 0,
                "problem": problem,
            }
        )
    return rows


def cmd_list(ctx: Context) -> int:
    rows = _rows(ctx.store.items("inhibit"))
    if ctx.wants_json:
        ctx.json(rows)
        return 0
    table = [
        [
            r["name"],
            r["origin"],
            " ".join(r["source_matchers"]) or "-",
            " ".join(r["target_matchers"]) or "-",
            ",".join(r["equal"]) or "-",
            str(r["version"]) if r["version"] else "-",
        ]
        for r in rows
    ]
    ctx.print(*fmt.table(["NAME", "ORIGIN", "SOURCE", "TARGET", "EQUAL", "VERSION"], table))
    for r in rows:
        if r["problem"]:
            ctx.print(f"rejected: {r['problem']}")
    return 0


def cmd_add(ctx: Context) -> int:
    a = ctx.args
    item = ctx.store.get("inhibit", a.name)
    if item is not None and getattr(a, "if_version", None) is None:
        raise InvalidInput(
            f"inhibit {a.name} is in the table already (version {item.version}): "
            "remove it first, or give --if-version to replace it"
        )
    doc: dict[str, Any] = {
        "source_matchers": inputs.canonical_matchers(a.source),
        "target_matchers": inputs.canonical_matchers(a.target),
        "equal": list(dict.fromkeys(a.equal or ["node"])),
    }
    if a.description:
        doc["description"] = a.description
    if a.name in DEFAULT_INHIBITIONS:
        ctx.print(f"inhibit {a.name}: replaces the built-in rule of that name")
    save(ctx, "inhibit", a.name, doc, item)
    return 0


def cmd_remove(ctx: Context) -> int:
    name = ctx.args.name
    item = ctx.store.get("inhibit", name)
    disabled = item is not None and isinstance(item.doc, dict) and item.doc.get("disabled") is True
    if item is not None and not disabled:
        remove(ctx, "inhibit", item)
        if name in DEFAULT_INHIBITIONS and not ctx.dry_run:
            ctx.print(f"inhibit {name}: the built-in rule of that name is in force again")
        return 0
    if name in DEFAULT_INHIBITIONS and not disabled:
        ctx.print(f"inhibit {name}: a built-in rule; disabling it")
        save(ctx, "inhibit", name, {"disabled": True}, item)
        return 0
    if disabled:
        raise InvalidInput(
            f"inhibit {name}: the built-in rule is disabled already (`gpulse inhibit restore {name}` "
            "brings it back)"
        )
    known = ", ".join(sorted(DEFAULT_INHIBITIONS))
    raise InvalidInput(f"no inhibit rule named {name!r} (built-in: {known}; `gpulse inhibit list`)")


def cmd_restore(ctx: Context) -> int:
    """Delete the table's item of a built-in rule's name: the built-in is in force again."""
    name = ctx.args.name
    if name not in DEFAULT_INHIBITIONS:
        known = ", ".join(sorted(DEFAULT_INHIBITIONS))
        raise InvalidInput(f"inhibit {name}: not a built-in rule ({known})")
    item = ctx.store.get("inhibit", name)
    if item is None:
        raise InvalidInput(f"inhibit {name}: the built-in rule is in force already")
    remove(ctx, "inhibit", item)
    if not ctx.dry_run:
        ctx.print(f"inhibit {name}: the built-in rule of that name is in force again")
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    inhibit = sub.add_parser("inhibit", help="inhibit rules: which alert mutes which (incidents)")
    ss = inhibit.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = ss.add_parser("list", parents=common, help="every inhibit rule: built-in and from the table")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_list)

    p = ss.add_parser("add", parents=[*common, *write], help="a new inhibit rule (or one over a built-in)")
    p.add_argument("name")
    p.add_argument(
        "--source", action="append", required=True, metavar="MATCHER", help='e.g. rule="imbalance"'
    )
    p.add_argument(
        "--target", action="append", required=True, metavar="MATCHER", help='e.g. rule="idle_held"'
    )
    p.add_argument(
        "--equal",
        action="append",
        metavar="LABEL",
        help="a label source and target must share (repeat; default node: every node of the target "
        "named by a source)",
    )
    p.add_argument("--description", help="why (shown in the list)")
    p.set_defaults(func=cmd_add)

    p = ss.add_parser("remove", parents=[*common, *write], help="delete a rule; disable a built-in one")
    p.add_argument("name")
    p.set_defaults(func=cmd_remove)

    p = ss.add_parser("restore", parents=[*common, *write], help="the built-in rule again, as shipped")
    p.add_argument("name")
    p.set_defaults(func=cmd_restore)
