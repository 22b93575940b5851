"""The `sam build` output imports in a clean Python 3.12, laid out as Lambda lays it out.

Each function's built directory is /var/task, the layer's python/ is /opt/python, and the
Lambda runtime's own boto3 stack stands in for /var/runtime; nothing else is on sys.path (no
site-packages, no PYTHONPATH), so a dependency missing from src/requirements.txt fails here
rather than at the first cold start.
"""

from __future__ import annotations

import filecmp
import functools
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack.template import (
    FUNCTION_TYPE,
    QUEUE_TYPE,
    TABLE_TYPE,
    TEMPLATE_PATH,
    FunctionSpec,
    LocalDeployment,
    function_specs,
    load_template,
    resolve_parameters,
)

pytestmark = pytest.mark.build

ROOT = TEMPLATE_PATH.parent
BUILD = ROOT / ".aws-sam" / "build"
TEMPLATE = load_template(TEMPLATE_PATH)
FUNCTION_IDS = sorted(lid for lid, r in TEMPLATE["Resources"].items() if r["Type"] == FUNCTION_TYPE)
LAYER_IDS = sorted(
    lid for lid, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::Serverless::LayerVersion"
)
# What the python3.12 Lambda runtime puts on sys.path (/var/runtime) besides the standard library.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")

PROBE = """
import importlib, json, sys
sys.path[:0] = PATHS
module = importlib.import_module(MODULE)
handler = getattr(module, NAME, None)
report = {
    "module_file": module.__file__,
    "handler_callable": callable(handler),
    "gpulse_file": sys.modules["gpulse"].__file__ if "gpulse" in sys.modules else None,
    "uses_tracer": "aws_lambda_powertools.tracing" in sys.modules,
}
import boto3, botocore
report["boto3_file"] = boto3.__file__
report["botocore_file"] = botocore.__file__
try:
    import aws_xray_sdk
    report["xray_sdk"] = aws_xray_sdk.__file__
except ImportError as e:
    report["xray_sdk"] = None
print(json.dumps(report))
"""


def built() -> Path:
    if not BUILD.is_dir():
        pytest.fail(f"{BUILD} is missing: run scripts/sam-build.sh first")
    return BUILD


def python312() -> str:
    """The interpreter of the Lambda runtime's version: the SAM venv's, else python3.12 on PATH."""
    for candidate in (ROOT / ".venv-sam" / "bin" / "python3.12", shutil.which("python3.12")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("no python3.12 found: run scripts/sam-build.sh (it finds one, or says how to install it)")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for /var/runtime: links to this interpreter's boto3 stack (pure Python)."""
    path = tmp_path_factory.mktemp("lambda-runtime")
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, f"the test needs {name} installed"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (path / source.name).symlink_to(source)
    return path


def stub_deployment() -> LocalDeployment:
    """Plausible resource names, so each function's environment is set as the template says."""
    resources = TEMPLATE["Resources"]
    return LocalDeployment(
        tables={lid: f"gpulse-{lid}" for lid, r in resources.items() if r["Type"] == TABLE_TYPE},
        queues={
            lid: {
                "url": f"https://sqs.us-east-1.amazonaws.com/123456789012/gpulse-{lid}",
                "arn": f"arn:aws:sqs:us-east-1:123456789012:gpulse-{lid}",
                "name": f"gpulse-{lid}",
            }
            for lid, r in resources.items()
            if r["Type"] == QUEUE_TYPE
        },
        parameters=resolve_parameters(TEMPLATE),
        region="us-east-1",
        account_id="123456789012",
        topics={
            lid: f"arn:aws:sns:us-east-1:123456789012:gpulse-{lid}"
            for lid, r in resources.items()
            if r["Type"] == "AWS::SNS::Topic"
        },
        buckets={
            lid: f"gpulse-{lid.lower()}" for lid, r in resources.items() if r["Type"] == "AWS::S3::Bucket"
        },
    )


SPECS: dict[str, FunctionSpec] = function_specs(TEMPLATE, stub_deployment())


@functools.cache
def probe(function_id: str, runtime: Path) -> dict[str, Any]:
    """Import the built handler module in a clean python3.12 and report what it found."""
    spec = SPECS[function_id]
    task = built() / function_id
    layers = [built() / layer / "python" for layer in LAYER_IDS]
    for directory in (task, *layers):
        if not directory.is_dir():
            pytest.fail(f"{directory} is missing: run scripts/sam-build.sh (a partial build lacks it)")
    paths = [str(task), *map(str, layers), str(runtime)]
    environment = {
        **spec.environment,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "LANG": "C.UTF-8",
    }
    code = f"PATHS = {paths!r}\nMODULE = {spec.handler_module!r}\nNAME = {spec.handler_name!r}\n" + PROBE
    # -I: no PYTHON* variables, no user site; -S: no site-packages; -B: write no bytecode.
    result = subprocess.run(
        [python312(), "-I", "-S", "-B", "-c", code],
        env=environment,
        cwd=task,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"{function_id}: importing {spec.handler_module} failed:\n{result.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_the_build_holds_every_function_and_layer() -> None:
    assert sorted(p.name for p in built().iterdir() if p.is_dir()) == sorted(FUNCTION_IDS + LAYER_IDS)


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_the_build_is_current(function_id: str) -> None:
    source = ROOT / SPECS[function_id].code_uri
    target = built() / function_id
    for path in source.rglob("*.py"):
        copy = target / path.relative_to(source)
        assert copy.is_file() and filecmp.cmp(path, copy, shallow=False), (
            f"{copy} differs from {path}: run scripts/sam-build.sh again"
        )


def test_the_layer_is_current() -> None:
    (layer,) = LAYER_IDS
    source = ROOT / TEMPLATE["Resources"][layer]["Properties"]["ContentUri"]
    for path in (source / "gpulse").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            copy = built() / layer / "python" / path.relative_to(source)
            assert copy.is_file() and filecmp.cmp(path, copy, shallow=False), (
                f"{copy} differs from {path}: run scripts/sam-build.sh again"
            )


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_handler_imports_in_a_clean_python312(function_id: str, runtime: Path) -> None:
    report = probe(function_id, runtime)
    (layer,) = LAYER_IDS
    assert report["handler_callable"] is True
    assert report["module_file"] == str(built() / function_id / f"{SPECS[function_id].handler_module}.py")
    assert report["gpulse_file"] == str(built() / layer / "python" / "gpulse" / "__init__.py")


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_a_handler_that_traces_finds_the_xray_sdk(function_id: str, runtime: Path) -> None:
    # The template sets Tracing: Active; Powertools' Tracer then needs aws-xray-sdk, which the
    # Lambda runtime does not provide: it must come with the layer.
    report = probe(function_id, runtime)
    if report["uses_tracer"]:
        assert report["xray_sdk"] is not None, (
            f"{function_id} uses Powertools Tracer but aws_xray_sdk is not in the layer: "
            "add aws-lambda-powertools[tracer] (or aws-xray-sdk) to src/requirements.txt"
        )


@pytest.mark.parametrize("function_id", FUNCTION_IDS)
def test_boto3_and_botocore_come_from_the_same_place(function_id: str, runtime: Path) -> None:
    # boto3 is pinned to a narrow botocore range. A layer that ships botocore alone (aws-xray-sdk
    # pulls it in) shadows the runtime's and pairs it with the runtime's older boto3: ship both
    # in the layer (boto3 in src/requirements.txt) or neither.
    report = probe(function_id, runtime)
    boto3_home = Path(report["boto3_file"]).parent.parent
    botocore_home = Path(report["botocore_file"]).parent.parent
    assert boto3_home == botocore_home, f"boto3 from {boto3_home}, botocore from {botocore_home}"
