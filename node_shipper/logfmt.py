"""Structured key=value log lines with the standard `logging` module.

Callers pass their keys with `extra=`: ``log.info("batch sent", extra={"node": n, "seq": 3})``
prints ``ts=2026-02-02T01:07:37Z level=INFO logger=node_shipper.outbox msg="batch sent" node=n seq=3``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "", None, None))) | {"message", "asctime"}


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return text


class KeyValueFormatter(logging.Formatter):
    """Formats a record as `key=value` pairs, quoting values that contain spaces or quotes."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = [
            ("ts", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))),
            ("level", record.levelname),
            ("logger", record.name),
            ("msg", record.getMessage()),
        ]
        pairs += [(k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")]
        line = " ".join(f"{k}={_quote(v)}" for k, v in pairs)
        if record.exc_info:
            line += " exc=" + _quote(self.formatException(record.exc_info))
        return line


def setup_logging(level: str) -> None:
    """Send every log record to stderr as one key=value line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 logs every retry and connection at DEBUG/WARNING in its own words; the outbox says it once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
