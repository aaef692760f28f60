"""The deployment files (deploy/, docker-compose.yml, .dockerignore), checked with the real tools where
this machine has them and by reading them where it does not: no Docker engine runs here, so the images
are parsed, not built.

Tools: check-jsonschema and kubernetes-validate (PyPI, in the virtualenv), promtool (Debian package
`prometheus`), nginx (Debian package `nginx-light`), kubectl (optional: without it the kustomizations
are rendered by tests/kustomize_render.py). A missing command-line tool skips its tests, naming it.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import http.server
import importlib.metadata
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from tests.deploy_support import (
    DASHBOARD,
    DEPLOY,
    KUSTOMIZATIONS,
    PROMETHEUS,
    ROOT,
    adapter_rules,
    alert_rules,
    dashboard,
    dashboard_targets,
    dashboard_variables,
    exported_metric_names,
    load_yaml,
    metric_names,
    run,
    signal_query,
    tool,
)
from tests.kustomize_render import render as render_in_python
from tests.service_support import free_port, wait_until

COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = DEPLOY / "nginx" / "translator.conf"  # a template: the nginx image's entrypoint fills it in
NGINX_RESOLVER_SCRIPT = DEPLOY / "nginx" / "15-translator-resolver.envsh"
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "cuda": DEPLOY / "Dockerfile.cuda"}
# COPY sources that are build outputs rather than repository files (the README says how to make them).
BUILD_OUTPUTS = ("build/models-fp16",)
# The metrics issue 4 defines: the dashboard must show every one of them.
SERVICE_METRICS = [
    "translator_request_duration_seconds", "translator_queue_wait_seconds", "translator_inference_duration_seconds",
    "translator_batch_size", "translator_batch_tokens", "translator_padding_ratio", "translator_input_tokens",
    "translator_output_tokens", "translator_queue_depth", "translator_generated_tokens_total",
    "translator_requests_rejected_total", "translator_model_info",
]
USER_ID = 10001  # the images' non-root user; the k8s securityContext must name the same


def compose() -> dict:
    return load_yaml(COMPOSE)  # PyYAML's safe loader resolves the `<<: *translator` merge keys


def compose_names(spec: dict) -> set[str]:
    """Names a container can resolve on the compose network: service names and network aliases."""
    names = set(spec["services"])
    for service in spec["services"].values():
        for network in (service.get("networks") or {}).values():
            names |= set((network or {}).get("aliases", []))
    return names


# === docker-compose.yml ==============================================================================

def test_compose_file_matches_the_compose_spec():
    checker = tool("check-jsonschema", "pip install check-jsonschema==0.39.0")
    result = run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_spec_check_rejects_a_broken_file(tmp_path):
    """A control: the validator must fail on a mistake, or the test above proves nothing."""
    checker = tool("check-jsonschema", "pip install check-jsonschema==0.39.0")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    image: nginx:", "    imag: nginx:", 1))  # a misspelt key
    assert run([checker, "--builtin-schema", "vendor.compose-spec", str(broken)]).returncode != 0


def test_compose_services_are_wired_by_name():
    spec = compose()
    names = compose_names(spec)
    services = spec["services"]
    # Prometheus discovers the replicas by a name compose resolves, on the port they listen on.
    scrape = load_yaml(PROMETHEUS / "prometheus.yml")
    translator_job = next(job for job in scrape["scrape_configs"] if job["job_name"] == "translator")
    for sd in translator_job["dns_sd_configs"]:
        assert set(sd["names"]) <= names and sd["type"] == "A"
        assert str(sd["port"]) in services["translator"]["expose"]
    # nginx proxies to the same name and port.
    host, port = re.search(r"set \$translator http://([\w.-]+):(\d+);", NGINX_CONF.read_text()).groups()
    assert host in names and port in services["translator"]["expose"]
    # Grafana's data source is the prometheus service.
    datasource = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert re.match(r"http://([\w-]+):9090$", datasource["url"])[1] in names


def test_compose_mounts_and_builds_name_files_that_exist():
    spec = compose()
    for name, service in spec["services"].items():
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    # Prometheus reads the config and the rules from the mounted directory.
    prometheus = spec["services"]["prometheus"]
    config = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    mounts = {target: source for source, target, *_ in (v.split(":") for v in prometheus["volumes"] if v.startswith("./"))}
    directory = str(Path(config).parent)
    assert (ROOT / mounts[directory] / Path(config).name).is_file()
    for rule_file in load_yaml(PROMETHEUS / "prometheus.yml")["rule_files"]:
        assert (ROOT / mounts[directory] / rule_file).is_file()
    # Grafana loads the dashboards from where compose mounts them.
    grafana = spec["services"]["grafana"]
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/translator.yml")["providers"][0]
    mounted = {target: source for source, target, *_ in (v.split(":") for v in grafana["volumes"] if v.startswith("./"))}
    assert (ROOT / mounted[provider["options"]["path"]] / DASHBOARD.name).is_file()


def test_compose_translators_scale_behind_the_load_balancer():
    services = compose()["services"]
    for name in ("translator", "translator-gpu"):
        service = services[name]
        assert "ports" not in service, f"{name} publishes a port: --scale would collide on it; clients go through nginx"
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert service["healthcheck"]["test"][-1] == "/ready", "compose's health must be readiness"
        assert service["stop_grace_period"]
    gpu = services["translator-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert "translator" in gpu["networks"]["default"]["aliases"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert services["nginx"]["ports"], "the load balancer is the one published address"
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", f"{name} has no restart policy"
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_compose_healthcheck_runs_the_script_the_images_carry():
    script = compose()["services"]["translator"]["healthcheck"]["test"][2]
    for dockerfile in DOCKERFILES.values():
        copies = [instruction_arguments(i) for i in runtime_stage(dockerfile) if i["instruction"] == "COPY"]
        assert ["deploy/healthcheck.py", script] in copies, f"{dockerfile.name} does not put the probe at {script}"


# === nginx ===========================================================================================

def nginx_wrapper(directory: Path, server_conf: Path) -> Path:
    """A minimal nginx.conf around the server block, with every path nginx writes inside `directory`
    (the official image provides the equivalent main config)."""
    temp = " ".join(f"{kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = directory / "nginx.conf"
    conf.write_text(f"pid {directory / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\n"
                    f"http {{\n  access_log off;\n  {temp}\n  include {server_conf};\n}}\n")
    return conf


def nginx_conf(resolver: str = "127.0.0.1") -> str:
    """The server block as the image's entrypoint writes it: the template's environment variables filled in
    (TRANSLATOR_RESOLVER, from 15-translator-resolver.envsh; nothing else)."""
    template = NGINX_CONF.read_text()
    assert set(re.findall(r"\$\{(\w+)\}", template)) == {"TRANSLATOR_RESOLVER"}, "a new template variable: fill it in here"
    return template.replace("${TRANSLATOR_RESOLVER}", resolver)


def test_nginx_config_passes_nginx_t(tmp_path):
    nginx = tool("nginx", "apt-get install -y --no-install-recommends nginx-light")
    (tmp_path / "translator.conf").write_text(nginx_conf())
    result = run([nginx, "-t", "-p", str(tmp_path), "-c", str(nginx_wrapper(tmp_path, tmp_path / "translator.conf"))])
    assert result.returncode == 0, result.stderr


def test_nginx_template_and_resolver_script_are_mounted_where_the_entrypoint_reads_them():
    volumes = {source: target for source, target, *_ in (v.split(":") for v in compose()["services"]["nginx"]["volumes"])}
    assert volumes[f"./{NGINX_CONF.relative_to(ROOT)}"] == "/etc/nginx/templates/default.conf.template"
    target = volumes[f"./{NGINX_RESOLVER_SCRIPT.relative_to(ROOT)}"]
    assert target.startswith("/docker-entrypoint.d/") and target.endswith(".envsh")
    assert NGINX_RESOLVER_SCRIPT.stat().st_mode & 0o111, "the entrypoint sources only executable .envsh files"


def test_resolver_script_takes_the_first_nameserver(tmp_path):
    """podman lists its network's DNS server (aardvark-dns) first and the host's after it; nginx would ask
    them in turn, and the host's cannot resolve the replicas."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search dns.podman\nnameserver 10.89.1.1\nnameserver 10.255.255.53\n")
    script = NGINX_RESOLVER_SCRIPT.read_text().replace("/etc/resolv.conf", str(resolv))
    result = subprocess.run(["sh", "-c", f"{script}\nprintf %s \"$TRANSLATOR_RESOLVER\""], capture_output=True, text=True, check=True)
    assert result.stdout == "10.89.1.1"
    resolv.write_text("nameserver fd00::1\n")
    result = subprocess.run(["sh", "-c", f"{script}\nprintf %s \"$TRANSLATOR_RESOLVER\""], capture_output=True, text=True, check=True)
    assert result.stdout == "[fd00::1]"


def test_nginx_retries_only_the_translation_routes_on_another_replica():
    """POSTs are resent to the next replica only where that is harmless: routes that store nothing."""
    blocks = dict(re.findall(r"location ([^{]+?) \{(.*?)\n    \}", NGINX_CONF.read_text(), re.DOTALL))
    retried = {where.strip() for where, body in blocks.items() if "non_idempotent" in body}
    assert retried == {"~ ^/(translate|detect|v1/translate|v1/encode)$"}, retried


class Backend(http.server.BaseHTTPRequestHandler):
    """Stands in for a replica: answers every GET with 200 and a JSON body naming the path."""

    def do_GET(self) -> None:
        body = json.dumps({"replica": "stub", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def http_stub(handler=Backend):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def nginx_in_front_of(backend_port: int, directory: Path):
    """The shipped server block, run for real, with the replicas' name replaced by a loopback address
    (no Docker DNS here) and the listen port by a free one."""
    nginx = tool("nginx", "apt-get install -y --no-install-recommends nginx-light")
    port = free_port()
    conf = nginx_conf()
    for old, new in (("listen 8080;", f"listen 127.0.0.1:{port};"),
                     ("set $translator http://translator:8000;", f"set $translator http://127.0.0.1:{backend_port};")):
        assert old in conf, f"{NGINX_CONF} no longer has `{old}`: update this test"
        conf = conf.replace(old, new)
    (directory / "translator.conf").write_text(conf)
    log = directory / "nginx.log"
    with open(log, "w") as output:
        process = subprocess.Popen([nginx, "-p", str(directory), "-c", str(nginx_wrapper(directory, directory / "translator.conf")),
                                    "-g", "daemon off;"], stdout=output, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            assert process.poll() is None, f"nginx exited: {log.read_text()}"
            return httpx.get(f"http://127.0.0.1:{port}/nginx-health").status_code == 200

        wait_until(up, timeout=10, what="nginx")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def test_nginx_passes_requests_to_a_replica(tmp_path):
    with http_stub() as backend, nginx_in_front_of(backend, tmp_path) as url:
        answer = httpx.get(url + "/languages")
    assert answer.status_code == 200 and answer.json() == {"replica": "stub", "path": "/languages"}


def test_nginx_answers_503_with_retry_after_when_no_replica_is_reachable(tmp_path):
    with nginx_in_front_of(free_port(), tmp_path) as url:  # nothing listens on the backend port
        answer = httpx.post(url + "/translate", json={"q": "Hello", "source": "en", "target": "de"})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "2"
    assert "error" in answer.json()  # LibreTranslate's error shape


# === Prometheus ======================================================================================

def promtool() -> str:
    return tool("promtool", "apt-get install -y --no-install-recommends prometheus")


def test_promtool_check_config():
    result = run([promtool(), "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules():
    result = run([promtool(), "check", "rules", "alerts.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules():
    result = run([promtool(), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing():
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert {rule["alert"] for rule in alert_rules()} <= fired


def test_alerts_cover_the_issue_and_say_what_to_do():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    expected = {  # issue 5's list → the metric each alert must read
        "TranslatorHighLatencyP95": "translator_request_duration_seconds_bucket",
        "TranslatorQueueWaitHigh": "translator_queue_wait_seconds_bucket",
        "TranslatorQueueSaturated": "translator_queue_depth",
        "TranslatorRejecting": "translator_requests_rejected_total",
        "TranslatorNoReplicaUp": "up",
        "TranslatorCudaFallback": "translator_model_info",
    }
    assert set(rules) == set(expected)
    for name, metric in expected.items():
        rule = rules[name]
        assert metric in metric_names(rule["expr"]), name
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        signal_query(rule["expr"])  # every alert is `signal <op> threshold` (the integration test relies on it)


# === Grafana =========================================================================================

def test_committed_dashboard_is_the_generator_output():
    result = run([sys.executable, str(DEPLOY / "grafana" / "build_dashboard.py"), "--check"])
    assert result.returncode == 0, result.stderr


def test_dashboard_shows_every_service_metric():
    used = set().union(*(metric_names(target["expr"]) for _, target in dashboard_targets()))
    for metric in SERVICE_METRICS:
        assert any(name == metric or name.startswith(metric + "_") for name in used), f"no panel shows {metric}"


def test_dashboard_structure():
    board = dashboard()
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
    defined = dashboard_variables()
    for title, target in dashboard_targets():
        for name in re.findall(r"\$\{?(\w+)", target["expr"]):
            assert name in defined or name.startswith("__"), f"{title}: ${name} is not a dashboard variable"
        # "All" is sent as the regex .*: a variable is only usable inside a regex matcher.
        for match in re.finditer(r'(\w+)\s*(=~|!~|=|!=)\s*"[^"]*\$', target["expr"]):
            assert match[2] == "=~", f"{title}: ${match[1]} must be matched with =~"
    # The data source variable defaults to the provisioned data source.
    datasource = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    variable = next(v for v in board["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == datasource["uid"] and variable["query"] == datasource["type"]


def test_every_metric_the_rules_and_panels_read_is_exported_by_the_service():
    exported = exported_metric_names() | {"up"}
    expressions = [("dashboard: " + title, t["expr"]) for title, t in dashboard_targets()]
    expressions += [("alert " + rule["alert"], rule["expr"]) for rule in alert_rules()]
    expressions += [("adapter rule " + rule["name"]["as"], rule["seriesQuery"] + rule["metricsQuery"]) for rule in adapter_rules()]
    for where, expr in expressions:
        unknown = metric_names(expr) - exported
        assert not unknown, f"{where} reads {sorted(unknown)}, which the service does not export"


# === Kubernetes ======================================================================================

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
    assert "emptyDir" in next(volume for volume in pod["volumes"] if volume["name"] == tmp["name"])
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
    assert container["image"].endswith("-cuda")


# === Dockerfiles =====================================================================================

def parse(dockerfile: Path) -> list[dict]:
    return [i for i in DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes())).structure if i["instruction"] != "COMMENT"]


def stages(dockerfile: Path) -> list[list[dict]]:
    found: list[list[dict]] = []
    for instruction in parse(dockerfile):
        if instruction["instruction"] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def runtime_stage(dockerfile: Path) -> list[dict]:
    return stages(dockerfile)[-1]


def instruction_arguments(instruction: dict) -> list[str]:
    """Arguments without --flags, from shell or JSON (exec) form."""
    value = instruction["value"].strip()
    words = json.loads(value) if value.startswith("[") else shlex.split(value)
    return [word for word in words if not word.startswith("--")]


def copy_sources(dockerfile: Path) -> list[str]:
    """Sources of every COPY/ADD from the build context (not --from another stage or image)."""
    return [source.rstrip("/") for instruction in parse(dockerfile) if instruction["instruction"] in ("COPY", "ADD")
            and "--from=" not in instruction["value"] for source in instruction_arguments(instruction)[:-1]]


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(is an exception, pattern) per line of .dockerignore, as BuildKit reads them: paths relative to the
    context, `*`/`?` within one path segment, `**` across segments, `!` lets a path back in."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((exception, re.compile(regex + "$")))
    return rules


def in_build_context(path: str, rules=None) -> bool:
    """Whether the file at `path` (relative to the repository root) reaches the Docker daemon: the last
    rule matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for exception, regex in rules or dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not exception
    return not excluded


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_every_copy_source_is_in_the_build_context(variant):
    rules = dockerignore_rules()
    for source in copy_sources(DOCKERFILES[variant]):
        path = ROOT / source
        if source in BUILD_OUTPUTS and not path.exists():
            # Made before `docker build` by the documented command: check that it would be let in.
            assert in_build_context(f"{source}/en-de/package.json", rules), f".dockerignore keeps {source} out"
            assert f"--out {source}/" in (ROOT / "README.md").read_text(), f"the README must say how to make {source}"
            continue
        assert path.exists(), f"{DOCKERFILES[variant].name} copies {source}, which does not exist: the image cannot be built"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        sent = [f for f in files if in_build_context(f.relative_to(ROOT).as_posix(), rules)]
        assert sent, f".dockerignore keeps every file of {source} out of the build context"
        if source in ("models", *BUILD_OUTPUTS):  # each package must arrive whole
            for manifest in path.glob("*/package.json"):
                package = json.loads(manifest.read_text())
                missing = [name for name in [manifest.name, *package["files"]]
                           if not in_build_context((manifest.parent / name).relative_to(ROOT).as_posix(), rules)]
                assert not missing, f"{manifest.parent}: {missing} kept out of the build context"
                if source in BUILD_OUTPUTS:
                    assert package["precision"] == "fp16", f"{manifest.parent} is not an fp16 package"


def test_dockerignore_keeps_bulk_and_state_out():
    rules = dockerignore_rules()
    for path in (".venv/bin/python", "data/en-de/train.tsv", "checkpoints/en-de/model.safetensors",
                 "checkpoints/en-de/resume/optimizer.safetensors", "logs/train.log", "build/packages/en-de-fp32/encoder.onnx",
                 "results/tmp/x.json", ".pytest_cache/v/cache/lastfailed", "service/__pycache__/app.cpython-311.pyc",
                 "models/.en-de.staging/encoder.onnx", ".git/HEAD", "tests/test_deploy.py"):
        assert not in_build_context(path, rules), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "service/app.py", "models/en-de/encoder.onnx", "build/models-fp16/en-de/decoder.onnx"):
        assert in_build_context(path, rules), f"{path} would be missing from the build context"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_runtime_stage_runs_as_non_root_with_a_healthcheck(variant):
    stage = runtime_stage(DOCKERFILES[variant])
    users = [i["value"].split(":")[0].strip() for i in stage if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime stage must end as a non-root user"
    assert users[-1] == str(USER_ID), "a numeric USER, so that Kubernetes' runAsNonRoot can verify it"
    [healthcheck] = [i for i in stage if i["instruction"] == "HEALTHCHECK"]
    assert "/health" in healthcheck["value"] and not healthcheck["value"].upper().startswith("NONE")
    assert "8000" in [i["value"] for i in stage if i["instruction"] == "EXPOSE"]
    environment = " ".join(i["value"] for i in stage if i["instruction"] == "ENV")
    assert "HOST=0.0.0.0" in environment and "TRANSLATOR_MODELS_DIR=/app/models" in environment
    [command] = [i for i in stage if i["instruction"] == "CMD"]
    assert instruction_arguments(command) == ["translator", "serve"]


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_runtime_stage_installs_no_torch_and_no_compiler(variant):
    stage = runtime_stage(DOCKERFILES[variant])
    for instruction in stage:
        if instruction["instruction"] == "RUN":
            assert not re.search(r"\btorch\b|pip\s+install|\bgcc\b|\bg\+\+|build-essential|\bclang\b|-dev\b",
                                 instruction["value"]), instruction["value"]
    # What the runtime stage gets instead: the builder's virtualenv, built from pyproject's serving
    # dependencies, which hold no torch (deploy/build-venv.sh also fails the build if torch shows up).
    dependencies = [Requirement(r).name for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    assert "torch" not in dependencies
    assert "find_spec('torch')" in (DEPLOY / "build-venv.sh").read_text()


def test_images_are_built_from_the_intended_bases():
    cpu = DockerfileParser(fileobj=io.BytesIO(DOCKERFILES["cpu"].read_bytes())).parent_images
    assert all(image.startswith("python:3.11-slim") for image in cpu)
    cuda = DockerfileParser(fileobj=io.BytesIO(DOCKERFILES["cuda"].read_bytes())).parent_images
    assert re.match(r"nvidia/cuda:[\d.]+-cudnn-runtime-", cuda[-1]), "the CUDA runtime (not devel) image with cuDNN"
    arguments = {i["value"].split("=")[0]: i["value"].split("=", 1)[1] for i in parse(DOCKERFILES["cuda"]) if i["instruction"] == "ARG" and "=" in i["value"]}
    assert re.fullmatch(r"onnxruntime-gpu==[\d.]+", arguments["ONNXRUNTIME_GPU"])


def test_the_image_installs_every_module_the_service_imports():
    """The image installs pyproject's dependencies and nothing else: a module that engine/ or service/ imports
    from a distribution outside them works in the dev virtualenv but breaks the image at start-up. (cli/ is
    in the image too, but imports the training and export packages lazily, for its other commands.)"""
    def normalise(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pending = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    closure: set[str] = set()
    while pending:
        requirement = pending.pop()
        if normalise(requirement.name) in closure or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        closure.add(normalise(requirement.name))
        pending += [Requirement(r) for r in importlib.metadata.requires(requirement.name) or []]

    providers = importlib.metadata.packages_distributions()
    missing = {}
    in_image = {path.rstrip("/") for path in copy_sources(DOCKERFILES["cpu"])}
    assert {"engine", "service", "cli"} <= in_image, "the image must carry the engine, the server and the command line"
    for source in [*(ROOT / "engine").rglob("*.py"), *(ROOT / "service").rglob("*.py")]:
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for module in (name.split(".")[0] for name in names):
                if module in sys.stdlib_module_names or module in in_image:
                    continue
                distributions = {normalise(d) for d in providers.get(module, [module])}
                if not distributions & closure:
                    missing[module] = f"{source.relative_to(ROOT)} (distribution {', '.join(sorted(distributions))})"
    assert not missing, f"imported by the service but not among pyproject.toml's dependencies: {missing}"


# === the container health probe =======================================================================

class Status(http.server.BaseHTTPRequestHandler):
    """/ready answers 503 (still warming up), everything else 200."""

    def do_GET(self) -> None:
        self.send_response(503 if self.path == "/ready" else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def probe(path: str, port: int) -> int:
    env = {"PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), path], env=env, capture_output=True, timeout=30, check=False).returncode


def test_healthcheck_script_exits_0_only_on_200():
    with http_stub(Status) as port:
        assert probe("/health", port) == 0
        assert probe("/ready", port) == 1
    assert probe("/health", free_port()) == 1  # nothing listening
