"""The shipper's error root and the subclasses that say what went wrong."""

from __future__ import annotations


class ShipperError(Exception):
    """Root of every error the shipper raises on purpose. Its own root, not gpulse.errors': a node
    installs the shipper without the core (distribution `gpulse-shipper`)."""

    retryable: bool = False


class ConfigError(ShipperError):
    """A flag, file or setting is wrong: the shipper refuses to start (exit code 2)."""


class NoGpuError(ShipperError):
    """NVML is absent, the driver is not loaded, or it sees no device (exit code 2 without --simulate)."""


class DriverNotLoaded(NoGpuError):
    """nvmlInit found no driver or no library yet: at boot it may still come (--wait-for-driver)."""


class DriverWaitStopped(ShipperError):
    """SIGTERM or SIGINT came while waiting for the driver: a clean stop (exit code 0)."""


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
