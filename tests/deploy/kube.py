"""Phase 4 of `tests/deploy/run.py`: `podman kube play` of the rendered deploy/k8s/base, probed as the kubelet would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from tests.deploy.harness import (IMAGE, PREFIX, USER_ID, VENV_BIN, Report, container_ip, healthcheck, http_status, inspect,
                                   podman, wait_for)
from tests.deploy_support import KUSTOMIZATIONS

# === 4. kube =========================================================================================

def rendered_base() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        result = subprocess.run([kubectl, "kustomize", str(KUSTOMIZATIONS["base"])], capture_output=True, text=True, check=True)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    from tests.kustomize_render import render

    return render(KUSTOMIZATIONS["base"])


def phase_kube(report: Report, args) -> None:
    objects = rendered_base()
    kinds = [obj["kind"] for obj in objects]
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    report.check("kube.image_tag", container["image"] == IMAGE, f"the Deployment runs {container['image']!r}, `make image` builds {IMAGE!r}")
    validator = shutil.which("kubernetes-validate", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-kube-"))
    manifest = workdir / "base.yaml"
    # The Deployment is renamed for the test, so that it cannot collide with a pod of the same name a user runs.
    deployment["metadata"]["name"] = PREFIX
    manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    if validator:
        result = subprocess.run([validator, "--strict", str(manifest)], capture_output=True, text=True, timeout=120)
        passed = len(re.findall(r"^INFO .* passed", result.stdout, re.MULTILINE))
        report.check("kube.validate_strict", result.returncode == 0 and "ERROR" not in result.stdout,
                     f"kubernetes-validate --strict: {passed} of {len(objects)} objects passed (ServiceMonitor is a CRD it cannot check)")
    network = f"{PREFIX}-kube"
    podman("network", "create", network, check=True)
    try:
        started = time.time()
        play = podman("kube", "play", "--network", network, str(manifest), timeout=300)
        report.note("$ podman kube play --network " + network + " <rendered deploy/k8s/base>")
        if not report.check("kube.play", play.returncode == 0, (play.stdout.strip().replace("\n", " ") + " " + play.stderr.strip())[:300]):
            return
        pods = json.loads(podman("pod", "ps", "--format", "json", "--filter", f"name={PREFIX}").stdout or "[]")
        report.check("kube.pod_from_deployment", len(pods) == 1, f"pods {[p['Name'] for p in pods]} from kinds {kinds}")
        if not pods:
            return
        pod = pods[0]["Name"]
        name = f"{pod}-{container['name']}"
        ip = container_ip(pods[0]["InfraId"])
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}

        def probe_url(probe: dict) -> str:
            port = probe["httpGet"]["port"]
            return f"http://{ip}:{ports.get(port, port)}{probe['httpGet']['path']}"

        # The kubelet's view: startup probe until it passes (within its budget), then readiness and liveness.
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        passed = wait_for(lambda: http_status(probe_url(startup)) == 200, timeout=budget, interval=startup["periodSeconds"] / 4)
        seconds = round(time.time() - started, 1)
        report.figure("kube", startup_probe_passed_after_s=seconds, pod_ip=ip, kinds=kinds)
        report.check("kube.startup_probe", bool(passed), f"GET {probe_url(startup)} 200 after {seconds} s (budget {budget} s)")
        ready = wait_for(lambda: http_status(probe_url(container["readinessProbe"])) == 200, timeout=60)
        report.check("kube.readiness_probe", bool(ready), f"GET {probe_url(container['readinessProbe'])} → 200")
        report.check("kube.liveness_probe", http_status(probe_url(container["livenessProbe"])) == 200,
                     f"GET {probe_url(container['livenessProbe'])} → 200")
        answer = httpx.post(f"http://{ip}:{ports['http']}/translate", json={"q": "Open the file.", "source": "en", "target": "de"}, timeout=60)
        report.check("kube.translate", answer.status_code == 200 and "Datei" in answer.text, answer.text[:100])

        # Security context and resources, as podman applied them.
        uid = podman("exec", name, "id", "-u").stdout.strip()
        root_write = podman("exec", name, "sh", "-c", "touch /app/x").returncode
        tmp_write = podman("exec", name, "sh", "-c", "touch /tmp/x && rm /tmp/x").returncode
        status = podman("exec", name, "sh", "-c", "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status").stdout.split()
        facts = {
            "uid": uid, "read_only_root": inspect(name, "{{.HostConfig.ReadonlyRootfs}}"),
            "root_write_refused": root_write != 0, "tmp_writable": tmp_write == 0,
            "no_new_privileges": "NoNewPrivs:" in status and status[status.index("NoNewPrivs:") + 1] == "1",
            "capabilities": status[status.index("CapEff:") + 1] if "CapEff:" in status else "?",
            "memory_limit": int(inspect(name, "{{.HostConfig.Memory}}")),
            "cpu_limit": int(inspect(name, "{{.HostConfig.NanoCpus}}")) / 1e9,
            "tmp_mount": json.loads(inspect(name, "{{json .Mounts}}")),
        }
        report.figure("kube", security=facts)
        report.check("kube.security_context", uid == USER_ID and facts["read_only_root"] == "true" and facts["root_write_refused"]
                     and facts["tmp_writable"] and facts["no_new_privileges"] and facts["capabilities"] == "0000000000000000",
                     f"uid {uid}, read-only root, /tmp writable, no_new_privs, capabilities {facts['capabilities']}")
        limits = container["resources"]["limits"]
        report.check("kube.resources", facts["memory_limit"] == 2 * 1024 ** 3 and facts["cpu_limit"] == float(limits["cpu"]),
                     f"memory {facts['memory_limit'] / 1024 ** 3:g} GiB, cpu {facts['cpu_limit']:g} (limits {limits})")
        # podman's own probe emulation: it turns the livenessProbe into a HEALTHCHECK that runs curl inside the
        # container, which this image does not carry (and a named port it does not resolve). Recorded, not judged.
        emulated = json.loads(inspect(name, "{{json .Config.Healthcheck}}") or "null")
        if emulated:
            ok, state = healthcheck(name)
            report.figure("kube", podman_liveness_emulation={"test": emulated.get("Test"), "result": state})
            report.note(f"podman's liveness emulation: {' '.join(emulated.get('Test', []))} → {state} (not a check: the kubelet "
                        "probes over HTTP itself, as above)")
    finally:
        podman("kube", "down", str(manifest), timeout=120)
        podman("network", "rm", "-f", network)
        shutil.rmtree(workdir, ignore_errors=True)
