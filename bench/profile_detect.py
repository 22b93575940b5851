"""The detectors alone at fleet scale: CPU per detector on one warm window, this tree against HEAD.

The window is bench_fleet's (its block fleet, `--nodes` × 8 GPUs, 15-minute window, 30 s batches),
built once by this tree's incremental path at the last tick and kept as a pickle in the temp dir,
so every side judges the very same window. Each side runs in its own child process:
- `head`: the code at git HEAD (`git archive`), the baseline of the figures;
- `before`: this tree with the files of the detectors' fast path (FAST_PATH) as they were at
  `--before` (HEAD): the plain code path, with whatever else changed in the tree since;
- `tree`: this working tree.
A child times every detector of the catalogue `--repeats` times on a fresh copy of the window
(CPU, `time.process_time`; nothing derived from the window is kept between runs), then
`detect_all` as analyze runs it (jobs and inhibition included), and writes every condition it
found. The parent checks that the tree found the same conditions as `before`, field for field
(floats by their exact bits), and as `head` in every field HEAD has (fields added to the contract
since are named, not compared; the rules whose findings differ are named).

Prints one JSON object per line: per detector, each side's median CPU and the tree's ratio to
`head` and `before`; then the findings' comparisons. `--profile` writes a cProfile of the tree's
`detect_all` (top functions by cumulative time) to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CHILD = r"""
import cProfile, dataclasses, json, pickle, pstats, statistics, sys, time
window_path, out_path, repeats, profile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.analyze.detection import detect_all
with open(window_path, "rb") as f:
    window = pickle.load(f)
params = {n: params_for(n) for n in CATALOGUE}
figures = {}
for name, det in CATALOGUE.items():
    spent = []
    for _ in range(repeats):
        fresh = dataclasses.replace(window)  # a new window object: nothing derived from it is kept yet
        t = time.process_time()
        det.detect(fresh, params[name])
        spent.append(time.process_time() - t)
    figures[name] = statistics.median(spent)
spent, found = [], []
for _ in range(repeats):
    fresh = dataclasses.replace(window)
    t = time.process_time()
    found = detect_all(fresh, params)
    spent.append(time.process_time() - t)
figures["detect_all"] = statistics.median(spent)
if profile:
    prof = cProfile.Profile()
    prof.enable()
    detect_all(dataclasses.replace(window), params)
    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
def plain(v):
    if isinstance(v, float):
        return ("f", v.hex())
    if dataclasses.is_dataclass(v):
        return plain(dataclasses.asdict(v))
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v
with open(out_path, "w") as f:
    json.dump({"figures": figures, "conditions": [plain(c) for c in found]}, f)
"""


def head_source(tmp: Path) -> Path:
    """This repository's src/ at git HEAD, extracted into `tmp` (the baseline)."""
    archive = subprocess.run(["git", "archive", "HEAD", "src"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    return tmp / "src"


def build_window(nodes: int, gpus: int, window_s: float, warm_ticks: int) -> Path:
    """bench_fleet's window at its last tick, built by this tree (cached in the temp dir)."""
    path = Path(tempfile.gettempdir()) / f"gpulse-profile-detect-window-{nodes}x{gpus}-{window_s:.0f}s.pickle"
    if path.exists():
        return path
    import numpy as np
    from bench_fleet import generate

    from gpulse.analyze.incremental import ClusterWindows, TickStats
    from gpulse.detect.base import NodeSeen
    from gpulse.store import SeriesStore, StoredChunk
    from scenarios.fleet import EPOCH

    lead = window_s + 240.0
    rows = generate(nodes, gpus, lead + 60.0 * warm_ticks + 90.0)
    arrived = np.array([r[3] for r in rows])
    t_first = np.array([r[4] for r in rows])
    t_last = np.array([r[5] for r in rows])

    class Mem(SeriesStore):
        def __init__(self) -> None:
            self.now = 0.0

        def read_chunks(
            self,
            cluster: str,
            start: float,
            end: float,
            *,
            arrived_after: float | None = None,
            reach_s: float = 0.0,
        ) -> list[StoredChunk]:
            ok = (t_last >= start) & (t_first <= end) & (arrived <= self.now)
            if arrived_after is not None:
                ok &= arrived > arrived_after
            return [StoredChunk(rows[i][0], rows[i][1], rows[i][2], rows[i][3]) for i in np.flatnonzero(ok)]

    store = Mem()
    windows = ClusterWindows(store, window_s=window_s)
    window = None
    for k in range(warm_ticks + 1):
        now = EPOCH + lead + 60.0 * k
        store.now = now
        seen: dict[str, float] = {}
        for i in np.flatnonzero(arrived <= now):
            seen[rows[i][1]] = max(seen.get(rows[i][1], 0.0), rows[i][5])
        registry = [NodeSeen(n, None, s) for n, s in sorted(seen.items())]
        window = windows.window("bench", registry, now, TickStats())
    path.write_bytes(pickle.dumps(window))
    return path


def run_side(src: Path, window: Path, repeats: int, profile: bool) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(window), out.name, str(repeats), "1" if profile else "0"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=tempfile.gettempdir(),
        )
        if proc.returncode:
            raise SystemExit(f"{src} failed:\n{proc.stderr[-4000:]}")
        if profile:
            sys.stderr.write(proc.stderr)
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
        return result


def _same(a: Any, b: Any, added: set[str], path: str, skip: frozenset[str] = frozenset()) -> bool:
    """Equal, field for field, but the fields in `skip`; a dict key only in `b` (a field added
    since) is noted in `added`, not compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        added.update(f"{path}.{k}" for k in b.keys() - a.keys())
        keys = [k for k in a if f"{path}.{k}" not in skip]
        return all(k in b for k in keys) and all(_same(a[k], b[k], added, f"{path}.{k}", skip) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, added, path, skip) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# The files the detectors' fast path changed: `before` is this tree with these taken from `--before`.
FAST_PATH = (
    "src/gpulse/detect/base.py",
    "src/gpulse/detect/jobs.py",
    "src/gpulse/detect/idle_held.py",
    "src/gpulse/detect/mig.py",
    "src/gpulse/detect/gpu_imbalance.py",
    "src/gpulse/detect/memory_pressure.py",
    "src/gpulse/detect/imbalance.py",
    "src/gpulse/detect/hardware.py",
)


def before_source(tmp: Path, rev: str) -> Path:
    """This tree's src/ with the FAST_PATH files as they were at `rev`: the same code but the fast
    path, so that its findings must equal this tree's in every field."""
    out = tmp / "before"
    shutil.copytree(ROOT / "src", out / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for path in FAST_PATH:
        old = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, check=True)
        (out / path).write_bytes(old.stdout)
    return out / "src"


def _findings(
    n: int, side: str, ref: dict[str, Any], tree: dict[str, Any], skip: frozenset[str]
) -> dict[str, Any]:
    added: set[str] = set()
    same = _same(ref["conditions"], tree["conditions"], added, "", skip)
    differ = {
        c["rule"]
        for c, d in zip(ref["conditions"], tree["conditions"], strict=False)
        if not _same(c, d, set(), "", skip)
    }
    return {
        "bench": "detect",
        "measure": "findings",
        "nodes": n,
        "against": side,
        "conditions": len(tree["conditions"]),
        "conditions_" + side: len(ref["conditions"]),
        "identical": same,
        # fields HEAD's findings do not have (added to the contract since, by other work): not compared
        "fields_not_compared": sorted(added | skip),
        "rules_that_differ": sorted(differ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[250])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--window-s", type=float, default=900.0)
    ap.add_argument("--warm-ticks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each detector; the median is kept")
    ap.add_argument(
        "--sides", nargs="+", choices=("head", "before", "tree"), default=["head", "before", "tree"]
    )
    ap.add_argument("--before", default="HEAD", help="the revision `before` takes the fast path's files from")
    ap.add_argument("--profile", action="store_true", help="cProfile of the tree's detect_all, to stderr")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = {
            "head": lambda: head_source(Path(tmp)),
            "before": lambda: before_source(Path(tmp), args.before),
            "tree": lambda: ROOT / "src",
        }
        sides = {
            side: sources[side]()
            for side in ("head", "before", "tree")
            if side in args.sides or side == "tree"
        }
        for n in args.nodes:
            t = time.perf_counter()
            window = build_window(n, args.gpus, args.window_s, args.warm_ticks)
            print(
                json.dumps(
                    {
                        "bench": "detect",
                        "measure": "window",
                        "nodes": n,
                        "build_s": round(time.perf_counter() - t, 1),
                    }
                ),
                flush=True,
            )
            results = {
                side: run_side(src, window, args.repeats, args.profile and side == "tree")
                for side, src in sides.items()
            }
            tree = results["tree"]["figures"]
            for name in tree:
                row: dict[str, Any] = {
                    "bench": "detect",
                    "measure": "cpu_s",
                    "nodes": n,
                    "gpus": n * args.gpus,
                    "detector": name,
                }
                for side, res in results.items():
                    row[side] = round(res["figures"][name], 4)
                for side in ("head", "before"):
                    if side in results:
                        row[f"ratio_to_{side}"] = round(
                            tree[name] / max(results[side]["figures"][name], 1e-9), 3
                        )
                print(json.dumps(row), flush=True)
            new_fields: set[str] = set()
            if "head" in results:
                _same(results["head"]["conditions"], results["tree"]["conditions"], new_fields, "")
            for side in ("before", "head"):
                if side in results:
                    found = _findings(n, side, results[side], results["tree"], frozenset(new_fields))
                    print(json.dumps(found), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
