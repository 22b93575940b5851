"""The one loader of the sample events in events/, for every test.

Each call returns a fresh copy, so a test may change the event it got (re-sign the ingest body,
edit a finding) without touching what the next test loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"


def event_names() -> list[str]:
    """The names `load_event` accepts: every events/*.json without its suffix, sorted."""
    return sorted(p.stem for p in EVENTS_DIR.glob("*.json"))


def load_event(name: str) -> dict[str, Any]:
    """The event stored as events/<name>.json ("ingest_function_url" or "ingest_function_url.json").

    Raises FileNotFoundError naming the events that exist when there is no such file.
    """
    stem = name.removesuffix(".json")
    path = EVENTS_DIR / f"{stem}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no sample event {stem!r} in {EVENTS_DIR}; there are {event_names()}")
    with path.open(encoding="utf-8") as f:
        event = json.load(f)
    if not isinstance(event, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return event
