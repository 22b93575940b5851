"""Benchmark of the series chunk codec (contract 2) against gzip-compressed Batch v1 JSON.

    python bench/bench_codec.py [--quick] [--out FILE] [--trace CSV]

Measures, in one run, on the same Batch v1 documents:
  1. bytes per stored sample (one value of one series at one timestamp; nulls count) of a chunk
     and of the body the shipper sends (compact JSON, gzip level 6: node_shipper.batch.encode),
     on a simulated day of one 8-GPU node (node_shipper.simulate, "day") batched every 10, 30
     and 60 s, and on the real trace /work/shared/traces/vector-1gpu-15s.csv batched by 4 and 40;
  2. encode and decode time per chunk: the median over documents of each document's median over
     repeats, and the median of the per-document ratios to JSON + gzip;
  3. what the design choices are worth: other stdlib compressors on the same chunk bodies, and
     other layouts of the same residuals.

stdout: one JSON object per line, one per measurement. stderr: a short table for people.
--out FILE also writes {"meta": ..., "results": [...]} as one JSON document.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gc
import gzip
import json
import lzma
import os
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpulse import codec
from gpulse.wire import batch
from node_shipper.batch import encode as shipper_body
from node_shipper.simulate import Scenario, simulate_batches

TRACE = Path("/work/shared/traces/vector-1gpu-15s.csv")
DAY_START = datetime(2026, 2, 2, tzinfo=UTC).timestamp()  # a midnight: the "day" scenario starts there
DAY_S = 86_400.0
QUICK_S = 3_600.0
SIM_BATCHES_S = (10, 30, 60)
TRACE_BATCHES = (4, 40)
MIB = 1 << 20
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]

Result = dict[str, Any]


# ------------------------------------------------------------------------------------ documents


def validated(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as ingest holds it after Batch v1 validation (what it hands the codec)."""
    return batch.parse(json.dumps(doc).encode(), now=doc["timestamps"][-1]).doc


def simulated_day(span_s: float, batch_s: int) -> list[dict[str, Any]]:
    scenario = Scenario.named("day", nodes=1, gpus_per_node=8)
    return [validated(doc) for doc in simulate_batches(scenario, DAY_START, span_s, float(batch_s))]


def trace_rows(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamps, memory used in bytes, utilisation %) of the nvidia-smi CSV, read in place."""
    times, mem, util = [], [], []
    with path.open(newline="") as f:
        reader = csv.reader(f, skipinitialspace=True)
        next(reader)  # timestamp, memory.used [MiB], utilization.gpu [%]
        for stamp, used, busy in reader:
            # The trace names no zone; UTC keeps the spacing, which is all the codec sees.
            times.append(datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp())
            mem.append(int(used.split()[0]) * MIB)
            util.append(int(busy.split()[0]))
    return np.array(times), np.array(mem), np.array(util)


def trace_batches(path: Path, per_batch: int) -> list[dict[str, Any]]:
    """Batch v1 documents of the trace's one GPU: util_gpu and mem_used only.

    The schema requires the host's cpu_util and mem_used; the trace has neither, so they are
    null (and not counted as samples of this dataset).
    """
    times, mem, util = trace_rows(path)
    docs = []
    for seq, first in enumerate(range(0, len(times), per_batch)):
        part = slice(first, first + per_batch)
        n = len(times[part])
        doc = {
            "version": 1,
            "batch_id": f"trace-{per_batch:03d}-{seq:06d}",
            "cluster": "vector",
            "node": "trace-node",
            "seq": seq,
            "shipper": {"version": "trace", "simulated": False, "sample_interval_s": 15.0},
            "timestamps": [round(t, 3) for t in times[part].tolist()],
            "host": {
                "cpu_count": 1,
                "mem_total": 0,
                "metrics": {"cpu_util": [None] * n, "mem_used": [None] * n},
            },
            "gpus": [
                {
                    "index": 0,
                    "uuid": "GPU-00000000-0000-0000-0000-000000000000",
                    "name": "80 GB GPU (trace)",
                    "mem_total": 81_920 * MIB,
                    "metrics": {"util_gpu": util[part].tolist(), "mem_used": mem[part].tolist()},
                }
            ],
        }
        docs.append(validated(doc))
    return docs


def samples(doc: dict[str, Any], *, gpu_only: bool = False) -> int:
    devices = [*doc["gpus"], *doc.get("mig", [])] + ([] if gpu_only else [doc["host"]])
    return len(doc["timestamps"]) * sum(len(d["metrics"]) for d in devices)


# ------------------------------------------------------------------------------------ measuring


def median_us(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def spread(docs: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` documents evenly spread over the run (a day has busy and idle hours)."""
    picks = sorted(set(np.linspace(0, len(docs) - 1, min(count, len(docs))).round().astype(int).tolist()))
    return [docs[i] for i in picks]


def gunzip_json(body: bytes) -> Any:
    return json.loads(gzip.decompress(body))


def json_to_numpy(body: bytes) -> list[np.ndarray]:
    """What a JSON reader must do to reach the codec's output: every series as a float array."""
    doc = gunzip_json(body)
    devices = [doc["host"], *doc["gpus"], *doc.get("mig", [])]
    out = [np.array(doc["timestamps"], dtype=np.float64)]
    out.extend(np.array(s, dtype=np.float64) for d in devices for s in d["metrics"].values())
    return out


def sizes(dataset: str, group: int, unit: str, docs: list[dict[str, Any]], *, gpu_only: bool) -> Result:
    chunks = [codec.encode(doc) for doc in docs]
    bodies = [shipper_body(doc) for doc in docs]
    count = sum(samples(doc, gpu_only=gpu_only) for doc in docs)
    headers = sum(len(deflate_with_dict(header_json(chunk))) for chunk in chunks)
    codec_bytes, json_bytes = sum(map(len, chunks)), sum(map(len, bodies))
    return {
        "measure": "bytes_per_sample",
        "dataset": dataset,
        unit: group,
        "chunks": len(docs),
        "samples": count,
        "codec_bytes": codec_bytes,
        "gzip_json_bytes": json_bytes,
        "codec_bytes_per_sample": round(codec_bytes / count, 4),
        "gzip_json_bytes_per_sample": round(json_bytes / count, 4),
        "gzip_json_over_codec": round(json_bytes / codec_bytes, 3),
        # The header (names, ids, processes) deflated alone: what each chunk pays before any value.
        "header_bytes_per_sample": round(headers / count, 4),
        "largest_chunk_bytes": max(map(len, chunks)),
    }


def timings(
    dataset: str, group: int, unit: str, docs: list[dict[str, Any]], picks: int, repeats: int
) -> Result:
    per_doc: dict[str, list[float]] = {k: [] for k in ("enc", "json_enc", "dec", "json_dec", "json_np")}
    enc_ratio, dec_ratio, np_ratio = [], [], []
    gc.disable()  # a collection inside one timing would be noise, not the codec
    try:
        for doc in spread(docs, picks):
            chunk, body = codec.encode(doc), shipper_body(doc)
            enc = median_us(partial(codec.encode, doc), repeats)
            json_enc = median_us(partial(shipper_body, doc), repeats)
            dec = median_us(partial(codec.decode, chunk), repeats)
            json_dec = median_us(partial(gunzip_json, body), repeats)
            json_np = median_us(partial(json_to_numpy, body), repeats)
            for key, value in zip(per_doc, (enc, json_enc, dec, json_dec, json_np), strict=True):
                per_doc[key].append(value)
            enc_ratio.append(enc / json_enc)
            dec_ratio.append(dec / json_dec)
            np_ratio.append(dec / json_np)
    finally:
        gc.enable()
    med = {key: round(statistics.median(values), 1) for key, values in per_doc.items()}
    return {
        "measure": "time_per_chunk",
        "dataset": dataset,
        unit: group,
        "docs_timed": len(per_doc["enc"]),
        "repeats": repeats,
        "encode_us_median": med["enc"],
        "json_gzip_encode_us_median": med["json_enc"],
        "encode_over_json_gzip_median": round(statistics.median(enc_ratio), 3),
        "decode_us_median": med["dec"],
        "gunzip_json_decode_us_median": med["json_dec"],
        "decode_over_gunzip_json_median": round(statistics.median(dec_ratio), 3),
        "gunzip_json_to_numpy_us_median": med["json_np"],
        "decode_over_gunzip_json_to_numpy_median": round(statistics.median(np_ratio), 3),
    }


# ------------------------------------------------------------------------------ design choices


def inflate(chunk: bytes) -> bytes:
    """A chunk's body as the codec deflated it (bench-only: reads the codec's private framing)."""
    return zlib.decompressobj(-15, zdict=codec._ZDICT_V1).decompress(chunk[codec._FRAME.size :])


def header_json(chunk: bytes) -> bytes:
    raw = inflate(chunk)
    (size,) = codec._HEADER_LEN.unpack_from(raw)
    return raw[codec._HEADER_LEN.size : codec._HEADER_LEN.size + size]


def deflate_with_dict(raw: bytes, level: int = codec.ZLIB_LEVEL) -> bytes:
    deflater = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=codec._ZDICT_V1)
    return deflater.compress(raw) + deflater.flush()


def inflate_with_dict(data: bytes) -> bytes:
    return zlib.decompressobj(-15, zdict=codec._ZDICT_V1).decompress(data)


COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "zlib-6+dict (codec)": (deflate_with_dict, inflate_with_dict),
    "zlib-6": (lambda b: zlib.compress(b, 6, wbits=-15), lambda b: zlib.decompress(b, wbits=-15)),
    "zlib-1+dict": (lambda b: deflate_with_dict(b, 1), inflate_with_dict),
    "zlib-9+dict": (lambda b: deflate_with_dict(b, 9), inflate_with_dict),
    "lzma-raw-6": (
        lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
        lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
    ),
    "bz2-9": (lambda b: bz2.compress(b, 9), bz2.decompress),
}


def compressors(
    dataset: str, batch_s: int, docs: list[dict[str, Any]], picks: int, repeats: int
) -> Iterator[Result]:
    """Each stdlib compressor on the same chunk bodies (frame bytes included), and its times."""
    raws = [inflate(codec.encode(doc)) for doc in docs]
    count = sum(samples(doc) for doc in docs)
    timed = [inflate(codec.encode(doc)) for doc in spread(docs, picks)]
    for name, (pack, unpack) in COMPRESSORS.items():
        size = sum(len(pack(raw)) + codec._FRAME.size for raw in raws)
        packed = [pack(raw) for raw in timed]
        yield {
            "measure": "compressor",
            "dataset": dataset,
            "batch_s": batch_s,
            "compressor": name,
            "bytes_per_sample": round(size / count, 4),
            "compress_us_median": round(
                statistics.median(median_us(partial(pack, r), repeats) for r in timed), 1
            ),
            "decompress_us_median": round(
                statistics.median(median_us(partial(unpack, p), repeats) for p in packed), 1
            ),
        }


def little_endian(zigzag: np.ndarray, width: np.ndarray) -> bytes:
    """Each series as whole words of the narrowest numpy width (1, 2, 4, 8 bytes), no planes."""
    parts = []
    for row, w in zip(zigzag, width.tolist(), strict=True):
        if w:
            dtype = np.uint8 if w == 1 else np.uint16 if w == 2 else np.uint32 if w <= 4 else np.uint64
            parts.append(row.astype(dtype).tobytes())
    return b"".join(parts)


def leb128(zigzag: np.ndarray, width: np.ndarray) -> bytes:
    """Each residual as a LEB128 varint (7 bits a byte), series after series."""
    values = zigzag[width > 0].ravel()
    if values.size == 0:
        return b""
    length = np.ones(values.size, dtype=np.int64)
    for k in range(1, 10):
        length += values >= np.uint64(1 << (7 * k))
    out = np.zeros(int(length.sum()), dtype=np.uint8)
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    for k in range(10):
        live = length > k
        byte = ((values[live] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        out[start[live] + k] = byte | ((length[live] > k + 1).astype(np.uint8) << 7)
    return out.tobytes()


def planes(zigzag: np.ndarray, width: np.ndarray) -> bytes:
    return b"".join(codec._planes(zigzag[width == w], w) for w in range(1, 9))


LAYOUTS: dict[str, tuple[tuple[int, ...], Callable[[np.ndarray, np.ndarray], bytes]]] = {
    "orders 0-2, byte planes (codec)": ((0, 1, 2), planes),
    "order 0 only, byte planes": ((0,), planes),
    "order 1 only, byte planes": ((1,), planes),
    "orders 0-2, little-endian words": ((0, 1, 2), little_endian),
    "orders 0-2, LEB128 varints": ((0, 1, 2), leb128),
}


def layouts(dataset: str, batch_s: int, docs: list[dict[str, Any]]) -> Iterator[Result]:
    """The series payload alone (no header), deflated at level 6, for each residual layout."""
    count = sum(samples(doc) for doc in docs)
    matrices = [codec._split(doc)[1:] for doc in docs]
    for name, (orders, lay) in LAYOUTS.items():
        size = 0
        for values, quanta in matrices:
            res = codec._residuals(values, quanta, orders)
            size += len(zlib.compress(lay(res.zigzag, res.width[res.order < 3]), codec.ZLIB_LEVEL))
        yield {
            "measure": "layout",
            "dataset": dataset,
            "batch_s": batch_s,
            "layout": name,
            "series_bytes_per_sample": round(size / count, 4),
        }


def by_metric(dataset: str, batch_s: int, docs: list[dict[str, Any]]) -> Iterator[Result]:
    """Where the series bytes go: each metric's residuals deflated on their own, per chunk."""
    size: dict[str, int] = {}
    count: dict[str, int] = {}
    for doc in docs:
        header, values, quanta = codec._split(doc)
        labels = ["timestamps"] + [
            f"{kind}.{name}"
            for kind, devices in (("host", [header["host"]]), ("gpu", header["gpus"]), ("mig", header["mig"]))
            for device in devices
            for name in device["metrics"]
        ]
        res = codec._residuals(values, quanta)
        as_int = res.order < 3
        int_labels = np.array(labels)[as_int]
        for label in dict.fromkeys(int_labels.tolist()):
            rows = int_labels == label
            packed = planes(res.zigzag[rows], res.width[as_int][rows])
            deflated = len(zlib.compress(packed, codec.ZLIB_LEVEL)) if packed else 0  # 0 bytes: all width 0
            size[label] = size.get(label, 0) + deflated
            count[label] = count.get(label, 0) + int(rows.sum()) * values.shape[1]
    total = sum(size.values())
    for label in sorted(size, key=size.__getitem__, reverse=True):
        yield {
            "measure": "series_bytes_by_metric",
            "dataset": dataset,
            "batch_s": batch_s,
            "metric": label,
            "bytes_per_sample": round(size[label] / count[label], 4),
            "share_of_series_bytes": round(size[label] / total, 4),
        }


# ------------------------------------------------------------------------------------ the run


def run(quick: bool, trace: Path) -> Iterator[Result]:
    span = QUICK_S if quick else DAY_S
    picks, repeats = (8, 5) if quick else (40, 15)
    yield {
        "measure": "meta",
        "quick": quick,
        "simulated_span_s": span,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "codec_version": codec.VERSION,
    }
    dataset = f"sim-day-1node-8gpu-{int(span)}s"
    for batch_s in SIM_BATCHES_S:
        docs = simulated_day(span, batch_s)
        yield sizes(dataset, batch_s, "batch_s", docs, gpu_only=False)
        yield timings(dataset, batch_s, "batch_s", docs, picks, repeats)
        yield from compressors(dataset, batch_s, docs, picks, repeats)
        if batch_s == 30:
            yield from layouts(dataset, batch_s, docs)
            yield from by_metric(dataset, batch_s, docs)
    if not trace.exists():
        yield {"measure": "bytes_per_sample", "dataset": trace.name, "skipped": f"{trace} not found"}
        return
    for per_batch in TRACE_BATCHES:
        docs = trace_batches(trace, per_batch)
        yield sizes(trace.stem, per_batch, "batch_samples", docs, gpu_only=True)
        yield timings(trace.stem, per_batch, "batch_samples", docs, picks, repeats)


def table(results: list[Result]) -> str:
    rows = ["dataset                          batch   chunks  codec B/sample  gzip-JSON B/sample  smaller"]
    timing_rows = [
        "dataset                          batch   encode us (x json)   decode us (x json, x json+numpy)"
    ]
    for r in results:
        if r["measure"] == "bytes_per_sample" and "skipped" not in r:
            group = f"{r['batch_s']} s" if "batch_s" in r else f"{r['batch_samples']} smp"
            rows.append(
                f"{r['dataset']:<32} {group:>6}  {r['chunks']:>6}  {r['codec_bytes_per_sample']:>14.3f}"
                f"  {r['gzip_json_bytes_per_sample']:>18.3f}  {r['gzip_json_over_codec']:>6.2f}x"
            )
        if r["measure"] == "time_per_chunk":
            group = f"{r['batch_s']} s" if "batch_s" in r else f"{r['batch_samples']} smp"
            timing_rows.append(
                f"{r['dataset']:<32} {group:>6}  {r['encode_us_median']:>9.0f}"
                f" ({r['encode_over_json_gzip_median']:.2f}x)   {r['decode_us_median']:>9.0f}"
                f" ({r['decode_over_gunzip_json_median']:.2f}x,"
                f" {r['decode_over_gunzip_json_to_numpy_median']:.2f}x)"
            )
    choice = [
        f"{r['compressor']:<28} {r['bytes_per_sample']:.3f} B/sample,"
        f" decompress {r['decompress_us_median']:.0f} us"
        for r in results
        if r["measure"] == "compressor" and r["batch_s"] == 30
    ]
    layout = [
        f"{r['layout']:<34} {r['series_bytes_per_sample']:.3f} B/sample (series only)"
        for r in results
        if r["measure"] == "layout"
    ]
    metrics = [
        f"{r['metric']:<22} {r['bytes_per_sample']:.3f} B/sample,"
        f" {100 * r['share_of_series_bytes']:.0f} % of series bytes"
        for r in results
        if r["measure"] == "series_bytes_by_metric"
    ][:6]
    return "\n".join([*rows, "", *timing_rows, "", "30 s chunks:", *choice, "", *layout, "", *metrics])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"simulate {QUICK_S:.0f} s, not a day (CI smoke)"
    )
    parser.add_argument("--out", type=Path, help="also write every result to this JSON file")
    parser.add_argument("--trace", type=Path, default=TRACE, help="the nvidia-smi CSV trace, read in place")
    args = parser.parse_args(argv)
    results = []
    for result in run(args.quick, args.trace):
        print(json.dumps(result), flush=True)
        results.append(result)
    print(table(results), file=sys.stderr)
    if args.out:
        meta = results[0]
        args.out.write_text(json.dumps({"meta": meta, "results": results[1:]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
