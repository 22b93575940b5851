"""Every environment variable gpulse reads, named once.

template.yaml sets these on the functions; the local stack reads the same template. A missing
required variable fails at start-up with its name (see `require`).
"""

from __future__ import annotations

import os

from gpulse.errors import ConfigurationError

SERIES_TABLE = "GPULSE_SERIES_TABLE"
STATE_TABLE = "GPULSE_STATE_TABLE"
CONFIG_TABLE = "GPULSE_CONFIG_TABLE"
IDEMPOTENCY_TABLE = "GPULSE_IDEMPOTENCY_TABLE"
FINDINGS_QUEUE_URL = "GPULSE_FINDINGS_QUEUE_URL"
FINDINGS_DLQ_URL = "GPULSE_FINDINGS_DLQ_URL"
NODE_SECRETS_PREFIX = "GPULSE_NODE_SECRETS_PREFIX"  # SSM path: {prefix}/{cluster}/{node}
SLACK_WEBHOOK_PARAM = "GPULSE_SLACK_WEBHOOK_PARAM"  # SSM SecureString name holding the URL
JANDI_WEBHOOK_PARAM = "GPULSE_JANDI_WEBHOOK_PARAM"
SERIES_TTL_DAYS = "GPULSE_SERIES_TTL_DAYS"
ANALYZE_WINDOW_S = "GPULSE_ANALYZE_WINDOW_S"
CONFIG_CACHE_S = "GPULSE_CONFIG_CACHE_S"  # how long analyze and alert keep a read of the config table
# Optional: a URL analyze GETs after each completed run (a dead-man's switch); unset or empty, none.
# It often holds the watcher's token: never logged.
HEARTBEAT_URL = "GPULSE_HEARTBEAT_URL"


def require(name: str) -> str:
    """Return the variable's value, or raise ConfigurationError naming it."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


def optional_int(name: str, default: int) -> int:
    """An integer setting with a documented default; a malformed value is an error, not a default."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from e


def optional(name: str) -> str | None:
    """A setting that may be absent by design (a feature left off): its value, or None."""
    return os.environ.get(name, "").strip() or None
