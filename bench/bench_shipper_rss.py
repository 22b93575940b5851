"""Benchmark of the shipper's memory and CPU on a node: RSS and CPU of `python -m node_shipper`.

    python bench/bench_shipper_rss.py [--seconds 60] [--gpus 8] [--baseline REF] [--repeats 1]

Runs the shipper as a child process (`--simulate healthy`, one virtual node of --gpus GPUs, 1 Hz,
10 s batches) against a receiver on 127.0.0.1 that answers 200 to every post, for --seconds,
and reads the child from outside with psutil, as an operator's `ps` would:

  rss_mib        resident set size at the end of the run (MiB)
  rss_peak_mib   the highest RSS sampled once a second
  cpu_pct        user + sys CPU over the run, in % of one core (interpreter start excluded)
  import_rss_mib RSS of a process that only imports node_shipper.__main__ (what the imports cost)

--baseline REF also measures commit REF (`git archive`, read-only on the repository, into a
temporary folder; its sources first on PYTHONPATH) in the same run; runs alternate, and each line
of the current tree carries `vs_baseline` (ratio of medians). stdout: one JSON object per line.
Simulated sources skip NVML, so the figures are the shipper's own cost (batching, gzip, HMAC, HTTP,
spool), not the driver's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), str(tree)])
    return env


def import_rss(tree: Path) -> float:
    code = (
        "import node_shipper.__main__\n"
        "print(int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(tree), capture_output=True, text=True, check=True, timeout=60
    )
    return int(out.stdout.strip()) / MIB


def run_once(tree: Path, *, seconds: float, gpus: int, endpoint: str, work: Path) -> dict[str, float]:
    secrets = work / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "node-01").write_bytes(b"bench-secret")
    (secrets / "node-01").chmod(0o600)
    argv = [
        sys.executable,
        "-m",
        "node_shipper",
        "--endpoint",
        endpoint,
        "--cluster",
        "bench",
        "--simulate",
        "healthy",
        "--sim-nodes",
        "1",
        "--sim-gpus",
        str(gpus),
        "--secrets-dir",
        str(secrets),
        "--spool-dir",
        str(work / "spool"),
        "--log-level",
        "WARNING",
    ]
    child = subprocess.Popen(argv, env=_env(tree), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = psutil.Process(child.pid)
    time.sleep(2.0)  # interpreter start and imports: not the steady state
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    peak = 0.0
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        if child.poll() is not None:
            raise RuntimeError(f"shipper exited {child.returncode}: {child.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
        peak = max(peak, proc.memory_info().rss / MIB)
    cpu1 = proc.cpu_times()
    rss = proc.memory_info().rss / MIB
    elapsed = time.monotonic() - t0
    child.terminate()
    child.wait(timeout=30)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"rss_mib": rss, "rss_peak_mib": peak, "cpu_pct": 100.0 * cpu / elapsed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--baseline", metavar="REF", help="also measure this commit, in the same run")
    a = p.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="gpulse-bench-") as tmp:
        trees = {"current": REPO}
        if a.baseline:
            base = Path(tmp) / "baseline"
            base.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", a.baseline], capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
            trees["baseline"] = base
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for i in range(a.repeats):
            for name, tree in trees.items():  # alternate, so drift of the machine hits both
                work = Path(tmp) / f"{name}-{i}"
                work.mkdir()
                run = run_once(tree, seconds=a.seconds, gpus=a.gpus, endpoint=endpoint, work=work)
                run["import_rss_mib"] = import_rss(tree)
                results[name].append(run)
    server.shutdown()
    medians = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()
    }
    for name, figures in medians.items():
        line: dict[str, Any] = {
            "bench": "shipper_rss",
            "tree": name if name == "current" else f"baseline {a.baseline}",
            "seconds": a.seconds,
            "gpus": a.gpus,
            "repeats": a.repeats,
            **{k: round(v, 3) for k, v in figures.items()},
        }
        if name == "current" and "baseline" in medians:
            line["vs_baseline"] = {
                k: round(v / medians["baseline"][k], 3) for k, v in figures.items() if medians["baseline"][k]
            }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
