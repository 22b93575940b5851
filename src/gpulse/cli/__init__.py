"""`gpulse`: the operator CLI for the config table — rules, routes, silences, teams, the audit
trail — and a dry run of analyze. The same code against a deployed stack (`--stack`) and the
local stack (`--local`); see docs/operations.md.

Exit codes: 0 ok; 2 invalid input (the message, no traceback); 3 conflict (the item changed
since it was read); 1 a store or AWS error (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from gpulse.cli import config, dlq, dryrun, inhibit, nodes, routes, rules, silences, teams
from gpulse.cli.connect import DEMO_DOWN, LOCAL_DIR, STACK_ENV, Connection, resolve
from gpulse.cli.context import Context, Resolver
from gpulse.config.store import ConfigConflict
from gpulse.errors import GpulseError, InvalidInput

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_CONFLICT = 0, 1, 2, 3


def _resolve(args: argparse.Namespace) -> Connection:
    return resolve(args.stack, args.region, args.local)


class Parser(argparse.ArgumentParser):
    """argparse that answers a mistyped choice (a command, an action, a --severity) with the
    closest valid one: Python 3.11's argparse only lists them. Subparsers inherit the class."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        names = [str(c) for c in choices]
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise argparse.ArgumentError(
            action, f"invalid choice: {value!r}{hint} (choose from {', '.join(map(repr, names))})"
        )


# One example per command, shown at the end of its --help (a group's help lists its actions').
EXAMPLES: dict[str, str] = {
    "rules list": "gpulse rules list --local",
    "rules show": "gpulse rules show imbalance --stack gpulse-prod",
    "rules enable": "gpulse rules enable network --local",
    "rules disable": "gpulse rules disable imbalance --dry-run --local",
    "rules set": "gpulse rules set idle_held for_s=10m --severity warning --local",
    "rules unset": "gpulse rules unset idle_held for_s --local",
    "rules target": "gpulse rules target imbalance --cluster prod --between 09:00-18:00 --tz UTC --local",
    "rules flag": "gpulse rules flag imbalance --file flag.json --local",
    "routes list": "gpulse routes list --local",
    "routes show": "gpulse routes show default --local",
    "routes delete": "gpulse routes delete ml --local",
    "routes set": 'gpulse routes set ml --channel slack:/gpulse/prod/webhooks/ml --match team="ml" --local',
    "silence add": 'gpulse silence add --match node="node-05" --for 2h --comment "reboot" --local',
    "silence list": "gpulse silence list --local",
    "silence expire": "gpulse silence expire 3f2a9c1e --local",
    "teams set": "gpulse teams set ml --user alice --user bob --node-group a100-pool --local",
    "teams list": "gpulse teams list --local",
    "teams delete": "gpulse teams delete ml --local",
    "inhibit list": "gpulse inhibit list --local",
    "inhibit add": "gpulse inhibit add imbalance_throttling --source 'rule=\"imbalance\"' "
    "--target 'rule=\"throttling\"' --local",
    "inhibit remove": "gpulse inhibit remove imbalance_network --local",
    "inhibit restore": "gpulse inhibit restore imbalance_network --local",
    "config problems": "gpulse config problems --local",
    "config audit": "gpulse config audit --limit 20 --local",
    "dry-run": "gpulse dry-run --cluster demo --local",
    "dlq list": "gpulse dlq list --local",
    "dlq show": "gpulse dlq show 4f1c2a --local",
    "dlq redrive": "gpulse dlq redrive --all --local",
    "dlq purge": "gpulse dlq purge --yes --local",
    "nodes add": "gpulse nodes add prod dgx-01 --stack gpulse-prod",
    "nodes rotate": "gpulse nodes rotate prod dgx-01 --overlap 2h --stack gpulse-prod",
    "nodes remove": "gpulse nodes remove prod dgx-01 --stack gpulse-prod",
    "nodes list": "gpulse nodes list --stack gpulse-prod",
}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's direct subcommands by name (aliases included), {} for a leaf."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command path ("rules list", "dry-run") → its parser; aliases are left out."""
    found: dict[str, argparse.ArgumentParser] = {}
    seen: set[int] = set()
    for name, sub in subcommands(parser).items():
        if id(sub) in seen:
            continue  # an alias of one already listed
        seen.add(id(sub))
        path = f"{prefix} {name}".strip()
        found[path] = sub
        found.update(commands(sub, path))
    return found


def _add_examples(parser: argparse.ArgumentParser) -> None:
    for path, sub in commands(parser).items():
        if sub.epilog:
            continue  # the command's module wrote its own
        mine = [EXAMPLES[path]] if path in EXAMPLES else []
        mine += [example for key, example in EXAMPLES.items() if key.startswith(f"{path} ")]
        if mine:
            sub.epilog = ("example:\n  " if len(mine) == 1 else "examples:\n  ") + "\n  ".join(mine)
            sub.formatter_class = argparse.RawDescriptionHelpFormatter


def _where(parser: argparse.ArgumentParser, default: Any) -> None:
    """The connection options. Given to the top parser with real defaults and to every command
    with SUPPRESS, so they work before the command (`gpulse --local DIR rules list`) and after
    it, and one given after the command is not overwritten by the top parser's default."""
    where = parser.add_argument_group("where gpulse runs")
    target = where.add_mutually_exclusive_group()
    target.add_argument(
        "--stack", metavar="NAME", default=default, help=f"a deployed stack (default ${STACK_ENV})"
    )
    target.add_argument(
        "--local",
        nargs="?",
        const=LOCAL_DIR,
        default=default,
        metavar="RUN_DIR",
        help=f"the local stack (its run directory, default {LOCAL_DIR})",
    )
    where.add_argument(
        "--region", default=default, help="AWS region of --stack (default: the usual AWS config)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree. Connection options go before or after the command; write options
    (--dry-run, --who, --if-version) on every command that writes."""
    common = argparse.ArgumentParser(add_help=False)
    _where(common, argparse.SUPPRESS)

    write = argparse.ArgumentParser(add_help=False)
    w = write.add_argument_group("writing")
    w.add_argument("--dry-run", action="store_true", help="validate and show the change; write nothing")
    w.add_argument("--who", help="recorded as the author (default: your AWS identity; locally $USER@host)")
    w.add_argument(
        "--if-version",
        type=int,
        metavar="N",
        help="write only if the item is still at version N (0: only if it does not exist)",
    )

    parser = Parser(
        prog="gpulse",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="example:\n  gpulse --local .gpulse-local rules list   (while `make demo` runs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _where(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (rules, routes, silences, teams, inhibit, config, dryrun, dlq, nodes):
        module.register(sub, [common], [write])
    _add_examples(parser)
    return parser


def _bare_local(argv: Sequence[str], names: set[str]) -> list[str]:
    """`--local` followed by a command name means the default run directory, not a directory
    named like the command (`gpulse --local rules list`)."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--local" and out[i + 1] in names:
            out[i] = f"--local={LOCAL_DIR}"
    return out


def main(
    argv: Sequence[str] | None = None,
    *,
    resolver: Resolver | None = None,
    clock: Callable[[], float] = time.time,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one command; returns its exit code. `resolver` (args → Connection), `clock` and the
    streams are injectable for tests."""
    out, err = out or sys.stdout, err or sys.stderr
    # library logs (a rejected config item, …) are reported by the commands themselves. The
    # handler goes on the root logger, not on "gpulse": Powertools' Logger(service="gpulse")
    # takes the first handler there as its own and would find one with no formatter.
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    names = {n for sub in [parser, *commands(parser).values()] for n in subcommands(sub)}  # aliases too
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(_bare_local(argv, names))
            if args.stack is not None and args.local is not None:
                parser.error("--stack and --local name two different places: give one")
    except SystemExit as e:  # argparse has printed usage and the error (or --help)
        return int(e.code) if isinstance(e.code, int) else EXIT_INVALID
    ctx = Context(args, resolver or _resolve, clock, out, err)
    try:
        code: int = args.func(ctx)
        return code
    except ConfigConflict as e:
        print(f"conflict: {e}", file=err)
        return EXIT_CONFLICT
    except InvalidInput as e:
        print(f"error: {e}", file=err)
        return EXIT_INVALID
    except GpulseError as e:
        print(f"error: {e}", file=err)
        return EXIT_ERROR
    except EndpointConnectionError as e:
        if args.local is not None:  # moto is gone: the demo (or gpulse-local) has stopped
            print(f"error: {DEMO_DOWN}", file=err)
        else:
            print(f"error: AWS: {e}", file=err)
        return EXIT_ERROR
    except (ClientError, BotoCoreError) as e:
        print(f"error: AWS: {e}", file=err)
        return EXIT_ERROR
