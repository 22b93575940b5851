"""The analyze Lambda against moto: a bad batch stored in one cluster (values no batch should
hold, a corrupt item, an item that cannot be read) never stops the healthy cluster beside it, and
each completed run pings the heartbeat on a real local HTTP server — without ever logging its URL."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import boto3
import pytest

import gpulse.store
from gpulse import env
from gpulse.store import SeriesStore
from gpulse.wire.batch import Batch
from tests.factories import batch_doc
from tests.integration.lambdas import deploy
from tests.integration.test_analyze_handler import AnalyzeTick, findings, invoke, load_analyze

pytestmark = pytest.mark.integration
TOKEN = "hb-7f3a9c1e-secret"  # what a watcher's URL carries: it must never reach a log


class Watcher(http.server.BaseHTTPRequestHandler):
    """A dead-man's switch: counts GETs to /ping/<TOKEN>, answers `status`."""

    hits: ClassVar[list[str]] = []
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def watcher() -> Iterator[str]:
    Watcher.hits, Watcher.status = [], 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Watcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ping/{TOKEN}"
    finally:
        server.shutdown()
        server.server_close()


def stack(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, heartbeat: str | None
) -> tuple[SeriesStore, str, str, AnalyzeTick]:
    """The template's tables and queue on moto and the analyze function loaded with the
    template's environment, plus GPULSE_HEARTBEAT_URL when `heartbeat` is given (the function
    is then loaded again, as a cold start would read it)."""
    deployment = deploy(moto_server, monkeypatch)
    analyze = load_analyze(deployment, monkeypatch)
    if heartbeat is not None:
        monkeypatch.setenv(env.HEARTBEAT_URL, heartbeat)
        dispatcher = analyze.dispatcher
        assert dispatcher.__spec__ is not None and dispatcher.__spec__.loader is not None
        dispatcher.__spec__.loader.exec_module(dispatcher)
        analyze = AnalyzeTick(dispatcher, analyze.worker, analyze.queue_url)
    table = deployment.tables["SeriesTable"]
    return SeriesStore(table), table, deployment.queues["FindingsQueue"]["url"], analyze


def ship(store: SeriesStore, cluster: str, nodes: list[str], start: float, seconds: int) -> None:
    for t0 in range(int(start), int(start) + seconds, 30):
        for node in nodes:
            store.put_batch(Batch(batch_doc(cluster=cluster, node=node, t0=t0, n=30)))


def test_a_bad_batch_in_one_cluster_never_stops_the_other(
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    watcher: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, table, queue, analyze = stack(moto_server, monkeypatch, watcher)
    now = time.time()
    start = now - now % 30 - 240
    ship(store, "healthy", ["node-01", "node-02", "node-03"], start, 240)
    ship(store, "healthy", ["node-04"], start - 300, 240)  # silent since start - 60: 180 s+ by now
    ship(store, "poisoned", ["n1", "n2"], start, 240)
    # stored as an older ingest stored it (no bounds): a number JSON can carry and float64 cannot
    bad = batch_doc(cluster="poisoned", node="n1", t0=start + 210, n=30)
    bad["host"]["mem_total"] = bad["host"]["cpu_count"] = bad["gpus"][0]["mem_total"] = 10**400
    store.put_batch(Batch(bad))
    ddb = boto3.client("dynamodb")
    [item] = [
        i for i in ddb.scan(TableName=table)["Items"] if i.get("batch_id", {}).get("S") == bad["batch_id"]
    ]
    # a corrupt copy beside it, under a key of its own
    data = item["data"]["B"]
    ddb.put_item(
        TableName=table,
        Item={**item, "sk": {"S": item["sk"]["S"] + "x"}, "data": {"B": data[:-1] + bytes([data[-1] ^ 1])}},
    )

    assert invoke(analyze) == {"clusters": 2, "published": 1, "failures": 0, "heartbeat": True}
    [silent] = findings(queue)
    assert (silent.rule, silent.state, silent.cluster, silent.nodes) == (
        "silent_node",
        "firing",
        "healthy",
        ["node-04"],
    )
    assert Watcher.hits == [f"/ping/{TOKEN}"]

    # an item that cannot be read at all: the poisoned cluster is one alert, the other carries on
    ddb.put_item(
        TableName=table,
        Item={k: v for k, v in item.items() if k != "data"} | {"sk": {"S": item["sk"]["S"] + "y"}},
    )
    Watcher.status = 503  # and the watcher is down: the run completes all the same
    ship(store, "healthy", ["node-01", "node-02", "node-03"], start + 240, 30)
    assert invoke(analyze) == {"clusters": 2, "published": 1, "failures": 1, "heartbeat": False}
    [failed] = findings(queue)
    assert (failed.rule, failed.state, failed.cluster, failed.severity) == (
        "analysis_failed",
        "firing",
        "poisoned",
        "critical",
    )
    lines = Path(gpulse.store.__file__).read_text().splitlines()
    [at] = [i for i, line in enumerate(lines, 1) if 'item["data"]["B"]' in line]
    assert failed.summary == f"gpulse could not analyze cluster poisoned: KeyError: 'data' (at store.py:{at})"
    assert invoke(analyze)["published"] == 0  # told once

    ddb.delete_item(TableName=table, Key={"pk": item["pk"], "sk": {"S": item["sk"]["S"] + "y"}})
    Watcher.status = 200
    assert invoke(analyze) == {"clusters": 2, "published": 1, "failures": 0, "heartbeat": True}
    [resolved] = findings(queue)
    assert (resolved.rule, resolved.state) == ("analysis_failed", "resolved")
    assert resolved.fingerprint == failed.fingerprint
    assert len(Watcher.hits) == 4
    logged = caplog.text + "".join(capsys.readouterr())
    assert "heartbeat ping refused" in logged and TOKEN not in logged


def test_an_unreachable_watcher_never_fails_the_run(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Watcher) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    _, _, _, analyze = stack(moto_server, monkeypatch, f"http://127.0.0.1:{port}/ping/{TOKEN}")
    assert invoke(analyze) == {"clusters": 0, "published": 0, "failures": 0, "heartbeat": False}
    [record] = [r for r in caplog.records if r.getMessage() == "heartbeat ping failed"]
    assert record.cause == "ConnectionError"  # type: ignore[attr-defined]
    assert TOKEN not in caplog.text


def test_without_a_heartbeat_url_nothing_is_pinged(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, _, analyze = stack(moto_server, monkeypatch, None)
    assert analyze.heartbeat is None
    assert invoke(analyze) == {"clusters": 0, "published": 0, "failures": 0, "heartbeat": None}


def test_analyze_sees_which_nodes_ship_without_a_disk_spool(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, _, analyze = stack(moto_server, monkeypatch, None)
    t0 = int(time.time()) - 120
    for node, spool in (("node-01", "full"), ("node-02", "ok"), ("node-03", None)):
        doc = batch_doc(cluster="spools", node=node, t0=t0, n=30)
        if spool is not None:
            doc["agent"] = {"spool": spool}
        store.put_batch(Batch(doc))
    assert {n.node: n.spool for n in store.nodes() if n.cluster == "spools"} == {
        "node-01": "full",
        "node-02": "ok",
        "node-03": None,
    }
    [report] = [r for r in analyze.analyzer.run() if r.cluster == "spools"]
    assert report.no_spool == ["node-01"]
