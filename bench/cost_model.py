"""What gpulse costs per GPU-month at 1 Hz, from measured bytes and items, at us-east-1 list prices.

    python bench/cost_model.py [--hours 2] [--ingest-ms 30] [--tracing 0]

Measures, for an 8-GPU node at 1 Hz (bench_storage's independent generator, --hours of it) and
each batch interval (10, 30, 60 s), through the project's own code:
  - the items ingest writes per batch (`SeriesStore.chunk_items`) and their billed size: one
    conditional PutItem for a one-chunk batch (1 WRU per KB), TransactWriteItems (2 WRU per KB)
    for a batch split into several chunks; plus the node-registry touch and Powertools'
    idempotency record (put + update) that every batch also costs today;
  - the long tier: blocks and rollups per node-hour (`blocks`, `SeriesStore.block_items`);
  - the compactor's CPU per node-hour (merge, encode, rollups), timed here;
and turns them, with the deployment's schedule (analyze every minute reading its window,
the compactor every hour reading the hot tier's closed hours), into dollars per GPU-month.
Ingest's billed Lambda duration is --ingest-ms (default INGEST_MS, an assumption: the local load
test, bench/bench_ingest_load.py, measures latency with queueing on a shared machine, not what a
Lambda bills).

Prices: us-east-1, on-demand, read 2026-12-03 (see PRICES; "confirmed" says which were seen in
the sources searched that day, the rest are AWS's long-standing list prices, not re-confirmed).
stdout: one JSON object per line (one per batch interval and variant). stderr: a table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

import boto3  # noqa: E402
from bench_storage import docs_of, generate_node, item_size  # noqa: E402

from gpulse import blocks, codec  # noqa: E402
from gpulse.store import BLOCK_S, BUCKET_S, DEFAULT_HOT_TTL_S, SeriesStore  # noqa: E402
from gpulse.wire.batch import Batch  # noqa: E402

MONTH_S = 730 * 3600  # AWS bills a month as 730 hours
PRICES: dict[str, tuple[float, str, bool]] = {
    # name: (USD, unit, confirmed in the sources searched on 2026-12-03)
    "ddb_wru": (0.625e-6, "per write request unit, on-demand (after the Nov 2024 cut)", True),
    "ddb_rru": (0.125e-6, "per read request unit, on-demand", True),
    "ddb_storage_gb": (0.25, "per GB-month, Standard table class (first 25 GB free: ignored)", False),
    "lambda_request": (0.20e-6, "per invocation", True),
    "lambda_gb_s": (0.0000166667, "per GB-second, x86_64", True),
    "http_api_request": (1.00e-6, "per HTTP API request (first 300 M a month; 512 KB units)", False),
    "sqs_request": (0.40e-6, "per SQS standard request (64 KB units)", False),
    "xray_trace": (5.00e-6, "per X-Ray trace recorded", False),
    "logs_gb": (0.50, "per GB of CloudWatch Logs ingested", False),
}
INGEST_MS = 30.0  # assumption when no load test is given: a warm ingest request's billed duration
INGEST_MB = 512  # template.yaml IngestFunction MemorySize
ANALYZE_MB = 1024
ANALYZE_MS_PER_GPU = 0.5  # the analyze goal (issue 11): CPU per GPU per tick, read included
COMPACTOR_MB = 1024
LOG_BYTES_PER_REQUEST = 400  # assumption: Powertools' structured lines per ingest request
WINDOW_S = 600  # template AnalyzeWindowSeconds default
LONG_RETENTION_DAYS = 14  # template SeriesTtlDays default
IDEMPOTENCY_WRU = 2  # Powertools: put the in-progress record, then update it to completed
REGISTRY_WRU = 1  # the registry item (< 1 KB), conditionally put once per batch


def price(name: str) -> float:
    return PRICES[name][0]


def wru(size: int, transactional: bool) -> int:
    """Write request units of one item: 1 per KB (rounded up), doubled in a transaction."""
    return math.ceil(size / 1024) * (2 if transactional else 1)


def measure(hours: float, batch_s: int, store: SeriesStore) -> dict[str, float]:
    """Per node (8 GPUs): writes, stored bytes and compactor CPU, from the project's code."""
    ts, series = generate_node(hours)
    docs = docs_of(ts, series, batch_s, node="n1")
    batches = len(docs)
    write_units = hot_bytes = items = 0
    chunks_by_hour: dict[float, list[codec.Chunk]] = {}
    for doc in docs:
        its = store.chunk_items(Batch(doc), doc["timestamps"][-1] + 1)
        sizes = [item_size(i) - 100 for i in its]  # WRU counts the item, not the storage overhead
        write_units += sum(wru(s, len(its) > 1) for s in sizes)
        hot_bytes += sum(s + 100 for s in sizes)
        items += len(its)
        for i in its:
            c = codec.decode(i["data"]["B"])
            for h in {float(t // BLOCK_S * BLOCK_S) for t in (c.timestamps[0], c.timestamps[-1])}:
                chunks_by_hour.setdefault(h, []).append(c)
    long_bytes = long_wru = 0
    cpu: list[float] = []
    full_hours = 0
    for h, chunks in sorted(chunks_by_hour.items()):
        t0 = time.process_time()
        merged = blocks.merge(chunks, h, h + BLOCK_S)
        if merged is None:
            continue
        parts = blocks.encode_block(merged)
        roll = blocks.rollup(merged)
        cpu.append(time.process_time() - t0)
        its = store.block_items("c", "n1", h, parts, roll, source="x" * 32, t_first=h, t_last=h)
        long_bytes += sum(item_size(i) for i in its)
        long_wru += sum(wru(item_size(i) - 100, False) for i in its)
        full_hours += 1
    span_h = (ts[-1] - ts[0]) / 3600
    return {
        "batches_per_hour": batches / span_h,
        "wru_per_batch": write_units / batches,
        "items_per_batch": items / batches,
        "hot_bytes_per_hour": hot_bytes / span_h,
        "long_bytes_per_hour": long_bytes / span_h,
        "long_wru_per_hour": long_wru / span_h,
        "compactor_cpu_s_per_node_hour": statistics.median(cpu) if cpu else 0.0,
    }


def monthly(m: dict[str, float], *, ingest_ms: float, tracing: float, extra_wru: float) -> dict[str, float]:
    """$ per node-month (8 GPUs) by line item."""
    hours = MONTH_S / 3600
    batches = m["batches_per_hour"] * hours
    hot_bytes_per_s = m["hot_bytes_per_hour"] / 3600
    cost = {
        "ddb_writes_ingest": batches * (m["wru_per_batch"] + extra_wru) * price("ddb_wru"),
        "ddb_writes_long": m["long_wru_per_hour"] * hours * price("ddb_wru"),
        # analyze: each minute a query over its window (+ 1 min stale margin), eventually
        # consistent: 0.5 RRU per 4 KB read, billed on what the query reads, filter or not
        "ddb_reads_analyze": (MONTH_S / 60)
        * math.ceil(hot_bytes_per_s * (WINDOW_S + 60) / 4096)
        * 0.5
        * price("ddb_rru"),
        # compactor: each hourly run reads the hours still in the hot tier, plus a bucket of reach
        "ddb_reads_compactor": hours
        * ((DEFAULT_HOT_TTL_S - BLOCK_S) / BLOCK_S)
        * math.ceil(m["hot_bytes_per_hour"] * (1 + BUCKET_S / BLOCK_S) / 4096)
        * 0.5
        * price("ddb_rru"),
        "ddb_storage": (
            hot_bytes_per_s * DEFAULT_HOT_TTL_S + m["long_bytes_per_hour"] * 24 * LONG_RETENTION_DAYS
        )
        / 1e9
        * price("ddb_storage_gb"),
        "lambda_ingest": batches
        * (price("lambda_request") + ingest_ms / 1000 * INGEST_MB / 1024 * price("lambda_gb_s")),
        "lambda_analyze": (MONTH_S / 60)
        * 8
        * ANALYZE_MS_PER_GPU
        / 1000
        * ANALYZE_MB
        / 1024
        * price("lambda_gb_s"),
        "lambda_compactor": hours
        * m["compactor_cpu_s_per_node_hour"]
        * COMPACTOR_MB
        / 1024
        * price("lambda_gb_s"),
        "http_api": batches * price("http_api_request"),
        "xray": batches * tracing * price("xray_trace"),
        "logs": batches * LOG_BYTES_PER_REQUEST / 1e9 * price("logs_gb"),
    }
    return cost


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.0, help="hours of the generated node to measure")
    ap.add_argument("--ingest-ms", type=float, default=INGEST_MS, help="ingest's billed ms per request")
    ap.add_argument("--tracing", type=float, default=0.0, help="fraction of ingest requests traced by X-Ray")
    args = ap.parse_args(argv)
    ingest_ms = args.ingest_ms
    ingest_source = "assumed" if args.ingest_ms == INGEST_MS else "--ingest-ms"
    store = SeriesStore("cost", client=boto3.client("dynamodb", region_name="us-east-1"))
    print(
        json.dumps({"prices": {k: {"usd": v[0], "unit": v[1], "confirmed": v[2]} for k, v in PRICES.items()}})
    )
    for batch_s in (10, 30, 60):
        m = measure(args.hours, batch_s, store)
        variants = {
            "as_deployed": IDEMPOTENCY_WRU + REGISTRY_WRU,
            # what the store alone needs: its conditional write already stores a batch once
            "no_idempotency_record": REGISTRY_WRU,
            "chunks_only": 0,
        }
        for variant, extra in variants.items():
            for tracing in sorted({args.tracing, 1.0}):
                cost = monthly(m, ingest_ms=ingest_ms, tracing=tracing, extra_wru=extra)
                per_gpu = {k: v / 8 for k, v in cost.items()}
                total = float(sum(per_gpu.values()))
                row: dict[str, Any] = {
                    "bench": "cost_model",
                    "batch_s": batch_s,
                    "variant": variant,
                    "tracing": tracing,
                    "usd_per_gpu_month": round(total, 4),
                    "goal_usd": 0.05,
                    "within_goal": total <= 0.05,
                    "ingest_ms": ingest_ms,
                    "ingest_ms_source": ingest_source,
                    **{k: round(v, 5) for k, v in m.items()},
                    "by_item": {k: round(v, 5) for k, v in sorted(per_gpu.items(), key=lambda kv: -kv[1])},
                }
                print(json.dumps(row), flush=True)
                top = ", ".join(f"{k} {v:.4f}" for k, v in list(row["by_item"].items())[:3])
                print(
                    f"# {batch_s:3d} s {variant:22} tracing {tracing:.0%}: ${total:.4f}/GPU-month ({top})",
                    file=sys.stderr,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
