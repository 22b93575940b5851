"""`python -m devstack demo`: the whole pipeline on this machine (see README)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devstack.demo import DemoPlan, expected_done, run_demo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpulse-local")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="an 8-node simulated cluster; alerts arrive in the chat sink")
    demo.add_argument(
        "--time-scale", type=float, default=4.0, help="schedules run this much faster (default 4)"
    )
    demo.add_argument("--max-seconds", type=int, default=200, help="stop after this long at the latest")
    demo.add_argument(
        "--real", action="store_true", help="ship this machine's real GPUs instead of simulating"
    )
    demo.add_argument(
        "--standin-node",
        action="store_true",
        help="also ship one node through the real NVML path, from stand-in GPUs (needs a C compiler)",
    )
    demo.add_argument("--run-dir", default=".gpulse-local", help="logs, spool and secrets of this run")
    args = ap.parse_args(argv)
    plan = DemoPlan(
        time_scale=args.time_scale, max_s=args.max_seconds, real=args.real, standin=args.standin_node
    )
    messages = run_demo(plan, Path(args.run_dir))
    if args.real:
        return 0
    # An operator who changed the rules meanwhile asked for other alerts: the demo said what it saw.
    done = expected_done(messages, ("Cross-node imbalance", "GPU held but idle"))
    return 0 if done or messages.config_changes else 1


if __name__ == "__main__":
    sys.exit(main())
