"""The one error root of the gpulse core, and the subclasses that say whether a retry can help."""

from __future__ import annotations


class GpulseError(Exception):
    """Root of every error the core raises on purpose."""

    retryable: bool = False


class ConfigurationError(GpulseError):
    """A setting is missing or malformed: fix the deployment, retrying will not help."""


class InvalidInput(GpulseError):
    """Input broke a contract. `status` is the HTTP status an API should answer with."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class StoreError(GpulseError):
    """A storage call failed for a reason that a later retry may fix (throttling, service error)."""

    retryable = True


class DuplicateBatch(GpulseError):
    """The batch was stored before: a replay, answered as success without writing again."""
