"""The README demo: an 8-node simulated cluster on the local stack, alerts arriving in chat.

Part-way through, two nodes fall idle while their peers stay busy, and one GPU is held idle by a
user; the imbalance and idle-but-held alerts, then their resolution, arrive in Slack and Jandi
format at the chat sink. It ends by itself with a summary.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from devstack.stack import ROOT, LocalStack
from devstack.template import load_template
from gpulse.alerting.routes import GROUP_INTERVAL_S, GROUP_WAIT_S, REPEAT_INTERVAL_S
from gpulse.config.store import ConfigStore

CLUSTER = "demo"


def analyze_every_s(time_scale: float) -> float:
    """Seconds between analyze ticks on the demo's clock: the schedule's minute, scaled, over the
    template's AnalyzeTicksPerMinute."""
    ticks = int(load_template()["Parameters"]["AnalyzeTicksPerMinute"]["Default"])
    return 60 / time_scale / ticks


@dataclass(frozen=True)
class DemoPlan:
    nodes: int = 8
    gpus: int = 8
    batch_s: int = 10
    fault_start_s: int = 40
    fault_end_s: int = 130
    time_scale: float = 4.0  # the schedule's minute is 60/4 = 15 s (analyze_every_s)
    for_s: int = 30  # both rules' `for` in the demo (production defaults are longer)
    max_s: int = 200
    real: bool = False  # ship this machine's real GPUs instead of a simulated fleet
    standin: bool = False  # also ship one node through the real NVML path, from stand-in GPUs
    rule_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def params(self) -> dict[str, dict[str, Any]]:
        # the hold-down before a resolve scales with the demo's clock like `for` (production: minutes)
        held = {"for_s": self.for_s, "keep_firing_for_s": self.for_s}
        base = {"imbalance": dict(held), "idle_held": dict(held)}
        return base | self.rule_params

    def route(self, alert_env: dict[str, str]) -> dict[str, Any]:
        """The default route: the template's two webhooks, Alertmanager's waits on the demo's clock."""
        return {
            "channels": [
                {"kind": "slack", "secret": alert_env["GPULSE_SLACK_WEBHOOK_PARAM"]},
                {"kind": "jandi", "secret": alert_env["GPULSE_JANDI_WEBHOOK_PARAM"]},
            ],
            "group_wait_s": round(GROUP_WAIT_S / self.time_scale),
            "group_interval_s": round(GROUP_INTERVAL_S / self.time_scale),
            "repeat_interval_s": REPEAT_INTERVAL_S,
        }


def headline(message: dict[str, Any]) -> str:
    """The first line of what a person sees of a chat message."""
    payload = message["payload"]
    text = payload.get("text") if message["kind"] == "slack" else payload.get("body")
    return str(text or "").splitlines()[0] if text else ""


def expected_done(messages: list[dict[str, Any]], rules: tuple[str, ...]) -> bool:
    """Every rule fired and resolved, in both formats."""
    seen = {
        (m["kind"], "RESOLVED" in headline(m).upper(), r) for m in messages for r in rules if r in headline(m)
    }
    return all((k, True, r) in seen for k in ("slack", "jandi") for r in rules)


def configure(plan: DemoPlan, stack: LocalStack, *, who: str) -> dict[str, Any]:
    """Write the plan's rule parameters and default route to the config table; returns the route."""
    config = ConfigStore(stack.table("ConfigTable"))
    for rule, params in plan.params().items():
        config.put("rule", rule, {"params": params}, who=who, expected_version=None)
    route = plan.route(stack.specs["AlertFunction"].environment)
    config.put("route", "default", route, who=who, expected_version=None)
    return route


def simulated_fleet(plan: DemoPlan, stack: LocalStack, secrets_dir: Path) -> list[str]:
    """Register the plan's simulated nodes; returns the shipper arguments that simulate them."""
    for i in range(1, plan.nodes + 1):
        stack.register_node(CLUSTER, f"node-{i:02d}", secrets_dir)
    return [
        "--cluster",
        CLUSTER,
        "--simulate",
        "demo",
        "--sim-nodes",
        str(plan.nodes),
        "--sim-gpus",
        str(plan.gpus),
        "--secrets-dir",
        str(secrets_dir),
        "--fault-start",
        str(plan.fault_start_s),
        "--fault-end",
        str(plan.fault_end_s),
    ]


def shipper_command(plan: DemoPlan, stack: LocalStack, run_dir: Path, node_args: list[str]) -> list[str]:
    """The node shipper's command line against the local stack's ingest (its function URL)."""
    return [
        sys.executable,
        "-m",
        "node_shipper",
        "--endpoint",
        stack.api_url,
        "--batch-seconds",
        str(plan.batch_s),
        "--spool-dir",
        str(run_dir / "spool"),
        "--duration",
        str(plan.max_s),
        *node_args,
    ]


def _echo_banner(log: Path, say: Callable[[str], None], timeout_s: float = 10.0) -> None:
    """Show the shipper's first line (it says whether the GPUs are real or simulated)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "\n" in text:
            say(f"shipper: {text.splitlines()[0]}")
            return
        time.sleep(0.2)


class DemoRun(list[dict[str, Any]]):
    """The chat messages received, in order, and the config changes operators made meanwhile
    (`gpulse rules disable …` during the demo): with those, a missing alert is what was asked for."""

    config_changes: list[str]


def operator_changes(config: ConfigStore, *, demo_who: str = "demo") -> list[str]:
    """The config table's changes by anyone but the demo itself, oldest first ("who put rule x")."""
    return [
        f"{a['who']} {a['action']} {a['kind']} {a['name']}"
        for a in reversed(config.audit(200))
        if a["who"] != demo_who
    ]


def gpulse_command() -> str:
    """How to run this environment's `gpulse` from here (`.venv-demo/bin/gpulse` under make demo)."""
    script = Path(sys.executable).parent / "gpulse"
    return os.path.relpath(script) if script.exists() else "gpulse"


def run_demo(plan: DemoPlan, run_dir: Path, out: TextIO = sys.stdout) -> DemoRun:
    """Run the demo; returns the chat messages received, in order."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.monotonic()
    bold = ("\033[1m", "\033[0m") if out.isatty() else ("", "")

    def say(text: str) -> None:
        print(f"{bold[0]}[gpulse demo +{time.monotonic() - t0:5.1f}s]{bold[1]} {text}", file=out, flush=True)

    say("starting moto on 127.0.0.1, tables and queues from template.yaml, the functions, the chat sink")
    stack = LocalStack(run_dir, time_scale=plan.time_scale, sink_out=out)
    stack.sink.pictures_dir = run_dir / "pictures"  # the charts the messages carried, to open
    shipper: subprocess.Popen[bytes] | None = None
    standin: subprocess.Popen[bytes] | None = None
    try:
        stack.start()
        say(
            f"ingest {stack.api_url}/v1/batches · chat sink {stack.sink.url} · analyze every "
            f"{analyze_every_s(plan.time_scale):.3g}s (time scale ×{plan.time_scale:g}) · "
            f"logs in {run_dir}/logs"
        )
        route = configure(plan, stack, who="demo")
        say(f"rule parameters for the demo, in the config table: {plan.params()}")
        say(
            "default route: Slack and Jandi, grouped by cluster and rule, "
            f"group_wait {route['group_wait_s']:g}s, group_interval {route['group_interval_s']:g}s "
            "(Alertmanager's ÷ time scale). "
            f"Change rules live: {gpulse_command()} --local {run_dir} rules list"
        )
        secrets_dir = run_dir / "secrets"
        if plan.real:
            node = socket.gethostname().split(".")[0]
            stack.register_node("local", node, secrets_dir)
            cmd = ["--cluster", "local", "--node", node, "--secret-file", str(secrets_dir / node)]
        else:
            cmd = simulated_fleet(plan, stack, secrets_dir)
        shipper_log = open(run_dir / "logs" / "shipper.log", "wb")  # noqa: SIM115 - closed with the process
        shipper = subprocess.Popen(
            shipper_command(plan, stack, run_dir, cmd),
            cwd=ROOT,
            env=dict(os.environ),
            stdout=shipper_log,
            stderr=subprocess.STDOUT,
        )
        if plan.standin:
            # imported here: standin_nvml lives in the repository, not in the installed packages
            from devstack import standin_node

            standin = standin_node.start_standin_node(stack, run_dir, batch_s=plan.batch_s, max_s=plan.max_s)
            say(f"{standin_node.NODE} (cluster {standin_node.CLUSTER!r}): the real shipper, stand-in GPUs")
        ship_start = time.monotonic()
        ship_epoch = time.time()
        _echo_banner(run_dir / "logs" / "shipper.log", say)
        if not plan.real:
            say(
                f"shipping {plan.nodes} simulated nodes × {plan.gpus} GPUs (cluster {CLUSTER!r}), "
                f"a batch every {plan.batch_s}s. At +{plan.fault_start_s}s node-03 and node-06 fall "
                f"idle and bob holds node-05 GPU 7 idle; at +{plan.fault_end_s}s all recovers."
            )
        rules = ("Cross-node imbalance", "GPU held but idle")
        while time.monotonic() - ship_start < plan.max_s:
            time.sleep(1)
            if shipper.poll() is not None and shipper.returncode != 0:
                tail = (run_dir / "logs" / "shipper.log").read_text(errors="replace")[-2000:]
                say(f"the shipper stopped (exit {shipper.returncode}):\n{tail}")
                break
            messages = stack.sink.messages()
            if not plan.real and expected_done(messages, rules):
                time.sleep(2)
                break
        messages = stack.sink.messages()
        say("summary (times after the shipper started)")
        for m in messages:
            print(f"   +{m['received_at'] - ship_epoch:6.1f}s  {m['kind']:<6} {headline(m)[:88]}", file=out)
        done = expected_done(messages, rules)
        charts = [p for m in messages for p in m.get("pictures", [])]
        files = sorted({p["file"] for p in charts if p.get("file")})
        print(
            f"   {sum(p['ok'] for p in charts)} of {len(charts)} linked charts fetched as PNGs; "
            f"{len(files)} pictures written under {run_dir / 'pictures'}",
            file=out,
        )
        run = DemoRun(messages)
        run.config_changes = operator_changes(ConfigStore(stack.table("ConfigTable")))
        if run.config_changes:
            print(f"   config changed during the demo: {'; '.join(run.config_changes)}", file=out)
        missing = "not every alert arrived" + (" (after those changes)" if run.config_changes else "")
        print(
            f"   {len(messages)} chat messages; "
            f"{'every alert fired and resolved, in both formats' if done else missing}",
            file=out,
        )
        if not plan.real:
            print(
                f"   faults began at +{plan.fault_start_s}s and ended at +{plan.fault_end_s}s; rules' `for` "
                f"was {plan.for_s}s, analyze ran every {analyze_every_s(plan.time_scale):.3g}s, "
                f"batches every {plan.batch_s}s",
                file=out,
                flush=True,
            )
        return run
    finally:
        for proc in (shipper, standin):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        stack.stop()
