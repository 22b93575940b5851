"""`gpulse-shipper --source dcgm-exporter=URL` end to end, all on 127.0.0.1: a real HTTP server serving a
published dcgm-exporter page (tests/data/dcgm), the real shipper process, the real ingest handler
(devstack.runtime) over moto; the stored chunks are read back and compared with the page."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from devstack.stack import free_port
from devstack.template import deploy_local, function_specs, load_template
from gpulse import codec
from tests.integration.lambdas import start_ingest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "dcgm"
STAGE = "dcgm"
MIB = 1 << 20
A100 = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"


@pytest.fixture
def exporter() -> Iterator[tuple[str, list[str]]]:
    """A dcgm-exporter stand-in: GET /metrics answers the derived A100 MIG page (tests/data/dcgm)."""
    page = (DATA / "derived-a100-mig-pod-xid.prom").read_bytes()
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            status, body = (200, page) if self.path == "/metrics" else (404, b"not found")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics", paths
    server.shutdown()
    server.server_close()


@pytest.fixture
def ingest(
    moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, Path, str]]:
    """The ingest function on a local port: (endpoint, series table, dgx-01's secret file, cluster)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    template = load_template(REPO / "template.yaml")
    deployment = deploy_local(
        template, dynamodb=boto3.client("dynamodb"), sqs=boto3.client("sqs"), parameters={"Stage": STAGE}
    )
    prefix = function_specs(template, deployment)["IngestFunction"].environment["GPULSE_NODE_SECRETS_PREFIX"]
    secret = os.urandom(16).hex()
    cluster = f"dcgm-{os.urandom(3).hex()}"
    boto3.client("ssm").put_parameter(
        Name=f"{prefix}/{cluster}/dgx-01", Value=secret, Type="SecureString", Overwrite=True
    )
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    port = free_port()
    log = tmp_path / "ingest.log"
    proc = start_ingest(moto_server, port, STAGE, log)
    try:
        yield f"http://127.0.0.1:{port}", deployment.tables["SeriesTable"], secret_file, cluster
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_shipper_reads_dcgm_exporter_and_ingest_stores_it(
    exporter: tuple[str, list[str]], ingest: tuple[str, str, Path, str], tmp_path: Path
) -> None:
    url, paths = exporter
    endpoint, table, secret_file, cluster = ingest
    log = tmp_path / "shipper.log"
    argv = [
        *(
            "--endpoint",
            endpoint,
            "--cluster",
            cluster,
            "--node",
            "dgx-01",
            "--secret-file",
            str(secret_file),
        ),
        *("--spool-dir", str(tmp_path / "spool"), "--source", f"dcgm-exporter={url}"),
        *("--interval", "1", "--duration", "3", "--drain-seconds", "10"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "node_shipper", *argv],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},  # a node holds no AWS keys
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        timeout=60,
    )
    assert done.returncode == 0, log.read_text()
    assert done.stdout.decode().splitlines()[0] == (
        f"REAL: node dgx-01, 1 GPUs (NVIDIA A100-SXM4-40GB) through dcgm-exporter {url}"
    )
    shipper_log = log.read_text()
    assert shipper_log.count('msg="dcgm-exporter source: Batch v1 fields left empty"') == 1
    assert " not_on_page=util_gpu,util_mem,retired_pages " in shipper_log
    chunks = [
        codec.decode(item["data"]["B"])
        for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=table)
        for item in page["Items"]
        if item["pk"]["S"].startswith(f"{cluster}#")
    ]
    assert [c.node for c in chunks] == ["dgx-01"]
    [chunk] = chunks
    n = len(chunk.timestamps)
    assert n >= 2 and len(paths) == n + 1 and set(paths) == {"/metrics"}  # open() reads it once more
    assert chunk.simulated is False
    [gpu] = chunk.gpus
    assert (gpu.index, gpu.uuid, gpu.name, gpu.mig_mode) == (0, A100, "NVIDIA A100-SXM4-40GB", True)
    assert (gpu.mem_total, gpu.power_limit_w) == ((35690 + 4845 + 425) * MIB, 400.0)
    expected = {
        "mem_used": 4845.0 * MIB,
        "power_w": 409.69,
        "temp_c": 61.0,
        "sm_clock_mhz": 1215.0,
        "throttle_reasons": 4.0,
        "ecc_sbe_volatile": 2.0,
        "ecc_dbe_volatile": 1.0,
        "pcie_tx_bps": 33011712.0,  # stored at KiB/s resolution
        "pcie_rx_bps": 97863680.0,
        "remapped_rows_unc": 1.0,
        "remap_failure": 0.0,
    }
    assert {k: gpu.metrics[k].tolist() for k in expected} == {k: [v] * n for k, v in expected.items()}
    assert np.isnan(gpu.metrics["util_gpu"]).all()  # MIG mode: DCGM has no whole-GPU utilisation
    [mig] = chunk.mig
    assert (mig.uuid, mig.gi_id, mig.ci_id, mig.profile, mig.mem_total) == (
        f"{A100}/gi13",
        13,
        0,
        "1g.5gb",
        4864 * MIB,
    )
    assert mig.metrics["mem_used"].tolist() == [3100.0 * MIB] * n
    assert mig.metrics["util_sm"].tolist() == [91.0] * n
    assert [(p["pid"], p["user"], p["container"], p["name"]) for p in chunk.processes] == [
        (0, "ml-research", "ml-research/bert-train-0/trainer", "bert-train-0")
    ]
    assert chunk.events == []  # XID 79 was already the last XID when the shipper started
