"""The local stack: gpulse whole on one machine, from the same template and the same handlers.

moto in server mode on 127.0.0.1 is the AWS endpoint; tables and queues are created from
template.yaml; each function runs in its own process (devstack.runtime) with the template's
environment and its event source; a chat sink on 127.0.0.1 stands in for Slack and Jandi.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import boto3

from devstack.chat_sink import ChatSink
from devstack.template import LocalDeployment, deploy_local, function_specs, load_template

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(rb"^ready (\S+)", re.MULTILINE)  # devstack.runtime's line once a source is up
HTTP_READY = re.compile(rb"^ready (http://127\.0\.0\.1:\d+)", re.MULTILINE)
STAGE = "local"
REGION = "us-east-1"
FUNCTIONS = (
    "IngestFunction",
    "AnalyzeFunction",
    "AnalyzeWorkerFunction",
    "AlertFunction",
    "CompactorFunction",
    "ChartsFunction",
)
# a port each: ingest's function URL, the charts' HttpApi route
HTTP_FUNCTIONS = frozenset({"IngestFunction", "ChartsFunction"})


def free_port() -> int:
    """A port free now, for an in-process server that cannot report the one it binds (the stack
    binds port 0 instead: a port found free here may be taken before it is used)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def aws_env(endpoint: str) -> dict[str, str]:
    """What every local process needs to reach moto instead of AWS (and never AWS)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
        "POWERTOOLS_DEV": "false",
    }


class LocalStack:
    def __init__(
        self, run_dir: Path, *, time_scale: float = 1.0, sink_out: TextIO | None = sys.stdout
    ) -> None:
        self.run_dir = run_dir
        self.time_scale = time_scale
        # template parameters: the config cache shrinks with the schedules, so a rule change
        # still takes effect within "one analyze run plus the cache"
        self.parameters = {"Stage": STAGE, "ConfigCacheSeconds": str(max(1, round(30 / time_scale)))}
        self.sink = ChatSink(out=sink_out)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.endpoint = ""
        self.api_url = ""  # ingest's function URL: the shippers' --endpoint (IngestUrl in AWS)
        self.charts_url = ""  # where chart links point locally (the charts function's port)
        self.deployment: LocalDeployment | None = None
        self._moto: object | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        from moto.server import ThreadedMotoServer  # heavy import, only when a stack really starts

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request log drowns the chat
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        # port 0 everywhere: the OS's port is taken at bind, so two stacks never race for one
        self._moto = server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self.endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        os.environ.update(aws_env(self.endpoint))
        template = load_template(ROOT / "template.yaml")
        self.deployment = deploy_local(
            template,
            dynamodb=boto3.client("dynamodb"),
            sqs=boto3.client("sqs"),
            parameters=self.parameters,
            # names of this stack's own: a process of an earlier stack still sending to a moto
            # port this one now has finds no queue of that name, rather than this stack's queue
            prefix=f"gpulse-local-{secrets.token_hex(3)}",
        )
        self.specs = function_specs(template, self.deployment)
        self.sink.start()
        ssm = boto3.client("ssm")
        for kind, param in (("slack", "GPULSE_SLACK_WEBHOOK_PARAM"), ("jandi", "GPULSE_JANDI_WEBHOOK_PARAM")):
            ssm.put_parameter(
                Name=self.specs["AlertFunction"].environment[param],
                Value=f"{self.sink.url}/{kind}/gpu-alerts",
                Type="SecureString",
                Overwrite=True,
            )
        # the key chart links are signed with: the deployer's one-time `aws ssm put-parameter` in AWS
        ssm.put_parameter(
            Name=self.specs["AlertFunction"].environment["GPULSE_CHART_LINK_KEY_PARAM"],
            Value=secrets.token_hex(32),
            Type="SecureString",
            Overwrite=True,
        )
        self._write_outputs()
        # ingest's function URL and the charts' HttpApi route each get a port of their own (one
        # process each); alert's chart links point at the charts function's (in AWS, the HTTP API),
        # so charts starts first and the others are told where it listens
        self._spawn("ChartsFunction")
        self.charts_url = self._wait_ready("ChartsFunction")
        others = [name for name in FUNCTIONS if name != "ChartsFunction"]
        for name in others:
            self._spawn(name)
        ready = {name: self._wait_ready(name) for name in others}
        self.api_url = ready["IngestFunction"]
        self._write_outputs()  # now with IngestUrl, the one output known only once ingest listens

    def _write_outputs(self) -> None:
        """RUN_DIR/outputs.json: the endpoint and the stack outputs the CLI reads (`gpulse --local`),
        under the same names CloudFormation gives them in AWS."""
        assert self.deployment is not None
        outputs = {
            "SeriesTableName": self.table("SeriesTable"),
            "StateTableName": self.table("StateTable"),
            "ConfigTableName": self.table("ConfigTable"),
            "NodeSecretsPrefix": self.specs["IngestFunction"].environment["GPULSE_NODE_SECRETS_PREFIX"],
            "FindingsQueueUrl": self.queue_url("FindingsQueue"),
            "FindingsDlqUrl": self.queue_url("FindingsDLQ"),
            "HealthTopicArn": self.deployment.topics["HealthTopic"],
        }
        if self.api_url:  # AWS's function URL ends in "/" too; the shipper strips it
            outputs["IngestUrl"] = f"{self.api_url}/"
        doc = {"endpoint": self.endpoint, "region": REGION, "outputs": outputs}
        (self.run_dir / "outputs.json").write_text(json.dumps(doc, indent=2) + "\n")

    def _spawn(self, name: str) -> None:
        assert self.deployment is not None  # deployed before any function starts
        log = open(self.run_dir / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPULSE_")} | aws_env(self.endpoint)
        self.procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack.runtime",
                name,
                "--endpoint",
                self.endpoint,
                "--port",
                "0",
                "--time-scale",
                str(self.time_scale),
                "--api-url",
                self.charts_url,
                "--prefix",
                self.deployment.prefix,
                *[a for k, v in self.parameters.items() for a in ("--param", f"{k}={v}")],
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _wait_ready(self, name: str, timeout: float = 60.0) -> str:
        """What the function said once ready: for one served over HTTP (a function URL or HttpApi
        routes) the URL it listens on (`ready http://127.0.0.1:<port>`), for the others their
        first event source."""
        log = self.run_dir / "logs" / f"{name}.log"
        said_by = HTTP_READY if name in HTTP_FUNCTIONS else READY
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            said = said_by.search(log.read_bytes())
            if said:
                return said.group(1).decode()
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited during start-up; see {log}")
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start within {timeout:.0f} s; see {log}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.sink.stop()
        if self._moto is not None:
            self._moto.stop()  # type: ignore[attr-defined]

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- operator actions --------------------------------------------------------------------------

    def register_node(self, cluster: str, node: str, secrets_dir: Path) -> None:
        """Give a node its signing secret: a SecureString for ingest, a 0600 file for the shipper."""
        secret = secrets.token_hex(32)
        prefix = self.specs["IngestFunction"].environment["GPULSE_NODE_SECRETS_PREFIX"]
        boto3.client("ssm").put_parameter(
            Name=f"{prefix}/{cluster}/{node}", Value=secret, Type="SecureString", Overwrite=True
        )
        secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = secrets_dir / node
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)

    def table(self, logical_id: str) -> str:
        assert self.deployment is not None
        return self.deployment.tables[logical_id]

    def queue_url(self, logical_id: str) -> str:
        assert self.deployment is not None
        return self.deployment.queues[logical_id]["url"]
