"""Batch v1's limits as plain numbers: what a shipper needs of the contract without loading the
schema validator or numpy (gpulse.wire.batch and gpulse.wire.limits import them from here)."""

from __future__ import annotations

VERSION = 1
MAX_BODY_BYTES = 1 << 20  # as sent (gzip): far under Lambda's 6 MB once API Gateway base64-encodes it
MAX_INFLATED_BYTES = 16 << 20  # a gzip bomb stops here, before json.loads sees it
MAX_AGE_S = 6 * 3600  # spooled batches older than this are refused (the analysis window is minutes)
MAX_FUTURE_S = 300
