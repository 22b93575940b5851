"""What gpulse costs per GPU-month at 1 Hz, from measured bytes and items, at us-east-1 list prices.

    python bench/cost_model.py [--hours 2] [--batch 10 15 20 30 60] [--ingest-ms 30] [--tracing 0]
                               [--containers 4] [--cluster-nodes 125]

Measures, for an 8-GPU node at 1 Hz (bench_storage's independent generator, --hours of it) and
each batch interval, through the project's own code:
  - the items ingest writes per batch (`SeriesStore.chunk_items`) and their billed size: one
    conditional PutItem for a one-chunk batch (1 WRU per KB), TransactWriteItems (2 WRU per KB)
    for a batch split into several chunks;
  - the long tier per node-hour: the S3 object the compactor writes (`LongTier.block_object`:
    blocks and rollups; billed bytes = body + key + metadata) and, for the baseline, the same
    blocks as the DynamoDB items the compactor wrote before (`dynamodb_long_items`);
  - the compactor's CPU per node-hour (merge, encode, rollups), timed here;
and prices two layouts side by side, in the same run:
  before       Powertools' idempotency record (2 WRU) and a registry put (1 WRU) with every
               batch; the long tier as series-table items (1 WRU per KB, $0.25 per GB-month);
  as_deployed  no idempotency record (the chunk's conditional write is the record); the registry
               rewritten once per REGISTRY_REFRESH_S (5 min) per node, and read (0.5 RRU) by each of
               --containers warm ingest containers as often; the long tier in S3 (a PUT per
               node-hour, a HEAD per compactor visit, $0.023 per GB-month); shippers post to
               ingest's Lambda function URL (no API Gateway request: `before` pays $1 per million).
The deployment's schedule is the same for both: analyze ANALYZE_TICKS (6) times a minute per
analyze shard, each warm tick reading the chunks written since the last one (the table from
ARRIVAL_MARGIN_S + LATE_S before it, and the late index) and running the detectors, each task
paying its fixed requests (`analyze_task_usd`); the compactor every hour reading the hot tier's
closed hours. Each row also gives the worst case from anomaly to chat past the rule's `for` at
that batch interval (`worst_case_latency_s`; goal 45 s).
`per_request_floor_usd` is what every request costs whatever is stored (the HTTP API before,
ingest's Lambda request and duration, its logs): no storage layout gets under it at that batch
interval. Ingest's billed Lambda duration is --ingest-ms (default INGEST_MS, an assumption: the
local load test, bench/bench_ingest_load.py, measures latency with queueing on a shared machine,
not what a Lambda bills).

Prices: us-east-1, on-demand, read 2026-12-03 (see PRICES; "confirmed" says which were seen in
the sources searched that day, the rest are AWS's long-standing list prices, not re-confirmed).
stdout: one JSON object per line (one per batch interval and layout; as_deployed carries its
ratio to before). stderr: a table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

import boto3  # noqa: E402
from bench_storage import docs_of, generate_node, item_size  # noqa: E402

from gpulse import blocks, codec  # noqa: E402
from gpulse.analyze.incremental import ARRIVAL_MARGIN_S  # noqa: E402
from gpulse.compact import DEFAULT_GRACE_S  # noqa: E402
from gpulse.store import (  # noqa: E402
    BLOCK_S,
    BUCKET_S,
    DEFAULT_HOT_TTL_S,
    LATE_S,
    REGISTRY_REFRESH_S,
    LongTier,
    SeriesStore,
)
from gpulse.wire.batch import Batch  # noqa: E402

MONTH_S = 730 * 3600  # AWS bills a month as 730 hours
BATCH_S = (10, 15, 20, 30, 60)  # the shipper's --batch-seconds range (docs/shipper.md)
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
    "s3_put": (5.0e-6, "per S3 Standard PUT/COPY/POST/LIST request ($0.005 per 1,000)", False),
    "s3_get": (0.4e-6, "per S3 Standard GET/HEAD and other request ($0.0004 per 1,000)", False),
    "s3_storage_gb": (0.023, "per GB-month, S3 Standard, first 50 TB", False),
}
INGEST_MS = 30.0  # assumption when no load test is given: a warm ingest request's billed duration
INGEST_MB = 512  # template.yaml IngestFunction MemorySize
ANALYZE_MB = 1024  # template.yaml AnalyzeWorkerFunction MemorySize
# Lambda gives a function a whole vCPU at 1,769 MB and a share in proportion below: CPU-bound
# work bills ANALYZE_MB/1024 GB for CPU × 1769/ANALYZE_MB s, i.e. 1.769 GB-s per CPU second
LAMBDA_FULL_VCPU_MB = 1769
# Measured with bench/bench_fleet.py (--nodes 100 --modes incremental, 8 GPUs, 15-min window,
# one core, 2026-12-03): a warm tick's CPU per GPU is 0.29 ms at --tick-s 10 and 0.39 ms at
# --tick-s 60 (medians). So a minute of n ticks is n × 0.27 ms (the rules and the window they
# read, built every tick) + 0.12 ms (reading, decoding and binning the minute's new chunks, once
# each, whatever the tick rate) per GPU.
ANALYZE_TICK_MS_PER_GPU = 0.27
ANALYZE_DECODE_MS_PER_GPU_MINUTE = 0.12
ANALYZE_TICKS = 6  # template AnalyzeTicksPerMinute default
TICK_S = 60 / ANALYZE_TICKS
# The cluster analyze visits (--cluster-nodes): the 1,000 GPUs by default. Its shards
# (AnalyzeShardNodes 500 nodes each) each cost a task per tick, and each shard still queries the
# whole cluster's chunks (keeping its own nodes'): a 1,250-node cluster reads every chunk 3 times.
CLUSTER_NODES = 125
SHARD_NODES = 500  # template AnalyzeShardNodes default
# the span of chunks a warm tick's table query covers: the tick's period, the arrival margin
# (gpulse.analyze.incremental.ARRIVAL_MARGIN_S) and LATE_S
WARM_READ_S = TICK_S + ARRIVAL_MARGIN_S + LATE_S
# What each analyze task costs whatever its size, per tick, shared by the cluster's GPUs: the
# worker's request, its SQS send (ten to a call), receive and delete, the tick claim (1 WRU), the alert
# records' query (0.5 RRU), each series query's rounding up to 4 KB (SeriesShards 8 × 2 buckets
# + 8 LateIndex queries, ≤ 0.5 RRU each) and the time the worker waits on them (assumption:
# ANALYZE_QUERY_MS each, billed at ANALYZE_MB).
ANALYZE_QUERIES = 8 * 2 + 8
ANALYZE_QUERY_MS = 10.0
BIN_S = 5.0  # gpulse.analyze.detection.STEP_S: a sample is judged once its bin is closed
GROUP_WAIT_S = 30.0  # Alertmanager's habit; the alert side counts the time analyze held the news
COMPACTOR_MB = 1024
LOG_BYTES_PER_REQUEST = 400  # assumption: Powertools' structured lines per ingest request
WINDOW_S = 600  # template AnalyzeWindowSeconds default
LONG_RETENTION_DAYS = 14  # template SeriesTtlDays default
IDEMPOTENCY_WRU = 2  # before: Powertools' record, put in progress, then updated to completed
REGISTRY_WRU = 1  # the registry item (< 1 KB): one conditional put
REGISTRY_RRU = 0.5  # one eventually consistent GetItem of it (< 4 KB)
# assumption: warm ingest containers that each see a node (each re-reads the registry entry once
# per REGISTRY_REFRESH_S before writing it); --containers
INGEST_CONTAINERS = 4
# the compactor's HEADs per node-hour: each hourly run visits every hour still in the hot tier
HOURS_REVISITED = (DEFAULT_HOT_TTL_S - BLOCK_S - DEFAULT_GRACE_S) // BLOCK_S + 1


@dataclass(frozen=True)
class Layout:
    """What a batch and a node-hour cost in requests and bytes, by deployment."""

    name: str
    idempotency_record: bool  # Powertools' record beside the chunks (2 WRU per batch)
    registry_every_batch: bool  # else: rewritten once per REGISTRY_REFRESH_S, read per container
    long_tier_s3: bool  # else: blocks and rollups as series-table items
    ingest_via_http_api: bool  # else: ingest's function URL, nothing beyond the invocation


BEFORE = Layout(
    "before", idempotency_record=True, registry_every_batch=True, long_tier_s3=False, ingest_via_http_api=True
)
NOW = Layout(
    "as_deployed",
    idempotency_record=False,
    registry_every_batch=False,
    long_tier_s3=True,
    ingest_via_http_api=False,
)


def price(name: str) -> float:
    return PRICES[name][0]


def wru(size: int, transactional: bool) -> int:
    """Write request units of one item: 1 per KB (rounded up), doubled in a transaction."""
    return math.ceil(size / 1024) * (2 if transactional else 1)


def dynamodb_long_items(start: float, parts: list[bytes], rollups: dict[str, bytes]) -> list[dict[str, Any]]:
    """The baseline's long tier: the items the compactor wrote to the series table before the
    long tier moved to S3 (one per block part, one for the rollups), laid out as they were."""
    pk, common = {"S": "c#long#n1"}, {"source": {"S": "x" * 32}, "expires_at": {"N": "1767225600"}}
    items: list[dict[str, Any]] = [
        {
            "pk": pk,
            "sk": {"S": f"{int(start):010d}#b#{i:03d}"},
            "data": {"B": data},
            "parts": {"N": str(len(parts))},
            "t_first": {"N": repr(float(start))},
            "t_last": {"N": repr(float(start + BLOCK_S - 1))},
            **common,
        }
        for i, data in enumerate(parts)
    ]
    rollup = {"pk": pk, "sk": {"S": f"{int(start):010d}#r"}, **common}
    return [*items, rollup | {k: {"B": v} for k, v in rollups.items()}]


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
    long_bytes = long_wru = ddb_long_bytes = 0
    cpu: list[float] = []
    for h, chunks in sorted(chunks_by_hour.items()):
        t0 = time.process_time()
        merged = blocks.merge(chunks, h, h + BLOCK_S)
        if merged is None:
            continue
        parts = blocks.encode_block(merged)
        roll = blocks.rollup(merged)
        cpu.append(time.process_time() - t0)
        obj = LongTier.block_object("c", "n1", h, parts, roll, source="x" * 32, t_first=h, t_last=h)
        long_bytes += obj.billed_bytes()
        before = dynamodb_long_items(h, parts, roll)  # the baseline: the same blocks as items
        ddb_long_bytes += sum(item_size(i) for i in before)
        long_wru += sum(wru(item_size(i) - 100, False) for i in before)
    span_h = (ts[-1] - ts[0]) / 3600
    return {
        "batches_per_hour": batches / span_h,
        "wru_per_batch": write_units / batches,
        "items_per_batch": items / batches,
        "hot_bytes_per_hour": hot_bytes / span_h,
        "long_bytes_per_hour": long_bytes / span_h,  # S3 objects (as deployed)
        "ddb_long_bytes_per_hour": ddb_long_bytes / span_h,  # DynamoDB items (before)
        "ddb_long_wru_per_hour": long_wru / span_h,
        "compactor_cpu_s_per_node_hour": statistics.median(cpu) if cpu else 0.0,
    }


def analyze_task_usd() -> float:
    """What one analyze task costs whatever its size (see ANALYZE_QUERIES)."""
    sqs = (0.1 + 2) * price("sqs_request")  # a tenth of a batched send; receive and delete
    dynamodb = 1 * price("ddb_wru") + (0.5 + ANALYZE_QUERIES * 0.5) * price("ddb_rru")
    wait = ANALYZE_QUERIES * ANALYZE_QUERY_MS / 1000 * ANALYZE_MB / 1024 * price("lambda_gb_s")
    return price("lambda_request") + sqs + dynamodb + wait


def worst_case_latency_s(batch_s: float, ticks: int = ANALYZE_TICKS) -> float:
    """Anomaly to chat past the rule's `for`, worst case (docs/operations.md): the last needed
    sample waits a batch, then its bin, then the next tick; the alert side's group_wait counts
    that held time, so it adds only what is left of it. The worker's run and the SQS hops (a few
    seconds) are not in it."""
    return max(batch_s + BIN_S + 60 / ticks, GROUP_WAIT_S)


def registry_period_s(batch_s: float) -> float:
    """How often ingest rewrites a steady node's registry entry: the first batch at least
    REGISTRY_REFRESH_S after the last write (gpulse.store.SeriesStore._touch_registry)."""
    return math.ceil(REGISTRY_REFRESH_S / batch_s) * batch_s


def monthly(
    m: dict[str, float],
    layout: Layout,
    *,
    batch_s: float,
    ingest_ms: float,
    tracing: float,
    containers: int,
    cluster_nodes: int = CLUSTER_NODES,
) -> dict[str, float]:
    """$ per node-month (8 GPUs) by line item."""
    hours = MONTH_S / 3600
    batches = m["batches_per_hour"] * hours
    hot_bytes_per_s = m["hot_bytes_per_hour"] / 3600
    touches = batches if layout.registry_every_batch else MONTH_S / registry_period_s(batch_s)
    long_gb = (
        m["long_bytes_per_hour" if layout.long_tier_s3 else "ddb_long_bytes_per_hour"]
        * 24
        * LONG_RETENTION_DAYS
        / 1e9
    )
    shards = math.ceil(cluster_nodes / SHARD_NODES)  # analyze tasks per tick of the cluster
    cost = {
        "ddb_writes_chunks": batches * m["wru_per_batch"] * price("ddb_wru"),
        "ddb_writes_idempotency": batches * IDEMPOTENCY_WRU * price("ddb_wru") * layout.idempotency_record,
        "ddb_writes_registry": touches * REGISTRY_WRU * price("ddb_wru"),
        "ddb_reads_registry": 0.0
        if layout.registry_every_batch
        else touches * containers * REGISTRY_RRU * price("ddb_rru"),
        "ddb_writes_long": 0.0
        if layout.long_tier_s3
        else m["ddb_long_wru_per_hour"] * hours * price("ddb_wru"),
        # one PUT per node-hour; a HEAD each time a compactor run revisits that hour
        "s3_requests_long": hours
        * (price("s3_put") + HOURS_REVISITED * price("s3_get"))
        * layout.long_tier_s3,
        # analyze: ANALYZE_TICKS warm ticks a minute, each by each of the cluster's `shards`
        # that each query the cluster's chunks written since the last tick, eventually consistent:
        # 0.5 RRU per 4 KB the key conditions cover, filter or not. The table is covered from
        # LATE_S before the last tick's watermark less its margin (gpulse.store.read_chunks);
        # LateIndex adds only late chunks (none in a steady state). Not rounded per node: one
        # query covers many nodes' chunks.
        "ddb_reads_analyze": (MONTH_S / 60)
        * ANALYZE_TICKS
        * shards
        * hot_bytes_per_s
        * WARM_READ_S
        / 4096
        * 0.5
        * price("ddb_rru"),
        # compactor: each hourly run reads the hours still in the hot tier, plus a bucket of reach
        "ddb_reads_compactor": hours
        * ((DEFAULT_HOT_TTL_S - BLOCK_S) / BLOCK_S)
        * math.ceil(m["hot_bytes_per_hour"] * (1 + BUCKET_S / BLOCK_S) / 4096)
        * 0.5
        * price("ddb_rru"),
        "ddb_storage": (hot_bytes_per_s * DEFAULT_HOT_TTL_S / 1e9 + (0 if layout.long_tier_s3 else long_gb))
        * price("ddb_storage_gb"),
        "s3_storage": long_gb * price("s3_storage_gb") * layout.long_tier_s3,
        "lambda_ingest": batches
        * (price("lambda_request") + ingest_ms / 1000 * INGEST_MB / 1024 * price("lambda_gb_s")),
        # the worker's CPU (ANALYZE_TICKS detector passes and one decode of the new chunks a
        # minute), billed as CPU-bound at ANALYZE_MB
        "lambda_analyze": (MONTH_S / 60)
        * 8
        * (ANALYZE_TICKS * ANALYZE_TICK_MS_PER_GPU + ANALYZE_DECODE_MS_PER_GPU_MINUTE)
        / 1000
        * LAMBDA_FULL_VCPU_MB
        / 1024
        * price("lambda_gb_s"),
        "analyze_tasks": (MONTH_S / 60) * ANALYZE_TICKS * shards / cluster_nodes * analyze_task_usd(),
        "lambda_compactor": hours
        * m["compactor_cpu_s_per_node_hour"]
        * COMPACTOR_MB
        / 1024
        * price("lambda_gb_s"),
        # the HTTP API's $1 per million, before shippers posted to ingest's function URL (which
        # costs only the invocation); the API still serves the charts' GETs, a few per alert: nil
        "http_api": batches * price("http_api_request") * layout.ingest_via_http_api,
        "xray": batches * tracing * price("xray_trace"),
        "logs": batches * LOG_BYTES_PER_REQUEST / 1e9 * price("logs_gb"),
    }
    return cost


# What every request costs whatever is stored: the floor a batch interval cannot go under.
PER_REQUEST = ("http_api", "lambda_ingest", "logs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.0, help="hours of the generated node to measure")
    ap.add_argument("--ingest-ms", type=float, default=INGEST_MS, help="ingest's billed ms per request")
    ap.add_argument("--tracing", type=float, default=0.0, help="fraction of ingest requests traced by X-Ray")
    ap.add_argument(
        "--batch", type=int, nargs="+", default=list(BATCH_S), help="batch intervals to price (seconds)"
    )
    ap.add_argument(
        "--containers", type=int, default=INGEST_CONTAINERS, help="warm ingest containers that see each node"
    )
    ap.add_argument(
        "--cluster-nodes", type=int, default=CLUSTER_NODES, help="8-GPU nodes of the cluster analyze visits"
    )
    args = ap.parse_args(argv)
    ingest_ms = args.ingest_ms
    ingest_source = "assumed" if args.ingest_ms == INGEST_MS else "--ingest-ms"
    store = SeriesStore("cost", client=boto3.client("dynamodb", region_name="us-east-1"))
    print(
        json.dumps({"prices": {k: {"usd": v[0], "unit": v[1], "confirmed": v[2]} for k, v in PRICES.items()}})
    )
    for batch_s in args.batch:
        m = measure(args.hours, batch_s, store)
        totals: dict[str, float] = {}
        runs = [(BEFORE, args.tracing), (NOW, args.tracing)] + ([(NOW, 1.0)] if args.tracing != 1.0 else [])
        for layout, tracing in runs:
            cost = monthly(
                m,
                layout,
                batch_s=batch_s,
                ingest_ms=ingest_ms,
                tracing=tracing,
                containers=args.containers,
                cluster_nodes=args.cluster_nodes,
            )
            per_gpu = {k: v / 8 for k, v in cost.items()}
            total = float(sum(per_gpu.values()))
            floor = sum(per_gpu[k] for k in PER_REQUEST)
            if tracing == args.tracing:
                totals[layout.name] = total
            row: dict[str, Any] = {
                "bench": "cost_model",
                "batch_s": batch_s,
                "variant": layout.name,
                "tracing": tracing,
                "usd_per_gpu_month": round(total, 4),
                "per_request_floor_usd": round(floor, 4),
                "goal_usd": 0.05,
                "within_goal": total <= 0.05,
                # anomaly to chat past `for`, worst case, at ANALYZE_TICKS ticks a minute
                "worst_case_latency_s": worst_case_latency_s(batch_s),
                "latency_goal_s": 45.0,
                "analyze_ticks_per_minute": ANALYZE_TICKS,
                "ingest_ms": ingest_ms,
                "ingest_ms_source": ingest_source,
                "ingest_containers": args.containers,
                "cluster_nodes": args.cluster_nodes,
                "registry_period_s": batch_s if layout.registry_every_batch else registry_period_s(batch_s),
                **{k: round(v, 5) for k, v in m.items()},
                "by_item": {k: round(v, 5) for k, v in sorted(per_gpu.items(), key=lambda kv: -kv[1]) if v},
            }
            if layout is NOW and tracing == args.tracing:
                row["ratio_to_before"] = round(total / totals["before"], 3)
            print(json.dumps(row), flush=True)
            top = ", ".join(f"{k} {v:.4f}" for k, v in list(row["by_item"].items())[:3])
            print(
                f"# {batch_s:3d} s {layout.name:12} tracing {tracing:4.0%}: ${total:.4f}/GPU-month "
                f"(floor {floor:.4f}; {top}); worst case `for` + {worst_case_latency_s(batch_s):g} s",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
