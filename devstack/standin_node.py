"""One more node for the demo, shipped through the real NVML path: `python -m node_shipper` without
--simulate, reading 8 stand-in GPUs (standin_nvml/: a C libnvidia-ml.so.1 that the real pynvml
loads) — the same code a GPU node runs. It reports in its own cluster, so the simulated fleet's
alerts are unchanged; its scenario holds an XID on one GPU and a thermally throttled GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devstack.stack import ROOT, LocalStack
from standin_nvml.build import build

CLUSTER = "standin"
NODE = "standin-01"
MIB = 1 << 20
XID_AT_S = 30.0  # after the shipper's nvmlInit
HW_THERMAL_SLOWDOWN = 0x40  # nvmlClocksEventReasonHwThermalSlowdown


def scenario(gpus: int, pid: int) -> str:
    """`gpus` busy H100s, one process each (`pid`); GPU 2 throttled, an XID 79 on GPU 5."""
    lines = []
    for i in range(gpus):
        lines += [
            "gpu",
            f"util_gpu {85 + i} 8 {30 + 3 * i}",
            "util_mem 45 15 40",
            f"mem_used {62000 * MIB} {2000 * MIB} 90",
            "power_mw 610000 60000 30",
            f"temp {82 if i == 2 else 66} 2 60",
            f"mem_temp {88 if i == 2 else 72} 2 60",  # HBM
            f"throttle {HW_THERMAL_SLOWDOWN if i == 2 else 0}",
            "pcie_kbs 350000 2100000",
            "gpm 1",
            "unsupported nvmlDeviceGetRetiredPages",  # Hopper: row remapping replaced page retirement
            f"process {pid} {60000 * MIB}",
        ]
        if i == 5:
            lines.append(f"xid {XID_AT_S:g} 79")
    return "\n".join(lines) + "\n"


def start_standin_node(
    stack: LocalStack, run_dir: Path, *, batch_s: int, max_s: int, gpus: int = 8
) -> subprocess.Popen[bytes]:
    """Register the node, build the library, and start its shipper; logs in logs/standin-shipper.log."""
    secrets_dir = run_dir / "secrets"
    stack.register_node(CLUSTER, NODE, secrets_dir)
    path = run_dir / "standin.nvml"
    path.write_text(scenario(gpus, os.getpid()))
    env = dict(os.environ) | {"LD_LIBRARY_PATH": str(build()), "GPULSE_NVML_SCENARIO": str(path)}
    with (run_dir / "logs" / "standin-shipper.log").open("wb") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "node_shipper", "--endpoint", stack.api_url, "--cluster", CLUSTER),
                *("--node", NODE, "--secret-file", str(secrets_dir / NODE)),
                *("--batch-seconds", str(batch_s), "--spool-dir", str(run_dir / "spool-standin")),
                *("--duration", str(max_s)),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
