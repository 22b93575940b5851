"""The shipper's command line, parsed once into a validated, frozen `Config`.

Every refusal is a `ConfigError` whose message names the flag and what to do about it.
"""

from __future__ import annotations

import argparse
import re
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from node_shipper import __version__
from node_shipper.errors import ConfigError
from node_shipper.simulate import SCENARIOS

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # Batch v1's `name`
DEFAULT_SPOOL_DIR = Path("/var/lib/gpulse-shipper")
MIN_BATCH_S, MAX_BATCH_S, MIN_REAL_BATCH_S = 1.0, 60.0, 10.0
MAX_AUTH_HOLD_S = 3600.0  # longer than any rotation needs; held batches cost memory or spool


@dataclass(frozen=True)
class Config:
    endpoint: str
    cluster: str
    node: str
    node_group: str | None
    secret_file: Path | None
    interval_s: float
    batch_s: float
    spool_dir: Path
    spool_max_bytes: int
    no_spool: bool
    auth_hold_s: float
    drain_s: float
    slow_every: int
    duration_s: float | None
    log_level: str
    simulate: str | None
    sim_nodes: int
    sim_gpus: int
    secrets_dir: Path | None
    fault_start_s: float | None
    fault_end_s: float | None
    dcgm_url: str | None = None  # --source dcgm-exporter=URL: read GPUs from it instead of NVML
    wait_for_driver_s: float = 0.0  # --wait-for-driver: retry nvmlInit this long (inf: for ever)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpulse-shipper",
        description="Sample this node's GPUs (NVML) and host, and post signed Batch v1 documents to gpulse.",
    )
    p.add_argument("--version", action="version", version=f"gpulse-shipper {__version__}")
    p.add_argument(
        "--endpoint", required=True, help="the stack's IngestUrl; batches go to {endpoint}/v1/batches"
    )
    p.add_argument("--cluster", required=True, help="cluster name")
    p.add_argument("--node", help="node name (default: the short hostname)")
    p.add_argument("--node-group", help="node group (optional)")
    p.add_argument(
        "--secret-file", type=Path, help="file holding this node's signing secret (not world-readable)"
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1.0)")
    # 30 s: the cost model's choice (bench/cost_model.py, docs/shipper.md): within $0.05 per
    # GPU-month and anomaly to chat within `for` + 45 s. 10 s is the low-latency one, at more cost.
    p.add_argument("--batch-seconds", type=float, default=30.0, help="seconds per batch, 10..60 (default 30)")
    p.add_argument("--spool-dir", type=Path, help=f"where failed batches wait (default {DEFAULT_SPOOL_DIR})")
    p.add_argument(
        "--spool-max-mb", type=float, default=64.0, help="spool bound in MiB, oldest dropped (default 64)"
    )
    p.add_argument(
        "--no-spool",
        action="store_true",
        help="never write batches to disk: failed posts wait in memory only (lost on restart)",
    )
    p.add_argument(
        "--auth-hold-seconds",
        type=float,
        default=1800.0,
        help="keep batches refused with 401/403 (a secret being rotated) this long, 0..3600 (default 1800)",
    )
    p.add_argument(
        "--drain-seconds", type=float, default=5.0, help="on SIGTERM, time to empty the spool (default 5)"
    )
    p.add_argument(
        "--slow-every",
        type=int,
        default=10,
        help="read slow-changing or slow-to-read metrics (PCIe, retired/remapped memory) every N samples "
        "(default 10: PCIe throughput blocks ~20 ms a call)",
    )
    p.add_argument(
        "--source",
        default="nvml",
        metavar="nvml|dcgm-exporter=URL",
        help="where GPU readings come from: NVML (default), or this node's dcgm-exporter page, "
        "e.g. dcgm-exporter=http://127.0.0.1:9400/metrics (host metrics always come from psutil)",
    )
    p.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    p.add_argument(
        "--wait-for-driver",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when the NVIDIA driver is not loaded yet (boot), try again for this long, 'inf' for ever "
        "(default 0: exit 2 at once); the systemd unit and the DaemonSet wait for ever",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sim = p.add_argument_group("simulation (no GPUs needed; every batch is marked simulated)")
    sim.add_argument(
        "--simulate", metavar="SCENARIO", choices=SCENARIOS, help=f"one of {', '.join(SCENARIOS)}"
    )
    sim.add_argument("--sim-nodes", type=int, default=8, help="virtual nodes node-01..node-NN (default 8)")
    sim.add_argument("--sim-gpus", type=int, default=8, help="GPUs per virtual node (default 8)")
    sim.add_argument(
        "--secrets-dir", type=Path, help="one secret file per virtual node, named after the node"
    )
    sim.add_argument(
        "--fault-start", type=float, help="demo: seconds after start when the faults begin (default 40)"
    )
    sim.add_argument("--fault-end", type=float, help="demo: seconds after start when they end (default 130)")
    return p


def _name(flag: str, value: str) -> str:
    if not NAME.match(value):
        raise ConfigError(f"{flag} {value!r} must match {NAME.pattern} (letters, digits, '.', '_', '-')")
    return value


def parse_config(argv: list[str] | None = None) -> Config:
    """Parse and check the flags; ConfigError says which flag is wrong. argparse's own errors exit 2."""
    a = build_parser().parse_args(argv)
    if not a.endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint must be an http(s) URL, got {a.endpoint!r}")
    if not MIN_BATCH_S <= a.batch_seconds <= MAX_BATCH_S:
        raise ConfigError(
            f"--batch-seconds must be between 10 and 60 (1..9 only with --simulate), got {a.batch_seconds:g}"
        )
    if a.batch_seconds < MIN_REAL_BATCH_S and not a.simulate:
        raise ConfigError(
            f"--batch-seconds below 10 ({a.batch_seconds:g}) is only for tests and demos, with --simulate"
        )
    if not 0 < a.interval <= a.batch_seconds:
        raise ConfigError(f"--interval must be > 0 and at most --batch-seconds, got {a.interval:g}")
    if a.spool_max_mb <= 0:
        raise ConfigError("--spool-max-mb must be positive")
    if not 0 <= a.auth_hold_seconds <= MAX_AUTH_HOLD_S:
        raise ConfigError(f"--auth-hold-seconds must be 0..{MAX_AUTH_HOLD_S:g}, got {a.auth_hold_seconds:g}")
    if a.drain_seconds < 0:
        raise ConfigError("--drain-seconds must be 0 or more")
    if a.slow_every < 1:
        raise ConfigError("--slow-every must be 1 or more")
    if not a.wait_for_driver >= 0:  # also refuses nan
        raise ConfigError(f"--wait-for-driver must be 0 or more seconds (or inf), got {a.wait_for_driver:g}")
    if a.duration is not None and a.duration <= 0:
        raise ConfigError("--duration must be positive")
    if not 1 <= a.sim_nodes <= 999:
        raise ConfigError("--sim-nodes must be 1..999")
    if not 1 <= a.sim_gpus <= 64:
        raise ConfigError("--sim-gpus must be 1..64 (Batch v1 carries at most 64 GPUs)")
    kind, _, dcgm_url = a.source.partition("=")
    if a.source != "nvml" and (kind != "dcgm-exporter" or not dcgm_url.startswith(("http://", "https://"))):
        raise ConfigError(
            f"--source must be nvml or dcgm-exporter=URL (the http(s) URL of its /metrics), got {a.source!r}"
        )
    node = a.node or socket.gethostname().split(".")[0]
    if a.spool_dir is not None:
        spool_dir = a.spool_dir
    elif a.simulate:
        # A demo should not need root: simulated spools live under the temp dir unless told otherwise.
        spool_dir = Path(tempfile.gettempdir()) / "gpulse-shipper-sim" / a.cluster
    else:
        spool_dir = DEFAULT_SPOOL_DIR
    return Config(
        endpoint=a.endpoint.rstrip("/"),
        cluster=_name("--cluster", a.cluster),
        node=_name("--node", node),
        node_group=_name("--node-group", a.node_group) if a.node_group else None,
        secret_file=a.secret_file,
        interval_s=a.interval,
        batch_s=a.batch_seconds,
        spool_dir=spool_dir,
        spool_max_bytes=int(a.spool_max_mb * (1 << 20)),
        no_spool=a.no_spool,
        auth_hold_s=a.auth_hold_seconds,
        drain_s=a.drain_seconds,
        slow_every=a.slow_every,
        duration_s=a.duration,
        log_level=a.log_level,
        simulate=a.simulate,
        sim_nodes=a.sim_nodes,
        sim_gpus=a.sim_gpus,
        secrets_dir=a.secrets_dir,
        fault_start_s=a.fault_start,
        fault_end_s=a.fault_end,
        dcgm_url=dcgm_url or None,
        wait_for_driver_s=a.wait_for_driver,
    )


def read_secret(path: Path, *, strict_mode: bool = True) -> bytes:
    """The secret in `path`, whitespace stripped. Refuses a world-readable file when `strict_mode`."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"cannot read secret file {path}: {e.strerror}") from None
    if strict_mode and mode & stat.S_IROTH:
        raise ConfigError(
            f"secret file {path} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    if not text:
        raise ConfigError(f"secret file {path} is empty")
    return text.encode()
