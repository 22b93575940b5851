"""Batch v1's limits: defined once in `gpulse_wire.limits` (the contract the shipper shares)."""

from __future__ import annotations

from gpulse_wire.limits import MAX_AGE_S, MAX_BODY_BYTES, MAX_FUTURE_S, MAX_INFLATED_BYTES, VERSION

__all__ = ["MAX_AGE_S", "MAX_BODY_BYTES", "MAX_FUTURE_S", "MAX_INFLATED_BYTES", "VERSION"]
