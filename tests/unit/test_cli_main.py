"""The CLI without a stack: exit codes, refusals made before connecting, the connection's checks,
the dry run's fates, and the output helpers."""

from __future__ import annotations

import argparse
import io
import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from gpulse.alerting.state import AlertRecord, Rule
from gpulse.cli import format as fmt
from gpulse.cli import main
from gpulse.cli.connect import Connection, caller, connect_local, connect_stack, resolve
from gpulse.cli.dryrun import NoPublish, fate
from gpulse.detect.base import Condition
from gpulse.errors import ConfigurationError, InvalidInput
from gpulse.finding import Finding

URL = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


def never(args: argparse.Namespace) -> Connection:
    raise AssertionError("the command connected, but it should have stopped before")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), resolver=never, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_url_channel_is_refused_before_connecting_and_never_printed() -> None:
    code, out, err = run("routes", "set", "ml", "--channel", URL, "--local")
    assert code == 2
    assert err.startswith("error: a channel is the name of an SSM parameter that holds the webhook")
    assert "SECRET" not in out + err and "hooks.slack.com" not in out + err


def test_a_url_in_a_route_file_is_refused_before_connecting(tmp_path: Path) -> None:
    path = tmp_path / "route.json"
    path.write_text(json.dumps({"channels": [{"kind": "slack", "secret": URL}]}))
    code, out, err = run("routes", "set", "ml", "--file", str(path), "--local")
    assert code == 2 and "SECRET" not in out + err


def test_file_and_field_options_do_not_mix(tmp_path: Path) -> None:
    code, _, err = run("routes", "set", "ml", "--file", str(tmp_path / "x.json"), "--order", "3", "--local")
    assert (code, err) == (2, "error: routes set: --file gives the whole route; drop the other options\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("rules", "set", "imbalance", "min_gap=500"),
            "error: imbalance: min_gap must be a number in [0, 100], not 500",
        ),
        (("rules", "set", "imbalance", "nope=1"), "error: imbalance: unknown parameter 'nope'"),
        (("rules", "set", "imbalance"), "error: rules set: nothing to set"),
        (("rules", "set", "nosuch", "a=1"), "error: no detector is named 'nosuch'"),
        (("rules", "target", "imbalance"), "error: rules target needs at least one of --cluster"),
        (("rules", "target", "imbalance", "--between", "9-17"), "error: --between '9-17' is not HH:MM-HH:MM"),
        (
            ("silence", "add", "--match", "colour=red", "--for", "1h"),
            "error: matcher 'colour=\"red\"': unknown label",
        ),
        (("silence", "add", "--match", "cluster=a", "--for", "soon"), "error: duration 'soon' is not like"),
        (("teams", "set", "ml"), "error: teams set: nothing to set"),
    ],
)
def test_invalid_input_exits_2_without_connecting(argv: tuple[str, ...], message: str) -> None:
    code, out, err = run(*argv, "--local")
    assert code == 2 and out == ""
    assert err.startswith(message), err


def test_usage_errors_exit_2() -> None:
    code, _, err = run("rules", "frobnicate")
    assert code == 2 and "invalid choice: 'frobnicate'" in err
    code, _, _ = run("rules", "list", "--stack", "a", "--local")
    assert code == 2  # one place at a time


def test_without_a_place_the_message_says_how_to_name_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPULSE_STACK", raising=False)
    with pytest.raises(InvalidInput, match=r"pass --stack NAME \(or set GPULSE_STACK\)"):
        resolve(None, None, None)
    out, err = io.StringIO(), io.StringIO()
    code = main(["rules", "list"], out=out, err=err)
    assert code == 2 and err.getvalue().startswith("error: which gpulse? pass --stack NAME")


def outputs(tmp_path: Path, endpoint: str) -> Path:
    (tmp_path / "outputs.json").write_text(
        json.dumps({"endpoint": endpoint, "region": "us-east-1", "outputs": {"ConfigTableName": "t-config"}})
    )
    return tmp_path


@pytest.mark.parametrize(
    "endpoint", ["https://dynamodb.us-east-1.amazonaws.com", "http://10.0.0.5:5000", "http://0.0.0.0:5000"]
)
def test_the_local_stack_must_be_on_this_machine(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(
        InvalidInput, match=r"refusing endpoint host .*; the local stack runs on 127\.0\.0\.1"
    ):
        connect_local(outputs(tmp_path, endpoint))


def test_the_local_outputs_file(tmp_path: Path) -> None:
    conn = connect_local(outputs(tmp_path, "http://127.0.0.1:5123"))
    assert conn.output("ConfigTableName") == "t-config"
    assert conn.where == "local stack at http://127.0.0.1:5123"
    assert conn.client("dynamodb").meta.endpoint_url == "http://127.0.0.1:5123"
    assert conn.client("dynamodb") is conn.client("dynamodb")  # made once
    with pytest.raises(ConfigurationError, match="has no output StateTableName"):
        conn.output("StateTableName")
    missing = tmp_path / "nowhere" / "outputs.json"
    with pytest.raises(InvalidInput) as e:
        connect_local(tmp_path / "nowhere")
    assert str(e.value) == f"the demo is not running (start it with make demo): {missing} not found"
    (tmp_path / "outputs.json").write_text("{}")
    with pytest.raises(InvalidInput, match="is not the local stack's outputs file"):
        connect_local(tmp_path)


def cond(since: float) -> Condition:
    return Condition(
        rule="imbalance", subject={"cluster": "c1"}, since=since, severity="warning", summary="s", action="a"
    )


def record(state: str, since: float) -> AlertRecord:
    f = Finding("imbalance", "t", "warning", "firing", "fp", "c1", since, since, "s", "a")
    return AlertRecord("c1", "fp", "imbalance", state, since, f)  # type: ignore[arg-type]


def test_fates() -> None:
    rule = Rule("imbalance", "Cross-node imbalance", for_s=300.0)
    at = 1_763_805_600.0  # 2025-11-22T10:00:00Z
    assert (
        fate(cond(at - 60), rule, None, at)
        == "new: would go pending; fires after 5m, at 2025-11-22T10:04:00Z"
    )
    assert fate(cond(at - 90), rule, record("pending", at - 90), at) == (
        "pending: held 1m30s of 5m, fires at 2025-11-22T10:03:30Z"
    )
    assert (
        fate(cond(at - 300), rule, record("pending", at - 300), at)
        == "would fire at this run (held 5m of 5m)"
    )
    assert fate(cond(at - 400), rule, None, at) == "would fire at this run (held 6m40s of 5m)"
    assert fate(cond(at - 30), rule, record("firing", at - 900), at) == "firing since 2025-11-22T09:45:00Z"
    muted = replace(cond(at - 400), muted_by="silent_node")
    assert fate(muted, rule, None, at) == "muted by silent_node: not announced while that alert holds"
    assert fate(muted, rule, record("firing", at - 900), at) == (
        "firing since 2025-11-22T09:45:00Z; muted by silent_node: held, not told again"
    )


def test_the_dry_run_queue_cannot_publish() -> None:
    with pytest.raises(RuntimeError, match="must not publish"):
        NoPublish().publish([])


def test_output_helpers() -> None:
    assert [fmt.duration(s) for s in (0, 45, 60, 90, 300, 5400, 14400, 86400, 1.5)] == [
        "0s",
        "45s",
        "1m",
        "1m30s",
        "5m",
        "1h30m",
        "4h",
        "1d",
        "1.5s",
    ]
    assert fmt.iso(1_763_805_600.0) == "2025-11-22T10:00:00Z"
    assert fmt.table(["A", "LONGER"], [["xyz", "1"], ["q", "22"]]) == ["A    LONGER", "xyz  1", "q    22"]
    assert fmt.assignments({"b": "x", "a": 1.5}) == "a=1.5 b=x"
    assert fmt.diff({"a": 1}, {"a": 2}, "old", "new") == [
        "--- old",
        "+++ new",
        "@@ -1,3 +1,3 @@",
        " {",
        '-  "a": 1',
        '+  "a": 2',
        " }",
    ]


class Sessions:
    """A boto3 session's `client` and `region_name`, serving clients made (and stubbed) here."""

    def __init__(self, **clients: Any) -> None:
        self.clients, self.region_name = clients, "eu-west-1"

    def client(self, service: str) -> Any:
        return self.clients[service]


def offline(service: str) -> Any:
    return boto3.session.Session().client(  # type: ignore[call-overload]
        service, region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def test_a_stack_is_found_by_its_outputs() -> None:
    cfn = offline("cloudformation")
    with Stubber(cfn) as stub:
        stub.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {
                        "StackName": "gpulse-prod",
                        "CreationTime": "2025-11-22T10:00:00Z",
                        "StackStatus": "UPDATE_COMPLETE",
                        "Outputs": [
                            {"OutputKey": "ConfigTableName", "OutputValue": "gpulse-prod-ConfigTable-1"},
                            {"OutputKey": "StateTableName", "OutputValue": "gpulse-prod-StateTable-1"},
                        ],
                    }
                ]
            },
            {"StackName": "gpulse-prod"},
        )
        stub.add_client_error(
            "describe_stacks", "ValidationError", "Stack with id nope does not exist", expected_params=None
        )
        conn = connect_stack("gpulse-prod", None, session=Sessions(cloudformation=cfn))
        assert dict(conn.outputs) == {
            "ConfigTableName": "gpulse-prod-ConfigTable-1",
            "StateTableName": "gpulse-prod-StateTable-1",
        }
        assert conn.where == "stack gpulse-prod (eu-west-1)"
        with pytest.raises(
            ConfigurationError, match="stack nope: ValidationError: Stack with id nope does not exist"
        ):
            connect_stack("nope", None, session=Sessions(cloudformation=cfn))


def test_the_author_is_the_callers_arn_else_user_at_host(monkeypatch: pytest.MonkeyPatch) -> None:
    sts = offline("sts")
    conn = Connection({}, lambda service: sts, "test")
    monkeypatch.setenv("USER", "alice")
    with Stubber(sts) as stub:
        stub.add_response(
            "get_caller_identity",
            {"UserId": "AIDA", "Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/alice"},
        )
        stub.add_client_error("get_caller_identity", "ExpiredToken", "expired")
        assert caller(conn) == "arn:aws:iam::123456789012:user/alice"
        assert caller(conn) == f"alice@{socket.gethostname()}"
