"""Benchmark of the charts in alert messages (gpulse.notify.chart) against the text-only message.

    python bench/bench_chart.py [--quick] [--out FILE]

Measures, in one run:
  1. layer size: the installed bytes of matplotlib and of every distribution it pulls in that the
     core layer (src/requirements.txt: Powertools, numpy, requests, boto3) does not already
     bring, from the installed distributions' RECORD files;
  2. cold start: in a fresh interpreter, importing the alert side's notifiers (the baseline: what
     the alert function imports today) and then drawing the first chart (importing matplotlib),
     with matplotlib's font cache cold (a new MPLCONFIGDIR: every Lambda cold start) and warm;
  3. per image: CPU time to render one PNG (median of N) and its bytes, for a cross-node heatmap
     (8 and 64 nodes) and a per-GPU line chart, against building the text-only Slack and Jandi
     payloads of the same notification (the baseline, same run).

stdout: one JSON object per line. stderr: a short table for people.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from gpulse.finding import Evidence, EvidenceRow, Finding
from gpulse.notification import single
from gpulse.notify import jandi, slack
from gpulse.notify.chart import render_png

ROOT = Path(__file__).resolve().parents[1]
CORE_REQUIREMENTS = ROOT / "src" / "requirements.txt"
T0 = 1_800_000_000.0
MIB = 1 << 20
Result = dict[str, Any]


# ---- 1. layer size


def _closure(names: list[str]) -> set[str]:
    """Every installed distribution `names` need (unconditional requirements, and extras named)."""
    seen: set[str] = set()
    todo = [Requirement(n) for n in names]
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue
        seen.add(key)
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(sub)
    return seen


def _installed_bytes(name: str) -> int:
    dist = md.distribution(name)
    total = 0
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f)))
        if path.is_file() and "__pycache__" not in path.parts:
            total += path.stat().st_size
    return total


def layer_size() -> list[Result]:
    core = [  # the layer's other requirements: what was there before the charts
        line.strip()
        for line in CORE_REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#") and Requirement(line).name != "matplotlib"
    ]
    core_set = _closure(core)
    added = sorted(_closure(["matplotlib"]) - core_set)
    out: list[Result] = [
        {
            "bench": "chart_layer",
            "dist": name,
            "version": md.version(name),
            "installed_bytes": _installed_bytes(name),
        }
        for name in added
    ]
    core_bytes = sum(_installed_bytes(n) for n in sorted(core_set))
    added_bytes = sum(r["installed_bytes"] for r in out)
    out.append(
        {
            "bench": "chart_layer_total",
            "added_dists": added,
            "added_bytes": added_bytes,
            "core_bytes": core_bytes,
            "ratio_to_core": round(added_bytes / core_bytes, 3),
            "note": "installed size here (CPython "
            f"{sys.version_info.major}.{sys.version_info.minor}), .pyc excluded",
        }
    )
    return out


# ---- 2. cold start

CHILD = r"""
import json, sys, time
c0, t0 = time.process_time(), time.perf_counter()
from gpulse.notify import jandi, slack, alertmanager  # what the alert function imports to send
c1, t1 = time.process_time(), time.perf_counter()
sys.path.insert(0, sys.argv[1])
from bench_chart import line_finding
from gpulse.notify.chart import render_png
f = line_finding()
loaded = "matplotlib" in sys.modules  # the lazy import: nothing of matplotlib before a chart
c2, t2 = time.process_time(), time.perf_counter()
render_png(f)
c3, t3 = time.process_time(), time.perf_counter()
render_png(f)
t4 = time.perf_counter()
print(json.dumps({"notifiers_import_s": t1 - t0, "first_chart_s": t3 - t2, "second_chart_s": t4 - t3,
                  "notifiers_import_cpu_s": c1 - c0, "first_chart_cpu_s": c3 - c2,
                  "matplotlib_loaded_before_chart": loaded}))
"""


def cold_start(repeats: int) -> list[Result]:
    runs: dict[str, list[dict[str, float]]] = {"cold_font_cache": [], "warm_font_cache": []}
    with tempfile.TemporaryDirectory() as warm:
        for i in range(repeats + 1):
            for case in runs:
                config = tempfile.mkdtemp() if case == "cold_font_cache" else warm
                env = {**os.environ, "MPLCONFIGDIR": config, "PYTHONDONTWRITEBYTECODE": "1"}
                got = subprocess.run(
                    [sys.executable, "-c", CHILD, str(Path(__file__).parent)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                if case == "warm_font_cache" and i == 0:
                    continue  # the first warm run fills the cache
                runs[case].append(json.loads(got.stdout))
    out = []
    for case, samples in runs.items():
        base = statistics.median(s["notifiers_import_s"] for s in samples)
        first = statistics.median(s["first_chart_s"] for s in samples)
        out.append(
            {
                "bench": "chart_cold_start",
                "case": case,
                "runs": len(samples),
                "baseline_notifiers_import_ms_median": round(base * 1000, 1),
                "first_chart_ms_median": round(first * 1000, 1),
                "second_chart_ms_median": round(
                    statistics.median(s["second_chart_s"] for s in samples) * 1000, 1
                ),
                "first_chart_to_baseline_ratio": round(first / base, 2),
                "baseline_notifiers_import_cpu_ms_median": round(
                    statistics.median(s["notifiers_import_cpu_s"] for s in samples) * 1000, 1
                ),
                "first_chart_cpu_ms_median": round(
                    statistics.median(s["first_chart_cpu_s"] for s in samples) * 1000, 1
                ),
                "matplotlib_loaded_before_first_chart": any(
                    s["matplotlib_loaded_before_chart"] for s in samples
                ),
            }
        )
    return out


# ---- 3. per image


def heatmap_finding(nodes: int) -> Finding:
    rows = [
        EvidenceRow(f"node-{i:02d}", [5.0 if i in (2, 5) else 80.0 + i % 7] * 40, 0.0, i in (2, 5))
        for i in range(nodes)
    ]
    ev = Evidence(
        "GPU utilisation per node in group a, last 10 min",
        "%",
        rows,
        reference=82.0,
        reference_label="group median",
        start=T0 - 600,
        end=T0,
    )
    return Finding(
        "imbalance", "Cross-node imbalance", "warning", "firing", "fp-h", "c1", T0 - 240, T0,
        "2 of 8 nodes idle", "look", nodes=["node-02", "node-05"], evidence=ev,
    )  # fmt: skip


def line_finding() -> Finding:
    ev = Evidence(
        "node-03/2: temperature (°C) and time throttled (%), last 10 min",
        "",
        [
            EvidenceRow("temperature °C", [70.0 + i * 0.8 for i in range(40)], 95.0, True),
            EvidenceRow("throttled %", [*[0.0] * 20, *[40.0] * 20], 40.0, True),
        ],
        reference=87.0,
        reference_label="slowdown °C",
        scale_max=97.0,
        start=T0 - 600,
        end=T0,
    )
    return Finding(
        "throttling", "Throttling", "warning", "firing", "fp-l", "c1", T0 - 300, T0, "hot", "cool it",
        gpus=["node-03/2"], evidence=ev,
    )  # fmt: skip


def _cpu_median(fn: Any, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.process_time()
        fn()
        samples.append(time.process_time() - t)
    return statistics.median(samples)


def per_image(repeats: int) -> list[Result]:
    render_png(line_finding())  # imports and font cache out of the way: this is the warm cost
    out = []
    for name, finding in (
        ("heatmap_8_nodes", heatmap_finding(8)),
        ("heatmap_64_nodes", heatmap_finding(64)),
        ("lines_1_gpu", line_finding()),
    ):
        n = single(finding)
        text_s = _cpu_median(lambda n=n: (slack.render(n), jandi.render(n)), repeats * 20)
        chart_s = _cpu_median(lambda f=finding: render_png(f), repeats)
        png = render_png(finding)
        text_bytes = len(json.dumps(slack.render(n))) + len(json.dumps(jandi.render(n)))
        out.append(
            {
                "bench": "chart_per_image",
                "chart": name,
                "runs": repeats,
                "render_cpu_ms_median": round(chart_s * 1000, 2),
                "baseline_text_payloads_cpu_ms_median": round(text_s * 1000, 3),
                "render_to_baseline_ratio": round(chart_s / text_s, 1),
                "png_bytes": len(png),
                "baseline_text_payload_bytes": text_bytes,
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    ap.add_argument("--out", type=Path, help="also write every result as one JSON document")
    args = ap.parse_args()
    repeats = 3 if args.quick else 15
    results = [*layer_size(), *cold_start(2 if args.quick else 5), *per_image(repeats)]
    for r in results:
        print(json.dumps(r, ensure_ascii=False), flush=True)
    total = next(r for r in results if r["bench"] == "chart_layer_total")
    print(
        f"layer: +{total['added_bytes'] / MIB:.1f} MiB ({', '.join(total['added_dists'])}) "
        f"over a {total['core_bytes'] / MIB:.1f} MiB core",
        file=sys.stderr,
    )
    for r in results:
        if r["bench"] == "chart_cold_start":
            print(
                f"cold start, {r['case']}: first chart {r['first_chart_ms_median']} ms "
                f"(notifiers import {r['baseline_notifiers_import_ms_median']} ms)",
                file=sys.stderr,
            )
        if r["bench"] == "chart_per_image":
            base = r["baseline_text_payloads_cpu_ms_median"]
            print(
                f"{r['chart']}: {r['render_cpu_ms_median']} ms CPU, {r['png_bytes']} B "
                f"(text payloads {base} ms, ×{r['render_to_baseline_ratio']})",
                file=sys.stderr,
            )
    if args.out:
        args.out.write_text(json.dumps({"results": results}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
