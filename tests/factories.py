"""Hand-made Batch v1 documents and signed requests for tests (the one place they are built)."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Sequence
from typing import Any

from gpulse.finding import Evidence, EvidenceRow
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


def eight_node_evidence() -> Evidence:
    """Per-node utilisation of an 8-node group in which node-03 and node-06 fell idle."""
    rows = [
        EvidenceRow("node-01", [80.0, 82.0, 81.0, 83.0, 80.0, 82.0], 81.3, False),
        EvidenceRow("node-02", [79.0, 80.0, 82.0, 81.0, None, 80.0], 80.4, False),
        EvidenceRow("node-03", [78.0, 40.0, 10.0, 8.0, 7.0, 8.0], 8.0, True),
        EvidenceRow("node-04", [81.0, 81.0, 82.0, 83.0, 82.0, 81.0], 81.7, False),
        EvidenceRow("node-05", [82.0, 83.0, 81.0, 80.0, 81.0, 82.0], 81.5, False),
        EvidenceRow("node-06", [80.0, 75.0, 12.0, 9.0, 8.0, 9.0], 9.0, True),
        EvidenceRow("node-07", [80.0, 81.0, 80.0, 82.0, 81.0, 80.0], 80.7, False),
        EvidenceRow("node-08", [83.0, 82.0, 84.0, 82.0, 83.0, 81.0], 82.5, False),
    ]
    return Evidence("GPU utilisation per node, last 10 min", "%", rows, 81.0, "group median")
