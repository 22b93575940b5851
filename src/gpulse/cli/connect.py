"""Where the CLI's gpulse lives: a deployed stack (CloudFormation outputs, the usual AWS
credentials) or the local stack (`RUN_DIR/outputs.json`, moto on 127.0.0.1, fake credentials).

Both give the same `Connection`: the stack's outputs by name and a factory of boto3 clients, so
every command runs the same code against either.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from gpulse.errors import ConfigurationError, InvalidInput

STACK_ENV = "GPULSE_STACK"  # the default for --stack
LOCAL_DIR = ".gpulse-local"  # the local stack's run directory (devstack writes outputs.json there)
OUTPUTS_FILE = "outputs.json"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
# moto accepts any keys; fixed fake ones mean a local command can never sign for a real account
FAKE_CREDENTIALS = "testing"
DEMO_DOWN = "the demo is not running (start it with make demo)"

# moto on this machine answers at once or not at all: a stopped demo is said in seconds, not retried.
LOCAL_CLIENT_CONFIG = BotoConfig(connect_timeout=2, retries={"mode": "standard", "max_attempts": 2})

ClientFactory = Callable[[str], Any]  # service name ("dynamodb", "sts", …) → boto3 client


@dataclass(frozen=True)
class Connection:
    outputs: Mapping[str, str]  # the stack's outputs: ConfigTableName, StateTableName, …
    client: ClientFactory
    where: str  # for messages: "stack gpulse-prod (eu-west-1)", "local stack at http://127.0.0.1:…"
    operator: str | None = None  # who writes, when no AWS identity means anything (the local stack)

    def output(self, key: str) -> str:
        """One output's value; ConfigurationError naming it when the stack has none."""
        value = self.outputs.get(key)
        if not value:
            raise ConfigurationError(f"{self.where} has no output {key} (outputs: {', '.join(self.outputs)})")
        return value


def resolve(stack: str | None, region: str | None, local: str | None) -> Connection:
    """The connection the options name: `--local [RUN_DIR]`, else `--stack` (or $GPULSE_STACK)."""
    if local is not None:
        return connect_local(Path(local))
    name = stack or os.environ.get(STACK_ENV, "").strip()
    if not name:
        raise InvalidInput(
            f"which gpulse? pass --stack NAME (or set {STACK_ENV}) for a deployed stack, "
            f"or --local [RUN_DIR] for the local stack (default {LOCAL_DIR})"
        )
    return connect_stack(name, region)


def connect_local(run_dir: Path) -> Connection:
    """The local stack whose run directory is `run_dir`. Its endpoint must be on this machine."""
    path = run_dir / OUTPUTS_FILE
    try:
        doc = json.loads(path.read_text())
        endpoint, region, outputs = str(doc["endpoint"]), str(doc["region"]), dict(doc["outputs"])
    except FileNotFoundError:
        raise InvalidInput(f"{DEMO_DOWN}: {path} not found") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidInput(
            f"{path} is not the local stack's outputs file ({type(e).__name__}: {e})"
        ) from None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOCAL_HOSTS:
        # the fake credentials below are meant for moto only: never send them anywhere else
        raise InvalidInput(
            f"{path}: refusing endpoint host {parts.hostname!r}; the local stack runs on 127.0.0.1"
        )

    @cache
    def client(service: str) -> Any:
        return _session().client(  # type: ignore[call-overload]
            service,
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=FAKE_CREDENTIALS,
            aws_secret_access_key=FAKE_CREDENTIALS,
            config=LOCAL_CLIENT_CONFIG,
        )

    return Connection(
        {k: str(v) for k, v in outputs.items()},
        client,
        f"local stack at {endpoint}",
        operator=local_operator(),
    )


def local_operator() -> str:
    """`user@host` of whoever runs the CLI: moto's caller identity is the same fake ARN for all."""
    return f"{os.environ.get('USER') or getpass.getuser()}@{socket.gethostname()}"


@cache
def _session() -> boto3.session.Session:
    """One session per process for local clients (their credentials are given per client): a
    session loads botocore's endpoint data, which takes longer than a local call."""
    return boto3.session.Session()


def connect_stack(name: str, region: str | None, *, session: Any = None) -> Connection:
    """A deployed stack, found by name through CloudFormation; credentials from the usual chain."""
    session = session or boto3.session.Session(region_name=region)
    try:
        resp = session.client("cloudformation").describe_stacks(StackName=name)
    except ClientError as e:
        err = e.response.get("Error", {})
        raise ConfigurationError(f"stack {name}: {err.get('Code')}: {err.get('Message')}") from None
    except BotoCoreError as e:
        raise ConfigurationError(f"stack {name}: {e}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in resp["Stacks"][0].get("Outputs", [])}

    @cache
    def client(service: str) -> Any:
        return session.client(service)

    return Connection(outputs, client, f"stack {name} ({session.region_name})")


def caller(conn: Connection) -> str:
    """Who is making a change: the operator of a local stack (`$USER@hostname`), else the
    caller's ARN, or `$USER@hostname` when STS cannot say."""
    if conn.operator is not None:
        return conn.operator
    try:
        return str(conn.client("sts").get_caller_identity()["Arn"])
    except (ClientError, BotoCoreError):
        return local_operator()
