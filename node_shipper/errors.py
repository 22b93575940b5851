"""The shipper's error root and the subclasses that say what went wrong."""

from __future__ import annotations

from gpulse.errors import GpulseError


class ShipperError(GpulseError):
    """Root of every error the shipper raises on purpose."""


class ConfigError(ShipperError):
    """A flag, file or setting is wrong: the shipper refuses to start (exit code 2)."""


class NoGpuError(ShipperError):
    """NVML is absent, the driver is not loaded, or it sees no device (exit code 2 without --simulate)."""


class SpoolError(ShipperError):
    """The spool directory cannot be written: batches that fail to post would be lost."""
