"""Time from an operator's CLI change to its effect, on the local stack with the demo fleet.

Starts the whole pipeline (moto on 127.0.0.1, the three functions, the chat sink) at a time
scale, ships the simulated 8-node fleet whose node-03/node-06 fall idle, waits for the
imbalance alert to fire, then `gpulse rules disable imbalance` through the CLI and measures
until analyze drops the alert (its record resolves) and until the RESOLVED message reaches the
chat; then `enable` and measures until it fires again. Prints one JSON object; the bound to
compare with is the config cache plus one analyze interval (both scaled), printed alongside.

    python bench/bench_control.py [--time-scale 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.demo import CLUSTER, DemoPlan, configure, shipper_command, simulated_fleet  # noqa: E402
from devstack.stack import LocalStack  # noqa: E402


def record_state(table: str, rule: str) -> str | None:
    items = boto3.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"alert#{CLUSTER}"}},
        ConsistentRead=True,
    )["Items"]
    states = [i["state"]["S"] for i in items if i["rule"]["S"] == rule]
    return states[0] if states else None


def wait_until(cond: object, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.2)
    raise TimeoutError(f"not within {timeout_s} s")


def cli(run_dir: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "gpulse.cli", *args, f"--local={run_dir}"], check=True, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-scale", type=float, default=4.0)
    args = ap.parse_args()
    plan = DemoPlan(time_scale=args.time_scale, fault_start_s=20, fault_end_s=10_000, max_s=400)
    run_dir = Path(tempfile.mkdtemp(prefix="gpulse-bench-control-"))
    stack = LocalStack(run_dir, time_scale=plan.time_scale, sink_out=None)
    stack.start()
    shipper = None
    try:
        configure(plan, stack, who="bench")
        node_args = simulated_fleet(plan, stack, run_dir / "secrets")
        shipper = subprocess.Popen(
            shipper_command(plan, stack, run_dir, node_args),
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        state = stack.table("StateTable")
        wait_until(lambda: record_state(state, "imbalance") == "firing", 240)
        fired = len(stack.sink.messages())
        t0 = time.monotonic()
        cli(run_dir, "rules", "disable", "imbalance", "--who", "bench")
        t_cli = time.monotonic()
        t_state = wait_until(lambda: record_state(state, "imbalance") in (None, "resolved"), 180)
        t_chat = wait_until(
            lambda: any("RESOLVED" in json.dumps(m["payload"]) for m in stack.sink.messages()[fired:]), 180
        )
        t1 = time.monotonic()
        cli(run_dir, "rules", "enable", "imbalance", "--who", "bench")
        t_on = wait_until(lambda: record_state(state, "imbalance") == "firing", 180)
        cache = float(stack.parameters["ConfigCacheSeconds"])
        print(
            json.dumps(
                {
                    "time_scale": plan.time_scale,
                    "analyze_interval_s": 60 / plan.time_scale,
                    "config_cache_s": cache,
                    "bound_s": cache + 60 / plan.time_scale,
                    "cli_s": round(t_cli - t0, 2),
                    "disable_to_alert_dropped_s": round(t_state - t0, 2),
                    "disable_to_resolved_in_chat_s": round(t_chat - t0, 2),
                    "enable_to_firing_again_s": round(t_on - t1, 2),
                }
            )
        )
        return 0
    finally:
        if shipper is not None:
            shipper.terminate()
            shipper.wait(timeout=15)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
