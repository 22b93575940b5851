"""Stored bytes per sample, as DynamoDB and S3 bill them, against Prometheus TSDB and VictoriaMetrics.

    python bench/bench_storage.py [--hours 6] [--quick] [--out FILE] [--trace CSV]

Two datasets, the same samples given to every store:
  node8   one 8-GPU node, --hours at 1 Hz, made by a generator written here, apart from the
          project's simulator (node_shipper.simulate): jobs that start and end, utilisation as a
          random walk per job phase with dips (eval, checkpoints), memory in steps, power
          following utilisation with sensor noise, temperature lagging power, PCIe, host CPU,
          memory, disk and network; every value at its catalogue step (gpulse.wire.metrics).
  trace   the real sparse trace (/work/shared/traces/vector-1gpu-15s.csv: one GPU every 15 s,
          util_gpu and mem_used).

For each dataset and batch interval (10, 30, 60 s):
  hot     the per-batch items ingest writes (SeriesStore.chunk_items), bytes as DynamoDB's item
          size rules count them (attribute names + values) + 100 B per item;
  long    the compactor's hourly blocks (gpulse.blocks) in their S3 objects (LongTier.block_object:
          one per node-hour, billed as S3 Standard stores it: body + key + user metadata, no
          per-object overhead), less the rollup sections; or for a sparse node its day blocks
          (LongTier.day_block_object; the whole trace is one day), and
  rollups its minute rollups (min/mean/max/last): the rollup sections of those objects;
and, once per dataset, the baselines:
  prometheus  `promtool tsdb create-blocks-from openmetrics` over the samples, the blocks'
              size on disk (chunks, index, meta; 2 h blocks, as promtool 2.42 writes them);
  victoriametrics  `victoria-metrics` on 127.0.0.1 with a temporary -storageDataPath, the
              samples imported through /api/v1/import, then /internal/force_flush and
              /internal/force_merge; the data directory's size (data + indexdb; cache excluded).
Both are installed from Debian (`apt-get install prometheus victoria-metrics`) if missing; the
bench says so. A sample is one non-null value of one series at one timestamp.

stdout: one JSON object per line (figures and ratios to each baseline). stderr: a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

import boto3  # noqa: E402

from gpulse import blocks, codec  # noqa: E402
from gpulse.compact import SPARSE_TIMESTAMPS  # noqa: E402
from gpulse.store import BLOCK_S, DAY_S, LongTier, SeriesStore  # noqa: E402
from gpulse.wire.batch import Batch  # noqa: E402

TRACE = Path("/work/shared/traces/vector-1gpu-15s.csv")
MIB = 1 << 20
GIB = 1 << 30
ITEM_OVERHEAD = 100  # bytes DynamoDB adds to each item's size for storage billing
T0 = 1_770_000_000.0  # 2026-02-02 02:40 UTC: a fixed start, inside VictoriaMetrics' retention below
INTERVALS = (10, 30, 60)


# -- the independent generator ---------------------------------------------------------------------


def q(values: np.ndarray, step: float) -> np.ndarray:
    """Values at the catalogue step, as a shipper would send them."""
    return np.round(values / step) * step


def generate_node(hours: float, gpus: int = 8, seed: int = 7) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(timestamps, "gpu{i}.{metric}" / "host.{metric}" → values) for one node at 1 Hz."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600)
    # a 1 Hz loop's timestamps: each tick a few ms late, at ms resolution
    ts = np.round(T0 + np.arange(n) + np.abs(rng.normal(0.004, 0.002, n)), 3)
    # jobs: idle gaps and runs of 20–150 min, all GPUs of the node in one job (data parallel)
    busy = np.zeros(n, dtype=bool)
    runs: list[tuple[int, int]] = []
    t = int(rng.integers(0, 1200))
    while t < n:
        run = int(rng.integers(1200, 9000))
        busy[t : t + run] = True
        runs.append((t, min(t + run, n)))
        t += run + int(rng.integers(120, 2400))
    series: dict[str, np.ndarray] = {}
    host_load = np.zeros(n)
    for g in range(gpus):
        level = np.where(busy, rng.uniform(78, 96), 0.0)
        walk = np.cumsum(rng.normal(0, 0.6, n))
        walk -= np.convolve(walk, np.ones(301) / 301, mode="same")  # a walk that stays near its level
        util = level + np.where(busy, walk + rng.normal(0, 4, n), 0)
        dips = busy & (rng.random(n) < 1 / 900)  # eval / checkpoint: 20–60 s near idle
        for at in np.flatnonzero(dips):
            util[at : at + int(rng.integers(20, 60))] = rng.uniform(0, 15)
        util = np.clip(util, 0, 100)
        warm = np.where(busy, 1.0, 0.0)
        series[f"gpu{g}.util_gpu"] = q(util, 1)
        series[f"gpu{g}.util_mem"] = q(np.clip(util * 0.45 + rng.normal(0, 2, n) * warm, 0, 100), 1)
        # memory: a plateau per job, allocator steps now and then, ~0.5 GiB when idle
        mem = np.full(n, 512.0 * MIB)
        for a, b in runs:
            plateau = rng.uniform(30, 76) * GIB
            steps = np.cumsum(np.where(rng.random(b - a) < 1 / 600, rng.normal(0, 300 * MIB, b - a), 0))
            mem[a:b] = plateau + steps
        series[f"gpu{g}.mem_used"] = q(mem, MIB)
        power = 62 + util * 6.1 + rng.normal(0, 2.5, n) + np.where(busy, rng.normal(0, 6, n), 0)
        series[f"gpu{g}.power_w"] = q(np.clip(power, 50, 700), 0.01)
        temp = np.empty(n)
        temp[0] = 34
        target = 30 + power / 12
        alpha = 1 / 120
        for i in range(1, n):  # first-order lag: once per sample, cheap enough at 21,600 × 8
            temp[i] = temp[i - 1] + alpha * (target[i] - temp[i - 1])
        series[f"gpu{g}.temp_c"] = q(temp + rng.normal(0, 0.3, n), 1)
        series[f"gpu{g}.sm_clock_mhz"] = np.where(busy, np.where(rng.random(n) < 0.02, 1755.0, 1980.0), 210.0)
        series[f"gpu{g}.throttle_reasons"] = np.where(busy & (util > 95) & (rng.random(n) < 0.1), 4.0, 0.0)
        series[f"gpu{g}.ecc_sbe_volatile"] = np.zeros(n)
        series[f"gpu{g}.ecc_dbe_volatile"] = np.zeros(n)
        pcie = np.where(busy, rng.lognormal(np.log(2.5e9), 0.25, n), rng.lognormal(np.log(2e5), 0.5, n))
        series[f"gpu{g}.pcie_rx_bps"] = q(pcie, 1024)
        series[f"gpu{g}.pcie_tx_bps"] = q(pcie * rng.uniform(0.1, 0.3, n), 1024)
        host_load += util / 100
    series["host.cpu_util"] = q(np.clip(host_load * 4 + rng.normal(0, 1.5, n) + 1, 0, 100), 0.1)
    series["host.cpu_busy_cores"] = q(series["host.cpu_util"] * 1.28, 0.01)
    series["host.mem_used"] = q(64 * GIB + np.cumsum(rng.normal(0, 4 * MIB, n)) + busy * 120 * GIB, MIB)
    disk = np.where(rng.random(n) < 0.15, rng.lognormal(np.log(8e7), 1.0, n), 0.0)
    series["host.disk_read_bps"] = q(disk, 1024)
    series["host.disk_write_bps"] = q(
        np.where(rng.random(n) < 0.05, rng.lognormal(np.log(3e7), 1, n), 0), 1024
    )
    net = np.where(busy, rng.lognormal(np.log(1.2e9), 0.3, n), rng.lognormal(np.log(5e4), 0.6, n))
    series["host.net_rx_bps"] = q(net, 1024)
    series["host.net_tx_bps"] = q(net * rng.uniform(0.9, 1.1, n), 1024)
    return ts, series


def trace_node(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from bench_codec import trace_rows  # the codec bench's reader of the same CSV

    times, mem, util = trace_rows(path)
    return np.round(times, 3), {"gpu0.util_gpu": util.astype(float), "gpu0.mem_used": mem.astype(float)}


# -- Batch v1 documents and DynamoDB item sizes ----------------------------------------------------


def docs_of(ts: np.ndarray, series: dict[str, np.ndarray], batch_s: int, node: str) -> list[dict[str, Any]]:
    """The batches a shipper sends every `batch_s` seconds (host cpu_util and mem_used are required
    by Batch v1: null where the dataset has none, and not counted as samples)."""
    gpus = sorted({int(k.split(".")[0][3:]) for k in series if k.startswith("gpu")})
    cut = np.searchsorted(ts, np.arange(ts[0] // batch_s * batch_s + batch_s, ts[-1] + batch_s, batch_s))
    bounds = [0, *[int(c) for c in cut if 0 < c < len(ts)], len(ts)]
    docs = []
    for seq, (a, b) in enumerate(itertools.pairwise(bounds)):
        if a == b:
            continue
        k = b - a

        def metrics(prefix: str, a: int = a, b: int = b) -> dict[str, list[float | None]]:
            return {
                key.split(".", 1)[1]: [None if math.isnan(v) else v for v in vals[a:b].tolist()]
                for key, vals in series.items()
                if key.startswith(prefix + ".")
            }

        host = metrics("host")
        host.setdefault("cpu_util", [None] * k)
        host.setdefault("mem_used", [None] * k)
        docs.append(
            {
                "version": 1,
                "batch_id": uuid.UUID(int=(seq << 64) | batch_s).hex,
                "cluster": "bench",
                "node": node,
                "seq": seq,
                "shipper": {"version": "bench", "simulated": False, "sample_interval_s": 1.0},
                "timestamps": ts[a:b].tolist(),
                "host": {"cpu_count": 128, "mem_total": 2048 * GIB, "metrics": host},
                "gpus": [
                    {
                        "index": g,
                        "uuid": f"GPU-{uuid.UUID(int=g + 1)}",
                        "name": "NVIDIA H100 80GB HBM3",
                        "mem_total": 80 * GIB,
                        "metrics": metrics(f"gpu{g}"),
                    }
                    for g in gpus
                ],
            }
        )
    return docs


def number_size(text: str) -> int:
    """DynamoDB's size of a number: 1 byte per two significant digits, plus 1."""
    digits = text.lstrip("-").replace(".", "").lstrip("0").rstrip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def item_size(item: dict[str, Any]) -> int:
    """An item's billed size: attribute names and values (DynamoDB's rules) + 100 B overhead."""
    total = ITEM_OVERHEAD
    for name, value in item.items():
        total += len(name.encode())
        ((kind, v),) = value.items()
        if kind == "S":
            total += len(v.encode())
        elif kind == "B":
            total += len(v)
        elif kind == "N":
            total += number_size(v)
        else:
            raise ValueError(f"attribute type {kind} not counted here")
    return total


def count_samples(series: dict[str, np.ndarray]) -> int:
    return int(sum(np.count_nonzero(~np.isnan(v)) for v in series.values()))


def tiers(docs: list[dict[str, Any]], store: SeriesStore) -> dict[str, Any]:
    """Bytes and items of the hot tier (every batch) and the long tier (hour blocks, rollups)."""
    hot_bytes = hot_items = 0
    by_hour: dict[float, list[codec.Chunk]] = defaultdict(list)
    keys: dict[float, list[str]] = defaultdict(list)
    for doc in docs:
        now = doc["timestamps"][-1] + 1
        for item in store.chunk_items(Batch(doc), now):
            hot_bytes += item_size(item)
            hot_items += 1
            chunk = codec.decode(item["data"]["B"])
            for hour in {float(t // BLOCK_S * BLOCK_S) for t in (chunk.timestamps[0], chunk.timestamps[-1])}:
                by_hour[hour].append(chunk)
                keys[hour].append(item["sk"]["S"])
    block_bytes = block_items = roll_bytes = roll_items = 0
    days: dict[float, list[codec.Chunk]] = defaultdict(list)
    folded: dict[float, dict[str, str]] = defaultdict(dict)  # the day item's `hours` attribute
    for hour, chunks in sorted(by_hour.items()):
        merged = blocks.merge(chunks, hour, hour + BLOCK_S)
        if merged is None:
            continue
        if len(merged["timestamps"]) < SPARSE_TIMESTAMPS:  # the compactor folds it into a day block
            days[hour // DAY_S * DAY_S].extend(blocks.decode_block(p) for p in blocks.encode_block(merged))
            folded[hour // DAY_S * DAY_S][str(int(hour))] = blocks.source_digest(keys[hour])
            continue
        parts, rollups = blocks.encode_block(merged), blocks.rollup(merged)
        obj = LongTier.block_object(
            merged["cluster"],
            merged["node"],
            hour,
            parts,
            rollups,
            source=blocks.source_digest(keys[hour]),
            t_first=float(merged["timestamps"][0]),
            t_last=float(merged["timestamps"][-1]),
        )
        rolled = sum(len(r) for r in rollups.values())
        block_bytes += obj.billed_bytes() - rolled
        block_items += 1
        roll_bytes += rolled
        roll_items += 1
    for day, hours in days.items():
        merged = blocks.merge(hours, day, day + DAY_S)
        assert merged is not None
        ts = merged["timestamps"]
        obj = LongTier.day_block_object(
            "bench",
            "n1",
            day,
            blocks.encode_block(merged),
            hours=folded[day],
            t_first=ts[0],
            t_last=ts[-1],
        )
        block_bytes += obj.billed_bytes()
        block_items += 1
    return {
        "hot_bytes": hot_bytes,
        "hot_items": hot_items,
        "long_bytes": block_bytes,
        "long_items": block_items,
        "rollup_bytes": roll_bytes,
        "rollup_items": roll_items,
    }


# -- the baselines ---------------------------------------------------------------------------------


def ensure_installed(binary: str, package: str) -> None:
    if shutil.which(binary):
        return
    print(f"# {binary} missing: installing Debian package {package}", file=sys.stderr)
    sudo = [] if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0 else ["sudo"]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "--no-install-recommends", package], check=True, env=env
    )


def metric_labels(key: str) -> tuple[str, dict[str, str]]:
    where, metric = key.split(".", 1)
    if where == "host":
        return f"host_{metric}", {"node": "n1"}
    return f"gpu_{metric}", {"node": "n1", "gpu": where[3:]}


def dir_size(path: Path, skip: tuple[str, ...] = ()) -> int:
    return sum(
        f.stat().st_size
        for f in path.rglob("*")
        if f.is_file() and not any(p in f.relative_to(path).parts for p in skip)
    )


def prometheus_bytes(ts: np.ndarray, series: dict[str, np.ndarray], work: Path) -> int:
    ensure_installed("promtool", "prometheus")
    text = work / "samples.om"
    families: dict[str, list[str]] = defaultdict(list)
    for key, vals in series.items():
        name, labels = metric_labels(key)
        lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        ok = ~np.isnan(vals)
        families[name].extend(
            f"{name}{{{lab}}} {v:.17g} {t:.3f}" for t, v in zip(ts[ok], vals[ok], strict=True)
        )
    with text.open("w") as f:
        for name, lines in families.items():
            f.write(f"# TYPE {name} gauge\n")
            f.write("\n".join(lines) + "\n")
        f.write("# EOF\n")
    out = work / "prom"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(text), str(out)],
        check=True,
        capture_output=True,
    )
    return dir_size(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exported(base: str) -> int:
    """How many samples VictoriaMetrics returns for every series."""
    url = f"{base}/api/v1/export?match[]=" + urllib.parse.quote('{__name__!=""}')
    with urllib.request.urlopen(url, timeout=120) as r:
        return sum(len(json.loads(line)["values"]) for line in r if line.strip())


def victoria_bytes(ts: np.ndarray, series: dict[str, np.ndarray], work: Path) -> int:
    ensure_installed("victoria-metrics", "victoria-metrics")
    data = work / "vm"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            "victoria-metrics",
            f"-storageDataPath={data}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        lines = []
        ms = np.round(ts * 1000).astype(np.int64)
        for key, vals in series.items():
            name, labels = metric_labels(key)
            ok = ~np.isnan(vals)
            lines.append(
                json.dumps(
                    {
                        "metric": {"__name__": name, **labels},
                        "values": vals[ok].tolist(),
                        "timestamps": ms[ok].tolist(),
                    }
                )
            )
        body = ("\n".join(lines) + "\n").encode()
        urllib.request.urlopen(urllib.request.Request(f"{base}/api/v1/import", data=body), timeout=120).read()
        # the import is buffered: flush until every sample is readable, then merge the parts
        want = sum(int(np.count_nonzero(~np.isnan(v))) for v in series.values())
        for _ in range(120):
            urllib.request.urlopen(f"{base}/internal/force_flush", timeout=60).read()
            if exported(base) == want:
                break
            time.sleep(1)
        else:
            raise RuntimeError("VictoriaMetrics did not make every imported sample readable")
        urllib.request.urlopen(f"{base}/internal/force_merge", timeout=60).read()
        # force_merge runs in the background: wait until no merge is active for 3 s in a row
        idle = 0
        for _ in range(600):
            time.sleep(1)
            idle = idle + 1 if active_merges(base) == 0 else 0
            if idle >= 3:
                break
    finally:
        proc.terminate()  # a graceful stop: VictoriaMetrics flushes what it holds
        proc.wait(timeout=60)
    return dir_size(data, skip=("cache", "tmp"))


def active_merges(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vm_active_merges")
    )


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=6.0, help="hours of the generated 8-GPU node (1 Hz)")
    ap.add_argument("--quick", action="store_true", help="1 hour of the generated node")
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--out", type=Path, help="also write every result as one JSON document")
    args = ap.parse_args(argv)
    hours = 1.0 if args.quick else args.hours

    # building items touches no network: the client is never called
    store = SeriesStore("bench", client=boto3.client("dynamodb", region_name="us-east-1"))
    datasets = {"node8": generate_node(hours)}
    if args.trace.exists():
        datasets["trace"] = trace_node(args.trace)
    results = []
    for name, (ts, series) in datasets.items():
        samples = count_samples(series)
        with tempfile.TemporaryDirectory(prefix="gpulse-bench-storage-") as tmp:
            prom = prometheus_bytes(ts, series, Path(tmp))
            vm = victoria_bytes(ts, series, Path(tmp))
        base = {
            "bench": "storage",
            "dataset": name,
            "samples": samples,
            "series": len(series),
            "hours": round(float(ts[-1] - ts[0]) / 3600, 2),
            "prometheus_b_per_sample": round(prom / samples, 4),
            "victoriametrics_b_per_sample": round(vm / samples, 4),
        }
        for batch_s in INTERVALS:
            t = tiers(docs_of(ts, series, batch_s, node="n1"), store)
            row = {
                **base,
                "batch_s": batch_s,
                **t,
                "hot_b_per_sample": round(t["hot_bytes"] / samples, 4),
                "long_b_per_sample": round(t["long_bytes"] / samples, 4),
                "rollup_b_per_sample": round(t["rollup_bytes"] / samples, 4),
                "hot_vs_vm": round(t["hot_bytes"] / vm, 3),
                "long_vs_vm": round(t["long_bytes"] / vm, 3),
                "long_with_rollups_vs_vm": round((t["long_bytes"] + t["rollup_bytes"]) / vm, 3),
                "long_vs_prometheus": round(t["long_bytes"] / prom, 3),
                "hot_vs_prometheus": round(t["hot_bytes"] / prom, 3),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            r, b = row, base
            print(
                f"# {name:6} {batch_s:3d} s  hot {r['hot_b_per_sample']:7.3f}"
                f"  long {r['long_b_per_sample']:6.3f}  rollups {r['rollup_b_per_sample']:6.3f}"
                f"  B/sample | VM {b['victoriametrics_b_per_sample']:.3f}"
                f"  Prom {b['prometheus_b_per_sample']:.3f} | long/VM {r['long_vs_vm']:.2f}"
                f"  hot/VM {r['hot_vs_vm']:.2f}",
                file=sys.stderr,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
