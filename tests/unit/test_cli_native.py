"""The CLI as an operator types it: options before or after the command, "did you mean", the
`silences` alias, an example in every command's help, the operator as the local author. No stack."""

from __future__ import annotations

import argparse
import io
import shlex
import socket
from pathlib import Path

import pytest

from gpulse.alerting.matchers import parse_all
from gpulse.analyze.inhibit import DEFAULT_INHIBITIONS, Inhibition
from gpulse.cli import EXAMPLES, build_parser, commands, main
from gpulse.cli.connect import Connection, caller, connect_local
from gpulse.cli.rules import inhibited_by
from gpulse.detect.catalogue import CATALOGUE

Seen = list[argparse.Namespace]


def run(*argv: str) -> tuple[int, str, str, Seen]:
    """Run the CLI with a resolver that records the parsed arguments and stops there."""
    seen: Seen = []

    def resolver(args: argparse.Namespace) -> Connection:
        seen.append(args)
        raise SystemExit(0)  # stop before anything is contacted

    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), resolver=resolver, out=out, err=err)
    except SystemExit:
        code = 0
    return code, out.getvalue(), err.getvalue(), seen


@pytest.mark.parametrize(
    ("argv", "local"),
    [
        (["--local", "/tmp/run", "rules", "list"], "/tmp/run"),  # what the demo prints
        (["rules", "list", "--local", "/tmp/run"], "/tmp/run"),
        (["--local", "rules", "list"], ".gpulse-local"),  # bare --local before the command
        (["rules", "list", "--local"], ".gpulse-local"),
        (["--local=/tmp/run", "rules", "list"], "/tmp/run"),
        (["rules", "list"], None),
    ],
)
def test_connection_options_before_or_after_the_command(argv: list[str], local: str | None) -> None:
    code, _, err, seen = run(*argv)
    assert (code, err) == (0, "")
    [args] = seen
    assert (args.command, args.action, args.local, args.stack, args.region) == (
        "rules",
        "list",
        local,
        None,
        None,
    )


def test_stack_and_region_before_the_command() -> None:
    _, _, _, [args] = run("--stack", "gpulse-prod", "--region", "eu-west-1", "rules", "show", "imbalance")
    assert (args.stack, args.region, args.local, args.rule) == ("gpulse-prod", "eu-west-1", None, "imbalance")


def test_an_option_after_the_command_wins_over_one_before() -> None:
    _, _, _, [args] = run("--region", "eu-west-1", "rules", "list", "--region", "us-east-1")
    assert args.region == "us-east-1"


def test_stack_and_local_together_are_refused() -> None:
    code, _, err, seen = run("--stack", "gpulse-prod", "rules", "list", "--local")
    assert (code, seen) == (2, [])
    assert err.endswith("gpulse: error: --stack and --local name two different places: give one\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["rulez", "list"],
            "argument COMMAND: invalid choice: 'rulez'; did you mean 'rules'? (choose from 'rules', "
            "'routes', 'silence', 'silences', 'teams', 'inhibit', 'config', 'dry-run', 'dlq', 'nodes')",
        ),
        (
            ["rules", "disabel", "imbalance"],
            "argument ACTION: invalid choice: 'disabel'; did you mean 'disable'? (choose from 'list', "
            "'show', 'enable', 'disable', 'set', 'unset', 'target', 'flag')",
        ),
        (
            ["rules", "set", "idle_held", "--severity", "warn"],
            "argument --severity: invalid choice: 'warn'; did you mean 'warning'? (choose from "
            "'critical', 'warning', 'info')",
        ),
        (
            ["frobnicate"],
            "argument COMMAND: invalid choice: 'frobnicate' (choose from 'rules', 'routes', 'silence', "
            "'silences', 'teams', 'inhibit', 'config', 'dry-run', 'dlq', 'nodes')",
        ),
    ],
)
def test_a_typo_gets_did_you_mean(argv: list[str], message: str) -> None:
    code, out, err, seen = run(*argv)
    assert (code, out, seen) == (2, "", [])
    assert err.splitlines()[-1].split(": error: ", 1)[1] == message


def test_silences_is_silence() -> None:
    _, _, _, [plural] = run("--local", "silences", "list")
    _, _, _, [singular] = run("silence", "list", "--local")
    assert plural.func is singular.func and plural.action == singular.action == "list"
    assert plural.local == singular.local == ".gpulse-local"


def test_every_command_has_an_example_that_parses() -> None:
    parser = build_parser()
    leaves = {path: p for path, p in commands(parser).items() if not commands(p)}
    assert set(leaves) <= set(EXAMPLES) | {path for path, p in leaves.items() if p.epilog}
    for path, sub in leaves.items():
        assert sub.epilog is not None and sub.epilog.startswith("example:\n  gpulse "), path
        example = sub.epilog.split("\n  ")[1]
        args = parser.parse_args(shlex.split(example)[1:])  # the example is a valid command line
        assert " ".join([args.command, *([args.action] if getattr(args, "action", None) else [])]) == path


def test_help_shows_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert main(["rules", "disable", "--help"], out=out) == 0
    assert out.getvalue().endswith("example:\n  gpulse rules disable imbalance --dry-run --local\n")
    out = io.StringIO()
    assert main(["rules", "--help"], out=out) == 0
    assert "examples:\n  gpulse rules list --local\n  gpulse rules show imbalance" in out.getvalue()


def test_local_writes_are_the_operators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "alice")
    (tmp_path / "outputs.json").write_text(
        '{"endpoint": "http://127.0.0.1:5123", "region": "us-east-1", "outputs": {}}'
    )
    conn = connect_local(tmp_path)
    # No STS call: moto would answer the same fake ARN for every operator.
    assert caller(conn) == f"alice@{socket.gethostname()}"


def test_which_rules_a_rule_inhibits() -> None:
    builtin = list(DEFAULT_INHIBITIONS.values())
    assert inhibited_by("imbalance", builtin) == ["idle_held", "mig_idle", "network"]
    assert inhibited_by("network", builtin) == []
    assert len(inhibited_by("silent_node", builtin)) == len(CATALOGUE) - 1
    # an inhibition whose source is not about rules does not depend on any one rule
    by_severity = Inhibition("crit", parse_all(['severity="critical"']), parse_all(['rule="numa"']))
    assert inhibited_by("imbalance", [by_severity]) == []
    by_regex = Inhibition("re", parse_all(['rule=~"imbalance|gpu_imbalance"']), parse_all(['rule!~"n.*"']))
    assert inhibited_by("gpu_imbalance", [by_regex])[:3] == ["imbalance", "idle_held", "hardware_errors"]
    assert "numa" not in inhibited_by("gpu_imbalance", [by_regex])
