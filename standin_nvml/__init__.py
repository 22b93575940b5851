"""A stand-in libnvidia-ml.so.1 (C) for running the shipper's real NVML path without a GPU; see README.md."""
