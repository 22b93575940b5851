"""Load the real handlers against resources deployed into moto from template.yaml."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from devstack.stack import aws_env
from devstack.template import LocalDeployment, deploy_local, function_specs, load_template
from gpulse.config.store import ConfigStore

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeContext:
    function_name: str = "test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id: str = "req-1"
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def deploy(endpoint: str, monkeypatch: pytest.MonkeyPatch, *, stage: str = "test") -> LocalDeployment:
    """Tables and queues from the template, under a prefix of their own. SSM names are the
    stage's (`/gpulse/{stage}/...`): a test that lists them gives itself a stage of its own."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    return deploy_local(
        load_template(ROOT / "template.yaml"),
        dynamodb=boto3.client("dynamodb"),
        sqs=boto3.client("sqs"),
        prefix=f"t{uuid.uuid4().hex[:8]}",
        parameters={"Stage": stage},
    )


def load_function(
    logical_id: str, deployment: LocalDeployment, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    """Import functions/<x>/app.py fresh, with exactly the template's environment for it."""
    spec = function_specs(load_template(ROOT / "template.yaml"), deployment)[logical_id]
    for k in [k for k in os.environ if k.startswith("GPULSE_")]:
        monkeypatch.delenv(k)
    for k, v in spec.environment.items():
        monkeypatch.setenv(k, v)
    path = ROOT / spec.code_uri / f"{spec.handler_module}.py"
    mod_spec = importlib.util.spec_from_file_location(f"{logical_id}_{uuid.uuid4().hex[:6]}", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def env_of(logical_id: str, deployment: LocalDeployment) -> dict[str, Any]:
    return function_specs(load_template(ROOT / "template.yaml"), deployment)[logical_id].environment


def chat_webhooks(deployment: LocalDeployment, sink_url: str, *, group_wait_s: float = 0) -> None:
    """Point the alert function's Slack and Jandi secrets at a local chat sink, and write a
    `default` route over both (no group_wait unless asked: these tests are about delivery)."""
    env = env_of("AlertFunction", deployment)
    ssm = boto3.client("ssm")
    for kind in ("slack", "jandi"):
        ssm.put_parameter(
            Name=env[f"GPULSE_{kind.upper()}_WEBHOOK_PARAM"],
            Value=f"{sink_url}/{kind}/ops",
            Type="SecureString",
            Overwrite=True,
        )
    ConfigStore(deployment.tables["ConfigTable"]).put(
        "route",
        "default",
        {
            "channels": [
                {"kind": "slack", "secret": env["GPULSE_SLACK_WEBHOOK_PARAM"]},
                {"kind": "jandi", "secret": env["GPULSE_JANDI_WEBHOOK_PARAM"]},
            ],
            "group_wait_s": group_wait_s,
        },
        who="test",
        expected_version=None,
    )


def start_ingest(moto: str, port: int, stage: str, log: Path) -> subprocess.Popen[bytes]:
    """The real ingest handler (devstack.runtime, from the template) serving 127.0.0.1:`port` over
    moto in its own process, returned once its log says it is ready; the caller stops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULSE_")} | aws_env(moto)
    runtime = ["devstack.runtime", "IngestFunction", "--endpoint", moto, "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", *runtime, "--param", f"Stage={stage}"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while b"ready " not in log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "ingest did not start"
        time.sleep(0.1)
    return proc


def check_private_bucket(bucket: str, *, rule: str, prefix: str, days: int) -> None:
    """A template bucket as moto holds it: public access blocked, AES256 by default, and one
    lifecycle rule `rule` expiring `prefix` after `days`."""
    import boto3

    s3 = boto3.client("s3")
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    (lifecycle,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert (lifecycle["ID"], lifecycle["Status"], lifecycle["Expiration"], lifecycle["Filter"]) == (
        rule,
        "Enabled",
        {"Days": days},
        {"Prefix": prefix},
    )
