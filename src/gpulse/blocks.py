"""Long-tier blocks and minute rollups: one node's chunks of one span (an hour) merged into one.

A block is the codec's body (`gpulse.codec`, docs/chunk-codec.md: the same header and packed
payload, by the codec's own functions) of a whole span, compressed with LZMA2 in a frame of its
own: the header, the device inventory, the metric names and the timestamps are written once per
block instead of once per batch, and each value is kept exactly at its catalogue step (a decoded
chunk's values are on the step grid already, so packing them again changes none).
`decode_block` reads a block back as a `codec.Chunk`.

Merging (`merge`):
- samples are those of every chunk with a timestamp in [start, end), in time order; a timestamp
  sent twice (a batch resent with a new batch_id) is kept once, from the chunk that came first;
- devices are the union over the chunks (the host; GPUs by index and uuid; MIG instances by uuid),
  with the static fields of the latest chunk that has the device; a series a chunk did not ship is
  null (NaN) over that chunk's samples; a metric no chunk shipped stays absent;
- processes: one record per (gpu_index, mig_uuid, pid, user, container, name), seen from the
  earliest `first_seen` to the latest `last_seen`, with the highest `mem_used` and the latest
  `cpu_affinity`; events: every distinct event in the span.

Rollups (`rollup`): for each series of a block and each minute that has samples, the minimum, mean,
maximum and last value (nulls ignored; a minute of nulls is null). Each statistic is a codec chunk
whose timestamps are the minutes' starts; min, max and last are exact at the step, the mean is
kept to half a step (what a chart or a long-window rule reads).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpulse import codec

MINUTE_S = 60
STATS = ("min", "mean", "max", "last")


@dataclass
class _Device:
    static: dict[str, Any]
    metrics: dict[str, np.ndarray]  # name -> float64 (samples,), NaN where null


def source_digest(keys: Sequence[str]) -> str:
    """What a block was built from: the same chunks give the same digest (order aside)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]


def merge(chunks: Sequence[codec.Chunk], start: float, end: float) -> dict[str, Any] | None:
    """One Batch v1-shaped document (series as float64 arrays) of the chunks' samples in
    [start, end), or None if none lies there. All chunks must be of one cluster and node."""
    if not chunks:
        return None
    if len({(c.cluster, c.node) for c in chunks}) != 1:
        raise ValueError("a block holds one node's chunks")
    ordered = sorted(chunks, key=lambda c: (float(c.timestamps[-1]), c.batch_id))
    picks = [(c, (c.timestamps >= start) & (c.timestamps < end)) for c in ordered]
    picks = [(c, m) for c, m in picks if m.any()]
    if not picks:
        return None
    all_ts = np.concatenate([c.timestamps[m] for c, m in picks])
    ts = np.unique(all_ts)
    n = len(ts)

    host = _Device({}, {})
    gpus: dict[tuple[int, str], _Device] = {}
    migs: dict[str, _Device] = {}
    # The latest chunk goes first so that, for a timestamp shipped twice, the earlier chunk's value
    # (written last) wins, and the latest chunk's static fields are the ones kept.
    for c, m in reversed(picks):
        at = np.searchsorted(ts, c.timestamps[m])
        host.static = host.static or {
            "cpu_count": c.host_static.cpu_count,
            "mem_total": c.host_static.mem_total,
            **({"numa_nodes": c.host_static.numa_nodes} if c.host_static.numa_nodes is not None else {}),
        }
        _fill(host, c.host, m, at, n)
        for g in c.gpus:
            dev = gpus.setdefault((g.index, g.uuid), _Device(_gpu_static(g), {}))
            _fill(dev, g.metrics, m, at, n)
        for mi in c.mig:
            dev = migs.setdefault(mi.uuid, _Device(_mig_static(mi), {}))
            _fill(dev, mi.metrics, m, at, n)

    latest = picks[-1][0]
    doc: dict[str, Any] = {
        "version": latest.version,
        "batch_id": f"block-{int(start)}-{latest.node}",
        "cluster": latest.cluster,
        "node": latest.node,
        "seq": latest.seq,
        "timestamps": ts,
        "host": {**host.static, "metrics": host.metrics},
        "gpus": [{**d.static, "metrics": d.metrics} for _, d in sorted(gpus.items())],
    }
    if latest.node_group is not None:
        doc["node_group"] = latest.node_group
    if latest.simulated or latest.sample_interval_s is not None:
        doc["shipper"] = {"simulated": latest.simulated, "sample_interval_s": latest.sample_interval_s}
    if migs:
        doc["mig"] = [{**d.static, "metrics": d.metrics} for _, d in sorted(migs.items())]
    procs = _merge_processes([p for c, _ in picks for p in c.processes], start, end)
    if procs:
        doc["processes"] = procs
    events = _distinct([e for c, _ in picks for e in c.events if start <= e["ts"] < end])
    if events:
        doc["events"] = sorted(events, key=lambda e: e["ts"])
    return doc


def _fill(dev: _Device, metrics: dict[str, np.ndarray], mask: np.ndarray, at: np.ndarray, n: int) -> None:
    for name, values in metrics.items():
        row = dev.metrics.get(name)
        if row is None:
            row = dev.metrics[name] = np.full(n, np.nan)
        row[at] = values[mask]


def _gpu_static(g: codec.GpuSeries) -> dict[str, Any]:
    out: dict[str, Any] = {"index": g.index, "uuid": g.uuid, "mem_total": g.mem_total}
    for key in ("name", "numa_node", "power_limit_w", "temp_slowdown_c", "mig_mode"):
        if getattr(g, key) is not None:
            out[key] = getattr(g, key)
    return out


def _mig_static(m: codec.MigSeries) -> dict[str, Any]:
    out: dict[str, Any] = {
        "gpu_index": m.gpu_index,
        "uuid": m.uuid,
        "gi_id": m.gi_id,
        "ci_id": m.ci_id,
        "mem_total": m.mem_total,
    }
    if m.profile is not None:
        out["profile"] = m.profile
    return out


_PROCESS_ID = ("gpu_index", "mig_uuid", "pid", "user", "container", "name")


def _merge_processes(procs: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in procs:  # in chunk time order: later records overwrite the fields they carry
        if p["last_seen"] < start or p["first_seen"] >= end:
            continue
        key = tuple(repr(p.get(k)) for k in _PROCESS_ID)
        seen = merged.get(key)
        if seen is None:
            merged[key] = dict(p)
            continue
        first, last = min(seen["first_seen"], p["first_seen"]), max(seen["last_seen"], p["last_seen"])
        mem = max((v for v in (seen.get("mem_used"), p.get("mem_used")) if v is not None), default=None)
        seen.update(p)
        seen.update(first_seen=first, last_seen=last)
        if mem is not None:
            seen["mem_used"] = mem
    return list(merged.values())


def _distinct(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for e in events:
        seen.setdefault(repr(sorted(e.items())), e)
    return list(seen.values())


# -- encode ----------------------------------------------------------------------------------------


BLOCK_MAGIC = b"GB"
BLOCK_VERSION = 1
_FRAME = struct.Struct("<2sBBI")  # magic, block version, compressor, CRC-32 of the compressed body
# LZMA2 at preset 6: 8 % smaller than the codec's deflate on an hour of 8 GPUs (most of a block is
# sensor noise at its step), ~170 ms of CPU per node-hour; a block is written once, read rarely.
# A small block (a sparse node's hour) is smaller with the codec's deflate and preset dictionary:
# each block is written with whichever of the two is smaller.
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
_LZMA, _DEFLATE = 1, 2


class BlockCorrupt(codec.ChunkCorrupt):
    """A block that this module did not write intact."""


def encode_block(doc: dict[str, Any], *, max_bytes: int = codec.DEFAULT_MAX_BYTES) -> list[bytes]:
    """The merged document as blocks: one, or time slices of at most the codec's 3,600 samples
    and `max_bytes` each. A block is the codec's body (header + payload, docs/chunk-codec.md)
    compressed with LZMA2 instead of deflate, in its own frame; `decode_block` reads it."""
    from gpulse.store import _slice_doc  # store imports boto3: only the compactor needs it here

    n = len(doc["timestamps"])
    out: list[bytes] = []
    pending = [(a, min(a + codec.MAX_SAMPLES, n)) for a in range(0, n, codec.MAX_SAMPLES)]
    while pending:
        a, b = pending.pop(0)
        piece = doc if (a, b) == (0, n) else _slice_doc(doc, a, b)
        data = _frame(piece)
        if len(data) <= max_bytes:
            out.append(data)
        elif b - a > 1:  # too large for an item: halve it, in order
            mid = (a + b) // 2
            pending[:0] = [(a, mid), (mid, b)]
        else:
            raise codec.ChunkTooLarge(len(data), max_bytes, 1)
    return out


def _frame(doc: dict[str, Any]) -> bytes:
    header, values, quanta = codec._split(doc)
    header["series"], payload = codec._pack(values, quanta)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    raw = codec._HEADER_LEN.pack(len(head)) + head + payload
    packed = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_FILTERS)
    deflater = zlib.compressobj(codec.ZLIB_LEVEL, zlib.DEFLATED, -15, zdict=codec._ZDICT_V1)
    deflated = deflater.compress(raw) + deflater.flush()
    method, body = (_LZMA, packed) if len(packed) < len(deflated) else (_DEFLATE, deflated)
    return _FRAME.pack(BLOCK_MAGIC, BLOCK_VERSION, method, zlib.crc32(body)) + body


def decode_block(data: bytes) -> codec.Chunk:
    """A block back as a `codec.Chunk`; BlockCorrupt for anything not written intact."""
    if len(data) < _FRAME.size:
        raise BlockCorrupt("block is shorter than its frame")
    magic, version, method, crc = _FRAME.unpack_from(data)
    if magic != BLOCK_MAGIC or version != BLOCK_VERSION:
        raise BlockCorrupt(f"not a version {BLOCK_VERSION} block (magic {magic!r}, version {version})")
    body = data[_FRAME.size :]
    if zlib.crc32(body) != crc:
        raise BlockCorrupt("block checksum does not match")
    try:
        if method == _LZMA:
            dec: Any = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_FILTERS)
        elif method == _DEFLATE:
            dec = zlib.decompressobj(-15, zdict=codec._ZDICT_V1)
        else:
            raise BlockCorrupt(f"unknown block compressor {method}")
        raw = dec.decompress(body, codec.MAX_INFLATED_BYTES)
    except (lzma.LZMAError, zlib.error) as e:
        raise BlockCorrupt(f"block body does not inflate: {e}") from None
    return codec._unpack(raw)


def rollup(doc: dict[str, Any]) -> dict[str, bytes]:
    """Minute rollups of a merged document: statistic name → codec chunk (see the module doc)."""
    ts = np.asarray(doc["timestamps"], dtype=np.float64)
    minute = np.floor(ts / MINUTE_S) * MINUTE_S
    starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    devices = [doc["host"], *doc["gpus"], *doc.get("mig", [])]
    names = [(i, name) for i, d in enumerate(devices) for name in d["metrics"]]
    if names:
        values = np.vstack([devices[i]["metrics"][name] for i, name in names])
    else:
        values = np.empty((0, len(ts)))
    stats = _minute_stats(values, starts)
    out: dict[str, bytes] = {}
    for stat, matrix in zip(STATS, stats, strict=True):
        rows = iter(matrix)
        per_device: list[dict[str, np.ndarray]] = [{} for _ in devices]
        for i, name in names:
            per_device[i][name] = next(rows)
        stat_doc: dict[str, Any] = {
            **{k: v for k, v in doc.items() if k not in ("processes", "events")},
            "batch_id": f"{doc['batch_id']}-{stat}",
            "timestamps": minute[starts],
            "host": {**doc["host"], "metrics": per_device[0]},
            "gpus": [{**g, "metrics": m} for g, m in zip(doc["gpus"], per_device[1:], strict=False)],
        }
        if "mig" in doc:
            k = 1 + len(doc["gpus"])
            stat_doc["mig"] = [{**g, "metrics": m} for g, m in zip(doc["mig"], per_device[k:], strict=False)]
        out[stat] = codec.encode(stat_doc)
    return out


def _minute_stats(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, ...]:
    """(min, mean, max, last) over the column groups that begin at `starts`, NaN-aware, in one
    vectorised pass per statistic."""
    rows, n = values.shape
    if rows == 0:
        empty = np.empty((0, len(starts)))
        return empty, empty, empty, empty
    valid = ~np.isnan(values)
    lo = np.fmin.reduceat(values, starts, axis=1)  # fmin/fmax skip NaN; all-NaN stays NaN
    hi = np.fmax.reduceat(values, starts, axis=1)
    counts = np.add.reduceat(valid.astype(np.int64), starts, axis=1)
    sums = np.add.reduceat(np.where(valid, values, 0.0), starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    idx = np.where(valid, np.arange(n), -1)
    last_idx = np.maximum.reduceat(idx, starts, axis=1)
    last = np.where(last_idx >= 0, np.take_along_axis(values, np.maximum(last_idx, 0), axis=1), np.nan)
    # ±inf is a value the codec keeps raw; a mean over it is inf or NaN, which is what it is
    return lo, mean, hi, last
