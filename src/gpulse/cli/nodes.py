"""`gpulse nodes …`: register, rotate and remove the secrets nodes sign their batches with.

Each node's secret is an SSM SecureString at `{NodeSecretsPrefix}/{cluster}/{node}` (the stack's
output). `rotate` keeps the old one at `….previous` as `{"secret", "until"}`, which ingest still
accepts until then, so no batch is refused while the node changes over (docs/operations.md,
"Rotating a node's secret"). A new secret is printed once, alone on stdout (so that `gpulse nodes
add c n > secret` works); everything else goes to stderr. Secrets are never logged.
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from botocore.exceptions import ClientError

from gpulse.cli import format as fmt
from gpulse.cli import inputs
from gpulse.cli.context import Context
from gpulse.errors import InvalidInput
from gpulse.secrets import PREVIOUS_SUFFIX, SECRET_MAX_AGE_S, parse_previous
from gpulse.wire.batch import NAME_PATTERN

PREFIX_OUTPUT = "NodeSecretsPrefix"
DEFAULT_OVERLAP = "1h"
# Ingest caches a node's secrets this long: an overlap shorter than that could end while ingest
# still knows only the old secret as current, and the node, already switched, would be refused.
MIN_OVERLAP_S = SECRET_MAX_AGE_S


def _name(kind: str, value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"{kind} {value[:64]!r} must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit"
        )
    if kind == "node" and value.endswith(PREVIOUS_SUFFIX):
        raise InvalidInput(f"node names ending in {PREVIOUS_SUFFIX!r} are reserved")
    return value


class _Nodes:
    """The SSM side of the commands: parameter names and reads/writes, for one context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ssm: Any = ctx.conn.client("ssm")
        self.prefix = ctx.conn.output(PREFIX_OUTPUT).rstrip("/")

    def param(self, cluster: str, node: str) -> str:
        return f"{self.prefix}/{_name('cluster', cluster)}/{_name('node', node)}"

    def read(self, name: str) -> str | None:
        try:
            return str(self.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return None
            raise

    def write(self, name: str, value: str, *, overwrite: bool) -> None:
        self.ssm.put_parameter(
            Name=name,
            Value=value,
            Type="SecureString",
            Overwrite=overwrite,
            Description="gpulse node signing secret (gpulse nodes)",
        )

    def delete(self, name: str) -> bool:
        try:
            self.ssm.delete_parameter(Name=name)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return False
            raise
        return True


def _announce(ctx: Context, secret: str, *lines: str) -> None:
    for line in lines:
        print(line, file=ctx.err)
    ctx.print(secret)  # alone on stdout, once


def cmd_add(ctx: Context) -> int:
    a = ctx.args
    _name("cluster", a.cluster), _name("node", a.node)  # before anything is contacted
    nodes = _Nodes(ctx)
    name = nodes.param(a.cluster, a.node)
    secret = secrets.token_hex(32)
    try:
        nodes.write(name, secret, overwrite=False)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ParameterAlreadyExists":
            raise InvalidInput(
                f"node {a.cluster}/{a.node} is registered already; "
                "`gpulse nodes rotate` gives it a new secret"
            ) from None
        raise
    _announce(
        ctx,
        secret,
        f"node {a.cluster}/{a.node} registered at {name}.",
        "Its secret follows, shown this once: put it in the node's secret file (mode 0600).",
    )
    return 0


def cmd_rotate(ctx: Context) -> int:
    a = ctx.args
    _name("cluster", a.cluster), _name("node", a.node)  # before anything is contacted
    overlap = inputs.parse_duration(a.overlap)
    if overlap < MIN_OVERLAP_S:
        raise InvalidInput(
            f"--overlap {a.overlap} is shorter than ingest's secret cache ({fmt.duration(MIN_OVERLAP_S)}); "
            "the node could be refused before ingest sees its new secret"
        )
    nodes = _Nodes(ctx)
    name = nodes.param(a.cluster, a.node)
    old = nodes.read(name)
    if old is None:
        raise InvalidInput(f"node {a.cluster}/{a.node} is not registered; `gpulse nodes add` registers it")
    now = ctx.clock()
    until = now + overlap
    notes = []
    stored = nodes.read(name + PREVIOUS_SUFFIX)
    earlier = parse_previous(stored) if stored is not None else None
    if earlier is not None and earlier[1] > now:
        notes.append(
            f"the secret before the last rotation is no longer accepted (it was until {fmt.iso(earlier[1])})"
        )
    # The old secret is kept first, the new one written second: whenever ingest reads, the
    # secret the node signs with (old, then new) is one it accepts.
    nodes.write(name + PREVIOUS_SUFFIX, json.dumps({"secret": old.strip(), "until": until}), overwrite=True)
    secret = secrets.token_hex(32)
    nodes.write(name, secret, overwrite=True)
    _announce(
        ctx,
        secret,
        f"node {a.cluster}/{a.node}: new secret at {name}; the old one is accepted until {fmt.iso(until)}.",
        *notes,
        "Put the new secret in the node's secret file before then. It follows, shown this once:",
    )
    return 0


def cmd_remove(ctx: Context) -> int:
    a = ctx.args
    _name("cluster", a.cluster), _name("node", a.node)  # before anything is contacted
    nodes = _Nodes(ctx)
    name = nodes.param(a.cluster, a.node)
    if not nodes.delete(name):
        raise InvalidInput(f"node {a.cluster}/{a.node} is not registered")
    nodes.delete(name + PREVIOUS_SUFFIX)
    ctx.print(
        f"node {a.cluster}/{a.node} removed; ingest may still accept its secret for up to "
        f"{fmt.duration(SECRET_MAX_AGE_S)} (its cache)"
    )
    return 0


def cmd_list(ctx: Context) -> int:
    nodes = _Nodes(ctx)
    now = ctx.clock()
    found: dict[tuple[str, str], dict[str, Any]] = {}
    previous: list[tuple[str, str, str]] = []
    pages = nodes.ssm.get_paginator("get_parameters_by_path").paginate(
        Path=nodes.prefix,
        Recursive=True,
        WithDecryption=False,  # names and dates only
    )
    for page in pages:
        for p in page.get("Parameters", []):
            cluster, _, node = p["Name"][len(nodes.prefix) + 1 :].partition("/")
            if node.endswith(PREVIOUS_SUFFIX):
                previous.append((cluster, node.removesuffix(PREVIOUS_SUFFIX), p["Name"]))
            else:
                found[(cluster, node)] = {"cluster": cluster, "node": node, "previous_until": None}
                found[(cluster, node)]["set_at"] = p["LastModifiedDate"].timestamp()
    for cluster, node, name in previous:
        stored = nodes.read(name)
        parsed = parse_previous(stored) if stored is not None else None
        if (cluster, node) in found and parsed is not None and parsed[1] > now:
            found[(cluster, node)]["previous_until"] = parsed[1]
    rows = [found[k] for k in sorted(found)]
    if ctx.wants_json:
        ctx.json(rows)
        return 0
    if not rows:
        ctx.print(f"no nodes registered under {nodes.prefix}")
        return 0
    table = [
        [
            r["cluster"],
            r["node"],
            fmt.iso(r["set_at"]),
            fmt.iso(r["previous_until"]) if r["previous_until"] is not None else "-",
        ]
        for r in rows
    ]
    ctx.print(*fmt.table(["CLUSTER", "NODE", "SECRET SET", "OLD SECRET ACCEPTED UNTIL"], table))
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    nodes = sub.add_parser("nodes", help="nodes' signing secrets: add, rotate, remove, list")
    ns = nodes.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = ns.add_parser("add", parents=common, help="register a node; prints its new secret once")
    p.add_argument("cluster")
    p.add_argument("node")
    p.set_defaults(func=cmd_add)

    p = ns.add_parser(
        "rotate", parents=common, help="a new secret; the old one is accepted for --overlap; prints it once"
    )
    p.add_argument("cluster")
    p.add_argument("node")
    p.add_argument(
        "--overlap",
        default=DEFAULT_OVERLAP,
        metavar="DURATION",
        help=f"how long the old secret stays accepted (default {DEFAULT_OVERLAP}, at least "
        f"{fmt.duration(MIN_OVERLAP_S)})",
    )
    p.set_defaults(func=cmd_rotate)

    p = ns.add_parser("remove", parents=common, help="forget a node and its secrets")
    p.add_argument("cluster")
    p.add_argument("node")
    p.set_defaults(func=cmd_remove)

    p = ns.add_parser("list", parents=common, help="registered nodes (never their secrets)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_list)
