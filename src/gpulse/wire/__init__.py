"""The wire contracts: Batch v1 (shipper → ingest) and its signature."""
