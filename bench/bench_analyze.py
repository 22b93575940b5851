"""How long analyze takes for one window of a 100-node cluster, split into read, decode, detect.

Writes a 10-minute window of a simulated 100-node × 8-GPU cluster (30-s batches, 1 Hz) into a
moto server on 127.0.0.1 through the real SeriesStore, then times `Analyzer.run_cluster`'s
phases over repeated runs. Baseline, measured in the same run on the same batches: decoding
gzip-compressed Batch v1 JSON (what storing the request bodies as they came would cost) into the
same numpy arrays. Prints one JSON line per measurement, then a table. Medians; ratios to the
baseline. moto is not DynamoDB: the read figure is for this machine's loopback and moto, not AWS.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path

import boto3
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.stack import aws_env, free_port  # noqa: E402
from devstack.template import deploy_local, load_template  # noqa: E402
from gpulse import codec  # noqa: E402
from gpulse.alerting.records import AlertRecords  # noqa: E402
from gpulse.alerting.settle import FindingsQueue  # noqa: E402
from gpulse.analyze import Analyzer, detect_all  # noqa: E402
from gpulse.config.live import StaticRules  # noqa: E402
from gpulse.store import SeriesStore, encode_parts  # noqa: E402
from gpulse.window import build_window  # noqa: E402
from gpulse.wire.batch import Batch  # noqa: E402
from node_shipper.simulate import Scenario, simulate_batches  # noqa: E402


def json_baseline(bodies: list[bytes]) -> float:
    """Seconds to turn gzip JSON bodies into the per-series float arrays the codec yields."""
    t = time.perf_counter()
    for body in bodies:
        doc = json.loads(gzip.decompress(body))
        np.asarray(doc["timestamps"], dtype=float)
        for values in doc["host"]["metrics"].values():
            np.asarray(values, dtype=float)
        for g in doc["gpus"]:
            for values in g["metrics"].values():
                np.array([np.nan if v is None else v for v in values], dtype=float)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--window-s", type=int, default=600)
    ap.add_argument("--batch-s", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="20 nodes, 3 repeats (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.nodes, args.repeats = 20, 3

    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(aws_env(f"http://127.0.0.1:{port}"))
    try:
        dep = deploy_local(
            load_template(ROOT / "template.yaml"), dynamodb=boto3.client("dynamodb"), sqs=boto3.client("sqs")
        )
        store = SeriesStore(dep.tables["SeriesTable"])
        now = time.time()
        scenario = Scenario.named("healthy", nodes=args.nodes, gpus_per_node=args.gpus, cluster="bench")
        docs = list(simulate_batches(scenario, now - args.window_s - 5, args.window_s, args.batch_s))
        bodies = [gzip.compress(json.dumps(d).encode(), 6) for d in docs]
        for d in docs:
            store.put_batch(Batch(d))
        chunk_bytes = sum(len(data) for d in docs for _, data in encode_parts(d))
        samples = sum(
            len(d["timestamps"]) * (len(d["host"]["metrics"]) + sum(len(g["metrics"]) for g in d["gpus"]))
            for d in docs
        )
        analyzer = Analyzer(
            store,
            AlertRecords(dep.tables["StateTable"]),
            FindingsQueue(dep.queues["FindingsQueue"]["url"]),
            StaticRules(),
            window_s=args.window_s,
        )
        nodes = store.nodes()
        params = StaticRules().params()
        phases: dict[str, list[float]] = {"read": [], "decode": [], "window": [], "detect": [], "total": []}
        baseline: list[float] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            raw = store.read_window("bench", now - args.window_s - 95, now)
            t1 = time.perf_counter()
            chunks = [codec.decode(b) for b in raw]
            t2 = time.perf_counter()
            end = max(float(c.timestamps[-1]) for c in chunks)
            window = build_window("bench", chunks, end=end - end % 5, span_s=args.window_s, step=5.0)
            t3 = time.perf_counter()
            detect_all(window, params)
            t4 = time.perf_counter()
            phases["read"].append(t1 - t0)
            phases["decode"].append(t2 - t1)
            phases["window"].append(t3 - t2)
            phases["detect"].append(t4 - t3)
            t5 = time.perf_counter()
            analyzer.run_cluster("bench", [n for n in nodes if n.cluster == "bench"], params, now)
            phases["total"].append(time.perf_counter() - t5)
            baseline.append(json_baseline(bodies))
    finally:
        server.stop()

    med = {k: statistics.median(v) for k, v in phases.items()}
    base = statistics.median(baseline)
    rows = [
        {
            "bench": "analyze",
            "measure": "dataset",
            "nodes": args.nodes,
            "gpus_per_node": args.gpus,
            "window_s": args.window_s,
            "batch_s": args.batch_s,
            "chunks": len(raw),
            "chunk_bytes": chunk_bytes,
            "bytes_per_sample": round(chunk_bytes / samples, 3),
            "gzip_json_bytes": sum(len(b) for b in bodies),
        },
        *(
            {"bench": "analyze", "measure": f"{k}_s_median", "value": round(v, 4), "repeats": args.repeats}
            for k, v in med.items()
        ),
        {"bench": "analyze", "measure": "baseline_gzip_json_decode_s_median", "value": round(base, 4)},
        {
            "bench": "analyze",
            "measure": "codec_decode_over_gzip_json_decode",
            "value": round(med["decode"] / base, 3),
        },
    ]
    for r in rows:
        print(json.dumps(r))
    print(
        f"\n{args.nodes} nodes × {args.gpus} GPUs, {args.window_s}s window, {len(raw)} chunks "
        f"({chunk_bytes / 1e6:.2f} MB), medians of {args.repeats}:"
    )
    for k, v in med.items():
        print(f"  {k:<8} {v * 1000:8.1f} ms")
    ratio = med["decode"] / base
    print(f"  baseline: gzip JSON → arrays {base * 1000:.1f} ms; codec decode is {ratio:.2f}× that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
