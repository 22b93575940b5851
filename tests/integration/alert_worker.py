"""One alert process for the two-process test: the real alert handler in an OS process of its own.

    python -m tests.integration.alert_worker SPEC.json

SPEC holds the function's environment, the events to handle and, for each, the wall-clock time
to start it at (so two workers hit the same event at the same moment). One `RESULT {json}` line
per result.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

from gpulse.finding import Finding
from gpulse.notify.chart import render_png
from tests.integration.lambdas import ROOT, FakeContext


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    os.environ.update(spec["env"])
    mod_spec = importlib.util.spec_from_file_location("alert_app", ROOT / "functions" / "alert" / "app.py")
    assert mod_spec is not None and mod_spec.loader is not None
    app = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(app)
    # a warm container: the first chart a process draws loads matplotlib (about a second, more on
    # a busy machine), which would push a step past the next one's start
    render_png(Finding.from_json(spec["steps"][0][1]["Records"][0]["body"]))
    for start_at, event in spec["steps"]:
        time.sleep(max(0.0, start_at - time.time()))
        print("RESULT", json.dumps(app.handler(event, FakeContext())), flush=True)  # stdout has EMF too


if __name__ == "__main__":
    main(sys.argv[1])
