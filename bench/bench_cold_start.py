"""Benchmark of the Lambda functions' cold start: the CPU time of importing each functions/<x>/app.py.

    python bench/bench_cold_start.py [--quick] [--repeats N] [--baseline REF] [--out FILE]
                                     [--python PYTHON --layer .aws-sam/build]

Each import runs in a fresh Python process with exactly the function's environment from
template.yaml (devstack.template.function_specs against table, queue and topic names made up
here), fake AWS credentials, AWS_ENDPOINT_URL=http://127.0.0.1:9 (nothing can leave the machine:
constructing a boto3 client needs no network) and POWERTOOLS_TRACE_DISABLED=true, as a function
deployed with tracing off has. Measured in the child with resource.getrusage (user + sys CPU, so
the shared cores do not distort it):

  import_cpu_ms          importing app.py, what Lambda's init phase runs (interpreter start excluded)
  process_cpu_ms         the whole child (interpreter start + import), from the parent's RUSAGE_CHILDREN
  first_request_cpu_ms   ingest only: what the first request builds on top of the import without the
                         network: the lazily built wiring (boto3 clients, stores, idempotency layer),
                         the hardware fast path's module, parsing and chunk-encoding one 30 s batch
                         of an 8-GPU node (not: HMAC, the AWS calls, the fast path's own check)

plus which heavy modules the import left loaded (numpy, the X-Ray SDK, boto3, requests) and how
many boto3 clients it built.
Median and min over --repeats runs, each after one unmeasured run that writes the bytecode cache.

--baseline REF also measures REF (a commit) in the same run: `git worktree add --detach` into a
temporary folder, imported from there (its src/ first on PYTHONPATH), removed afterwards; runs of
the two alternate, so drift of the machine hits both alike.

By default the children run this interpreter (the project's .venv, Python 3.11) on the source
tree. Lambda runs python3.12 (template.yaml Globals) on the layer: `--python python3.12 --layer
.aws-sam/build` (after scripts/sam-build.sh) imports each built function with the built layer on
PYTHONPATH, as /var/task and /opt/python are on Lambda; a baseline then puts its own src/ before
the layer, so only gpulse and the handlers differ.

stdout: one JSON object per line. stderr: a short table for people.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.template import (
    QUEUE_TYPE,
    TABLE_TYPE,
    TOPIC_TYPE,
    LocalDeployment,
    QueueRef,
    function_specs,
    load_template,
    resolve_parameters,
)
from node_shipper.simulate import Scenario, simulate_batches

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("IngestFunction", "AnalyzeFunction", "AlertFunction")
FAKE_ENDPOINT = "http://127.0.0.1:9"  # the discard port on loopback: a stray call fails at once
REGION = "us-east-1"
ACCOUNT = "123456789012"

Result = dict[str, Any]

# Runs in the child: import the handler module as load_function does, then (ingest) do the
# first request's offline work. argv: app.py path, the batch body's path or "".
CHILD = r"""
import importlib.util, json, resource, sys, time

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

path, body_path = sys.argv[1], sys.argv[2]
c0, w0 = cpu(), time.perf_counter()
spec = importlib.util.spec_from_file_location("app", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
c1, w1 = cpu(), time.perf_counter()
heavy = ("numpy", "aws_xray_sdk.core", "boto3", "requests")
loaded = {name: name in sys.modules for name in heavy}
import botocore.client
clients = sum(1 for o in __import__("gc").get_objects() if isinstance(o, botocore.client.BaseClient))
out = {"import_cpu_s": c1 - c0, "import_wall_s": w1 - w0, "loaded": loaded, "boto3_clients": clients}
if body_path:
    with open(body_path, "rb") as f:
        body = f.read()
    c2 = cpu()
    # whatever the first request builds: present as module attributes in both layouts, lazily
    # built (module __getattr__) or built at import (then free here)
    for name in ("store", "secrets", "alert_records", "findings", "rules", "persistence"):
        getattr(module, name, None)
    from gpulse import codec, fastpath  # every stored batch goes through the fast path's check
    from gpulse.wire import batch
    doc = batch.parse(body, now=json.loads(body)["timestamps"][-1]).doc
    codec.encode(doc)
    out["first_request_cpu_s"] = cpu() - c2
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Variant:
    """What one child imports: a handler file, with these folders first on PYTHONPATH."""

    name: str
    tree: Path  # its template.yaml gives the environment
    layer: Path | None  # a `sam build` output folder, or None for the source tree

    def app(self, logical_id: str) -> Path:
        if self.layer is not None and self.tree == ROOT:
            return self.layer / logical_id / "app.py"
        return self.tree / "functions" / logical_id.removesuffix("Function").lower() / "app.py"

    def path(self, logical_id: str) -> list[Path]:
        if self.layer is None:
            return [self.tree / "src", self.tree]
        if self.tree == ROOT:
            return [self.layer / "CoreLayer" / "python", self.layer / logical_id]
        return [self.tree / "src", self.layer / "CoreLayer" / "python"]


def fake_deployment_env(root: Path) -> dict[str, dict[str, str]]:
    """Each function's environment from `root`/template.yaml, resources named but not created."""
    template = load_template(root / "template.yaml")
    resources = template.get("Resources") or {}

    def of(kind: str) -> list[str]:
        return [lid for lid, r in resources.items() if r.get("Type") == kind]

    queues = {
        lid: QueueRef(
            url=f"{FAKE_ENDPOINT}/{ACCOUNT}/bench-{lid}",
            arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:bench-{lid}",
            name=f"bench-{lid}",
        )
        for lid in of(QUEUE_TYPE)
    }
    deployment = LocalDeployment(
        tables={lid: f"bench-{lid}" for lid in of(TABLE_TYPE)},
        queues=queues,
        parameters=resolve_parameters(template),
        region=REGION,
        account_id=ACCOUNT,
        prefix="bench",
        topics={lid: f"arn:aws:sns:{REGION}:{ACCOUNT}:bench-{lid}" for lid in of(TOPIC_TYPE)},
        buckets={lid: f"bench-{lid.lower()}" for lid in of("AWS::S3::Bucket")},
    )
    specs = function_specs(template, deployment)
    return {lid: dict(specs[lid].environment) for lid in FUNCTIONS}


def child_env(path: list[Path], function_env: dict[str, str]) -> dict[str, str]:
    """A clean environment: nothing from this shell's AWS or GPULSE settings leaks in."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")}
    return {
        **keep,
        "PYTHONPATH": os.pathsep.join(map(str, path)),
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": FAKE_ENDPOINT,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        **function_env,
    }


def one_run(python: str, app: Path, env: dict[str, str], body_path: str) -> Result:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [python, "-s", "-c", CHILD, str(app), body_path],
        env=env,
        cwd=app.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"importing {app} failed:\n{proc.stderr[-4000:]}")
    result: Result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def batch_body(folder: Path) -> str:
    """One 30 s batch of a simulated 8-GPU node, as the shipper sends it (before gzip)."""
    doc = next(simulate_batches(Scenario.named("day", nodes=1, gpus_per_node=8), time.time() - 60, 30, 30.0))
    path = folder / "batch.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A detached checkout of `ref` in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="gpulse-cold-start-"))
    target = folder / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(target), ref], check=True
    )
    try:
        yield target
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(target)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def summary(variant: str, logical_id: str, runs: list[Result]) -> Result:
    def ms(key: str) -> dict[str, float]:
        values = [r[key] * 1000 for r in runs if key in r]
        return {
            f"{key[:-2]}_ms_median": round(statistics.median(values), 1),
            f"{key[:-2]}_ms_min": round(min(values), 1),
        }

    out: Result = {"measure": "cold_start", "variant": variant, "function": logical_id, "repeats": len(runs)}
    for key in ("import_cpu_s", "import_wall_s", "process_cpu_s", "first_request_cpu_s"):
        if key in runs[0]:
            out.update(ms(key))
    out["loaded_after_import"] = sorted(k for k, v in runs[0]["loaded"].items() if v)
    out["boto3_clients_after_import"] = runs[0]["boto3_clients"]
    return out


def run(repeats: int, baseline: str | None, python: str, layer: Path | None) -> Iterator[Result]:
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    yield {
        "measure": "meta",
        "python": version,
        "lambda_runtime": "python3.12",
        "layer": str(layer) if layer else None,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeats": repeats,
        "baseline": baseline,
        "env": {"POWERTOOLS_TRACE_DISABLED": "true", "AWS_ENDPOINT_URL": FAKE_ENDPOINT},
    }
    with tempfile.TemporaryDirectory(prefix="gpulse-cold-start-") as tmp, _maybe_worktree(baseline) as base:
        body = batch_body(Path(tmp))
        variants = [Variant("current", ROOT, layer)]
        if base is not None:
            variants.insert(0, Variant("baseline", base, layer))
        envs = {v.name: fake_deployment_env(v.tree) for v in variants}
        for logical_id in FUNCTIONS:
            runs: dict[str, list[Result]] = {v.name: [] for v in variants}
            first = body if logical_id == "IngestFunction" else ""
            for i in range(repeats + 1):  # the first run of each writes the bytecode cache; not counted
                for v in variants:  # alternating, so the machine's drift hits both alike
                    env = child_env(v.path(logical_id), envs[v.name][logical_id])
                    r = one_run(python, v.app(logical_id), env, first)
                    if i:
                        runs[v.name].append(r)
            summaries = {name: summary(name, logical_id, rs) for name, rs in runs.items()}
            yield from summaries.values()
            if "baseline" in summaries:
                yield ratio(logical_id, summaries["baseline"], summaries["current"])


def ratio(logical_id: str, b: Result, c: Result) -> Result:
    out: Result = {"measure": "cold_start_ratio", "function": logical_id}
    for key in ("import_cpu_ms_median", "process_cpu_ms_median"):
        out[f"{key}_current_over_baseline"] = round(c[key] / b[key], 3)
    if "first_request_cpu_ms_median" in c:
        out["import_plus_first_request_cpu_ms_median_current_over_baseline"] = round(
            (c["import_cpu_ms_median"] + c["first_request_cpu_ms_median"])
            / (b["import_cpu_ms_median"] + b["first_request_cpu_ms_median"]),
            3,
        )
    return out


@contextmanager
def _maybe_worktree(ref: str | None) -> Iterator[Path | None]:
    if ref is None:
        yield None
        return
    with worktree(ref) as tree:
        yield tree


def table(results: list[Result]) -> str:
    rows = ["function         variant    import CPU ms median (min)  process CPU ms  first request CPU ms"]
    for r in results:
        if r["measure"] == "cold_start":
            first = f"{r['first_request_cpu_ms_median']:.0f}" if "first_request_cpu_ms_median" in r else "-"
            imported = f"{r['import_cpu_ms_median']:.0f} ({r['import_cpu_ms_min']:.0f})"
            rows.append(
                f"{r['function']:<16} {r['variant']:<9}  {imported:>26}  {r['process_cpu_ms_median']:>14.0f}"
                f"  {first:>20}   loaded: {', '.join(r['loaded_after_import']) or '-'};"
                f" {r['boto3_clients_after_import']} boto3 clients"
            )
        elif r["measure"] == "cold_start_ratio":
            x = r["import_cpu_ms_median_current_over_baseline"]
            rows.append(f"{r['function']:<16} current/baseline, import CPU: {x:.2f}x")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="measured runs per function and variant")
    parser.add_argument("--quick", action="store_true", help="3 repeats (CI smoke)")
    parser.add_argument("--baseline", metavar="REF", help="also measure this commit, from a git worktree")
    parser.add_argument("--out", type=Path, help="also write every result to this JSON file")
    parser.add_argument("--python", default=sys.executable, help="the children's interpreter")
    parser.add_argument("--layer", type=Path, help="a `sam build` output folder: import the built functions")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    layer = args.layer.resolve() if args.layer else None
    results = []
    for result in run(repeats, args.baseline, args.python, layer):
        print(json.dumps(result), flush=True)
        results.append(result)
    print(table(results), file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"meta": results[0], "results": results[1:]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
