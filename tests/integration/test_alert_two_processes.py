"""Two alert functions in two OS processes, handling the same findings at the same moment.

SQS may hand one message to two invocations, and Lambda runs invocations in separate processes:
only the state table's conditional writes stand between them and a double announcement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devstack.chat_sink import ChatSink
from gpulse.config.store import ConfigStore
from gpulse.finding import Finding, with_state
from gpulse.notification import single
from gpulse.notify import jandi, slack
from tests.events import load_event
from tests.integration.lambdas import ROOT, chat_webhooks, deploy, env_of

pytestmark = pytest.mark.integration


def sqs_event(finding: Finding) -> dict[str, object]:
    event = load_event("alert_sqs")
    event["Records"] = [{**event["Records"][0], "messageId": "m0", "body": finding.to_json()}]
    return event


def test_fire_resolve_refire_in_two_processes_at_once_is_told_once_each(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deployment = deploy(moto_server, monkeypatch)
    with ChatSink(out=None) as sink:
        chat_webhooks(deployment, sink.url)
        # every change flushes at once (1 s group_interval, steps 4 s apart): the test is about
        # who sends, not about waiting
        ConfigStore(deployment.tables["ConfigTable"]).put(
            "route",
            "default",
            {
                "channels": [
                    {
                        "kind": "slack",
                        "secret": env_of("AlertFunction", deployment)["GPULSE_SLACK_WEBHOOK_PARAM"],
                    },
                    {
                        "kind": "jandi",
                        "secret": env_of("AlertFunction", deployment)["GPULSE_JANDI_WEBHOOK_PARAM"],
                    },
                ],
                "group_wait_s": 0,
                "group_interval_s": 1,
            },
            who="test",
            expected_version=1,
        )
        now = time.time()
        fired = replace(Finding.from_json(load_event("alert_sqs")["Records"][0]["body"]), since=now, at=now)
        resolved = with_state(fired, "resolved", now + 1)
        refired = replace(fired, since=now + 2, at=now + 2)
        # both processes imported, a first chart drawn (alert_worker), and waiting by then: ~2 s
        start = time.time() + 8
        # 4 s apart: a delivery (a chart drawn and stored, two posts) ends before the next step,
        # even on a busy machine
        steps = [[start + 4.0 * i, sqs_event(f)] for i, f in enumerate((fired, resolved, refired))]
        env = {
            **env_of("AlertFunction", deployment),
            "AWS_ENDPOINT_URL": moto_server,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"env": env, "steps": steps}))
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.integration.alert_worker", str(spec)],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [w.communicate(timeout=60) for w in workers]
        for w, (out, err) in zip(workers, outputs, strict=True):
            assert w.returncode == 0, err[-2000:]
            results = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
            assert results == [{"batchItemFailures": []}] * 3
        told = [(m["kind"], m["payload"]) for m in sink.messages()]
        expected = [single(f, route="default") for f in (fired, resolved, refired)]
        assert [p for k, p in told if k == "slack"] == [slack.render(n) for n in expected]
        assert [p for k, p in told if k == "jandi"] == [jandi.render(n) for n in expected]
