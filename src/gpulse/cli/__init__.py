"""`gpulse`: the operator CLI for the config table — rules, routes, silences, teams, the audit
trail — and a dry run of analyze. The same code against a deployed stack (`--stack`) and the
local stack (`--local`); see docs/operations.md.

Exit codes: 0 ok; 2 invalid input (the message, no traceback); 3 conflict (the item changed
since it was read); 1 a store or AWS error (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError

from gpulse.cli import config, dlq, dryrun, nodes, routes, rules, silences, teams
from gpulse.cli.connect import LOCAL_DIR, STACK_ENV, Connection, resolve
from gpulse.cli.context import Context, Resolver
from gpulse.config.store import ConfigConflict
from gpulse.errors import GpulseError, InvalidInput

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_CONFLICT = 0, 1, 2, 3


def _resolve(args: argparse.Namespace) -> Connection:
    return resolve(args.stack, args.region, args.local)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree. Connection options go after the command (`gpulse rules list
    --local`); write options (--dry-run, --who, --if-version) on every command that writes."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where gpulse runs")
    target = where.add_mutually_exclusive_group()
    target.add_argument("--stack", metavar="NAME", help=f"a deployed stack (default ${STACK_ENV})")
    target.add_argument(
        "--local",
        nargs="?",
        const=LOCAL_DIR,
        metavar="RUN_DIR",
        help=f"the local stack (its run directory, default {LOCAL_DIR}); put it last or use --local=DIR",
    )
    where.add_argument("--region", help="AWS region of --stack (default: the usual AWS config)")

    write = argparse.ArgumentParser(add_help=False)
    w = write.add_argument_group("writing")
    w.add_argument("--dry-run", action="store_true", help="validate and show the change; write nothing")
    w.add_argument("--who", help="recorded as the author (default: your AWS identity, else $USER@host)")
    w.add_argument(
        "--if-version",
        type=int,
        metavar="N",
        help="write only if the item is still at version N (0: only if it does not exist)",
    )

    parser = argparse.ArgumentParser(prog="gpulse", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (rules, routes, silences, teams, config, dryrun, dlq, nodes):
        module.register(sub, [common], [write])
    return parser


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
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
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
    except (ClientError, BotoCoreError) as e:
        print(f"error: AWS: {e}", file=err)
        return EXIT_ERROR
