"""What the operator types, turned into what the config documents hold: durations, `key=value`
parameters, matchers, channels (secret references, never URLs), mentions and times.

Each function raises InvalidInput with a message that names the bad argument (the CLI prints it
and exits 2). None of them echoes a webhook URL back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.feature_flags.constants import TIME_RANGE_PATTERN
from aws_lambda_powertools.utilities.feature_flags.schema import TimeValues

from gpulse.alerting.matchers import parse as parse_matcher
from gpulse.errors import InvalidInput

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
# `label=value` without quotes, as amtool accepts it: we add the quotes the matcher syntax wants
_BARE_MATCHER = re.compile(r"^\s*([a-z_]+)\s*(=~|!~|!=|=)(?![~=])\s*([^\"\s].*?)\s*$")
CHANNEL_KINDS = ("slack", "jandi", "alertmanager")
_DAY_NAMES = TimeValues.days()  # MONDAY … SUNDAY, as Powertools spells them


def parse_duration(text: str) -> float:
    """Seconds in `text`: a plain number of seconds ("90"), or units ("500ms", "5m", "1h30m", "2d")."""
    t = text.strip().lower()
    if _NUMBER.match(t):
        return float(t)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or not t:
        raise InvalidInput(f"duration {text!r} is not like 90, 90s, 5m, 1h30m or 2d")
    return total


def seconds(text: str) -> int | float:
    """A duration as the documents store it: an int when it is whole (300, not 300.0)."""
    value = parse_duration(text)
    return int(value) if value.is_integer() else value


def parse_value(key: str, text: str) -> Any:
    """A parameter's value: a duration for keys ending in `_s` ("5m" → 300), else JSON
    ("0.4", "true", "[1, 2]"), else the text itself ("critical")."""
    if key.endswith("_s") and not _NUMBER.match(text.strip()):
        try:
            return seconds(text)
        except InvalidInput:
            pass  # not a duration: let JSON (or the detector's own check) say what it is
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value` → (key, parsed value)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise InvalidInput(f"{text!r} is not key=value (e.g. min_gap=30, for_s=5m, severity=critical)")
    return key, parse_value(key, value.strip())


def canonical_matchers(texts: Iterable[str]) -> list[str]:
    """Validated matchers, written the one way Alertmanager writes them (`cluster="a"`).
    A value without quotes is accepted (`cluster=a`)."""
    out = []
    for text in texts:
        bare = _BARE_MATCHER.match(text)
        if bare is not None:
            label, op, value = bare.groups()
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            text = f'{label}{op}"{escaped}"'
        out.append(str(parse_matcher(text)))
    return out


def looks_like_url(text: str) -> bool:
    t = text.strip().lower()
    return "://" in t or t.startswith(("http", "www.", "hooks.slack.com", "wh.jandi.com"))


def refuse_url(kind: str) -> InvalidInput:
    """The refusal for a webhook URL given where a secret reference belongs (without the URL)."""
    # an Alertmanager's URL (maybe with basic-auth credentials) is kept under a path of its own
    where = "alertmanager" if kind == "alertmanager" else "webhooks"
    return InvalidInput(
        "a channel is the name of an SSM parameter that holds the webhook, never the URL itself "
        "(the config table is readable by more people than the webhook should be). Store it with\n"
        f"  aws ssm put-parameter --type SecureString --name /gpulse/<stage>/{where}/<name> --value '<url>'\n"
        f"and pass --channel {kind}:/gpulse/<stage>/{where}/<name>"
    )


def parse_channel(text: str) -> dict[str, str]:
    """`slack:/gpulse/prod/webhooks/ml` → {"kind": "slack", "secret": "/gpulse/prod/webhooks/ml"}.
    A URL is refused (and not echoed)."""
    kind, sep, secret = text.partition(":")
    kind = kind.strip().lower()
    if looks_like_url(text) or looks_like_url(secret):
        raise refuse_url(kind if kind in CHANNEL_KINDS else "slack")
    if not sep or kind not in CHANNEL_KINDS:
        raise InvalidInput(
            f"channel {text!r} is not KIND:SSM-PARAMETER with KIND one of {', '.join(CHANNEL_KINDS)} "
            "(e.g. slack:/gpulse/prod/webhooks/ml)"
        )
    return {"kind": kind, "secret": secret.strip()}


def check_channels(doc: Any) -> None:
    """Refuse a route document (from --file) whose channels hold a URL, before anything prints it."""
    channels = doc.get("channels") if isinstance(doc, dict) else None
    for c in channels if isinstance(channels, list) else []:
        secret = c.get("secret") if isinstance(c, dict) else c
        if isinstance(secret, str) and looks_like_url(secret):
            kind = c.get("kind") if isinstance(c, dict) else None
            raise refuse_url(kind if kind in CHANNEL_KINDS else "slack")


def parse_mention(text: str) -> tuple[str, str]:
    """`alice=<@U123>` → ("alice", "<@U123>"): who, and the handle the chat knows them by."""
    who, sep, handle = text.partition("=")
    if not sep or not who.strip() or not handle.strip():
        raise InvalidInput(f"mention {text!r} is not NAME=HANDLE (e.g. alice=<@U123>, ml=<!subteam^S1>)")
    return who.strip(), handle.strip()


def parse_time(text: str) -> float:
    """An ISO 8601 time ("2025-11-22T10:00:00Z", "2025-11-22 19:00+09:00"); without an offset, UTC."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"time {text!r} is not ISO 8601 (e.g. 2025-11-22T10:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def parse_between(text: str) -> tuple[str, str]:
    """`HH:MM-HH:MM` → (start, end), 24-hour clock; an end before the start crosses midnight."""
    start, sep, end = text.strip().partition("-")
    if not sep or not TIME_RANGE_PATTERN.fullmatch(start) or not TIME_RANGE_PATTERN.fullmatch(end):
        raise InvalidInput(f"--between {text!r} is not HH:MM-HH:MM (e.g. 22:00-06:00)")
    return start, end


def parse_days(text: str) -> list[str]:
    """`MON,TUE` (or full names, any case) → ["MONDAY", "TUESDAY"], in the order given, each once."""
    out: list[str] = []
    for raw in text.split(","):
        word = raw.strip().upper()
        day = next((d for d in _DAY_NAMES if word and d.startswith(word) and len(word) >= 3), None)
        if day is None:
            raise InvalidInput(f"--days: {raw.strip()!r} is not a day (MON, TUE, … or MONDAY, …)")
        if day not in out:
            out.append(day)
    return out


def split_list(text: str) -> list[str]:
    """`cluster,rule` → ["cluster", "rule"]."""
    return [p.strip() for p in text.split(",") if p.strip()]
