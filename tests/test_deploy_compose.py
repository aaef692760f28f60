"""docker-compose.yml and the nginx load balancer in front of the replicas, checked with the real tools
(check-jsonschema, nginx from Debian's `nginx-light`) against stub replicas; a missing tool skips its tests, naming it."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import subprocess
from pathlib import Path

import httpx

from tests.deploy_support import (COMPOSE, DASHBOARD, DEPLOY, PROMETHEUS, ROOT, compose, compose_names, http_stub,
                                  load_yaml, run, tool)
from tests.service_support import free_port, wait_until

NGINX_CONF = DEPLOY / "nginx" / "translator.conf"  # a template: the nginx image's entrypoint fills it in
NGINX_RESOLVER_SCRIPT = DEPLOY / "nginx" / "15-translator-resolver.envsh"


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
    with http_stub(Backend) as backend, nginx_in_front_of(backend, tmp_path) as url:
        answer = httpx.get(url + "/languages")
    assert answer.status_code == 200 and answer.json() == {"replica": "stub", "path": "/languages"}


def test_nginx_answers_503_with_retry_after_when_no_replica_is_reachable(tmp_path):
    with nginx_in_front_of(free_port(), tmp_path) as url:  # nothing listens on the backend port
        answer = httpx.post(url + "/translate", json={"q": "Hello", "source": "en", "target": "de"})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "2"
    assert "error" in answer.json()  # LibreTranslate's error shape
