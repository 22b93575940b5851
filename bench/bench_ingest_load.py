"""Ingest under load: 1,250 simulated shippers posting signed batches to the local ingest URL.

    python bench/bench_ingest_load.py [--shippers 1250] [--seconds 60] [--batch 10] [--workers 48]

The local ingest URL is the template's IngestFunction served by `python -m devstack.runtime` on
127.0.0.1 (the same handler and function URL events as the local stack), against a moto
server (its own process, on 127.0.0.1) with the tables from template.yaml and one SSM secret per
shipper. The load generator is this process: a bounded pool of --workers threads that sends
each shipper's batch (8 GPUs × --batch samples, gzip, HMAC-signed at send time) on its schedule:
every --batch seconds, shippers spread evenly over the interval, for --seconds. That is an open
load of shippers / batch requests per second; a server that cannot keep up shows as lag (how late
a send started) and latency, never as a lower offered rate.

Locust is not used: it is not installed here, and its gevent workers would add a second event loop
beside the handler's threads on the 2 shared cores; a bounded thread pool is enough for 125 req/s.

Figures (one JSON object per line): req/s completed, p50/p90/p99/max latency, start lag p99,
errors by status; the same for the baseline measured in the same run: the same generator at the
same rate against an unknown path on the same server (the handler's 404: nothing verified, read
or stored), so the ratio says what ingest's work adds to HTTP on loopback.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import boto3  # noqa: E402
import numpy as np  # noqa: E402
import urllib3  # noqa: E402

from devstack.template import deploy_local, function_specs, load_template  # noqa: E402
from gpulse.wire.signing import sign_headers  # noqa: E402

CLUSTER = "load"
GIB = 1 << 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    http = urllib3.PoolManager()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            http.request("GET", url, timeout=1, retries=False)
            return
        except urllib3.exceptions.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def batch_body(node: str, t0: float, n: int, seq: int, rng: np.random.Generator) -> bytes:
    """One shipper's batch: 8 GPUs × n samples of the usual metrics, gzip JSON."""
    ts = [round(t0 + i, 3) for i in range(n)]
    gpus = []
    for g in range(8):
        util = np.clip(rng.normal(85, 8, n), 0, 100).round()
        gpus.append(
            {
                "index": g,
                "uuid": f"GPU-{node}-{g}",
                "mem_total": 80 * GIB,
                "metrics": {
                    "util_gpu": util.tolist(),
                    "util_mem": (util * 0.4).round().tolist(),
                    "mem_used": [float(60 * GIB)] * n,
                    "power_w": (60 + util * 6 + rng.normal(0, 3, n)).round(2).tolist(),
                    "temp_c": [float(65 + g)] * n,
                    "sm_clock_mhz": [1980.0] * n,
                    "pcie_rx_bps": (rng.lognormal(21.6, 0.25, n) // 1024 * 1024).tolist(),
                },
            }
        )
    doc = {
        "version": 1,
        "batch_id": secrets.token_hex(16),
        "cluster": CLUSTER,
        "node": node,
        "seq": seq,
        "timestamps": ts,
        "host": {
            "cpu_count": 128,
            "mem_total": 2048 * GIB,
            "metrics": {"cpu_util": [35.5] * n, "mem_used": [float(400 * GIB)] * n},
        },
        "gpus": gpus,
    }
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def run_load(
    url: str,
    plan: list[tuple[float, str, bytes, bytes]],
    *,
    workers: int,
    start: float,
    expect: str,
    cutoff_s: float,
) -> dict[str, Any]:
    """Send each planned request at its time (offset from `start`); latencies and statuses back.
    A request whose turn comes more than `cutoff_s` after `start` is not sent (counted): the run
    is bounded in time even when the server falls behind."""
    http = urllib3.PoolManager(maxsize=workers, retries=False, timeout=urllib3.Timeout(30))
    lat: list[float] = []
    lag: list[float] = []
    status: Counter[str] = Counter()
    lock = threading.Lock()

    def send(at: float, node: str, secret: bytes, body: bytes) -> None:
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        late = time.monotonic() - (start + at)
        if time.monotonic() > start + cutoff_s:
            with lock:
                status["not_sent"] += 1
            return
        headers = {
            **sign_headers(secret, CLUSTER, node, int(time.time()), body),
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        t = time.perf_counter()
        try:
            code = str(http.request("POST", url, body=body, headers=headers).status)
        except urllib3.exceptions.HTTPError as e:
            code = type(e).__name__
        took = time.perf_counter() - t
        with lock:
            lat.append(took)
            lag.append(late)
            status[code] += 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for item in plan:
            pool.submit(send, *item)
    ended = time.monotonic()
    ms = np.array(lat or [0.0]) * 1000
    return {
        "requests": len(lat),
        "duration_s": round(ended - start, 2),
        "req_per_s": round(len(lat) / (ended - start), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "start_lag_p99_ms": round(float(np.percentile(np.array(lag or [0.0]) * 1000, 99)), 1),
        "status": dict(status),
        "errors": sum(v for k, v in status.items() if k not in (expect, "not_sent")),
        "not_sent": status.get("not_sent", 0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shippers", type=int, default=1250)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long each phase sends (bounded)")
    ap.add_argument("--batch", type=int, default=10, help="each shipper's batch interval, seconds")
    ap.add_argument("--workers", type=int, default=48, help="sender threads (the bound on concurrency)")
    args = ap.parse_args(argv)

    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    os.environ.update(
        {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    )
    try:
        moto_port = free_port()
        endpoint = f"http://127.0.0.1:{moto_port}"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
        wait_for(f"{endpoint}/moto-api/", procs[-1])
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        template = load_template(ROOT / "template.yaml")
        deployment = deploy_local(
            template, dynamodb=boto3.client("dynamodb"), sqs=boto3.client("sqs"), parameters={"Stage": "load"}
        )
        prefix = function_specs(template, deployment)["IngestFunction"].environment[
            "GPULSE_NODE_SECRETS_PREFIX"
        ]
        ssm = boto3.client("ssm")
        nodes = [f"node-{i:04d}" for i in range(args.shippers)]
        keys: dict[str, bytes] = {}
        t = time.monotonic()

        def register(node: str) -> None:
            secret = secrets.token_hex(32)
            ssm.put_parameter(
                Name=f"{prefix}/{CLUSTER}/{node}", Value=secret, Type="SecureString", Overwrite=True
            )
            keys[node] = secret.encode()

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(register, nodes))
        print(f"# registered {len(nodes)} node secrets in {time.monotonic() - t:.1f} s", file=sys.stderr)

        api_port = free_port()
        log = tempfile.NamedTemporaryFile(prefix="gpulse-load-ingest-", suffix=".log", delete=False)  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devstack.runtime",
                    "IngestFunction",
                    "--endpoint",
                    endpoint,
                    "--port",
                    str(api_port),
                    "--param",
                    "Stage=load",
                ],
                cwd=ROOT,
                env={k: v for k, v in env.items() if not k.startswith("GPULSE_")},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        api = f"http://127.0.0.1:{api_port}"
        wait_for(f"{api}/", procs[-1])

        rng = np.random.default_rng(11)
        rounds = max(1, int(args.seconds // args.batch))
        now = time.time()
        t = time.monotonic()
        plan = []
        for r in range(rounds):
            for i, node in enumerate(nodes):
                at = r * args.batch + i * args.batch / len(nodes)
                body = batch_body(node, now + at - args.batch, args.batch, r, rng)
                plan.append((at, node, keys[node], body))
        print(f"# built {len(plan)} batches in {time.monotonic() - t:.1f} s", file=sys.stderr)
        offered = round(len(nodes) / args.batch, 1)

        results = {}
        phases = (("baseline_404", f"{api}/v1/unknown", "404"), ("ingest", f"{api}/v1/batches", "200"))
        for phase, url, expect in phases:
            # the baseline's batch ids are never stored, so the ingest phase sends them first time
            out = run_load(
                url,
                plan,
                workers=args.workers,
                start=time.monotonic() + 1.0,
                expect=expect,
                cutoff_s=args.seconds + 30,
            )
            results[phase] = out
            row = {
                "bench": "ingest_load",
                "phase": phase,
                "shippers": len(nodes),
                "batch_s": args.batch,
                "offered_req_per_s": offered,
                "workers": args.workers,
                **out,
            }
            print(json.dumps(row), flush=True)
            print(
                f"# {phase:13} {out['req_per_s']:6.1f} req/s (offered {offered})  p50 {out['p50_ms']} ms"
                f"  p99 {out['p99_ms']} ms  lag p99 {out['start_lag_p99_ms']} ms  errors {out['errors']}"
                f" {out['status']}",
                file=sys.stderr,
            )
        base, ing = results["baseline_404"], results["ingest"]
        print(
            json.dumps(
                {
                    "bench": "ingest_load",
                    "phase": "ratio",
                    "p50_vs_baseline": round(ing["p50_ms"] / max(base["p50_ms"], 0.1), 1),
                    "p99_vs_baseline": round(ing["p99_ms"] / max(base["p99_ms"], 0.1), 1),
                    "ingest_log": log.name,
                }
            )
        )
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
