"""Batch v1, the contract between a node's shipper and gpulse's ingest, in one place.

Plain Python with no dependencies: the limits (`limits`), the metric catalogue (`metrics`), the
request signature (`signing`) and the JSON Schema (`batch-v1.schema.json`, docs/batch-v1.md).
The shipper (distribution `gpulse-shipper`) and the core (`gpulse.wire`, ingest) both import
it from here; it is its own distribution, `gpulse-wire`, so a node installs it without the core.
"""

__version__ = "0.1.0"
