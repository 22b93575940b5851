"""The run loop: batches closed on count, partial batch flushed on stop, everything delivered in order.

The sender is autospecced (no sockets); the loop runs on the real clock with a tiny interval.
"""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any
from unittest import mock

from gpulse.wire.batch import parse
from node_shipper.agent import NodePipeline, Shipper
from node_shipper.batch import BatchBuilder
from node_shipper.outbox import Outbox
from node_shipper.retry import Backoff
from node_shipper.sender import Sender, SendResult, Verdict
from node_shipper.simulate import Scenario, SimulatedNode, shipper_info
from node_shipper.spool import SeqStore, Spool

INTERVAL = 0.01


def _pipelines(
    tmp_path: Path, answers: list[SendResult] | None = None
) -> tuple[list[NodePipeline], list[Any]]:
    scenario = Scenario.named("healthy", nodes=2, gpus_per_node=2)
    senders = []
    pipelines = []
    for index, name in enumerate(scenario.node_names()):
        sender = mock.create_autospec(Sender, instance=True)
        if answers is None:
            sender.send.return_value = SendResult(Verdict.SENT, 200)
        else:
            sender.send.side_effect = list(answers)
        senders.append(sender)
        spool = Spool(tmp_path / name, max_bytes=1 << 20)
        pipelines.append(
            NodePipeline(
                name=name,
                source=SimulatedNode(scenario, index, start=1_770_000_000.0),
                builder=BatchBuilder(cluster=scenario.cluster, node=name, shipper=shipper_info(INTERVAL)),
                seq=SeqStore(tmp_path / name),
                outbox=Outbox(
                    node=name, spool=spool, sender=sender, backoff=Backoff(base_s=0.01, cap_s=0.05)
                ),
            )
        )
    return pipelines, senders


def _docs(sender: Any) -> list[dict[str, Any]]:
    return [json.loads(gzip.decompress(c.args[0])) for c in sender.send.call_args_list]


def test_runs_for_duration_and_flushes_the_partial_batch(tmp_path: Path) -> None:
    pipelines, senders = _pipelines(tmp_path)
    shipper = Shipper(pipelines, interval_s=INTERVAL, batch_s=4 * INTERVAL, drain_s=1.0, duration_s=0.25)
    assert shipper.run() == 0
    for p, sender in zip(pipelines, senders, strict=True):
        docs = _docs(sender)
        first = docs[0]["seq"]
        assert [d["seq"] for d in docs] == list(range(first, first + p.batches))
        assert all(d["agent"] == {"spool": "ok"} for d in docs)
        assert [len(d["timestamps"]) for d in docs[:-1]] == [4] * (len(docs) - 1)  # closed on count
        assert 1 <= len(docs[-1]["timestamps"]) <= 4  # the flushed rest
        assert sum(len(d["timestamps"]) for d in docs) == p.samples  # nothing lost
        for d in docs:
            parse(json.dumps(d).encode(), now=d["timestamps"][-1])
        assert p.outbox.pending == 0


def test_stop_request_ends_the_loop(tmp_path: Path) -> None:
    pipelines, senders = _pipelines(tmp_path)
    shipper = Shipper(pipelines, interval_s=INTERVAL, batch_s=1000 * INTERVAL, drain_s=1.0)
    threading.Timer(0.1, shipper.request_stop, args=("test",)).start()
    assert shipper.run() == 0
    for p, sender in zip(pipelines, senders, strict=True):
        (doc,) = _docs(sender)  # only the flushed partial batch: the batch was far from full
        assert len(doc["timestamps"]) == p.samples > 0


def test_failed_posts_are_drained_after_stop(tmp_path: Path) -> None:
    answers = [SendResult(Verdict.RETRY, 503)] * 3 + [SendResult(Verdict.SENT, 200)] * 50
    pipelines, senders = _pipelines(tmp_path, answers)
    shipper = Shipper(pipelines, interval_s=INTERVAL, batch_s=3 * INTERVAL, drain_s=5.0, duration_s=0.1)
    assert shipper.run() == 0
    for p, sender in zip(pipelines, senders, strict=True):
        docs = _docs(sender)
        delivered = [d["seq"] for d in docs[3:]]
        first = delivered[0]
        assert delivered == list(range(first, first + p.batches))  # each batch delivered once, in order
        assert p.outbox.pending == 0 and p.outbox.stats.sent == p.batches
        assert not list((tmp_path / p.name).glob("*.batch.gz"))


def test_seq_continues_after_a_restart(tmp_path: Path) -> None:
    pipelines, senders = _pipelines(tmp_path)
    Shipper(pipelines, interval_s=INTERVAL, batch_s=2 * INTERVAL, drain_s=1.0, duration_s=0.05).run()
    last = _docs(senders[0])[-1]["seq"]
    again, senders = _pipelines(tmp_path)
    Shipper(again, interval_s=INTERVAL, batch_s=2 * INTERVAL, drain_s=1.0, duration_s=0.05).run()
    assert _docs(senders[0])[0]["seq"] == last + 1  # persisted: continues, no jump
