"""The shipper as a node installs it: the `gpulse-shipper` and `gpulse-wire` wheels (packages/),
built here, hold only the node's packages and declare only its dependencies; installed alone into a
clean venv with deploy/shipper-constraints.txt, the shipper runs and ingest's own parser and
signature check accept every batch it posts.

The default suite builds the wheels and reads them (a few seconds). The install into a clean venv
(pip from the package index, ~40 s) runs with `make wheel-test` (GPULSE_WHEEL=1, marker `wheel`).
"""

from __future__ import annotations

import email.parser
import fnmatch
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gpulse.errors import InvalidInput
from gpulse.wire import batch, signing
from standin_nvml.build import BuildError, build

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "deploy" / "shipper-constraints.txt"
LONG = os.environ.get("GPULSE_WHEEL") == "1"
SHIPPER_REQUIRES = {
    "gpulse-wire==0.1.0",
    "nvidia-ml-py>=12.535",
    "psutil>=5.9",
    "requests>=2.31",
    'prometheus-client>=0.17; extra == "dcgm"',
}
# what must never reach a node: the core's heavy dependencies and the dev-only packages
NOT_ON_A_NODE = (
    *("boto3", "botocore", "numpy", "aws_lambda_powertools", "fastjsonschema"),
    *("gpulse", "devstack", "scenarios", "moto"),
)


STANDIN_GPU_2 = "GPU-00000000-0000-4000-8000-0000000000c3"
STANDIN_SCENARIO = f"""\
gpu
uuid GPU-5f2b2a3c-0d1e-4f50-8a9b-0c1d2e3f4a5b
pci 00000000:17:00.0
mem_total {81559 << 20}
mem_used {62000 << 20}
util_gpu 93
mem_temp 71
gpu
uuid {STANDIN_GPU_2}
pci 00000000:3B:00.0
mem_total {81559 << 20}
"""


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _pins() -> dict[str, str]:
    """deploy/shipper-constraints.txt as {canonical name: version}."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_canonical(name)] = version
    return pins


# setuptools' PEP 517 hook, called in a child for each package directory: what `pip wheel
# --no-deps` runs, without pip's start-up and build isolation (the dev extra has setuptools, wheel)
_BUILD = "import sys\nfrom setuptools import build_meta\nbuild_meta.build_wheel(sys.argv[1])\n"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    for project in ("wire", "shipper"):  # one child each: setuptools keeps state per process
        subprocess.run(
            [sys.executable, "-c", _BUILD, str(out)],
            cwd=REPO / "packages" / project,
            check=True,
            timeout=120,
            capture_output=True,
        )
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"gpulse_wire", "gpulse_shipper"}
    return found


def _metadata(wheel: Path) -> tuple[list[str], Any]:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        return names, email.parser.Parser().parsestr(z.read(meta).decode())


def test_the_shipper_wheel_holds_only_the_shipper(wheels: dict[str, Path]) -> None:
    names, meta = _metadata(wheels["gpulse_shipper"])
    assert {n.split("/")[0] for n in names} == {"node_shipper", "gpulse_shipper-0.1.0.dist-info"}
    assert set(meta.get_all("Requires-Dist")) == SHIPPER_REQUIRES
    # the source of every module is the repository's node_shipper/, not a copy
    modules = {n.split("/")[1] for n in names if n.startswith("node_shipper/")}
    assert modules == {p.name for p in (REPO / "node_shipper").glob("*.py")}
    with zipfile.ZipFile(wheels["gpulse_shipper"]) as z:
        entry_points = z.read("gpulse_shipper-0.1.0.dist-info/entry_points.txt").decode()
    assert entry_points.split() == ["[console_scripts]", "gpulse-shipper", "=", "node_shipper.__main__:main"]


def test_the_wire_wheel_is_the_contract_alone(wheels: dict[str, Path]) -> None:
    names, meta = _metadata(wheels["gpulse_wire"])
    assert meta.get_all("Requires-Dist") is None  # no dependencies at all
    assert sorted(n for n in names if not n.startswith("gpulse_wire-0.1.0.dist-info/")) == [
        "gpulse_wire/__init__.py",
        "gpulse_wire/batch-v1.schema.json",
        "gpulse_wire/limits.py",
        "gpulse_wire/metrics.py",
        "gpulse_wire/signing.py",
    ]
    with zipfile.ZipFile(wheels["gpulse_wire"]) as z:
        shipped = json.loads(z.read("gpulse_wire/batch-v1.schema.json"))
    # ingest validates with the very file the node carries: one source, no copy in the core
    assert shipped == json.loads((REPO / "src" / "gpulse_wire" / "batch-v1.schema.json").read_text())
    assert list((REPO / "src" / "gpulse").rglob("batch-v1*")) == []


def test_the_core_distribution_leaves_the_node_packages_to_theirs() -> None:
    """Installed side by side (the dev venv), the three distributions own disjoint packages: the
    root's `packages.find` picks neither node_shipper nor gpulse_wire, and no console script of the
    root starts the shipper."""
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = root["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ("node_shipper", "gpulse_wire", "node_shipper.x", "gpulse_wire.x"):
        assert not any(fnmatch.fnmatchcase(package, pattern) for pattern in include), package
    assert any(fnmatch.fnmatchcase("gpulse.wire", pattern) for pattern in include)
    assert "gpulse-shipper" not in root["project"]["scripts"]


def test_the_constraints_pin_every_dependency() -> None:
    """Each direct dependency of the shipper (gpulse-wire aside: it is the wheel beside it) has one
    exact pin, and nothing of the core is pinned."""
    pins = _pins()
    direct = {_canonical(r.split(">=")[0].split("==")[0]) for r in SHIPPER_REQUIRES} - {"gpulse-wire"}
    assert direct <= set(pins)
    assert all(v and v[0].isdigit() for v in pins.values())
    assert not {"boto3", "numpy", "aws-lambda-powertools", "fastjsonschema"} & set(pins)


# -- the clean venv (long) ---------------------------------------------------------------------------


class _Ingest(BaseHTTPRequestHandler):
    """Ingest's own checks, in front of nothing: the signature (gpulse.wire.signing) and the body
    (gpulse.wire.batch, which validates against the JSON Schema). 202 when both pass, 400 else."""

    secret = b""
    accepted: ClassVar[list[dict[str, Any]]] = []  # each test makes its own subclass (fixture)
    refused: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            ts = signing.parse_timestamp(self.headers.get(signing.HEADER_TIMESTAMP), time.time())
            signing.verify(self.secret, ts, body, self.headers.get(signing.HEADER_SIGNATURE))
            doc = batch.parse(batch.inflate(body, self.headers.get("Content-Encoding")), now=time.time()).doc
        except InvalidInput as e:
            self.refused.append(str(e))
            self.send_response(400)
        else:
            self.accepted.append(doc)
            self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[tuple[str, type[_Ingest]]]:
    handler = type("Handler", (_Ingest,), {"secret": b"wheel-test-secret", "accepted": [], "refused": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.wheel
@pytest.mark.skipif(not LONG, reason="installs from the package index into a clean venv: `make wheel-test`")
def test_installed_alone_the_shipper_runs_and_ingest_accepts_its_batches(
    wheels: dict[str, Path], ingest: tuple[str, type[_Ingest]], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [py, "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), *map(str, wheels.values())],
        check=True,
        timeout=180,
    )
    # nothing of the dev tree on the path: the venv's own site-packages only
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    probe = (
        "import importlib.metadata as md, importlib.util as u, json, sys\n"
        "print(json.dumps({'requires': md.requires('gpulse-shipper'),\n"
        "  'dists': sorted({d.metadata['Name'] for d in md.distributions()}),\n"
        f"  'importable': [m for m in {list(NOT_ON_A_NODE)!r} if u.find_spec(m)],\n"
        "  'scripts': sorted(e.name for e in md.entry_points(group='console_scripts'))}))\n"
    )
    seen = json.loads(
        subprocess.run(
            [py, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout
    )
    assert set(seen["requires"]) == SHIPPER_REQUIRES
    installed = {_canonical(d) for d in seen["dists"]} - {"pip", "setuptools"}
    # exactly the pinned set without the dcgm extra, plus the two wheels
    assert installed == (set(_pins()) - {"prometheus-client"}) | {"gpulse-wire", "gpulse-shipper"}
    assert seen["importable"] == []
    assert [s for s in seen["scripts"] if s.startswith("gpulse")] == ["gpulse-shipper"]

    shipper = str(venv / "bin" / "gpulse-shipper")
    helped = subprocess.run([shipper, "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: gpulse-shipper")

    endpoint, handler = ingest
    secret = tmp_path / "secret"
    secret.write_bytes(handler.secret)
    secret.chmod(0o600)
    argv = [shipper, "--endpoint", endpoint, "--cluster", "wheel", "--simulate", "healthy"]
    argv += ["--sim-nodes", "1", "--sim-gpus", "2", "--secret-file", str(secret)]
    argv += [
        "--interval",
        "0.2",
        "--batch-seconds",
        "1",
        "--duration",
        "3",
        "--spool-dir",
        str(tmp_path / "spool"),
    ]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert handler.refused == []
    assert len(handler.accepted) >= 2
    assert {d["node"] for d in handler.accepted} == {"node-01"}
    seqs = [d["seq"] for d in handler.accepted]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none lost, none twice
    assert all(d["shipper"]["simulated"] is True and len(d["gpus"]) == 2 for d in handler.accepted)

    # the same installed shipper on "real" GPUs: the stand-in libnvidia-ml.so.1 through pynvml's ctypes
    try:
        library = build()
    except BuildError as e:
        pytest.skip(f"stand-in NVML not built: {e}")
    scenario = tmp_path / "two-gpus.nvml"
    scenario.write_text(STANDIN_SCENARIO)
    handler.accepted.clear()
    real_env = env | {"LD_LIBRARY_PATH": str(library), "GPULSE_NVML_SCENARIO": str(scenario)}
    argv = [shipper, "--endpoint", endpoint, "--cluster", "wheel", "--node", "gpu-01"]
    argv += ["--secret-file", str(secret), "--interval", "0.5", "--batch-seconds", "10", "--slow-every", "1"]
    argv += ["--duration", "2", "--spool-dir", str(tmp_path / "spool-real")]
    run = subprocess.run(argv, env=real_env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("REAL: node gpu-01, 2 GPUs")
    assert handler.refused == []
    [doc] = handler.accepted
    assert doc["shipper"]["simulated"] is False
    assert [g["uuid"] for g in doc["gpus"]] == ["GPU-5f2b2a3c-0d1e-4f50-8a9b-0c1d2e3f4a5b", STANDIN_GPU_2]
    assert set(doc["gpus"][0]["metrics"]["util_gpu"]) == {93}
    assert set(doc["gpus"][0]["metrics"]["mem_temp_c"]) == {71}  # HBM temperature, a field value
    assert "mem_temp_c" not in doc["gpus"][1]["metrics"]  # no sensor: no series
