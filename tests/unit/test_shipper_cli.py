"""Flags, secrets, the no-GPU refusal and the log format."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from node_shipper.__main__ import main
from node_shipper.config import DEFAULT_SPOOL_DIR, parse_config, read_secret
from node_shipper.errors import ConfigError
from node_shipper.logfmt import KeyValueFormatter
from tests.unit.test_shipper_nvml import FakeNvml

BASE = ["--endpoint", "https://gpulse.example/", "--cluster", "prod"]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_defaults() -> None:
    c = parse_config([*BASE, "--node", "gpu-07"])
    assert (c.endpoint, c.cluster, c.node, c.node_group) == ("https://gpulse.example", "prod", "gpu-07", None)
    assert (c.interval_s, c.batch_s, c.drain_s, c.duration_s) == (1.0, 30.0, 5.0, None)
    assert (c.spool_dir, c.spool_max_bytes) == (DEFAULT_SPOOL_DIR, 64 << 20)
    assert (c.simulate, c.sim_nodes, c.sim_gpus) == (None, 8, 8)
    assert c.slow_every == 10
    assert (c.no_spool, c.auth_hold_s) == (False, 1800.0)
    c = parse_config([*BASE, "--node", "n", "--no-spool", "--auth-hold-seconds", "0"])
    assert (c.no_spool, c.auth_hold_s) == (True, 0.0)
    assert parse_config([*BASE, "--node", "n", "--slow-every", "3"]).slow_every == 3


def test_node_defaults_to_the_short_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "dgx-042.cluster.example")
    assert parse_config(BASE).node == "dgx-042"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-seconds", "61"], "--batch-seconds must be between 10 and 60"),
        (["--batch-seconds", "0.5", "--simulate", "demo"], "--batch-seconds must be between 10 and 60"),
        (["--batch-seconds", "5"], "only for tests and demos, with --simulate"),
        (["--interval", "40"], "--interval must be > 0 and at most --batch-seconds"),
        (["--interval", "0"], "--interval must be > 0"),
        (["--node", "bad name"], "--node 'bad name' must match"),
        (["--node-group", "_x"], "--node-group '_x' must match"),
        (["--spool-max-mb", "0"], "--spool-max-mb must be positive"),
        (["--slow-every", "0"], "--slow-every must be 1 or more"),
        (["--auth-hold-seconds", "3601"], "--auth-hold-seconds must be 0..3600, got 3601"),
        (["--auth-hold-seconds", "-1"], "--auth-hold-seconds must be 0..3600, got -1"),
        (["--sim-gpus", "65", "--simulate", "demo"], "--sim-gpus must be 1..64"),
    ],
)
def test_refusals(extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config([*BASE, "--node", "n1", *extra])


def test_short_batches_are_allowed_with_simulate() -> None:
    c = parse_config([*BASE, "--simulate", "demo", "--batch-seconds", "2"])
    assert (c.batch_s, c.simulate) == (2.0, "demo")
    assert c.spool_dir.name == "prod" and c.spool_dir.parent.name == "gpulse-shipper-sim"


def test_endpoint_must_be_http() -> None:
    with pytest.raises(ConfigError, match="--endpoint must be an http"):
        parse_config(["--endpoint", "gpulse.example", "--cluster", "c", "--node", "n"])


def test_secret_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("  s3cr3t-value\n")
    path.chmod(0o600)
    assert read_secret(path) == b"s3cr3t-value"


def test_world_readable_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cr3t")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by every user \(mode 0644\); run: chmod 600"):
        read_secret(path)


@pytest.mark.parametrize(("content", "message"), [("  \n", "is empty"), (None, "cannot read secret file")])
def test_bad_secret_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
        path.chmod(0o600)
    with pytest.raises(ConfigError, match=message):
        read_secret(path)


@pytest.mark.parametrize(
    "fake",
    [
        FakeNvml([], init_error=pynvml.NVMLError_LibraryNotFound()),
        FakeNvml([], init_error=pynvml.NVMLError_DriverNotLoaded()),
        FakeNvml([]),  # NVML loads, but sees no device
    ],
)
def test_no_gpu_without_simulate_exits_2(
    fake: FakeNvml, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main([*BASE, "--node", "n1", "--spool-dir", str(tmp_path)], nvml=fake.nv)
    assert code == 2
    err = capsys.readouterr().err
    assert "no GPU/NVML found" in err and "--simulate demo" in err


def test_real_mode_needs_a_secret_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.unit.test_shipper_nvml import h100

    fake = FakeNvml([h100()])
    code = main([*BASE, "--node", "n1", "--spool-dir", str(tmp_path)], nvml=fake.nv)
    assert code == 2
    assert "--secret-file is required" in capsys.readouterr().err
    fake.nv.nvmlShutdown.assert_called_once_with()


def test_simulate_needs_secrets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main([*BASE, "--simulate", "demo", "--spool-dir", str(tmp_path)])
    assert code == 2
    assert "--simulate needs --secrets-dir" in capsys.readouterr().err


def test_simulate_names_the_missing_node_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "node-01").write_text("a")
    code = main(
        [
            *BASE,
            "--simulate",
            "demo",
            "--sim-nodes",
            "2",
            "--secrets-dir",
            str(secrets),
            "--spool-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert f"cannot read secret file {secrets / 'node-02'}" in capsys.readouterr().err


def test_key_value_log_lines() -> None:
    record = logging.LogRecord(
        "node_shipper.outbox", logging.WARNING, __file__, 1, "batch post failed", None, None
    )
    record.__dict__.update({"node": "node-01", "seq": 3, "error": 'HTTP 503 "busy"'})
    line = KeyValueFormatter().format(record)
    assert line.split(" ", 1)[1] == (
        'level=WARNING logger=node_shipper.outbox msg="batch post failed" '
        'node=node-01 seq=3 error="HTTP 503 \\"busy\\""'
    )
    assert line.startswith("ts=") and line.split(" ", 1)[0].endswith("Z")


def test_the_shipper_imports_only_its_declared_dependencies() -> None:
    """DESIGN: nvidia-ml-py, requests, psutil and gpulse_wire. Never boto3 on a node, nor the core."""
    code = (
        "import sys, node_shipper.__main__; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = {
        m for m in done.stdout.split() if not m.startswith("_")
    }  # interpreter and editable-install hooks
    assert "gpulse" not in loaded  # the core is not installed on a node (distribution gpulse-shipper)
    third_party = loaded - {"node_shipper", "gpulse_wire", "cython_runtime"}
    # requests brings urllib3, idna, certifi and charset_normalizer
    assert third_party <= {
        "pynvml",
        "psutil",
        "requests",
        "urllib3",
        "idna",
        "certifi",
        "charset_normalizer",
    }
