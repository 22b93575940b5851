"""The config table's item documents: one JSON schema per kind (config-v1.schema.json), then
the checks a schema cannot make (a detector's parameter ranges, a feature flag's conditions,
matcher syntax). The CLI validates with this before writing; readers validate again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import fastjsonschema
from aws_lambda_powertools.utilities.feature_flags.exceptions import SchemaValidationError
from aws_lambda_powertools.utilities.feature_flags.schema import SchemaValidator

from gpulse.alerting import routes as r
from gpulse.alerting.inhibition import DEFAULT_INHIBITIONS, Inhibition
from gpulse.alerting.matchers import parse_all
from gpulse.alerting.silences import Silence
from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.errors import InvalidInput

Kind = Literal["rule", "route", "silence", "team", "inhibit"]
KINDS: tuple[Kind, ...] = ("rule", "route", "silence", "team", "inhibit")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ENABLED_BY_DEFAULT: dict[str, Any] = {"default": True}


@dataclass(frozen=True)
class RuleConfig:
    name: str
    params: dict[str, Any]  # the detector's defaults with the overrides laid over them
    flag: dict[str, Any]  # a Powertools feature: {"default": bool, "rules": {...}}
    route: str | None = None
    overrides: dict[str, Any] | None = None  # what the item changed (for listing)


@dataclass(frozen=True)
class Team:
    name: str
    users: tuple[str, ...] = ()
    node_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class InhibitConfig:
    """An inhibit item: the rule it defines, or None where it disables the built-in of its name."""

    name: str
    rule: Inhibition | None


Parsed = RuleConfig | r.Route | Silence | Team | InhibitConfig


@cache
def _validator(kind: str) -> Any:
    doc = json.loads(resources.files("gpulse.config").joinpath("config-v1.schema.json").read_text())
    schema = {**doc["definitions"][kind], "definitions": doc["definitions"]}
    return fastjsonschema.compile(schema)


def parse(kind: str, name: str, doc: Any) -> Parsed:
    """Validate one item's document and build what it means; InvalidInput says what is wrong."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown config kind {kind!r}; kinds are {', '.join(KINDS)}")
    if not NAME.match(name):
        raise InvalidInput(f"{kind} name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    try:
        _validator(kind)(doc)
    except fastjsonschema.JsonSchemaException as e:
        raise InvalidInput(f"{kind} {name}: {e}") from None
    if kind == "rule":
        return _rule(name, doc)
    if kind == "route":
        return _route(name, doc)
    if kind == "inhibit":
        return _inhibit(name, doc)
    return _silence(name, doc) if kind == "silence" else _team(name, doc)


def _rule(name: str, doc: dict[str, Any]) -> RuleConfig:
    if name not in CATALOGUE:
        raise InvalidInput(f"no detector is named {name!r}; known: {', '.join(sorted(CATALOGUE))}")
    overrides = doc.get("params") or {}
    try:
        params = params_for(name, overrides)
    except ValueError as e:
        raise InvalidInput(f"rule {name}: {e}") from None
    flag = doc.get("enabled", ENABLED_BY_DEFAULT)
    if not isinstance(flag.get("default"), bool):
        raise InvalidInput(f"rule {name}: enabled.default must be true or false")
    try:
        SchemaValidator({name: flag}).validate()
    except SchemaValidationError as e:
        raise InvalidInput(f"rule {name}: enabled: {e}") from None
    return RuleConfig(name, params, flag, doc.get("route"), overrides or None)


def _route(name: str, doc: dict[str, Any]) -> r.Route:
    matchers = parse_all(doc.get("matchers", []))
    if name == r.DEFAULT_ROUTE and matchers:
        raise InvalidInput("route default takes what no other route took: it has no matchers")
    mentions = doc.get("mentions", {})
    wait = float(doc.get("group_wait_s", r.GROUP_WAIT_S))
    interval = float(doc.get("group_interval_s", r.GROUP_INTERVAL_S))
    repeat = float(doc.get("repeat_interval_s", r.REPEAT_INTERVAL_S))
    if repeat < interval:
        raise InvalidInput(f"route {name}: repeat_interval_s ({repeat:g}) is shorter than group_interval_s")
    return r.Route(
        name=name,
        channels=tuple(r.ChannelRef(c["kind"], c["secret"]) for c in doc["channels"]),
        matchers=matchers,
        group_by=tuple(doc.get("group_by", r.GROUP_BY)),
        group_wait_s=wait,
        group_interval_s=interval,
        repeat_interval_s=repeat,
        send_resolved=bool(doc.get("send_resolved", True)),
        order=int(doc.get("order", 100)),
        continue_=bool(doc.get("continue", False)),
        mention_users=dict(mentions.get("users", {})),
        mention_teams=dict(mentions.get("teams", {})),
    )


def _silence(name: str, doc: dict[str, Any]) -> Silence:
    if doc["ends_at"] <= doc["starts_at"]:
        raise InvalidInput(f"silence {name}: ends_at must be after starts_at")
    return Silence(
        id=name,
        matchers=parse_all(doc["matchers"]),
        starts_at=float(doc["starts_at"]),
        ends_at=float(doc["ends_at"]),
        created_by=doc["created_by"],
        comment=doc.get("comment", ""),
    )


def _inhibit(name: str, doc: dict[str, Any]) -> InhibitConfig:
    if doc.get("disabled") is True:
        extra = sorted(set(doc) - {"disabled", "description"})
        if extra:
            raise InvalidInput(f"inhibit {name}: a disabled rule has nothing else, not {', '.join(extra)}")
        if name not in DEFAULT_INHIBITIONS:
            raise InvalidInput(
                f"inhibit {name}: only a built-in rule can be disabled "
                f"({', '.join(sorted(DEFAULT_INHIBITIONS))}); delete the item instead"
            )
        return InhibitConfig(name, None)
    missing = [k for k in ("source_matchers", "target_matchers") if k not in doc]
    if missing:
        raise InvalidInput(f"inhibit {name}: {' and '.join(missing)} required")
    source, target = parse_all(doc["source_matchers"]), parse_all(doc["target_matchers"])
    equal = tuple(doc.get("equal", ["node"]))
    return InhibitConfig(name, Inhibition(name, source, target, equal, doc.get("description", "")))


def _team(name: str, doc: dict[str, Any]) -> Team:
    return Team(name, tuple(doc.get("users", [])), tuple(doc.get("node_groups", [])))
