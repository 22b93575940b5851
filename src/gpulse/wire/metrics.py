"""The metric catalogue: defined once in `gpulse_wire.metrics` (the contract the shipper shares)."""

from __future__ import annotations

from gpulse_wire.metrics import BY_KIND, GPU_METRICS, HOST_METRICS, MIG_METRICS, RANGE_BY_UNIT, Metric

__all__ = ["BY_KIND", "GPU_METRICS", "HOST_METRICS", "MIG_METRICS", "RANGE_BY_UNIT", "Metric"]
