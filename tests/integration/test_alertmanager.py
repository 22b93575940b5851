"""gpulse → a real Alertmanager (Debian's prometheus-alertmanager) on 127.0.0.1, through the real
alert function against moto: the alerts appear with their labels, are grouped into one
notification, are kept alive by the repeat flush, and resolve.

Alertmanager runs with no gossip (`--cluster.listen-address=`), its state in tmp_path, and one
webhook receiver: a local HTTP server that records the grouped notifications it sends.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests

from gpulse.config.store import ConfigStore
from gpulse.finding import Finding, with_state
from gpulse.notify.alertmanager import RESEND_MARGIN_S, rfc3339
from tests.events import load_event
from tests.integration.lambdas import FakeContext, deploy, load_function

pytestmark = pytest.mark.integration

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
SECRET = "/gpulse/test/alertmanager/ops"
REPEAT_S = 4 * 3600.0  # the route's repeat_interval (the default)
CONFIG = """\
route:
  receiver: sink
  group_by: [cluster, alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sink
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


class Receiver:
    """Alertmanager's webhook receiver: records each notification's JSON body."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the assertions say what arrived

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy (Alertmanager notifies on its own clock)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s} s")
        time.sleep(0.1)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, Receiver]]:
    """(base URL, webhook receiver) of an Alertmanager serving 127.0.0.1 only."""
    if BINARY is None:
        pytest.skip("no Alertmanager binary (apt-get install prometheus-alertmanager; .ci/run does)")
    with Receiver() as receiver:
        config = tmp_path / "alertmanager.yml"
        config.write_text(CONFIG.format(url=receiver.url))
        port = free_port()
        log = (tmp_path / "alertmanager.log").open("wb")
        proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip: nothing listens beyond loopback
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"alertmanager exited: {(tmp_path / 'alertmanager.log').read_text()}"
                    )
                try:
                    return requests.get(f"{base}/-/ready", timeout=1).status_code == 200
                except requests.ConnectionError:
                    return False

            eventually(ready, "ready Alertmanager")
            yield base, receiver
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def sqs_event(*findings: Finding) -> dict[str, Any]:
    event = load_event("alert_sqs")
    template = event["Records"][0]
    event["Records"] = [
        {**template, "messageId": f"m{i}", "body": f.to_json()} for i, f in enumerate(findings)
    ]
    return event


def idle(gpu: str, fingerprint: str, now: float) -> Finding:
    node = gpu.split("/")[0]
    return Finding(
        rule="idle_held",
        title="GPU held but idle",
        severity="warning",
        state="firing",
        fingerprint=fingerprint,
        cluster="a100-prod",
        since=now - 600,
        at=now - 60,
        summary=f"{gpu} held by bob, 0% busy for 10 min",
        action="Release the GPU or start the job.",
        node_group="trainers",
        nodes=[node],
        gpus=[gpu],
        users=["bob"],
    )


def backdate(module: ModuleType, **fields: float) -> None:
    """Move the one group's clocks back (`created_at`, `last_flush_at`), so its next flush is due
    now: the tests do not sleep through group_wait, group_interval or repeat_interval."""
    store = module.dispatcher.groups
    [key] = store.list_keys()
    group = store.load(key)
    moved = {k: getattr(group, k) - v for k, v in fields.items()}
    store.save(dataclasses.replace(group, **moved), group.version, time.time())


def unix(text: str) -> float:
    """A time as Alertmanager writes it (with or without fractions of a second) in unix seconds."""
    return datetime.fromisoformat(text).timestamp()


def tick(module: ModuleType) -> None:
    module.handler(load_event("analyze_schedule"), FakeContext())


def active(base: str) -> list[dict[str, Any]]:
    got = requests.get(f"{base}/api/v2/alerts", params={"filter": 'source="gpulse"'}, timeout=5)
    got.raise_for_status()
    return sorted(got.json(), key=lambda a: a["labels"]["gpu"])


def test_findings_appear_in_alertmanager_grouped_kept_alive_and_resolved(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, alertmanager: tuple[str, Receiver]
) -> None:
    base, receiver = alertmanager
    now = float(int(time.time()))
    deployment = deploy(moto_server, monkeypatch)
    boto3.client("ssm").put_parameter(Name=SECRET, Value=base, Type="SecureString", Overwrite=True)
    ConfigStore(deployment.tables["ConfigTable"]).put(
        "route",
        "default",
        {"channels": [{"kind": "alertmanager", "secret": SECRET}], "group_wait_s": 30},
        who="test",
        expected_version=None,
    )
    module = load_function("AlertFunction", deployment, monkeypatch)
    module.dispatcher.wake_queue = None  # the test flushes with ticks
    module.channels.clock = lambda: now  # endsAt is exact

    one, two = idle("node-05/7", "0b1c2d3e4f5a6b7c8d9e", now), idle("node-06/1", "aa1c2d3e4f5a6b7c8d9e", now)
    assert module.handler(sqs_event(one, two), FakeContext()) == {"batchItemFailures": []}
    assert active(base) == []  # group_wait: both wait for the group's first flush
    backdate(module, created_at=31)
    tick(module)

    def expected(f: Finding, ends: float) -> dict[str, Any]:
        node, gpu = f.nodes[0], f.gpus[0]
        return {
            "labels": {
                "alertname": "idle_held",
                "severity": "warning",
                "cluster": "a100-prod",
                "node_group": "trainers",
                "node": node,
                "gpu": gpu,
                "fingerprint": f.fingerprint,
                "source": "gpulse",
            },
            "annotations": {
                "summary": f"{gpu} held by bob, 0% busy for 10 min",
                "description": "Release the GPU or start the job.",
            },
            "startsAt": rfc3339(now - 600),
            "endsAt": rfc3339(ends),
            "generatorURL": f"gpulse://a100-prod/idle_held/{f.fingerprint}",
            "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
            "receivers": [{"name": "sink"}],
        }

    def shown(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in a.items() if k not in ("fingerprint", "updatedAt")} for a in alerts]

    alive = now + REPEAT_S + RESEND_MARGIN_S
    assert shown(active(base)) == [expected(one, alive), expected(two, alive)]

    # both arrive at the receiver as one notification of one group
    [firing] = eventually(lambda: receiver.notifications, "firing notification")
    assert (firing["status"], firing["groupLabels"]) == (
        "firing",
        {"alertname": "idle_held", "cluster": "a100-prod"},
    )
    assert sorted((a["status"], a["labels"]["gpu"], unix(a["startsAt"])) for a in firing["alerts"]) == [
        ("firing", "node-05/7", now - 600),
        ("firing", "node-06/1", now - 600),
    ]

    # a repeat_interval later gpulse posts them again, which pushes endsAt on
    module.channels.clock = lambda: now + 60
    backdate(module, last_flush_at=REPEAT_S + 1)
    tick(module)
    assert [a["endsAt"] for a in active(base)] == [rfc3339(alive + 60)] * 2

    # the resolves close both alerts, and the receiver is told once
    assert module.handler(
        sqs_event(with_state(one, "resolved", now - 5), with_state(two, "resolved", now - 5)), FakeContext()
    ) == {"batchItemFailures": []}
    backdate(module, last_flush_at=301)  # group_interval
    tick(module)
    assert active(base) == []
    eventually(lambda: len(receiver.notifications) > 1, "resolved notification")
    [_, resolved] = receiver.notifications  # the re-post was no news: no notification of its own
    assert (resolved["status"], resolved["groupLabels"]) == ("resolved", firing["groupLabels"])
    assert sorted((a["status"], a["labels"]["gpu"], unix(a["endsAt"])) for a in resolved["alerts"]) == [
        ("resolved", "node-05/7", now - 5),
        ("resolved", "node-06/1", now - 5),
    ]
