"""What the shipper costs a GPU node, through the real pynvml path: CPU (% of one core) and RSS.

    python bench/bench_node_cost.py [--seconds 180] [--gpus 8] [--window 10] [--profile]

Runs, side by side for --seconds, each read from outside with psutil as an operator's `ps` would:

  nvml       `python -m node_shipper` reading --gpus stand-in GPUs (standin_nvml: the real
             pynvml module and its ctypes calls into a C libnvidia-ml.so.1) at 1 Hz, 10 s batches,
             posting to a receiver on 127.0.0.1 that answers 200
  simulated  the same shipper with `--simulate healthy` (one node of --gpus GPUs): no NVML at all
  idle       `python -c 'import time; time.sleep(...)'`: what an interpreter costs doing nothing

Figures per process (the first --window seconds, the imports, are left out):

  cpu_pct_median   user + sys CPU per --window seconds, in % of one core: the median window
  cpu_pct_mean     over the whole measured stretch
  rss_mib_median, rss_mib_max   RSS sampled once a second

and ratios of `nvml` to each baseline. With --profile, also where the time and memory go: the
import tree (`python -X importtime`, largest cumulative first), what the imports allocate
(tracemalloc, by file) and, in a child reading the stand-in GPUs 120 times, cProfile's top
functions by own CPU time (inflated by the profiler; `cpu_ms_per_sample` is measured without it).
stdout: one JSON object per line.
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
sys.path.insert(0, str(REPO))
from standin_nvml.build import build  # noqa: E402  (the repository root is not installed)

MIB = 1 << 20


class _Accept(BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).posts += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # the bench's output is its figures
        pass


def scenario(gpus: int) -> str:
    """`gpus` busy H100s whose readings move with time, one training process each."""
    lines = []
    for i in range(gpus):
        lines += [
            "gpu",
            f"util_gpu {60 + i} 30 {20 + i}",
            "util_mem 40 20 30",
            f"mem_used {60000 * MIB} {4000 * MIB} 60",
            "power_mw 600000 80000 25",
            "temp 65 5 120",
            "mem_temp 70 3 90",
            "throttle 0",
            "ecc 0 0",
            "pcie_kbs 350000 2100000",
            "remapped_rows 0 0 0 0",
            "gpm 1",
            "unsupported nvmlDeviceGetRetiredPages",
            f"process {os.getpid()} {50000 * MIB}",
        ]
    return "\n".join(lines) + "\n"


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # stderr to a file: a pipe nobody reads would fill and stall the shipper's logging
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=out)


def measure(seconds: float, gpus: int, window: float) -> list[dict[str, Any]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    tmp = Path(tempfile.mkdtemp(prefix="gpulse-node-cost-"))
    (tmp / "scenario.nvml").write_text(scenario(gpus))
    secrets = tmp / "secrets"
    secrets.mkdir(mode=0o700)
    for name in ("bench-node", "node-01"):
        (secrets / name).write_text("bench-secret")
        (secrets / name).chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GPULSE_"))}
    common = ["--endpoint", endpoint, "--cluster", "bench", "--interval", "1", "--batch-seconds", "10"]
    procs = {
        "nvml": _spawn(
            [
                *(sys.executable, "-m", "node_shipper", *common, "--node", "bench-node"),
                *("--secret-file", str(secrets / "bench-node"), "--spool-dir", str(tmp / "spool-nvml")),
            ],
            env | {"LD_LIBRARY_PATH": str(build()), "GPULSE_NVML_SCENARIO": str(tmp / "scenario.nvml")},
            tmp / "nvml.log",
        ),
        "simulated": _spawn(
            [
                *(sys.executable, "-m", "node_shipper", *common, "--simulate", "healthy", "--sim-nodes", "1"),
                *(
                    "--sim-gpus",
                    str(gpus),
                    "--secrets-dir",
                    str(secrets),
                    "--spool-dir",
                    str(tmp / "spool-sim"),
                ),
            ],
            env,
            tmp / "simulated.log",
        ),
        "idle": _spawn([sys.executable, "-c", "import time; time.sleep(1e9)"], env, tmp / "idle.log"),
    }
    watched = {name: psutil.Process(p.pid) for name, p in procs.items()}
    rss: dict[str, list[float]] = {name: [] for name in procs}
    cpu_windows: dict[str, list[float]] = {name: [] for name in procs}
    try:
        time.sleep(window)  # the imports: not what a node pays every second
        for name, p in procs.items():
            if p.poll() is not None:
                raise SystemExit(f"{name} exited {p.returncode}: {(tmp / f'{name}.log').read_text()[-2000:]}")
        start_cpu = {name: _cpu(w) for name, w in watched.items()}
        started = last_window = time.monotonic()
        last_cpu = dict(start_cpu)
        while time.monotonic() - started < seconds:
            time.sleep(1.0)
            for name, w in watched.items():
                rss[name].append(w.memory_info().rss / MIB)
            if time.monotonic() - last_window >= window:
                now = time.monotonic()
                for name, w in watched.items():
                    used = _cpu(w)
                    cpu_windows[name].append(100 * (used - last_cpu[name]) / (now - last_window))
                    last_cpu[name] = used
                last_window = now
        elapsed = time.monotonic() - started
        results: list[dict[str, Any]] = []
        for name, w in watched.items():
            results.append(
                {
                    "bench": "node_cost",
                    "process": name,
                    "gpus": gpus,
                    "seconds": round(elapsed, 1),
                    "windows": len(cpu_windows[name]),
                    "cpu_pct_median": round(statistics.median(cpu_windows[name]), 3),
                    "cpu_pct_mean": round(100 * (_cpu(w) - start_cpu[name]) / elapsed, 3),
                    "rss_mib_median": round(statistics.median(rss[name]), 1),
                    "rss_mib_max": round(max(rss[name]), 1),
                }
            )
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        server.shutdown()
    by = {r["process"]: r for r in results}
    nvml = by["nvml"]
    for base in ("simulated", "idle"):
        b = by[base]
        results.append(
            {
                "bench": "node_cost",
                "ratio": f"nvml/{base}",
                "cpu_pct_median": _ratio(nvml["cpu_pct_median"], b["cpu_pct_median"]),
                "rss_mib_median": _ratio(nvml["rss_mib_median"], b["rss_mib_median"]),
            }
        )
    results.append(
        {
            "bench": "node_cost",
            "goal": "cpu <= 0.5 % of a core, rss <= 40 MiB",
            "cpu_ok": nvml["cpu_pct_median"] <= 0.5,
            "rss_ok": nvml["rss_mib_max"] <= 40,
            "posts_received": _Accept.posts,
        }
    )
    return results


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


# -- where it goes --------------------------------------------------------------------------------

# RSS after each of node_shipper.__main__'s direct imports in turn, in a fresh interpreter: what
# each one adds (a module that an earlier one already loaded adds nothing).
_RSS_BY_IMPORT = """
import importlib, json, psutil, sys
me = psutil.Process()
before = me.memory_info().rss
steps = []
for name in sys.argv[1:]:
    importlib.import_module(name)
    now = me.memory_info().rss
    steps.append([name, now - before])
    before = now
print(json.dumps(steps))
"""

_PROFILE_SAMPLES = """
import cProfile, io, json, pstats, time
from node_shipper.nvml import NvmlCollector
from node_shipper.host import HostCollector
from node_shipper.source import RealSource
collector = NvmlCollector()
collector.open()
source = RealSource(collector, HostCollector())
for _ in range(5):  # warm: first reads, the slow metrics' first read
    source.sample(time.time())
t0 = time.process_time()
for _ in range(120):
    source.sample(time.time())
cpu_ms = (time.process_time() - t0) * 1000 / 120
prof = cProfile.Profile(time.process_time)
prof.enable()
for _ in range(120):
    source.sample(time.time())
prof.disable()
source.close()
stats = pstats.Stats(prof)
rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]
def where(f, line, fn):
    return f"{f.split('site-packages/')[-1].split('/main/')[-1]}:{line}:{fn}"
top = [[where(*key), round(row[2] * 1000 / 120, 3)] for key, row in rows]
print(json.dumps({"cpu_ms_per_sample": round(cpu_ms, 3), "top_own_cpu_ms_per_sample_profiled": top}))
"""


def profile(gpus: int) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GPULSE_"))}
    out: list[dict[str, Any]] = []
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import node_shipper.__main__"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []  # ("  name", cumulative µs): the name's indent is its depth in the import tree
    for line in imports.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        head, cumulative, name = line.split("|", 2)
        if head.split(":", 1)[1].strip().isdigit():  # not the header line
            rows.append((name.rstrip(), int(cumulative)))
    depth = [((len(name) - len(name.lstrip()) - 1) // 2, name.strip(), cum) for name, cum in rows]
    total_us = sum(cum for d, _, cum in depth if d == 0)
    # a module's imports are listed just before it, one level deeper
    end = max(i for i, (d, name, _) in enumerate(depth) if d == 0 and name == "node_shipper.__main__")
    begin = max((i for i, (d, _, _) in enumerate(depth[:end]) if d == 0), default=-1) + 1
    direct = [(name, cum) for d, name, cum in depth[begin:end] if d == 1]
    out.append(
        {
            "bench": "node_cost",
            "profile": "import_time",
            "total_ms": round(total_us / 1000, 1),
            "top_cumulative_ms": [
                [n, round(c / 1000, 1)] for n, c in sorted(direct, key=lambda r: -r[1])[:12]
            ],
        }
    )
    modules = [name for name, _ in direct] + ["node_shipper.__main__"]
    steps = subprocess.run(
        [sys.executable, "-c", _RSS_BY_IMPORT, *modules],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    added = [(name, size) for name, size in json.loads(steps.stdout) if size > 0]
    out.append(
        {
            "bench": "node_cost",
            "profile": "import_rss",
            "total_mib": round(sum(size for _, size in added) / MIB, 1),
            "not_counted": "psutil (the measuring child loads it first)",
            "top_added_mib": [[n, round(sz / MIB, 2)] for n, sz in sorted(added, key=lambda r: -r[1])[:12]],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.nvml"
        path.write_text(scenario(gpus))
        sampled = subprocess.run(
            [sys.executable, "-c", _PROFILE_SAMPLES],
            cwd=REPO,
            env=env | {"LD_LIBRARY_PATH": str(build()), "GPULSE_NVML_SCENARIO": str(path)},
            capture_output=True,
            text=True,
            check=True,
        )
    out.append({"bench": "node_cost", "profile": "sample", "gpus": gpus, **json.loads(sampled.stdout)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="measured stretch (default 180)")
    parser.add_argument("--gpus", type=int, default=8, help="stand-in GPUs (default 8)")
    parser.add_argument("--window", type=float, default=10.0, help="CPU window in seconds (default 10)")
    parser.add_argument("--profile", action="store_true", help="also show where the time and memory go")
    args = parser.parse_args(argv)
    for line in measure(args.seconds, args.gpus, args.window):
        print(json.dumps(line), flush=True)
    if args.profile:
        for line in profile(args.gpus):
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
