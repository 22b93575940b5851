"""Shipper drills: the real shipper process against the real ingest handler (devstack.runtime) over moto,
all on 127.0.0.1. Each drill reads the series table back and compares, per node, what was stored
with what the shipper says it sampled and closed; each prints its figures (`DRILL …` lines).

- ingest down: ingest stopped for a stretch while the shipper spools; every sample stored once after.
- kill -9: the shipper killed at random moments and started again; at most the batch in flight is
  lost per kill (the open, unflushed batch is never closed), it ships again each time, seq increases.
- full disk: the spool on a full tmpfs while ingest is down, then up: nothing lost, sent live.

The short versions run in the default suite; the long ones (5 min down, 30 kills, a longer full
disk) run with `make drills` (GPULSE_DRILLS=1, marker `drill`).
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.stack import free_port
from devstack.template import deploy_local, function_specs, load_template
from gpulse import codec
from tests.integration.lambdas import start_ingest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAGE = "drill"
LONG = os.environ.get("GPULSE_DRILLS") == "1"
long_only = pytest.mark.skipif(not LONG, reason="long drill: run with `make drills`")
INTERVAL_S = 0.25
BATCH_S = 1.0
PER_BATCH = round(BATCH_S / INTERVAL_S)


@dataclass
class Stored:
    batch_id: str
    seq: int
    timestamps: list[float]


@dataclass
class Drill:
    """One drill's ingest (a devstack.runtime process on a fixed port), secrets and shipper runs."""

    moto: str
    tmp: Path
    cluster: str
    nodes: list[str]
    port: int = field(default_factory=free_port)
    ingest: subprocess.Popen[bytes] | None = None
    series_table: str = ""
    ingest_starts: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def setup(self) -> None:
        template = load_template(REPO / "template.yaml")
        deployment = deploy_local(
            template, dynamodb=boto3.client("dynamodb"), sqs=boto3.client("sqs"), parameters={"Stage": STAGE}
        )
        self.series_table = deployment.tables["SeriesTable"]
        prefix = function_specs(template, deployment)["IngestFunction"].environment[
            "GPULSE_NODE_SECRETS_PREFIX"
        ]
        secrets = self.tmp / "secrets"
        secrets.mkdir(mode=0o700)
        for node in self.nodes:
            secret = os.urandom(16).hex()
            boto3.client("ssm").put_parameter(
                Name=f"{prefix}/{self.cluster}/{node}", Value=secret, Type="SecureString", Overwrite=True
            )
            (secrets / node).write_text(secret)
            (secrets / node).chmod(0o600)

    def start_ingest(self) -> None:
        self.ingest_starts += 1
        log = self.tmp / f"ingest-{self.ingest_starts}.log"
        self.ingest = start_ingest(self.moto, self.port, STAGE, log)

    def stop_ingest(self) -> None:
        if self.ingest is not None and self.ingest.poll() is None:
            self.ingest.send_signal(signal.SIGTERM)
            try:
                self.ingest.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.ingest.kill()
                self.ingest.wait()
        self.ingest = None

    def shipper(self, spool_dir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node_shipper",
                "--endpoint",
                self.endpoint,
                "--cluster",
                self.cluster,
                "--simulate",
                "healthy",
                "--sim-nodes",
                str(len(self.nodes)),
                "--sim-gpus",
                "2",
                "--secrets-dir",
                str(self.tmp / "secrets"),
                "--spool-dir",
                str(spool_dir),
                "--interval",
                str(INTERVAL_S),
                "--batch-seconds",
                str(BATCH_S),
                "--log-level",
                "DEBUG",
                *extra,
            ],
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},  # a node holds no AWS keys
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )

    def stored(self) -> dict[str, list[Stored]]:
        """node → its batches in the series table, by seq."""
        out: dict[str, list[Stored]] = {}
        for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=self.series_table):
            for item in page["Items"]:
                if not item["pk"]["S"].startswith(f"{self.cluster}#"):
                    continue
                chunk = codec.decode(item["data"]["B"])
                out.setdefault(chunk.node, []).append(
                    Stored(chunk.batch_id, chunk.seq, [round(t, 3) for t in chunk.timestamps.tolist()])
                )
        return {node: sorted(batches, key=lambda b: b.seq) for node, batches in out.items()}

    def count(self) -> int:
        return sum(len(b) for b in self.stored().values())


@pytest.fixture
def drill(moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Drill]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    d = Drill(moto_server, tmp_path, f"drill-{os.urandom(4).hex()}", ["node-01", "node-02"])
    d.setup()
    d.start_ingest()
    try:
        yield d
    finally:
        d.stop_ingest()


def _fields(line: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))


def _stopped(log: Path) -> dict[str, dict[str, str]]:
    return {
        f["node"]: f
        for f in map(_fields, log.read_text().splitlines())
        if f.get("msg") == '"shipper stopped"'
    }


def _closed(log: Path) -> list[tuple[str, int, int]]:
    """(node, seq, samples) of every batch the run closed (DEBUG "batch closed")."""
    return [
        (f["node"], int(f["seq"]), int(f["samples"]))
        for f in map(_fields, log.read_text().splitlines())
        if f.get("msg") == '"batch closed"'
    ]


def _wait(what: str, until: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()


def _exactly_once(drill: Drill, sampled: dict[str, int]) -> dict[str, int]:
    """Every sample stored exactly once per node; the figures."""
    stored = drill.stored()
    figures = {"batches_stored": 0, "samples_stored": 0, "duplicated": 0, "lost_samples": 0}
    for node in drill.nodes:
        batches = stored.get(node, [])
        ts = [t for b in batches for t in b.timestamps]
        figures["batches_stored"] += len(batches)
        figures["samples_stored"] += len(ts)
        figures["duplicated"] += len(ts) - len(set(ts)) + len(batches) - len({b.batch_id for b in batches})
        figures["lost_samples"] += sampled[node] - len(set(ts))
    return figures


# -- (a) ingest down ------------------------------------------------------------------------------


def _ingest_down(drill: Drill, down_s: float) -> None:
    log = drill.tmp / "shipper.log"
    started = time.monotonic()
    proc = drill.shipper(drill.tmp / "spool", log, "--drain-seconds", "20")
    try:
        _wait("first batches", lambda: drill.count() >= 2 * len(drill.nodes), 30)
        drill.stop_ingest()
        time.sleep(down_s)
        spooled = len(list((drill.tmp / "spool").glob("*/*.batch.gz")))
        drill.start_ingest()
        # the backoff caps at 60 s: within that the spool drains
        _wait("the spool to drain", lambda: not list((drill.tmp / "spool").glob("*/*.batch.gz")), 90)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = _stopped(log)
    sampled = {node: int(stopped[node]["samples"]) for node in drill.nodes}
    figures = _exactly_once(drill, sampled)
    batches = sum(int(stopped[n]["batches"]) for n in drill.nodes)
    print(
        f"DRILL ingest-down down_s={down_s:g} nodes={len(drill.nodes)} batches_closed={batches} "
        f"spooled_at_peak={spooled} "
        + " ".join(f"{k}={v}" for k, v in figures.items())
        + f" wall_s={time.monotonic() - started:.0f}"
    )
    assert figures["duplicated"] == 0 and figures["lost_samples"] == 0
    assert figures["batches_stored"] == batches and spooled > 0


def test_ingest_down_short(drill: Drill) -> None:
    _ingest_down(drill, 6.0)


@pytest.mark.drill
@pytest.mark.timeout(600)
@long_only
def test_ingest_down_5_minutes(drill: Drill) -> None:
    _ingest_down(drill, 300.0)


# -- (b) kill -9 ----------------------------------------------------------------------------------


def _kills(drill: Drill, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    spool = drill.tmp / "spool"
    runs: list[list[tuple[str, int, int]]] = []
    for i in range(kills + 1):
        log = drill.tmp / f"shipper-{i}.log"
        before = drill.count()
        proc = drill.shipper(spool, log, "--drain-seconds", "10")
        try:
            # it starts and ships again each time: no crash loop
            _wait(f"run {i} to ship", lambda before=before: drill.count() > before, 30)
            if i < kills:
                time.sleep(rng.uniform(0.0, 2 * BATCH_S))  # a random moment of the batch cycle
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            else:
                _wait("the spool to drain", lambda: not list(spool.glob("*/*.batch.gz")), 60)
                assert _stop(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        runs.append(_closed(log))
    stored = drill.stored()
    stored_seqs = {(node, b.seq) for node, batches in stored.items() for b in batches}
    closed = [c for run in runs for c in run]
    lost_per_kill = [sum((n, s) not in stored_seqs for n, s, _ in run) for run in runs[:-1]]
    lost_last = sum((n, s) not in stored_seqs for n, s, _ in runs[-1])
    for node in drill.nodes:  # seq strictly increasing across the runs
        seqs = [s for run in runs for n, s, _ in run if n == node]
        assert seqs == sorted(set(seqs)), node
    figures = _exactly_once(drill, {n: sum(k for m, _, k in closed if m == n) for n in drill.nodes})
    print(
        f"DRILL kill-9 kills={kills} nodes={len(drill.nodes)} batches_closed={len(closed)} "
        f"closed_batches_lost={sum(lost_per_kill)} max_lost_per_kill={max(lost_per_kill)} "
        f"batches_stored={figures['batches_stored']} duplicated={figures['duplicated']} "
        f"wall_s={time.monotonic() - started:.0f}"
    )
    # per kill, per node: at most the one batch in flight; the open batch was never closed
    assert max(lost_per_kill) <= len(drill.nodes) and lost_last == 0
    assert figures["duplicated"] == 0
    assert figures["batches_stored"] == len(closed) - sum(lost_per_kill)


def test_kill_9_short(drill: Drill) -> None:
    _kills(drill, 4, seed=1)


@pytest.mark.drill
@pytest.mark.timeout(900)
@long_only
def test_kill_9_thirty_times(drill: Drill) -> None:
    _kills(drill, 30, seed=30)


# -- (c) a full disk ------------------------------------------------------------------------------


@pytest.fixture
def full_disk() -> Iterator[Path]:
    """A 256 KiB tmpfs filled to the last byte (mounting needs root: skipped without it)."""
    mount = Path(tempfile.mkdtemp(prefix="gpulse-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as e:  # ENOSPC: full to the last page
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def _full_disk(drill: Drill, mount: Path, down_s: float, up_s: float) -> None:
    log = drill.tmp / "shipper.log"
    started = time.monotonic()
    proc = drill.shipper(mount / "spool", log, "--drain-seconds", "20")
    try:
        _wait("first batches", lambda: drill.count() >= len(drill.nodes), 30)  # live, with a full disk
        drill.stop_ingest()
        time.sleep(down_s)  # nowhere on disk to go: held in memory
        drill.start_ingest()
        time.sleep(up_s)
        (mount / "filler").unlink()  # the disk frees: the spool comes back by itself

        # at its next probe (5 s, backing off to 60 s while the disk stayed full): waited for, not
        # slept, so a busy machine cannot stop the shipper before it looked
        def recovered() -> bool:
            return log.read_text().count('msg="spool writable again"') == len(drill.nodes)

        _wait("every node's spool writable again", recovered, 90)
        time.sleep(up_s)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = _stopped(log)
    sampled = {node: int(stopped[node]["samples"]) for node in drill.nodes}
    figures = _exactly_once(drill, sampled)
    batches = sum(int(stopped[n]["batches"]) for n in drill.nodes)
    text = log.read_text()
    said = [f for f in map(_fields, text.splitlines()) if f.get("msg", "").startswith('"spool cannot take')]
    back = text.count('msg="spool writable again"')
    print(
        f"DRILL full-disk down_s={down_s:g} nodes={len(drill.nodes)} batches_closed={batches} "
        + " ".join(f"{k}={v}" for k, v in figures.items())
        + f" spool_state_lines={len(said)} recovered_nodes={back}"
        + f" wall_s={time.monotonic() - started:.0f}"
    )
    assert figures["duplicated"] == 0 and figures["lost_samples"] == 0
    assert figures["batches_stored"] == batches
    assert sorted(f["spool"] for f in said) == drill.nodes  # once per node, not once per batch
    assert {f["state"] for f in said} == {"full"}


def test_full_disk_short(drill: Drill, full_disk: Path) -> None:
    _full_disk(drill, full_disk, down_s=5.0, up_s=5.0)


@pytest.mark.drill
@pytest.mark.timeout(600)
@long_only
def test_full_disk_long(drill: Drill, full_disk: Path) -> None:
    _full_disk(drill, full_disk, down_s=120.0, up_s=60.0)
