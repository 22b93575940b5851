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
FINDINGS_QUEUE_URL = "GPULSE_FINDINGS_QUEUE_URL"
FINDINGS_DLQ_URL = "GPULSE_FINDINGS_DLQ_URL"
NODE_SECRETS_PREFIX = "GPULSE_NODE_SECRETS_PREFIX"  # SSM path: {prefix}/{cluster}/{node}
SLACK_WEBHOOK_PARAM = "GPULSE_SLACK_WEBHOOK_PARAM"  # SSM SecureString name holding the URL
JANDI_WEBHOOK_PARAM = "GPULSE_JANDI_WEBHOOK_PARAM"
SERIES_TTL_DAYS = "GPULSE_SERIES_TTL_DAYS"
SERIES_HOT_TTL_S = "GPULSE_SERIES_HOT_TTL_S"  # seconds a hot-tier chunk lives (store.py)
LONG_TIER_BUCKET = "GPULSE_LONG_TIER_BUCKET"  # where the compactor writes blocks and rollups (store.LongTier)
SERIES_SHARDS = "GPULSE_SERIES_SHARDS"  # shards per series partition (store.py): writers and readers alike
ANALYZE_WINDOW_S = "GPULSE_ANALYZE_WINDOW_S"
ANALYZE_QUEUE_URL = "GPULSE_ANALYZE_QUEUE_URL"  # where analyze's dispatcher sends one task per cluster/shard
ANALYZE_SHARD_NODES = "GPULSE_ANALYZE_SHARD_NODES"  # most nodes per shard (whole node groups; default 500)
ANALYZE_TICKS_PER_MINUTE = "GPULSE_ANALYZE_TICKS_PER_MINUTE"  # 1, 2, 3, 4 or 6, evenly spaced in the minute
# seconds in analyze's "minute" (60; the local stack shortens it with its time scale)
ANALYZE_MINUTE_S = "GPULSE_ANALYZE_MINUTE_S"
CONFIG_CACHE_S = "GPULSE_CONFIG_CACHE_S"  # how long analyze and alert keep a read of the config table
# Optional: a URL analyze GETs after each completed run (a dead-man's switch); unset or empty, none.
# It often holds the watcher's token: never logged.
HEARTBEAT_URL = "GPULSE_HEARTBEAT_URL"
CHARTS_BUCKET = "GPULSE_CHARTS_BUCKET"  # where alert stores the charts its messages link to
CHART_LINK_S = "GPULSE_CHART_LINK_S"  # how long a chart's link works (≤ 604800)
# SSM SecureString holding the key chart links are signed with (gpulse.notify.links)
CHART_LINK_KEY_PARAM = "GPULSE_CHART_LINK_KEY_PARAM"
API_URL = "GPULSE_API_URL"  # the HTTP API's base URL: chart links point at its /v1/charts route


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
