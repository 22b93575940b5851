"""`gpulse rules …`: list, show, enable, disable, set, unset, target and flag the detector rules.

A rule's item holds `enabled` (a Powertools feature flag), `params` (overrides of the detector's
defaults), optionally `route` and `description`. Evaluation context for the flag: the alert's
labels (cluster, node_group, severity, … as strings; `teams` as a list) — see
gpulse.alerting.labels.flag_context.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.feature_flags.schema import RuleAction, TimeKeys, TimeValues

from gpulse.alerting.matchers import Matcher
from gpulse.analyze.inhibit import Inhibition, effective
from gpulse.cli import format as fmt
from gpulse.cli import inputs
from gpulse.cli.context import Context, current_doc, save
from gpulse.config.documents import InhibitConfig, RuleConfig, parse
from gpulse.config.store import RawItem
from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.errors import InvalidInput
from gpulse.finding import SEVERITIES

TARGET_RULE = "target"  # the flag rule `rules target` writes (on only where it matches)
MUTE_RULE = "mute"  # … and with --mute (off only where it matches)
AUDIT_SHOWN = 5
AUDIT_SCAN = 200  # the audit trail is one partition, newest first: the rule's entries are among these


def target_flag(
    *,
    clusters: list[str] | None = None,
    node_groups: list[str] | None = None,
    teams: list[str] | None = None,
    severities: list[str] | None = None,
    between: tuple[str, str] | None = None,
    days: list[str] | None = None,
    tz: str | None = None,
    mute: bool = False,
) -> dict[str, Any]:
    """The feature flag that turns a rule on only where the conditions hold (or, with `mute`,
    off only there: maintenance hours, a cluster being rebuilt). All conditions must hold."""
    conditions: list[dict[str, Any]] = []
    for key, values in (("cluster", clusters), ("node_group", node_groups), ("severity", severities)):
        if values:
            if len(values) == 1:
                conditions.append({"action": RuleAction.EQUALS.value, "key": key, "value": values[0]})
            else:
                conditions.append({"action": RuleAction.IN.value, "key": key, "value": list(values)})
    if teams:
        # `teams` is a list in the flag's context: an alert may concern several teams
        conditions.append({"action": RuleAction.ANY_IN_VALUE.value, "key": "teams", "value": list(teams)})
    zone = tz or "UTC"
    if between is not None:
        conditions.append(
            {
                "action": RuleAction.SCHEDULE_BETWEEN_TIME_RANGE.value,
                "key": TimeKeys.CURRENT_TIME.value,
                "value": {
                    TimeValues.START.value: between[0],
                    TimeValues.END.value: between[1],
                    TimeValues.TIMEZONE.value: zone,
                },
            }
        )
    if days:
        conditions.append(
            {
                "action": RuleAction.SCHEDULE_BETWEEN_DAYS_OF_WEEK.value,
                "key": TimeKeys.CURRENT_DAY_OF_WEEK.value,
                "value": {TimeValues.DAYS.value: list(days), TimeValues.TIMEZONE.value: zone},
            }
        )
    if not conditions:
        raise InvalidInput(
            "rules target needs at least one of --cluster, --node-group, --team, --severity, "
            "--between, --days"
        )
    if tz is not None and between is None and not days:
        raise InvalidInput("--tz applies to --between and --days; give one of them")
    name = MUTE_RULE if mute else TARGET_RULE
    return {"default": mute, "rules": {name: {"when_match": not mute, "conditions": conditions}}}


def flag_state(flag: dict[str, Any]) -> str:
    """The rule's switch in a word: on, off, or "targeted (default off, 1 rule)"."""
    default = "on" if flag.get("default") else "off"
    n = len(flag.get("rules") or {})
    return f"targeted (default {default}, {n} rule{'s' if n != 1 else ''})" if n else default


def describe_condition(c: dict[str, Any]) -> str:
    v = c.get("value")
    v = " ".join(f"{k}={fmt.value(x)}" for k, x in v.items()) if isinstance(v, dict) else fmt.value(v)
    return f"{c.get('key')} {c.get('action')} {v}"


def describe_flag(flag: dict[str, Any]) -> list[str]:
    """One line for the default, one per targeting rule: `target: on when cluster EQUALS a and …`."""
    lines = [f"default: {'on' if flag.get('default') else 'off'}"]
    for name, rule in (flag.get("rules") or {}).items():
        conds = " and ".join(describe_condition(c) for c in rule.get("conditions", []))
        lines.append(f"{name}: {'on' if rule.get('when_match') else 'off'} when {conds}")
    return lines


def _rule_name(name: str) -> str:
    if name not in CATALOGUE:
        raise InvalidInput(f"no detector is named {name!r}; known: {', '.join(sorted(CATALOGUE))}")
    return name


def _effective(item: RawItem | None, name: str) -> RuleConfig:
    if item is None:
        return RuleConfig(name, params_for(name), {"default": True})
    rc = parse("rule", name, item.doc)
    assert isinstance(rc, RuleConfig)
    return rc


# -- reading ---------------------------------------------------------------------------------------


def cmd_list(ctx: Context) -> int:
    items = {i.name: i for i in ctx.store.items("rule")}
    rows: list[dict[str, Any]] = []
    for name in [*CATALOGUE, *sorted(set(items) - set(CATALOGUE))]:
        item = items.get(name)
        row: dict[str, Any] = {
            "rule": name,
            "version": item.version if item else 0,
            "updated_by": item.updated_by if item else None,
        }
        try:
            rc = _effective(item, name)
        except InvalidInput as e:
            # a bad item that got in: analyze keeps its last good version; say so here too
            rows.append({**row, "enabled": "rejected", "problem": str(e)})
            continue
        rows.append(
            {
                **row,
                "enabled": flag_state(rc.flag),
                "for_s": rc.params["for_s"],
                "severity": rc.params["severity"],
                "overrides": rc.overrides or {},
                "route": rc.route,
            }
        )
    if ctx.wants_json:
        ctx.json(rows)
        return 0
    table = [
        [
            r["rule"],
            r["enabled"],
            fmt.duration(float(r["for_s"])) if "for_s" in r else "-",
            r.get("severity", "-"),
            fmt.assignments(r.get("overrides")) if "problem" not in r else r["problem"],
            r.get("route") or "-",
            str(r["version"]),
            r["updated_by"] or "-",
        ]
        for r in rows
    ]
    headers = ["RULE", "ENABLED", "FOR", "SEVERITY", "OVERRIDES", "ROUTE", "VERSION", "UPDATED_BY"]
    ctx.print(*fmt.table(headers, table))
    return 0


def cmd_show(ctx: Context) -> int:
    name = _rule_name(ctx.args.rule)
    item = ctx.store.get("rule", name)
    rc = _effective(item, name)
    audit = [a for a in ctx.store.audit(AUDIT_SCAN) if a["kind"] == "rule" and a["name"] == name]
    audit = audit[:AUDIT_SHOWN]
    defaults = CATALOGUE[name].defaults
    if ctx.wants_json:
        ctx.json(
            {
                "rule": name,
                "doc": item.doc if item else None,
                "version": item.version if item else 0,
                "updated_by": item.updated_by if item else None,
                "updated_at": item.updated_at if item else None,
                "enabled": rc.flag,
                "params": rc.params,
                "overrides": rc.overrides or {},
                "route": rc.route,
                "audit": audit,
            }
        )
        return 0
    if item is None:
        ctx.print(f"rule {name}: not in the config table (the detector's defaults, enabled)")
    else:
        ctx.print(f"rule {name}: version {item.version}, by {item.updated_by} at {fmt.iso(item.updated_at)}")
    ctx.print(f"title: {CATALOGUE[name].title}")
    ctx.print(f"enabled: {flag_state(rc.flag)}", *(f"  {line}" for line in describe_flag(rc.flag)))
    ctx.print(f"route: {rc.route or '(matched by the routes)'}")
    ctx.print("params (defaults + overrides):")
    overrides = rc.overrides or {}
    rows = [
        [k, fmt.value(rc.params[k]), f"(default {fmt.value(defaults[k])})" if k in overrides else ""]
        for k in sorted(rc.params)
    ]
    ctx.print(*(f"  {line}" for line in fmt.table(["PARAM", "VALUE", ""], rows)[1:]))
    if item is not None:
        ctx.print("stored document:", *(f"  {line}" for line in fmt.doc_text(item.doc).splitlines()))
    ctx.print("recent changes:" if audit else "recent changes: none")
    for a in audit:
        ctx.print(f"  {a['at']}  {a['who']}  {a['action']}  version {a['version']}")
    return 0


# -- writing ---------------------------------------------------------------------------------------


def _switch(ctx: Context, on: bool) -> int:
    name = _rule_name(ctx.args.rule)
    item = ctx.store.get("rule", name)
    doc = current_doc(item)
    dropped = (doc.get("enabled") or {}).get("rules") or {}
    for rule_name, rule in dropped.items():
        conds = " and ".join(describe_condition(c) for c in rule.get("conditions", []))
        state = "on" if rule.get("when_match") else "off"
        verb = "would drop" if ctx.dry_run else "dropping"
        ctx.print(f"{verb} targeting rule {rule_name!r} ({state} when {conds})")
    doc["enabled"] = {"default": on}
    save(ctx, "rule", name, doc, item)
    return 0


def cmd_enable(ctx: Context) -> int:
    return _switch(ctx, True)


def _may_match(matchers: Iterable[Matcher], rule: str) -> bool:
    """Whether an alert of `rule` can match: the matchers on the `rule` label hold (the others
    depend on the alert: its cluster, severity, nodes)."""
    return all(m.matches({"rule": [rule]}) for m in matchers if m.label == "rule")


def inhibited_by(source: str, inhibitions: Iterable[Inhibition]) -> list[str]:
    """The rules whose alerts an alert of `source` can mute, in catalogue order. Only inhibitions
    whose source names rules count: one on other labels alone does not depend on `source`."""
    targets: set[str] = set()
    for inh in inhibitions:
        if any(m.label == "rule" for m in inh.source) and _may_match(inh.source, source):
            targets.update(r for r in CATALOGUE if r != source and _may_match(inh.target, r))
    return [r for r in CATALOGUE if r in targets]


def inhibitions_in_force(ctx: Context) -> list[Inhibition]:
    """The built-in inhibit rules with the table's `inhibit` items over them, as analyze reads
    them; an item that does not parse is left out (analyze keeps its last good version)."""
    items: dict[str, Inhibition | None] = {}
    for item in ctx.store.items("inhibit"):
        try:
            parsed = parse("inhibit", item.name, item.doc)
        except InvalidInput:
            continue
        if isinstance(parsed, InhibitConfig):
            items[item.name] = parsed.rule
    return effective(items)


def _on_somewhere(item: RawItem | None, name: str) -> bool:
    """Whether the rule can fire: its flag is not plainly off (a rejected item counts as on:
    analyze keeps its last good version)."""
    try:
        return flag_state(_effective(item, name).flag) != "off"
    except InvalidInput:
        return True


def _warn_inhibitions(ctx: Context, name: str) -> None:
    """Turning off a rule that inhibits others lets their muted alerts page: say which."""
    targets = inhibited_by(name, inhibitions_in_force(ctx))
    if not targets:
        return
    items = {i.name: i for i in ctx.store.items("rule")}
    if not _on_somewhere(items.get(name), name):
        return  # already off: nothing changes
    paging = [t for t in targets if _on_somewhere(items.get(t), t)]
    if paging:
        print(
            f"warning: {name} inhibits {', '.join(paging)}: while {name} is off, their alerts on the "
            f"nodes {name} would name page instead of being muted",
            file=ctx.err,
        )


def cmd_disable(ctx: Context) -> int:
    _warn_inhibitions(ctx, _rule_name(ctx.args.rule))
    return _switch(ctx, False)


def cmd_set(ctx: Context) -> int:
    name = _rule_name(ctx.args.rule)
    changes = dict(inputs.parse_assignment(a) for a in ctx.args.assignments)
    if ctx.args.severity is not None:
        changes["severity"] = ctx.args.severity
    if not changes and ctx.args.route is None and not ctx.args.no_route and ctx.args.description is None:
        raise InvalidInput("rules set: nothing to set (give key=value, --severity, --route or --description)")
    try:
        params_for(name, changes)  # name the bad parameter before reading the table
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    item = ctx.store.get("rule", name)
    doc = current_doc(item)
    if changes:
        doc["params"] = {**(doc.get("params") or {}), **changes}
    if ctx.args.route is not None:
        doc["route"] = ctx.args.route
    if ctx.args.no_route:
        doc.pop("route", None)
    if ctx.args.description is not None:
        doc["description"] = ctx.args.description
    save(ctx, "rule", name, doc, item)
    return 0


def cmd_unset(ctx: Context) -> int:
    name = _rule_name(ctx.args.rule)
    item = ctx.store.get("rule", name)
    doc = current_doc(item)
    params = dict(doc.get("params") or {})
    missing = [k for k in ctx.args.keys if k not in params]
    if missing:
        have = ", ".join(sorted(params)) or "none"
        raise InvalidInput(f"rule {name}: {', '.join(missing)} not overridden (overrides: {have})")
    for k in ctx.args.keys:
        del params[k]
    if params:
        doc["params"] = params
    else:
        doc.pop("params", None)
    save(ctx, "rule", name, doc, item)
    return 0


def cmd_target(ctx: Context) -> int:
    a = ctx.args
    name = _rule_name(a.rule)
    flag = target_flag(
        clusters=a.cluster,
        node_groups=a.node_group,
        teams=a.team,
        severities=a.severity,
        between=inputs.parse_between(a.between) if a.between else None,
        days=inputs.parse_days(a.days) if a.days else None,
        tz=a.tz,
        mute=a.mute,
    )
    item = ctx.store.get("rule", name)
    doc = current_doc(item)
    doc["enabled"] = flag
    save(ctx, "rule", name, doc, item)
    return 0


def read_json_file(path: str) -> Any:
    """A JSON document from a file, or stdin for "-"."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return json.loads(text)
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path} is not JSON: {e}") from None


def cmd_flag(ctx: Context) -> int:
    name = _rule_name(ctx.args.rule)
    flag = read_json_file(ctx.args.file)
    item = ctx.store.get("rule", name)
    doc = current_doc(item)
    doc["enabled"] = flag
    save(ctx, "rule", name, doc, item)
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser("rules", help="the detector rules: on/off, targeting, parameters")
    rs = rules.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = rs.add_parser("list", parents=common, help="one row per detector")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_list)

    p = rs.add_parser("show", parents=common, help="a rule's document, effective params and history")
    p.add_argument("rule")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_show)

    for verb, func, text in (
        ("enable", cmd_enable, "on everywhere (drops targeting rules)"),
        ("disable", cmd_disable, "off everywhere (drops targeting rules)"),
    ):
        p = rs.add_parser(verb, parents=[*common, *write], help=text)
        p.add_argument("rule")
        p.set_defaults(func=func)

    p = rs.add_parser("set", parents=[*common, *write], help="override parameters: key=value …")
    p.add_argument("rule")
    p.add_argument("assignments", nargs="*", metavar="key=value", help="JSON values; for_s=5m for *_s keys")
    p.add_argument("--severity", choices=SEVERITIES, help="the severity its alerts carry")
    p.add_argument("--route", help="send its alerts to this route, skipping route matching")
    p.add_argument("--no-route", action="store_true", help="forget --route: match the routes again")
    p.add_argument("--description", help="a note for operators")
    p.set_defaults(func=cmd_set)

    p = rs.add_parser("unset", parents=[*common, *write], help="back to the detector's default")
    p.add_argument("rule")
    p.add_argument("keys", nargs="+", metavar="key")
    p.set_defaults(func=cmd_unset)

    p = rs.add_parser(
        "target", parents=[*common, *write], help="on only where the conditions hold (--mute: off only there)"
    )
    p.add_argument("rule")
    p.add_argument("--cluster", action="append", metavar="C")
    p.add_argument("--node-group", action="append", metavar="G")
    p.add_argument("--team", action="append", metavar="T")
    p.add_argument("--severity", action="append", choices=SEVERITIES)
    p.add_argument("--between", metavar="HH:MM-HH:MM", help="time of day (crossing midnight is fine)")
    p.add_argument("--days", metavar="MON,TUE,…")
    p.add_argument("--tz", metavar="ZONE", help="IANA time zone of --between/--days (default UTC)")
    p.add_argument("--mute", action="store_true", help="off where the conditions hold, on elsewhere")
    p.set_defaults(func=cmd_target)

    p = rs.add_parser("flag", parents=[*common, *write], help="set the raw Powertools feature document")
    p.add_argument("rule")
    p.add_argument("--file", required=True, help="JSON file ('-' for stdin)")
    p.set_defaults(func=cmd_flag)
