"""A handler's import (its Lambda cold start) builds nothing the first request can build: no
boto3 client, no numpy, no X-Ray SDK with tracing off. Checked in a fresh process per function,
with the template's environment, by the same child that bench/bench_cold_start.py times (this
test asserts what is loaded, never how long it took)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cold_start", ROOT / "bench" / "bench_cold_start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("logical_id", ["IngestFunction", "AnalyzeFunction", "AlertFunction"])
def test_importing_a_handler_builds_no_client_and_loads_no_numpy_nor_xray(logical_id: str) -> None:
    b = bench()
    current = b.Variant("current", ROOT, None)
    env = b.child_env(current.path(logical_id), b.fake_deployment_env(ROOT)[logical_id])
    result = b.one_run(sys.executable, current.app(logical_id), env, "")
    assert result["boto3_clients"] == 0
    assert result["loaded"]["numpy"] is False
    assert result["loaded"]["aws_xray_sdk.core"] is False
