"""Every metric the code emits is declared in gpulse.telemetry, and every declared one is emitted."""

from __future__ import annotations

import re
from pathlib import Path

from gpulse.telemetry import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]


def test_the_metric_catalogue_matches_what_the_code_emits() -> None:
    names: set[str] = set()
    for path in [*ROOT.glob("functions/*/app.py"), *ROOT.glob("src/gpulse/**/*.py")]:
        for call in re.findall(r"telemetry\.emit\(metrics, ([^\n]*)\)", path.read_text()):
            names |= set(re.findall(r'"([A-Z]\w+)"', call))  # a name, or both of a conditional
    assert names == set(CATALOGUE)
