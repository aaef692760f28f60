"""The Kubernetes manifests (deploy/k8s): kubernetes-validate --strict, the kustomizations rendered by kubectl
or, without it, by tests/kustomize_render.py, and the fields a production Deployment needs."""

from __future__ import annotations

import functools
import re
import shutil

import pytest
import yaml

from service.config import Settings
from tests.deploy_support import KUSTOMIZATIONS, USER_ID, adapter_rules, load_yaml, run, tool
from tests.kustomize_render import render as render_in_python


# === Kubernetes ======================================================================================
BINARY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in binary units ("160Mi") → bytes."""
    return int(quantity[:-2]) * BINARY_UNITS[quantity[-2:]]


@functools.cache
def rendered(name: str) -> list[dict]:
    """The objects of a kustomization: `kubectl kustomize` where kubectl exists, else the Python renderer."""
    directory = KUSTOMIZATIONS[name]
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return render_in_python(directory)
    result = run([kubectl, "kustomize", str(directory)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in objects}


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kubernetes_validate_strict(name, tmp_path):
    validator = tool("kubernetes-validate", "pip install kubernetes-validate==1.37.0")
    objects = rendered(name)
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    result = run([validator, "--strict", str(manifest)])
    assert result.returncode == 0 and "ERROR" not in result.stdout, result.stdout + result.stderr
    # kubernetes-validate knows only built-in kinds; the ServiceMonitor (a CRD) is checked below instead.
    for line in result.stdout.splitlines():
        if line.startswith("WARN"):
            assert "kind ServiceMonitor" in line, line
    validated = len(re.findall(r"^INFO .* passed", result.stdout, re.MULTILINE))
    assert validated == sum(obj["kind"] != "ServiceMonitor" for obj in objects)


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path):
    """A control: --strict must fail on a misspelt field, or the test above proves nothing."""
    validator = tool("kubernetes-validate", "pip install kubernetes-validate==1.37.0")
    deployment = load_yaml(KUSTOMIZATIONS["base"] / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/ready"
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    assert run([validator, "--strict", str(manifest)]).returncode != 0


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_python_renderer_agrees_with_kubectl(name):
    """The fallback renderer must give kubectl's objects, or the validation above would differ between machines."""
    kubectl = tool("kubectl", "the Python renderer is used instead; nothing to compare it with")
    result = run([kubectl, "kustomize", str(KUSTOMIZATIONS[name])])
    assert result.returncode == 0, result.stderr
    key = lambda obj: (obj["kind"], obj["metadata"]["name"])
    expected = sorted((doc for doc in yaml.safe_load_all(result.stdout) if doc), key=key)
    assert sorted(render_in_python(KUSTOMIZATIONS[name]), key=key) == expected


@pytest.mark.parametrize("name", ["base", "gpu"])
def test_deployment_probes_resources_and_security(name):
    deployment = by_kind(rendered(name))["Deployment"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == USER_ID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    [tmp] = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
    volume = next(volume for volume in pod["volumes"] if volume["name"] == tmp["name"])
    # translated files wait in /tmp (the store's default place): a full store must leave room for an upload
    assert quantity_bytes(volume["emptyDir"]["sizeLimit"]) >= 2 * Settings().files_max_total_bytes
    # The Service is named translator: its docker-link variables would include TRANSLATOR_PORT=tcp://…, which
    # the service reads as its own setting and refuses (a crash loop); the pod must not get them.
    assert pod["enableServiceLinks"] is False
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


@pytest.mark.parametrize("name", ["base", "gpu"])
def test_service_servicemonitor_and_hpa_point_at_the_deployment(name):
    kinds = by_kind(rendered(name))
    deployment, service, monitor, hpa = (kinds[k] for k in ("Deployment", "Service", "ServiceMonitor", "HorizontalPodAutoscaler"))
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {port["name"] for port in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {port["name"] for port in service["spec"]["ports"]}
    # The alerts expect job="translator": the operator names the job after the Service.
    assert service["metadata"]["name"] == "translator" and "jobLabel" not in monitor["spec"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    served = {rule["name"]["as"] for rule in adapter_rules()}
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in served


def test_gpu_overlay_asks_for_a_gpu_and_cuda():
    [container] = by_kind(rendered("gpu"))["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["TRANSLATOR_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
    assert env["TRANSLATOR_INFERENCE_WORKERS"] == "1"  # one GPU: one worker (the CPU base has one per core)
    assert container["image"].endswith("-cuda")
