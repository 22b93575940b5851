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
    """Root of the spool's errors."""


class SpoolBusy(SpoolError):
    """Another shipper holds the spool directory's lock: two shippers must not share one."""


class SpoolUnavailable(SpoolError):
    """The spool cannot take a batch now (disk full or unwritable); the caller keeps it elsewhere.

    `state` is the spool's state as Batch v1's `agent.spool` names it ("full", "unwritable"):
    data rather than a message to match.
    """

    retryable = True

    def __init__(self, message: str, *, state: str) -> None:
        super().__init__(message)
        self.state = state
