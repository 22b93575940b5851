"""Series chunks (contract 2): one Batch v1 document stored as one compressed, self-describing blob.

`encode` turns a validated Batch v1 document into the bytes of one DynamoDB item; `decode` turns
them back into a `Chunk` of numpy arrays for the detectors. Every series comes back within half a
step of its resolution (gpulse.wire.metrics; timestamps to the millisecond); static fields,
processes and events come back exactly. docs/chunk-codec.md has the byte layout and the
measurements behind each choice.

In brief: each series (timestamps included) becomes int64 counts of its resolution, then the
residual of order 0 (value - first), 1 (delta) or 2 (delta of delta), whichever is smallest;
residuals are zigzagged, cut to the fewest whole bytes that hold them (0-8), laid out byte plane
by byte plane, and the body is deflated with a preset dictionary. All series of a chunk have one
length, so both directions work on a single (series × samples) matrix: the number of numpy calls
per chunk does not grow with the number of series or samples.
"""

from __future__ import annotations

import functools
import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from gpulse.errors import GpulseError
from gpulse.wire.metrics import BY_KIND

MAGIC = b"GC"
VERSION = 1
DEFAULT_MAX_BYTES = 350_000  # DynamoDB's item limit is 400 KB: leave room for keys and attributes
TIMESTAMP_RESOLUTION = 0.001
MAX_SAMPLES = 3600  # Batch v1's maxItems for a series
# Batch v1's most series: timestamps, the host's, 64 GPUs' and 448 MIG instances' (maxItems).
MAX_SERIES = 1 + len(BY_KIND["host"]) + 64 * len(BY_KIND["gpu"]) + 448 * len(BY_KIND["mig"])
# A chunk's body inflates to at most this (a full batch's series are ~33 MB): a bound on the memory
# that decoding one item can take.
MAX_INFLATED_BYTES = 64 << 20
# Deflate, level 6: lzma was larger on 10-30 s chunks, 1.7 % smaller on 60 s ones, and 4-10x
# slower to inflate; bz2 larger and slower still; level 9 under 0.5 % smaller (docs/chunk-codec.md).
ZLIB_LEVEL = 6

# A preset deflate dictionary of what every header repeats (keys, metric names, steps, common GPU
# names), so that a small chunk's first mention of each costs a back-reference: it saved a quarter
# of a 10 s chunk and a seventh of a 30 s one (docs/chunk-codec.md). Frozen with VERSION 1:
# changing one byte makes the stored chunks unreadable, so a better one needs a new version.
_ZDICT_V1 = (
    b'{"ts":,"type":"mig_layout","gpu_index":,"code":null,"message":"MIG instances now: 1g.10gb"}'
    b'{"ts":,"type":"xid","gpu_index":,"code":,"message":"Xid "}'
    b'"mig":[{"gpu_index":,"uuid":"MIG-","gi_id":,"ci_id":0,"profile":"1g.10gb","mem_total":,'
    b'"metrics":["mem_used"]}],'
    b"NVIDIA A100-SXM4-40GB NVIDIA A100 80GB PCIe NVIDIA L40S NVIDIA H200 NVIDIA H100 PCIe "
    b'"processes":[{"gpu_index":,"mig_uuid":null,"pid":,"user":"root","container":null,'
    b'"name":"python","mem_used":,"cpu_affinity":"0-","first_seen":,"last_seen":}],"events":[],'
    b'{"version":1,"batch_id":"","cluster":"","node":"","node_group":null,"seq":,"simulated":false,'
    b'"sample_interval_s":1.0,"samples":30,"host":{"cpu_count":,"mem_total":,"numa_nodes":2,'
    b'"metrics":["cpu_util","cpu_busy_cores","mem_used","disk_read_bps","disk_write_bps",'
    b'"net_rx_bps","net_tx_bps"]},"gpus":[{"index":0,"uuid":"GPU-","name":"NVIDIA A100-SXM4-80GB",'
    b'"mem_total":,"numa_node":0,"power_limit_w":400.0,"temp_slowdown_c":,"mig_mode":false,'
    b'"metrics":["util_gpu","util_mem","mem_used","power_w","temp_c","sm_clock_mhz",'
    b'"throttle_reasons","ecc_sbe_volatile","ecc_dbe_volatile","pcie_tx_bps","pcie_rx_bps"]},'
    b'{"index":1,"uuid":"GPU-","name":"NVIDIA H100 80GB HBM3","mem_total":,"numa_node":1,'
    b'"power_limit_w":700.0,"temp_slowdown_c":87.0,"mig_mode":false,"metrics":["util_gpu",'
    b'"util_mem","mem_used","power_w","temp_c","sm_clock_mhz","throttle_reasons",'
    b'"ecc_sbe_volatile","ecc_dbe_volatile","pcie_tx_bps","pcie_rx_bps"]}],"mig":[],'
    b'"processes":[],"events":[],"series":{"order":"2000000","width":"1000000",'
    b'"base":[1700000000000,0,0,0,0,1047,345],"base1":[1000],"nulls":[],'
    b'"steps":[0.001,0.1,0.01,1048576,1024.0,1.0],"step":"01234444553255555445532555554455"}}'
)
_MAX_AFFINITY = 4096  # Batch v1's maxItems for a process's cpu_affinity
_FRAME = struct.Struct("<2sBI")  # magic, codec version, CRC-32 of the deflated body
_HEADER_LEN = struct.Struct("<I")
# Past 2**50 counts, scaling back to float64 costs precision: such series (and ±inf) stay raw.
_MAX_COUNT = float(1 << 50)
# One character per series in the directory: its order (0, 1, 2), all null, or raw float64.
_ORDER_CODES = "012nf"
_ALL_NULL = 3
_RAW = 4
# One character per series: its step's index in the directory's list of distinct steps.
_STEP_CODES = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _code_table(codes: str) -> np.ndarray:
    table = np.full(256, -1, dtype=np.int64)
    table[np.frombuffer(codes.encode("ascii"), dtype=np.uint8)] = np.arange(len(codes))
    return table


_ORDER_OF = _code_table(_ORDER_CODES)
_WIDTH_OF = _code_table("012345678")
_STEP_OF = _code_table(_STEP_CODES)
# Largest zigzagged residual that fits in 0, 1, ..., 8 bytes.
_WIDTH_LIMITS = np.array([0] + [(1 << (8 * w)) - 1 for w in range(1, 9)], dtype=np.uint64)


class ChunkCorrupt(GpulseError):
    """The bytes are not a chunk this codec wrote, or were damaged (truncated, flipped, wrong magic)."""


class ChunkTooLarge(GpulseError):
    """The encoded chunk would pass `max_bytes`: split the batch (fewer samples or devices) and retry."""

    def __init__(self, size: int, max_bytes: int, samples: int, *, inflated: bool = False) -> None:
        what = "inflates to" if inflated else "is"
        super().__init__(
            f"chunk {what} {size} bytes for {samples} timestamps; the limit is {max_bytes}: "
            "split the batch into fewer samples or devices"
        )
        self.size = size
        self.max_bytes = max_bytes
        self.samples = samples


@dataclass(frozen=True)
class HostStatic:
    cpu_count: int
    mem_total: int
    numa_nodes: int | None


@dataclass(frozen=True)
class GpuSeries:
    index: int
    uuid: str
    name: str | None
    mem_total: int
    numa_node: int | None
    power_limit_w: float | None
    temp_slowdown_c: float | None
    mig_mode: bool | None
    metrics: dict[str, np.ndarray]  # name -> float64 (samples,), NaN where null; absent if not shipped


@dataclass(frozen=True)
class MigSeries:
    gpu_index: int
    uuid: str
    gi_id: int
    ci_id: int
    profile: str | None
    mem_total: int
    metrics: dict[str, np.ndarray]


class Layout(NamedTuple):
    """Which series a chunk's matrix holds, row by row after the timestamps: the host's metric
    names, each GPU's (index, names) and each MIG instance's (GPU index, uuid, names). Chunks of
    one node shape share one interned object (`_layout`)."""

    host: tuple[str, ...]
    gpus: tuple[tuple[int, tuple[str, ...]], ...]
    mig: tuple[tuple[int, str, tuple[str, ...]], ...]


_LAYOUTS: dict[Layout, Layout] = {}
_MAX_LAYOUTS = 4096  # distinct node shapes kept interned; past that each chunk keeps its own


def _layout(host: dict[str, Any], gpus: list[dict[str, Any]], mig: list[dict[str, Any]]) -> Layout | None:
    # Only plain ints and strings: 1, 1.0 and True are equal keys, and the interned layout must
    # name the devices exactly as this chunk's header does. Anything else: no layout (the window
    # then reads the series dicts).
    if not all(type(g["index"]) is int for g in gpus) or not all(
        type(m["gpu_index"]) is int and type(m["uuid"]) is str for m in mig
    ):
        return None
    layout = Layout(
        tuple(host["metrics"]),
        tuple((g["index"], tuple(g["metrics"])) for g in gpus),
        tuple((m["gpu_index"], m["uuid"], tuple(m["metrics"])) for m in mig),
    )
    kept = _LAYOUTS.get(layout)
    if kept is not None:
        return kept  # checked when it was interned
    # a name twice in one device: its dict keeps the last row only, which a layout cannot say
    if any(len(set(names)) != len(names) for names in _names(layout)):
        return None
    if len(_LAYOUTS) < _MAX_LAYOUTS:
        _LAYOUTS[layout] = layout
    return layout


def _names(layout: Layout) -> list[tuple[str, ...]]:
    return [layout.host, *(names for _, names in layout.gpus), *(names for *_, names in layout.mig)]


@dataclass(frozen=True)
class Chunk:
    """One decoded batch. `version` is the Batch version of the document that was encoded.

    Series arrays are float64 rows of one matrix per chunk (views, not copies).
    """

    version: int
    cluster: str
    node: str
    node_group: str | None
    batch_id: str
    seq: int
    simulated: bool
    timestamps: np.ndarray  # float64 unix seconds, millisecond resolution
    host_static: HostStatic
    host: dict[str, np.ndarray]
    gpus: list[GpuSeries]
    mig: list[MigSeries]
    processes: list[dict[str, Any]]
    events: list[dict[str, Any]]
    sample_interval_s: float | None = None
    # The (series × samples) matrix the series above are rows of (row 0 the timestamps, then the
    # host's, each GPU's and each MIG instance's in header order), and `Layout` of those rows: the
    # window bins whole chunks of one layout at once. None for a chunk built by hand or cut by
    # `window.readable`; the series dicts are then what counts.
    values: np.ndarray | None = None
    layout: Layout | None = None


# ----------------------------------------------------------------------------------------- encode


def encode(doc: dict[str, Any], *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Encode one validated Batch v1 document (the parsed JSON dict) as a chunk.

    Raises ValueError for a document no valid batch can be (a metric outside the catalogue,
    a series whose length differs from `timestamps`, a number beyond float64), and
    ChunkTooLarge when the chunk would pass `max_bytes`, so that the caller can split the batch.
    """
    header, values, quanta = _split(doc)
    header["series"], payload = _pack(values, quanta)
    # surrogatepass: a JSON string may hold a lone surrogate (an escaped \ud800); it comes back as is.
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    raw = _HEADER_LEN.pack(len(head)) + head + payload
    samples = values.shape[1]
    if len(raw) > MAX_INFLATED_BYTES:
        raise ChunkTooLarge(len(raw), MAX_INFLATED_BYTES, samples, inflated=True)
    deflater = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, -15, zdict=_ZDICT_V1)
    body = deflater.compress(raw) + deflater.flush()
    chunk = _FRAME.pack(MAGIC, VERSION, zlib.crc32(body)) + body
    if len(chunk) > max_bytes:
        raise ChunkTooLarge(len(chunk), max_bytes, samples)
    return chunk


def _split(doc: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray, list[float]]:
    """The header (everything but the values), the (series × samples) matrix, each series' step.

    Row 0 is the timestamps; then the host's series, each GPU's and each MIG instance's, in the
    order the header names them.
    """
    n = len(doc["timestamps"])
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"a batch holds 1 to {MAX_SAMPLES} timestamps, not {n}")
    rows: list[list[Any]] = [doc["timestamps"]]
    quanta: list[float] = [TIMESTAMP_RESOLUTION]

    def device(kind: str, where: str, entry: dict[str, Any]) -> dict[str, Any]:
        catalogue = BY_KIND[kind]
        names = list(entry["metrics"])
        for name in names:
            metric = catalogue.get(name)
            if metric is None:
                raise ValueError(f"{where}.metrics.{name} is not a {kind} metric in the catalogue")
            series = entry["metrics"][name]
            if len(series) != n:
                raise ValueError(f"{where}.metrics.{name} has {len(series)} values for {n} timestamps")
            rows.append(series)
            quanta.append(metric.resolution)
        static = {key: value for key, value in entry.items() if key != "metrics"}
        static["metrics"] = names
        return static

    shipper = doc.get("shipper", {})
    header: dict[str, Any] = {
        "version": doc["version"],
        "batch_id": doc["batch_id"],
        "cluster": doc["cluster"],
        "node": doc["node"],
        "node_group": doc.get("node_group"),
        "seq": doc["seq"],
        "simulated": bool(shipper.get("simulated", False)),
        "sample_interval_s": shipper.get("sample_interval_s"),
        "samples": n,
        "host": device("host", "host", doc["host"]),
        "gpus": [device("gpu", f"gpus[{i}]", gpu) for i, gpu in enumerate(doc["gpus"])],
        "mig": [device("mig", f"mig[{i}]", inst) for i, inst in enumerate(doc.get("mig", []))],
        "processes": [_pack_process(proc) for proc in doc.get("processes", [])],
        "events": doc.get("events", []),
    }
    if len(rows) > MAX_SERIES:
        raise ValueError(f"a batch holds at most {MAX_SERIES - 1} series, not {len(rows) - 1}")
    try:
        values = np.array(rows, dtype=np.float64)
    except OverflowError as e:
        raise ValueError(f"a series holds a number beyond float64: {e}") from None
    return header, values, quanta


def _pack_process(proc: dict[str, Any]) -> dict[str, Any]:
    """The process with a sorted `cpu_affinity` written as ranges ("0-55,112-167").

    Affinity lists repeat in every chunk and were about half of a 30 s chunk's header.
    """
    cpus = proc.get("cpu_affinity")
    if isinstance(cpus, str):
        raise ValueError("a process's cpu_affinity is a list of CPU ids, not a string")
    if not isinstance(cpus, list) or not cpus or not all(type(c) is int and 0 <= c < 1 << 62 for c in cpus):
        return proc  # kept as the list it is: ranges are only for plain CPU ids
    ids = np.array(cpus, dtype=np.int64)
    steps = np.diff(ids)
    if (steps <= 0).any():
        return proc  # not strictly increasing: kept as the list it is
    breaks = np.flatnonzero(steps != 1)
    starts = ids[np.concatenate([[0], breaks + 1])].tolist()
    ends = ids[np.concatenate([breaks, [len(ids) - 1]])].tolist()
    text = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(starts, ends, strict=True))
    return {**proc, "cpu_affinity": text}


def _unpack_process(proc: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `_pack_process`, but for the list's type: the CPU ids come back as a tuple, one
    shared object per distinct range text (a fleet repeats a few affinities in every chunk: expanding
    each one per process and chunk was a tenth of analyze's time at 1,250 nodes)."""
    text = proc.get("cpu_affinity")
    if isinstance(text, str):
        proc["cpu_affinity"] = _expand_affinity(text)  # the header's own dict: nobody else holds it
    return proc


@functools.lru_cache(maxsize=4096)
def _expand_affinity(text: str) -> tuple[int, ...]:
    spans = [part.partition("-") for part in text.split(",")]
    ranges = [range(int(first), int(last or first) + 1) for first, _, last in spans]
    if sum(len(r) for r in ranges) > _MAX_AFFINITY:
        raise ChunkCorrupt(f"a process's cpu_affinity expands past {_MAX_AFFINITY} CPUs")
    return tuple(cpu for r in ranges for cpu in r)


def _scales(quanta: list[float]) -> np.ndarray:
    """Counts per unit, per series: count = rint(value * scale), value = count / scale."""
    return np.array([_scale(q) for q in quanta], dtype=np.float64)


def count_scale(quantum: float) -> float:
    """Counts per unit for a step: a value of a series stored at that step is a whole number of
    counts (`value * count_scale(step)`, rounded), as the codec stores it."""
    return _scale(quantum)


@functools.lru_cache(maxsize=64)
def _scale(quantum: float) -> float:
    """Decimal steps use the whole number 1/step, so a decoded 245.37 W is the float nearest to
    the decimal (count / 100); binary steps (1 MiB, 1 KiB) give exact powers of two."""
    if not (isinstance(quantum, int | float) and 0 < quantum < math.inf):
        raise ChunkCorrupt(f"a series' step must be a positive number, not {quantum!r}")
    whole = round(1 / quantum)
    return float(whole) if quantum < 1 and abs(whole * quantum - 1) < 1e-12 else 1 / quantum


class _Residuals(NamedTuple):
    """A matrix of series ready to lay out: see `_residuals`."""

    order: np.ndarray  # (series,) 0, 1, 2, _ALL_NULL or _RAW
    width: np.ndarray  # (series,) bytes per zigzagged residual, 0-8; 0 unless the order is 0-2
    base: np.ndarray  # (integer series,) first count
    base1: np.ndarray  # (order-2 series,) first delta
    null_rows: np.ndarray  # indices of the integer series that hold nulls
    nulls: np.ndarray  # (len(null_rows), samples) bool, True where null
    raw: np.ndarray  # (raw series, samples) float64: ±inf or values past _MAX_COUNT steps
    zigzag: np.ndarray  # (integer series, samples - 1) uint64 residuals


def _residuals(values: np.ndarray, quanta: list[float], orders: tuple[int, ...] = (0, 1, 2)) -> _Residuals:
    """Quantise each series to counts of its step and pick its cheapest residual among `orders`.

    `orders` is narrowed only by bench/bench_codec.py, to measure what the choice is worth.
    """
    n = values.shape[1]
    valid = ~np.isnan(values)
    with np.errstate(over="ignore"):
        scaled = values * _scales(quanta)[:, None]
    too_big = (np.abs(scaled) > _MAX_COUNT).any(axis=1)  # ±inf too; NaN compares false
    present = valid.any(axis=1)
    as_int = present & ~too_big
    as_raw = present & too_big

    if valid.all() and not too_big.any():
        ivalid, counts = valid, np.rint(scaled).astype(np.int64)  # the usual batch: no null, no raw
    else:
        ivalid = valid[as_int]
        counts = np.rint(np.where(ivalid, scaled[as_int], 0.0)).astype(np.int64)
    with_nulls = ~ivalid.all(axis=1)
    if with_nulls.any():
        # A null repeats the value before it (the first value, if none): its residual is then 0.
        positions = np.where(ivalid, np.arange(n), 0)
        first = ivalid.argmax(axis=1)
        source = np.maximum(np.maximum.accumulate(positions, axis=1), first[:, None])
        counts = np.take_along_axis(counts, source, axis=1)

    from_first = counts[:, 1:] - counts[:, :1]
    delta = np.diff(counts, axis=1)
    # Order 2's first residual is 0: its first delta is stored as `base1`, so every row has n - 1.
    delta2 = np.zeros_like(delta)
    np.subtract(delta[:, 1:], delta[:, :-1], out=delta2[:, 1:])
    # Cheapest order: the smallest sum of |residual| (order 2's `base1` included), summed in float64
    # so that 3600 residuals near 2**52 cannot overflow; ties go to the lower order. As small
    # as a bits-per-residual estimate on the simulated day, at a quarter of the time.
    cost = np.array([np.abs(r).sum(axis=1, dtype=np.float64) for r in (from_first, delta, delta2)])
    cost[2] += np.abs(delta[:, :1]).sum(axis=1, dtype=np.float64)
    if orders != (0, 1, 2):
        cost[[o for o in range(3) if o not in orders]] = np.inf
    chosen = cost.argmin(axis=0)
    residual = np.where((chosen == 0)[:, None], from_first, np.where((chosen == 1)[:, None], delta, delta2))
    zigzag = ((residual << 1) ^ (residual >> 63)).view(np.uint64)

    order = np.full(len(values), _ALL_NULL, dtype=np.int64)
    order[as_raw] = _RAW
    order[as_int] = chosen
    width = np.zeros(len(values), dtype=np.int64)
    width[as_int] = np.searchsorted(_WIDTH_LIMITS, zigzag.max(axis=1, initial=0), side="left")
    return _Residuals(
        order=order,
        width=width,
        base=counts[:, 0],
        base1=delta[chosen == 2, 0] if n > 1 else np.zeros(0, dtype=np.int64),
        null_rows=np.flatnonzero(as_int)[with_nulls],
        nulls=~ivalid[with_nulls],
        raw=values[as_raw],
        zigzag=zigzag,
    )


def _pack(values: np.ndarray, quanta: list[float]) -> tuple[dict[str, Any], bytes]:
    """The series directory and the payload for a (series × samples) matrix, NaN for null."""
    res = _residuals(values, quanta)
    as_int = res.order < _ALL_NULL
    # The payload's order of the integer series: by width, then row. Bases follow it too, so
    # that decoding needs no reordering but one scatter at the end.
    by_width = np.argsort(res.width[as_int], kind="stable")
    width = res.width[as_int][by_width]
    zigzag = res.zigzag[by_width]
    first_delta = np.zeros(len(by_width), dtype=np.int64)
    first_delta[res.order[as_int] == 2] = res.base1
    parts = [np.packbits(res.nulls).tobytes(), _planes(res.raw.view(np.uint64), 8)]
    parts.extend(_planes(zigzag[width == w], w) for w in range(1, 9))
    steps = list(dict.fromkeys(quanta))  # distinct, in order of first use
    if len(steps) > len(_STEP_CODES):
        raise ValueError(
            f"a batch's series use {len(steps)} distinct steps; the codec holds {len(_STEP_CODES)}"
        )
    index = {q: _STEP_CODES[i] for i, q in enumerate(steps)}
    directory = {
        "order": "".join(_ORDER_CODES[o] for o in res.order.tolist()),
        "width": "".join(str(w) for w in res.width.tolist()),
        "base": res.base[by_width].tolist(),
        "base1": first_delta[by_width][res.order[as_int][by_width] == 2].tolist(),
        "nulls": res.null_rows.tolist(),
        # Each series' step is stored: a later change to the catalogue cannot misread old chunks.
        "steps": steps,
        "step": "".join(index[q] for q in quanta),
    }
    return directory, b"".join(parts)


def _planes(words: np.ndarray, width: int) -> bytes:
    """The low `width` bytes of each uint64 of a matrix, plane by plane: all lowest bytes first."""
    if words.size == 0:
        return b""
    octets = words.astype("<u8", copy=False).view(np.uint8).reshape(*words.shape, 8)
    return np.ascontiguousarray(octets[..., :width].transpose(2, 0, 1)).tobytes()


# ----------------------------------------------------------------------------------------- decode


def decode(data: bytes) -> Chunk:
    """Decode a chunk written by `encode`; ChunkCorrupt if it is damaged or not a chunk at all."""
    if len(data) < _FRAME.size:
        raise ChunkCorrupt(f"chunk is {len(data)} bytes, shorter than its {_FRAME.size}-byte frame")
    magic, version, crc = _FRAME.unpack_from(data)
    if magic != MAGIC:
        raise ChunkCorrupt(f"chunk starts with {magic!r}, not the magic {MAGIC!r}")
    if version != VERSION:
        raise ChunkCorrupt(f"chunk codec version {version} is unknown; this codec reads {VERSION}")
    body = memoryview(data)[_FRAME.size :]
    if zlib.crc32(body) != crc:
        raise ChunkCorrupt("chunk checksum mismatch: the bytes were truncated or damaged")
    inflater = zlib.decompressobj(-15, zdict=_ZDICT_V1)
    try:
        raw = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
    except zlib.error as e:
        raise ChunkCorrupt(f"chunk body does not inflate: {e}") from None
    if len(raw) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
        raise ChunkCorrupt(f"chunk body inflates past {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ChunkCorrupt("chunk body is not one complete deflate stream")
    try:
        return _unpack(raw)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError, OverflowError) as e:
        # Reachable only when a valid checksum covers a body this codec did not write (a base past
        # int64 is an OverflowError in numpy): every such body is ChunkCorrupt, nothing else escapes.
        raise ChunkCorrupt(f"chunk body is malformed: {type(e).__name__}: {e}") from None


def _unpack(raw: bytes) -> Chunk:
    if len(raw) < _HEADER_LEN.size:
        raise ChunkCorrupt("chunk body is shorter than its header length")
    (head_len,) = _HEADER_LEN.unpack_from(raw)
    start = _HEADER_LEN.size + head_len
    if start > len(raw):
        raise ChunkCorrupt(f"chunk header claims {head_len} bytes; the body has {len(raw)}")
    header = json.loads(raw[_HEADER_LEN.size : start].decode("utf-8", "surrogatepass"))
    host, gpus, mig = header["host"], header["gpus"], header["mig"]
    n = header["samples"]
    count = 1 + sum(len(entry["metrics"]) for entry in (host, *gpus, *mig))
    # Bounds before any allocation, so that no header can ask for more memory than a batch needs.
    if type(n) is not int or not 1 <= n <= MAX_SAMPLES or count > MAX_SERIES:
        raise ChunkCorrupt(
            f"chunk claims {n!r} samples of {count} series; a batch has at most {MAX_SAMPLES} of {MAX_SERIES}"
        )
    values = _unpack_values(header["series"], memoryview(raw)[start:], n, count)

    rows = iter(values)
    timestamps = next(rows)

    def metrics(entry: dict[str, Any]) -> dict[str, np.ndarray]:
        return dict(zip(entry["metrics"], rows, strict=False))

    host_metrics = metrics(host)
    gpu_series = [
        GpuSeries(
            index=g["index"],
            uuid=g["uuid"],
            name=g.get("name"),
            mem_total=g["mem_total"],
            numa_node=g.get("numa_node"),
            power_limit_w=g.get("power_limit_w"),
            temp_slowdown_c=g.get("temp_slowdown_c"),
            mig_mode=g.get("mig_mode"),
            metrics=metrics(g),
        )
        for g in gpus
    ]
    mig_series = [
        MigSeries(
            gpu_index=m["gpu_index"],
            uuid=m["uuid"],
            gi_id=m["gi_id"],
            ci_id=m["ci_id"],
            profile=m.get("profile"),
            mem_total=m["mem_total"],
            metrics=metrics(m),
        )
        for m in mig
    ]
    return Chunk(
        version=header["version"],
        cluster=header["cluster"],
        node=header["node"],
        node_group=header["node_group"],
        batch_id=header["batch_id"],
        seq=header["seq"],
        simulated=header["simulated"],
        timestamps=timestamps,
        host_static=HostStatic(host["cpu_count"], host["mem_total"], host.get("numa_nodes")),
        host=host_metrics,
        gpus=gpu_series,
        mig=mig_series,
        processes=[_unpack_process(proc) for proc in header["processes"]],
        events=header["events"],
        sample_interval_s=header["sample_interval_s"],
        values=values,
        layout=_layout(host, gpus, mig),
    )


def _codes(text: str, table: np.ndarray, what: str) -> np.ndarray:
    codes = table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    if codes.size and codes.min() < 0:
        raise ChunkCorrupt(f"chunk directory holds an unknown {what} code")
    return codes


class _Plan(NamedTuple):
    """What a chunk's directory says about its layout, but for the bases: chunks of one node shape
    share it (`_plan` keeps the last few thousand), so decoding one costs a few numpy calls."""

    order: np.ndarray  # (series,) 0, 1, 2, _ALL_NULL or _RAW
    rows: np.ndarray  # matrix rows of the integer series, in payload order (by width)
    delta: np.ndarray  # (integer series, 1) bool: order 1 or 2 (a running sum), in payload order
    second: np.ndarray  # payload positions of the order-2 series
    groups: tuple[int, ...]  # integer series per width 0..8
    raw_rows: np.ndarray  # matrix rows of the raw float64 series
    scale: np.ndarray  # (integer series, 1) counts per unit, in payload order
    whole: bool  # every series is an integer one (no all-null, no raw)
    in_order: bool  # whole, and the payload's order is the matrix's: no scatter


def _unpack_values(directory: dict[str, Any], payload: memoryview, n: int, count: int) -> np.ndarray:
    """The (series × samples) float64 matrix, NaN for null, from the directory and the payload.

    The integer series are decoded in the payload's order (by width), as one matrix: the numpy
    calls do not grow with the number of series.
    """
    plan = _plan(directory["order"], directory["width"], directory["step"], tuple(directory["steps"]), count)
    rows = plan.rows
    base = np.array(directory["base"], dtype=np.int64)
    base1 = np.array(directory["base1"], dtype=np.int64)
    null_rows = np.array(directory["nulls"], dtype=np.int64)
    second = plan.second
    if base.shape != rows.shape or base1.shape != second.shape:
        raise ChunkCorrupt("chunk directory's bases do not match its series")
    if null_rows.size and (
        null_rows.min() < 0 or null_rows.max() >= count or plan.order[null_rows].max() > 2
    ):
        raise ChunkCorrupt("chunk directory names nulls outside its integer series")

    m = n - 1
    reader = _Reader(payload)
    hits = None
    if null_rows.size:
        bits = np.unpackbits(reader.take(-(-null_rows.size * n // 8)), count=null_rows.size * n)
        hits = bits.reshape(null_rows.size, n).astype(bool)
    raw_rows = plan.raw_rows
    raw = _unplanes(reader, raw_rows.size, n, 8).view("<f8") if raw_rows.size else None
    octets = np.zeros((rows.size, m, 8), dtype=np.uint8)
    start = 0
    for w, group in enumerate(plan.groups):
        if w and group and m:
            planes = reader.take(w * group * m).reshape(w, group, m)
            octets[start : start + group, :, :w] = planes.transpose(1, 2, 0)
        start += group
    if reader.left:
        raise ChunkCorrupt(f"chunk payload has {reader.left} bytes past its last series")

    zigzag = octets.view("<u8")[..., 0]
    residual = (zigzag >> np.uint64(1)).view(np.int64) ^ -(zigzag & np.uint64(1)).view(np.int64)
    running = np.cumsum(residual, axis=1)
    if second.size:
        running[second] = np.cumsum(base1[:, None] + running[second], axis=1)
    counts = np.empty((rows.size, n), dtype=np.int64)
    counts[:, 0] = base
    np.add(counts[:, :1], np.where(plan.delta, running, residual), out=counts[:, 1:])

    if plan.in_order:
        values = np.divide(counts, plan.scale)  # already in matrix order: no scatter
    else:
        values = np.empty((count, n)) if plan.whole else np.full((count, n), np.nan)
        values[rows] = counts / plan.scale
    if raw is not None:
        values[raw_rows] = raw
    if hits is not None:
        values[null_rows] = np.where(hits, np.nan, values[null_rows])
    return values


@functools.lru_cache(maxsize=4096)
def _plan(order_text: str, width_text: str, step_text: str, steps: tuple[float, ...], count: int) -> _Plan:
    order = _codes(order_text, _ORDER_OF, "order")
    width = _codes(width_text, _WIDTH_OF, "width")
    step = _codes(step_text, _STEP_OF, "step")
    scale_of_step = _scales(list(steps))
    if not order.shape == width.shape == step.shape == (count,):
        raise ChunkCorrupt(f"chunk directory does not describe {count} series")
    if count and step.max() >= len(scale_of_step):
        raise ChunkCorrupt("chunk directory names a step it does not list")
    int_rows = np.flatnonzero(order <= 2)
    int_width = width[int_rows]
    rows = int_rows[np.argsort(int_width, kind="stable")]  # matrix rows, in payload order
    orders = order[rows]
    whole = bool(int_rows.size == count)
    plan = _Plan(
        order=order,
        rows=rows,
        delta=(orders > 0)[:, None],
        second=np.flatnonzero(orders == 2),
        groups=tuple(np.bincount(int_width, minlength=9).tolist()),
        raw_rows=np.flatnonzero(order == _RAW),
        scale=scale_of_step[step[rows], None],
        whole=whole,
        in_order=whole and bool((rows[1:] > rows[:-1]).all()),
    )
    for a in (plan.order, plan.rows, plan.delta, plan.second, plan.raw_rows, plan.scale):
        a.flags.writeable = False  # shared by every chunk of this shape
    return plan


class _Reader:
    """Consecutive slices of the payload, with a clear error where it runs short."""

    def __init__(self, payload: memoryview) -> None:
        self._payload = payload
        self._pos = 0

    def take(self, size: int) -> np.ndarray:
        end = self._pos + size
        if end > len(self._payload):
            raise ChunkCorrupt(f"chunk payload ends at {len(self._payload)} bytes; a series needs {end}")
        out = np.frombuffer(self._payload[self._pos : end], dtype=np.uint8)
        self._pos = end
        return out

    @property
    def left(self) -> int:
        return len(self._payload) - self._pos


def _unplanes(reader: _Reader, rows: int, cols: int, width: int) -> np.ndarray:
    """Inverse of `_planes`: a (rows × cols) uint64 matrix read from `width` byte planes."""
    octets = np.zeros((rows, cols, 8), dtype=np.uint8)
    if rows and cols:
        octets[..., :width] = reader.take(width * rows * cols).reshape(width, rows, cols).transpose(1, 2, 0)
    return octets.view("<u8")[..., 0]
