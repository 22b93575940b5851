"""`python -m node_shipper` / `gpulse-shipper`: wire the parts together and run until SIGTERM.

Exit codes: 0 after a clean stop (SIGTERM, SIGINT or --duration), 2 when the flags, the secret
or the machine are not fit to run (no GPU/NVML without --simulate), 1 on a runtime failure.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType

import requests

from node_shipper import __version__
from node_shipper.agent import NodePipeline, Shipper
from node_shipper.batch import BatchBuilder
from node_shipper.config import Config, parse_config, read_secret
from node_shipper.driver import open_when_loaded
from node_shipper.errors import ConfigError, DriverWaitStopped, NoGpuError, ShipperError
from node_shipper.host import HostCollector
from node_shipper.logfmt import setup_logging
from node_shipper.model import Source
from node_shipper.nvml import NvmlCollector
from node_shipper.outbox import Outbox
from node_shipper.retry import Backoff
from node_shipper.sender import Sender
from node_shipper.simulate import Scenario, SimulatedNode, shipper_info
from node_shipper.source import RealSource
from node_shipper.spool import SeqStore, Spool

log = logging.getLogger("node_shipper")

NO_GPU_HINT = (
    "this node has no usable NVIDIA GPU, so there is nothing real to ship. "
    "To see gpulse work without GPUs, run with --simulate demo (or healthy, day): "
    "simulated data, marked as such in every batch."
)


def _pipeline(
    config: Config,
    *,
    node: str,
    source: Source,
    secret: bytes,
    secret_loader: Callable[[], bytes],
    spool_dir: Path,
    session: requests.Session,
    shipper: dict[str, object],
) -> NodePipeline:
    # An unusable spool directory does not stop the node: the spool says so and ships without it.
    spool = None if config.no_spool else Spool(spool_dir, max_bytes=config.spool_max_bytes, label=node)
    if spool is None:
        with contextlib.suppress(OSError):  # next_seq still lives there; SeqStore says if it cannot
            spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    floor = (spool.max_seq + 1) if spool is not None and spool.max_seq is not None else 0
    return NodePipeline(
        name=node,
        source=source,
        builder=BatchBuilder(
            cluster=config.cluster, node=node, node_group=config.node_group, shipper=shipper
        ),
        # Spooled batches carry seqs too: never hand out one below them, even if the seq file was lost.
        seq=SeqStore(spool_dir, floor=floor),
        outbox=Outbox(
            node=node,
            spool=spool,
            sender=Sender(
                session=session,
                endpoint=config.endpoint,
                cluster=config.cluster,
                node=node,
                secret=secret,
                secret_loader=secret_loader,
            ),
            backoff=Backoff(),
            auth_hold_s=config.auth_hold_s,
        ),
    )


def _simulated(config: Config, session: requests.Session) -> list[NodePipeline]:
    assert config.simulate is not None
    overrides: dict[str, object] = {"nodes": config.sim_nodes, "gpus_per_node": config.sim_gpus}
    overrides["cluster"] = config.cluster
    overrides["node_group"] = config.node_group
    if config.fault_start_s is not None:
        overrides["fault_start_s"] = config.fault_start_s
    if config.fault_end_s is not None:
        overrides["fault_end_s"] = config.fault_end_s
    try:
        scenario = Scenario.named(config.simulate, **overrides)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.secrets_dir is None and config.secret_file is None:
        raise ConfigError(
            "--simulate needs --secrets-dir DIR (one secret file per node, named node-01…) or --secret-file"
        )
    start = time.time()
    pipelines = []
    for index, node in enumerate(scenario.node_names()):
        if config.secret_file is not None:
            path, strict = config.secret_file, True
        else:
            assert config.secrets_dir is not None
            path, strict = config.secrets_dir / node, False
        secret = read_secret(path, strict_mode=strict)
        pipelines.append(
            _pipeline(
                config,
                node=node,
                source=SimulatedNode(scenario, index, start),
                secret=secret,
                secret_loader=functools.partial(read_secret, path, strict_mode=strict),
                spool_dir=config.spool_dir / node,
                session=session,
                shipper=shipper_info(config.interval_s),
            )
        )
    line = f"SIMULATED: {scenario.nodes} virtual nodes, scenario {scenario.name} — not real GPUs"
    print(line, flush=True)
    log.warning(
        "simulated fleet",
        extra={
            "scenario": scenario.name,
            "nodes": scenario.nodes,
            "gpus_per_node": scenario.gpus_per_node,
            "fault_start_s": scenario.fault_start_s if scenario.name == "demo" else None,
            "fault_end_s": scenario.fault_end_s if scenario.name == "demo" else None,
        },
    )
    return pipelines


def _from_dcgm(config: Config, session: requests.Session) -> list[NodePipeline]:
    """--source dcgm-exporter=URL: this node's GPUs read from its dcgm-exporter, host from psutil."""
    assert config.dcgm_url is not None
    try:  # prometheus-client is in the shipper's dcgm extra only
        from node_shipper.dcgm_exporter import DcgmExporterSource
    except ImportError as e:
        raise ConfigError(f"--source dcgm-exporter needs prometheus-client ({e.name} is missing)") from None
    if config.secret_file is None:
        raise ConfigError("--secret-file is required (a file holding this node's secret, mode 600)")
    secret = read_secret(config.secret_file)
    source = DcgmExporterSource(config.dcgm_url, HostCollector(), session=session)
    page = source.open()  # NoGpuError / ScrapeError (a ShipperError) end the start with their message
    names = ", ".join(sorted({row.model or "unknown GPU" for row in page.gpus.values()}))
    print(
        f"REAL: node {config.node}, {len(page.gpus)} GPUs ({names}) through dcgm-exporter {config.dcgm_url}",
        flush=True,
    )
    return [
        _pipeline(
            config,
            node=config.node,
            source=source,
            secret=secret,
            secret_loader=functools.partial(read_secret, config.secret_file),
            spool_dir=config.spool_dir,
            session=session,
            shipper={"version": __version__, "simulated": False, "sample_interval_s": config.interval_s},
        )
    ]


def _real(config: Config, session: requests.Session, nvml: ModuleType | None) -> list[NodePipeline]:
    if config.dcgm_url is not None:
        return _from_dcgm(config, session)
    collector = (
        NvmlCollector(nvml, slow_every=config.slow_every)
        if nvml is not None
        else NvmlCollector(slow_every=config.slow_every)
    )
    # NoGpuError: the caller explains --simulate; a driver not loaded yet is waited for (driver.py)
    gpus = open_when_loaded(collector.open, wait_s=config.wait_for_driver_s)
    try:
        if config.secret_file is None:
            raise ConfigError("--secret-file is required (a file holding this node's secret, mode 600)")
        secret = read_secret(config.secret_file)
        names = ", ".join(sorted({g.name or "unknown GPU" for g in gpus}))
        print(f"REAL: node {config.node}, {len(gpus)} GPUs ({names}) through NVML", flush=True)
        log.info("NVML ready", extra={"gpus": len(gpus), "names": names})
        pipeline = _pipeline(
            config,
            node=config.node,
            source=RealSource(collector, HostCollector()),
            secret=secret,
            secret_loader=functools.partial(read_secret, config.secret_file),
            spool_dir=config.spool_dir,
            session=session,
            shipper={"version": __version__, "simulated": False, "sample_interval_s": config.interval_s},
        )
    except BaseException:
        collector.close()
        raise
    return [pipeline]


def main(argv: list[str] | None = None, *, nvml: ModuleType | None = None) -> int:
    """Run the shipper; `nvml` replaces the real pynvml module (tests). Returns the exit code."""
    try:
        config = parse_config(argv)
    except ConfigError as e:
        print(f"gpulse-shipper: error: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    session = requests.Session()
    try:
        pipelines = _simulated(config, session) if config.simulate else _real(config, session, nvml)
    except DriverWaitStopped:
        return 0
    except NoGpuError as e:
        print(f"gpulse-shipper: {e}: {NO_GPU_HINT}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"gpulse-shipper: error: {e}", file=sys.stderr)
        return 2
    except ShipperError as e:
        print(f"gpulse-shipper: {e}", file=sys.stderr)
        return 1
    local = any(f"://{host}" in config.endpoint for host in ("127.0.0.1", "localhost", "[::1]"))
    if not config.endpoint.startswith("https://") and not local:
        log.warning(
            "endpoint is not HTTPS: batches travel in clear text", extra={"endpoint": config.endpoint}
        )
    shipper = Shipper(
        pipelines,
        interval_s=config.interval_s,
        batch_s=config.batch_s,
        drain_s=config.drain_s,
        duration_s=config.duration_s,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        shipper.request_stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info(
        "shipper started",
        extra={
            "version": __version__,
            "cluster": config.cluster,
            "nodes": len(pipelines),
            "interval_s": config.interval_s,
            "batch_s": config.batch_s,
            "endpoint": config.endpoint,
        },
    )
    try:
        return shipper.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        session.close()


if __name__ == "__main__":
    sys.exit(main())
