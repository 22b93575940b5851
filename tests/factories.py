"""Hand-made Batch v1 documents and signed requests for tests (the one place they are built)."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Sequence
from typing import Any

from gpulse.wire.signing import sign_headers

GIB = 1 << 30


def batch_doc(
    *,
    cluster: str = "c1",
    node: str = "node-01",
    t0: float = 1_763_800_000.0,
    n: int = 10,
    util: Sequence[Sequence[float | None]] | None = None,
    mem_used: Sequence[Sequence[float | None]] | None = None,
    gpus: int = 2,
    processes: list[dict[str, Any]] | None = None,
    node_group: str | None = None,
    batch_id: str | None = None,
    seq: int = 0,
) -> dict[str, Any]:
    """A valid Batch v1 document: `n` samples at 1 Hz from `t0`, `gpus` GPUs."""
    ts = [t0 + i for i in range(n)]
    util = util or [[90.0] * n for _ in range(gpus)]
    mem_used = mem_used or [[60 * GIB] * n for _ in range(gpus)]
    doc: dict[str, Any] = {
        "version": 1,
        "batch_id": batch_id or uuid.uuid4().hex,
        "cluster": cluster,
        "node": node,
        "seq": seq,
        "timestamps": ts,
        "host": {
            "cpu_count": 64,
            "mem_total": 512 * GIB,
            "metrics": {"cpu_util": [20.0] * n, "mem_used": [100 * GIB] * n},
        },
        "gpus": [
            {
                "index": g,
                "uuid": f"GPU-{node}-{g}",
                "mem_total": 80 * GIB,
                "metrics": {"util_gpu": list(util[g]), "mem_used": list(mem_used[g])},
            }
            for g in range(gpus)
        ],
        "processes": processes or [],
    }
    if node_group:
        doc["node_group"] = node_group
    return doc


def signed_request(
    doc: dict[str, Any], secret: bytes, timestamp: int, *, body: bytes | None = None
) -> tuple[bytes, dict[str, str]]:
    """(gzip body, lower-cased headers) as a shipper sends them."""
    raw = body if body is not None else gzip.compress(json.dumps(doc).encode())
    headers = sign_headers(secret, doc["cluster"], doc["node"], timestamp, raw)
    return raw, {k.lower(): v for k, v in headers.items()}
