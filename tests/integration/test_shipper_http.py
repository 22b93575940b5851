"""The real shipper process against a tiny HTTP server on 127.0.0.1: signing, retries, drops, SIGTERM.

Each test runs `python -m node_shipper --simulate ...` as a subprocess, the way the demo does.
The server verifies every signature with gpulse.wire.signing and parses every body with
gpulse.wire.batch, and answers from a per-test script (503, 429, 400, then 200).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gpulse.errors import InvalidInput
from gpulse.wire import batch, signing

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    at: float  # server-side monotonic arrival time
    node: str
    batch_id: str
    seq: int
    doc: dict[str, Any]


@dataclass
class Ingest:
    """What the fake ingest saw. `script(n)` answers the n-th request (0-based); default 200."""

    secrets: dict[str, bytes]
    script: Callable[[int], Answer | None] = lambda n: None
    requests: list[Request] = field(default_factory=list)
    stored: list[Request] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    refused: int = 0  # signatures refused while `rotating` (expected then, not a problem)
    rotating: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: Any, body: bytes) -> Answer:
        node = (headers.get(signing.HEADER_NODE) or "").partition("/")[2]
        try:
            ts = signing.parse_timestamp(headers.get(signing.HEADER_TIMESTAMP), time.time())
            signing.verify(self.secrets[node], ts, body, headers.get(signing.HEADER_SIGNATURE))
            doc = batch.parse(batch.inflate(body, headers.get("Content-Encoding")), now=time.time()).doc
        except (InvalidInput, KeyError) as e:
            if self.rotating:
                self.refused += 1
            else:
                self.problems.append(f"{node}: {e}")
            return 401, {}, b'{"message":"refused by the test server"}'
        with self.lock:
            request = Request(time.monotonic(), node, doc["batch_id"], doc["seq"], doc)
            answer = self.script(len(self.requests))
            self.requests.append(request)
            if answer is None:
                self.stored.append(request)
                return 200, {}, b'{"accepted":true}'
            return answer

    def stored_by_node(self) -> dict[str, list[Request]]:
        out: dict[str, list[Request]] = {}
        for r in self.stored:
            out.setdefault(r.node, []).append(r)
        return out


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[tuple[Ingest, str]]:
    state = Ingest(secrets={f"node-0{i}": f"secret-of-node-0{i}".encode() for i in range(1, 9)})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, headers, payload = (
                state.handle(self.headers, body) if self.path == "/v1/batches" else (404, {}, b"{}")
            )
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    assert state.problems == []


def _secrets_dir(tmp_path: Path, state: Ingest) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    for node, secret in state.secrets.items():
        (d / node).write_bytes(secret + b"\n")
        (d / node).chmod(0o600)
    return d


def _command(endpoint: str, tmp_path: Path, state: Ingest, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "node_shipper",
        "--endpoint",
        endpoint,
        "--cluster",
        "demo",
        "--secrets-dir",
        str(_secrets_dir(tmp_path, state)),
        "--spool-dir",
        str(tmp_path / "spool"),
        "--sim-gpus",
        "2",
        "--interval",
        "0.25",
        *extra,
    ]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def _stopped(stderr: str) -> dict[str, dict[str, int]]:
    """node → the counters of its "shipper stopped" log line."""
    out = {}
    for line in stderr.splitlines():
        if 'msg="shipper stopped"' in line:
            fields = dict(re.findall(r"(\w+)=(\S+)", line))
            out[fields["node"]] = {k: int(fields[k]) for k in ("samples", "batches", "sent", "pending")}
    return out


def _consecutive(seqs: list[int], count: int) -> bool:
    """`count` seqs one after another: a new spool starts seq from the clock (ms), then +1 a batch."""
    return seqs == list(range(seqs[0], seqs[0] + count)) if seqs else count == 0


def _spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("*/*.batch.gz"))


def test_posts_signed_gzip_batches(ingest: tuple[Ingest, str], tmp_path: Path) -> None:
    state, endpoint = ingest
    cmd = _command(
        endpoint, tmp_path, state, "--simulate", "healthy", "--sim-nodes", "2", "--batch-seconds", "1"
    )
    done = _run([*cmd, "--duration", "1.6"])
    assert done.returncode == 0, done.stderr
    assert "SIMULATED: 2 virtual nodes, scenario healthy — not real GPUs" in done.stdout
    stopped = _stopped(done.stderr)
    by_node = state.stored_by_node()
    assert sorted(by_node) == ["node-01", "node-02"]
    for node, stored in by_node.items():
        assert _consecutive([r.seq for r in stored], stopped[node]["batches"])
        assert sum(len(r.doc["timestamps"]) for r in stored) == stopped[node]["samples"]
        assert all(r.doc["shipper"]["simulated"] is True for r in stored)
        assert all(r.doc["agent"] == {"spool": "ok"} for r in stored)
        assert all(r.doc["cluster"] == "demo" and len(r.doc["gpus"]) == 2 for r in stored)
    assert len({r.batch_id for r in state.stored}) == len(state.stored)
    assert _spooled(tmp_path) == []


def test_503_then_200_stores_each_batch_once(ingest: tuple[Ingest, str], tmp_path: Path) -> None:
    state, endpoint = ingest
    state.script = lambda n: (503, {}, b'{"message":"busy"}') if n == 0 else None
    cmd = _command(
        endpoint, tmp_path, state, "--simulate", "healthy", "--sim-nodes", "1", "--batch-seconds", "1"
    )
    done = _run([*cmd, "--duration", "2.5"])
    assert done.returncode == 0, done.stderr
    batches = _stopped(done.stderr)["node-01"]["batches"]
    assert _consecutive(sorted(r.seq for r in state.stored), batches)
    assert len(state.requests) == batches + 1  # the one 503, retried once
    assert state.requests[0].batch_id == state.requests[1].batch_id
    assert _spooled(tmp_path) == []


def test_429_retry_after_is_honoured(ingest: tuple[Ingest, str], tmp_path: Path) -> None:
    state, endpoint = ingest
    state.script = lambda n: (429, {"Retry-After": "1"}, b'{"message":"slow down"}') if n == 0 else None
    cmd = _command(
        endpoint, tmp_path, state, "--simulate", "healthy", "--sim-nodes", "1", "--batch-seconds", "1"
    )
    done = _run([*cmd, "--duration", "1.5"])
    assert done.returncode == 0, done.stderr
    first, second = state.requests[0], state.requests[1]
    assert first.batch_id == second.batch_id
    assert second.at - first.at >= 1.0  # not before the server said
    assert [r.batch_id for r in state.stored].count(first.batch_id) == 1
    assert "retry_after=1.0" in done.stderr


def test_400_is_dropped_not_retried(ingest: tuple[Ingest, str], tmp_path: Path) -> None:
    state, endpoint = ingest
    state.script = lambda n: (400, {}, b'{"message":"schema: nope"}') if n == 0 else None
    cmd = _command(
        endpoint, tmp_path, state, "--simulate", "healthy", "--sim-nodes", "1", "--batch-seconds", "1"
    )
    done = _run([*cmd, "--duration", "1.5"])
    assert done.returncode == 0, done.stderr
    refused = state.requests[0].batch_id
    assert [r.batch_id for r in state.requests].count(refused) == 1
    assert refused not in {r.batch_id for r in state.stored}
    seqs = sorted(r.seq for r in state.stored)
    assert seqs[0] == state.requests[0].seq + 1
    assert _consecutive(seqs, _stopped(done.stderr)["node-01"]["batches"] - 1)
    assert 'msg="batch dropped"' in done.stderr and "reason=refused" in done.stderr
    assert "schema: nope" in done.stderr
    assert _spooled(tmp_path) == []


def test_sigterm_flushes_the_partial_batch_and_exits_0(ingest: tuple[Ingest, str], tmp_path: Path) -> None:
    state, endpoint = ingest
    cmd = _command(
        endpoint,
        tmp_path,
        state,
        "--simulate",
        "demo",
        "--sim-nodes",
        "2",
        "--batch-seconds",
        "2",
        "--drain-seconds",
        "3",
    )
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while len(state.stored_by_node()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(state.stored_by_node()) == 2, "no batch arrived"
        time.sleep(0.6)  # a few samples into the next batch
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reason=SIGTERM" in err
    stopped = _stopped(err)
    for node, stored in state.stored_by_node().items():
        assert _consecutive([r.seq for r in stored], stopped[node]["batches"])
        # every sample taken reached the server: the partial batch was flushed, not lost
        assert sum(len(r.doc["timestamps"]) for r in stored) == stopped[node]["samples"]
        assert stopped[node]["pending"] == 0
    assert _spooled(tmp_path) == []


def test_an_unusable_spool_directory_does_not_stop_shipping(
    ingest: tuple[Ingest, str], tmp_path: Path
) -> None:
    state, endpoint = ingest
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    cmd = _command(
        endpoint, tmp_path, state, "--simulate", "healthy", "--sim-nodes", "1", "--batch-seconds", "1"
    )
    done = _run([*cmd, "--duration", "2.5"])
    assert done.returncode == 0, done.stderr  # it used to exit 1 and restart-loop, shipping nothing
    stopped = _stopped(done.stderr)["node-01"]
    stored = state.stored
    assert _consecutive([r.seq for r in stored], stopped["batches"]) and stopped["batches"] >= 2
    assert sum(len(r.doc["timestamps"]) for r in stored) == stopped["samples"]
    assert all(r.doc["agent"] == {"spool": "unwritable"} for r in stored)
    said = [line for line in done.stderr.splitlines() if "spool cannot take batches" in line]
    assert len(said) == 1 and "state=unwritable" in said[0]  # once, not once per batch


def test_a_rotated_secret_loses_nothing(ingest: tuple[Ingest, str], tmp_path: Path) -> None:
    """Ingest already knows the node's new secret; the node's file still holds the old one until the
    operator writes the new one. The 401s hold the batches; the secret file is read again."""
    state, endpoint = ingest
    new = state.secrets["node-01"]
    cmd = _command(
        endpoint, tmp_path, state, "--simulate", "healthy", "--sim-nodes", "1", "--batch-seconds", "1"
    )
    secret_file = tmp_path / "secrets" / "node-01"
    secret_file.write_bytes(b"the-old-secret\n")
    state.rotating = True
    proc = subprocess.Popen(
        [*cmd, "--duration", "3"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while state.refused < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        secret_file.write_bytes(new + b"\n")  # the operator's step on the node
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert state.refused >= 2
    stopped = _stopped(err)["node-01"]
    assert _consecutive(sorted(r.seq for r in state.stored), stopped["batches"])
    assert len({r.batch_id for r in state.stored}) == len(state.stored)  # each once
    assert sum(len(r.doc["timestamps"]) for r in state.stored) == stopped["samples"]
    assert err.count("ingest refused our signature") == 1
    assert "secret file changed: signing with the new secret" in err
    assert "the-old-secret" not in err and new.decode() not in err


def _nvml_present() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_nvml_present(), reason="this machine has NVML: the no-GPU refusal cannot be seen here")
def test_without_gpus_and_simulate_exit_2(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    secret.chmod(0o600)
    done = _run(
        [
            sys.executable,
            "-m",
            "node_shipper",
            "--endpoint",
            "http://127.0.0.1:9",
            "--cluster",
            "c1",
            "--node",
            "n1",
            "--secret-file",
            str(secret),
            "--spool-dir",
            str(tmp_path / "spool"),
        ]
    )
    assert done.returncode == 2
    assert "no GPU/NVML found" in done.stderr and "--simulate" in done.stderr
    assert os.listdir(tmp_path) == ["secret"]  # refused before touching the spool


def test_a_path_given_twice_keeps_the_batches_until_the_endpoint_is_fixed(
    ingest: tuple[Ingest, str], tmp_path: Path
) -> None:
    """`--endpoint …/v1/batches`: every post is a 404 (the path twice). The data is fine, so the
    batches stay in the spool, the log says once what to fix, and the fixed endpoint delivers them."""
    state, endpoint = ingest
    cmd = _command(f"{endpoint}/v1/batches", tmp_path, state, "--simulate", "healthy", "--sim-nodes", "1")
    # no drain: it would spend its 5 s backing off from the same 404
    done = _run([*cmd, "--batch-seconds", "1", "--duration", "1.5", "--drain-seconds", "0"])
    assert done.returncode == 0, done.stderr
    batches = _stopped(done.stderr)["node-01"]["batches"]
    assert state.stored == [] and batches >= 1 and len(_spooled(tmp_path)) == batches
    assert done.stderr.count("ingest has no such endpoint: holding batches until --endpoint is fixed") == 1
    assert f"url={endpoint}/v1/batches/v1/batches" in done.stderr
    assert 'msg="batch dropped"' not in done.stderr

    (tmp_path / "again").mkdir()  # its own secrets dir; the same spool (the last --spool-dir counts)
    again = _command(endpoint, tmp_path / "again", state, "--simulate", "healthy", "--sim-nodes", "1")
    fixed = _run(
        [*again, "--batch-seconds", "1", "--spool-dir", str(tmp_path / "spool"), "--duration", "1.2"]
    )
    assert fixed.returncode == 0, fixed.stderr
    assert _spooled(tmp_path) == [] and 'msg="batch dropped"' not in fixed.stderr
    # the held ones and the new, each stored once
    assert len({r.seq for r in state.stored}) == len(state.stored) >= batches + 1
