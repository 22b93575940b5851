"""`gpulse nodes` against SSM in moto, and a rotation through the real ingest handler: the new
secret is accepted at once although ingest cached the old one, the old one until the overlap
ends and not after; no batch is refused on the way."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from gpulse.cli import main
from tests.factories import batch_doc, signed_request
from tests.integration.lambdas import deploy, env_of, load_function
from tests.integration.test_ingest_handler import post

pytestmark = pytest.mark.integration


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Stack:
    run_dir: Path
    prefix: str
    ingest: ModuleType
    now: float

    def gpulse(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main([*argv, f"--local={self.run_dir}"], clock=lambda: self.now, out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())

    def param(self, name: str) -> Any:
        try:
            return boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]
        except boto3.client("ssm").exceptions.ParameterNotFound:
            return None


@pytest.fixture
def stack(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stack]:
    d = deploy(moto_server, monkeypatch, stage=f"n{uuid.uuid4().hex[:8]}")  # its own SSM namespace
    prefix = env_of("IngestFunction", d)["GPULSE_NODE_SECRETS_PREFIX"]
    outputs = {"ConfigTableName": d.tables["ConfigTable"], "NodeSecretsPrefix": prefix}
    doc = {"endpoint": moto_server, "region": "us-east-1", "outputs": outputs}
    (tmp_path / "outputs.json").write_text(json.dumps(doc))
    ingest = load_function("IngestFunction", d, monkeypatch)
    yield Stack(tmp_path, prefix, ingest, time.time())
    for p in boto3.client("ssm").get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"]:
        boto3.client("ssm").delete_parameter(Name=p["Name"])


def test_add_list_rotate_remove(stack: Stack) -> None:
    added = stack.gpulse("nodes", "add", "c1", "node-01")
    assert added.code == 0
    secret = added.out.strip()
    assert len(secret) == 64 and int(secret, 16) >= 0 and added.out == secret + "\n"
    assert added.err == (
        f"node c1/node-01 registered at {stack.prefix}/c1/node-01.\n"
        "Its secret follows, shown this once: put it in the node's secret file (mode 0600).\n"
    )
    assert stack.param(f"{stack.prefix}/c1/node-01")["Value"] == secret
    assert stack.param(f"{stack.prefix}/c1/node-01")["Type"] == "SecureString"

    again = stack.gpulse("nodes", "add", "c1", "node-01")
    assert (again.code, again.err) == (
        2,
        "error: node c1/node-01 is registered already; `gpulse nodes rotate` gives it a new secret\n",
    )

    short = stack.gpulse("nodes", "rotate", "c1", "node-01", "--overlap", "5m")
    assert (short.code, short.out) == (2, "")
    assert short.err == (
        "error: --overlap 5m is shorter than ingest's secret cache (15m); "
        "the node could be refused before ingest sees its new secret\n"
    )

    rotated = stack.gpulse("nodes", "rotate", "c1", "node-01", "--overlap", "2h")
    assert rotated.code == 0
    new = rotated.out.strip()
    assert new != secret and len(new) == 64
    assert stack.param(f"{stack.prefix}/c1/node-01")["Value"] == new
    previous = json.loads(stack.param(f"{stack.prefix}/c1/node-01.previous")["Value"])
    assert previous == {"secret": secret, "until": stack.now + 7200}

    listed = stack.gpulse("nodes", "list", "--json")
    [row] = json.loads(listed.out)
    assert (row["cluster"], row["node"], row["previous_until"]) == ("c1", "node-01", stack.now + 7200)
    assert secret not in listed.out + listed.err and new not in listed.out + listed.err
    table = stack.gpulse("nodes", "list").out
    assert table.splitlines()[0].split() == [
        "CLUSTER",
        "NODE",
        "SECRET",
        "SET",
        "OLD",
        "SECRET",
        "ACCEPTED",
        "UNTIL",
    ]
    assert secret not in table and new not in table

    removed = stack.gpulse("nodes", "remove", "c1", "node-01")
    assert (removed.code, removed.out) == (
        0,
        "node c1/node-01 removed; ingest may still accept its secret for up to 15m (its cache)\n",
    )
    assert stack.param(f"{stack.prefix}/c1/node-01") is None
    assert stack.param(f"{stack.prefix}/c1/node-01.previous") is None
    assert stack.gpulse("nodes", "list").out == f"no nodes registered under {stack.prefix}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("add", "c1", "node/01"),
            "error: node 'node/01' must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit\n",
        ),
        (("add", "c1", "n1.previous"), "error: node names ending in '.previous' are reserved\n"),
        (
            ("rotate", "c1", "ghost"),
            "error: node c1/ghost is not registered; `gpulse nodes add` registers it\n",
        ),
        (("remove", "c1", "ghost"), "error: node c1/ghost is not registered\n"),
    ],
)
def test_bad_names_and_unknown_nodes_exit_2(stack: Stack, argv: tuple[str, ...], message: str) -> None:
    result = stack.gpulse("nodes", *argv)
    assert (result.code, result.out, result.err) == (2, "", message)


def send(stack: Stack, secret: str, now: float) -> tuple[int, dict[str, Any]]:
    doc = batch_doc(cluster="c1", node="node-01", t0=now - 20)
    return post(stack.ingest, *signed_request(doc, secret.encode(), int(now)))


def test_a_rotation_refuses_no_batch(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    old = stack.gpulse("nodes", "add", "c1", "node-01").out.strip()
    wall = [stack.now]
    monkeypatch.setattr(stack.ingest, "clock", lambda: wall[0])
    assert send(stack, old, wall[0])[0] == 200  # ingest now caches `old` as the current secret

    new = stack.gpulse("nodes", "rotate", "c1", "node-01", "--overlap", "1h").out.strip()
    assert send(stack, new, wall[0])[0] == 200  # no cached secret matched: ingest re-read SSM
    assert send(stack, old, wall[0])[0] == 200  # a node not switched yet is still accepted
    wall[0] = stack.now + 3599
    assert send(stack, old, wall[0])[0] == 200
    wall[0] = stack.now + 3600
    assert send(stack, old, wall[0]) == (
        401,
        {"error": "signature does not match the body for this node's secret"},
    )
    assert send(stack, new, wall[0])[0] == 200
