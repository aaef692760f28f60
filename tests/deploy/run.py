"""The containers for real, with podman on this machine (`make test-deploy`, README.md "Deploy"):

1. image    `deploy/podman/images.sh all`: the translator image (deploy/Dockerfile on a Debian base) and the
            nginx and Prometheus images; sizes; from the built image: no torch, no compiler, uid 10001,
            a HEALTHCHECK.
2. run      the image as an operator runs it: --read-only, --tmpfs /tmp, published on 127.0.0.1 only;
            time to ready, the HEALTHCHECK, translations both ways, logs on the container's output, and
            SIGTERM while requests are in flight (every one answered, exit 0).
3. compose  docker-compose.yml with podman-compose: three replicas behind nginx, Prometheus scraping each
            through the shipped configuration (scrape interval 1 s instead of 15 s, so that a replica's few
            seconds down show), alert rules loaded; requests spread over the replicas; every Grafana
            panel's, alert's and adapter rule's PromQL returns data from this Prometheus; under load, one
            replica is killed (SIGKILL): no client request may fail, the restart policy brings it back,
            and Prometheus' `up` shows it down and up again.
4. kube     `podman kube play` of the rendered deploy/k8s/base on a podman network made for the test: the
            pod starts from the image, its probes' HTTP GETs answer as the kubelet would see them, the
            security context and resources hold.

Every check prints PASS or FAIL with its figures; results/deploy/report.json gets them all. Exit status 1
when any check fails, or when podman cannot run containers here (0 then with DEPLOY_TEST_OPTIONAL=1).
Traffic goes only to 127.0.0.1 and to containers on podman networks this run created; everything it
started (containers, pods, networks, volumes) is removed at the end, also after a failure.

    .venv/bin/python -m tests.deploy.run [--phases image,run,compose,kube] [--skip-build] [--image-source HEAD]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.deploy_support import (  # noqa: E402 - after the path is set for `python tests/deploy/run.py`
    KUSTOMIZATIONS,
    PROMETHEUS,
    adapter_rules,
    adapter_to_promql,
    alert_rules,
    dashboard_targets,
    every_route,
    grafana_to_promql,
    sample_sentences,
    signal_query,
)

PREFIX = "translator-deploytest"  # every container, pod, network and volume this run makes
IMAGE = os.environ.get("IMAGE", "translator:0.1.0-cpu")
NGINX_IMAGE = "localhost/translator-nginx:bookworm"
PROMETHEUS_IMAGE = "localhost/translator-prometheus:bookworm"
PYTHON_BASE = "localhost/translator-base-python:bookworm"
USER_ID = "10001"
VENV_BIN = Path(sys.executable).parent
SCRAPE_INTERVAL = "1s"
WINDOW = "1m"  # what Grafana's $__rate_interval becomes in the dashboard's queries


# --- reporting ---------------------------------------------------------------------------------------

class Report:
    def __init__(self, path: Path):
        self.path = path
        self.checks: list[dict] = []
        self.figures: dict[str, dict] = {}
        self.started = time.time()

    def check(self, name: str, passed: bool, detail: str = "", **figures) -> bool:
        self.checks.append({"check": name, "passed": bool(passed), "detail": detail, **figures})
        print(f"{'PASS' if passed else 'FAIL'}  {name}" + (f": {detail}" if detail else ""), flush=True)
        return bool(passed)

    def note(self, text: str) -> None:
        print(f"      {text}", flush=True)

    def figure(self, phase: str, **values) -> None:
        self.figures.setdefault(phase, {}).update(values)

    @property
    def failed(self) -> list[str]:
        return [c["check"] for c in self.checks if not c["passed"]]

    def write(self, status: str, message: str = "") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "status": status, "message": message,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round(time.time() - self.started, 1),
            "machine": {"cpus": os.cpu_count(), "podman": podman_version()},
            "checks": self.checks, "figures": self.figures,
        }
        self.path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")


# --- podman ------------------------------------------------------------------------------------------

def podman_env() -> dict[str, str]:
    """This process's environment with CONTAINERS_CONF from deploy/podman/env.sh (runc, rlimits)."""
    script = f". {ROOT / 'deploy/podman/env.sh'} && printf %s \"$CONTAINERS_CONF\""
    conf = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, env=os.environ).stdout
    return {**os.environ, "CONTAINERS_CONF": conf}


ENV: dict[str, str] = {}


def podman(*args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=ENV, check=False)
    # podman 4 without systemd reports on every healthcheck-carrying container that it cannot add a timer.
    result.stderr = "\n".join(line for line in result.stderr.splitlines() if "systemd" not in line and "syslog" not in line)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def podman_version() -> str:
    try:
        return subprocess.run(["podman", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not installed"


def inspect(name: str, template: str) -> str:
    return podman("inspect", name, "--format", template, check=True).stdout.strip()


def image_inspect(image: str) -> dict:
    return json.loads(podman("image", "inspect", image, check=True).stdout)[0]


def image_size_mb(image: str) -> float:
    return round(image_inspect(image)["Size"] / 1e6, 1)


def container_ip(name: str) -> str:
    return inspect(name, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}").split()[0]


def healthcheck(name: str) -> tuple[bool, str]:
    """Runs the container's HEALTHCHECK once (podman schedules it with systemd timers, which this machine
    has not: so the test runs it) → (healthy, podman's health status afterwards)."""
    result = podman("healthcheck", "run", name, timeout=60)
    status = inspect(name, "{{.State.Health.Status}}")
    return result.returncode == 0, status


def iso(seconds: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 10)}Z" if seconds else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, interval: float = 0.25):
    """Polls condition() until it returns something true (returned) or timeout passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError, RuntimeError, KeyError, IndexError, ValueError):
            value = condition()
            if value:
                return value
        time.sleep(interval)
    return None


def http_status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def cleanup() -> None:
    """Removes everything this run (or an earlier, interrupted one) made; ignores what is not there."""
    ids = podman("ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={PREFIX}").stdout.split()
    ids += podman("ps", "-a", "-q", "--filter", f"name=^{PREFIX}").stdout.split()
    if ids:
        podman("rm", "-f", "-t", "0", *sorted(set(ids)), timeout=120)
    for pod in podman("pod", "ps", "-q", "--filter", f"name={PREFIX}").stdout.split():
        podman("pod", "rm", "-f", "-t", "0", pod, timeout=120)
    podman("pod", "rm", "-f", "-t", "0", f"pod_{PREFIX}", timeout=120)
    for volume in podman("volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={PREFIX}").stdout.split():
        podman("volume", "rm", "-f", volume)
    for network in podman("network", "ls", "-q", "--filter", f"name=^{PREFIX}").stdout.split():
        podman("network", "rm", "-f", network)


# --- client traffic ----------------------------------------------------------------------------------

def translate(url: str, text: str, source: str = "en", target: str = "de") -> str:
    answer = httpx.post(url + "/translate", json={"q": text, "source": source, "target": target}, timeout=60)
    answer.raise_for_status()
    return answer.json()["translatedText"]


class Load:
    """A closed-loop load generator: `clients` threads, each sending POST /translate one after another."""

    def __init__(self, url: str, clients: int):
        self.url, self.clients = url, clients
        self.results: list[tuple[float, float, int | str]] = []  # (sent at, seconds, status or error)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.texts = sample_sentences(64)
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]

    def client(self, index: int) -> None:
        with httpx.Client(timeout=60) as client:
            n = index
            while not self.stop.is_set():
                sent = time.time()
                try:
                    answer = client.post(self.url + "/translate", json={"q": self.texts[n % len(self.texts)], "source": "en", "target": "de"})
                    outcome: int | str = answer.status_code
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                with self.lock:
                    self.results.append((sent, time.time() - sent, outcome))
                n += self.clients

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)

    def summary(self) -> dict:
        latencies = sorted(seconds for _, seconds, _ in self.results)
        failed = [outcome for _, _, outcome in self.results if outcome != 200]
        span = (max(s + d for s, d, _ in self.results) - min(s for s, _, _ in self.results)) if self.results else 0
        return {
            "requests": len(self.results), "failed": len(failed),
            "failures": {str(k): failed.count(k) for k in set(failed)},
            "requests_per_s": round(len(self.results) / span, 1) if span else 0,
            "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "latency_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1) if latencies else None,
            "latency_max_ms": round(1000 * latencies[-1], 1) if latencies else None,
        }


# --- Prometheus --------------------------------------------------------------------------------------

class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **params) -> dict:
        return httpx.get(self.url + path, params=params, timeout=30).json()

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def vector(self, expr: str) -> dict[str, float]:
        """instance (or the whole label set) → value."""
        result = self.query(expr)["data"]["result"]
        return {sample["metric"].get("instance", json.dumps(sample["metric"])): float(sample["value"][1]) for sample in result}

    def targets(self, job: str) -> list[dict]:
        return [t for t in self.get("/api/v1/targets")["data"]["activeTargets"] if t["labels"]["job"] == job]

    def returns_data(self, expr: str) -> str | None:
        """None when the query evaluates and returns at least one finite value, else what went wrong."""
        answer = self.query(expr)
        if answer.get("status") != "success":
            return f"error: {answer.get('error')}"
        values = [float(s["value"][1]) for s in answer["data"]["result"]]
        if not values:
            return "no data"
        if not any(v == v and abs(v) != float("inf") for v in values):
            return "only NaN"
        return None


# === 1. image ========================================================================================

def phase_image(report: Report, args) -> bool:
    if args.skip_build:
        report.note("--skip-build: using the images already built")
    else:
        started = time.time()
        env = {**ENV, "IMAGE": IMAGE, "IMAGE_SOURCE": args.image_source, "PYTHON": sys.executable}
        with open(args.logs / "build.log", "w") as log:
            result = subprocess.run([str(ROOT / "deploy/podman/images.sh"), "all"], stdout=log, stderr=subprocess.STDOUT,
                                    env=env, timeout=1800, check=False)
        seconds = round(time.time() - started, 1)
        report.figure("image", build_s=seconds, image_source=args.image_source)
        if not report.check("image.build", result.returncode == 0, f"deploy/podman/images.sh all in {seconds} s "
                            f"(IMAGE_SOURCE={args.image_source}; log {args.logs / 'build.log'})", seconds=seconds):
            return False
    missing = [image for image in (IMAGE, NGINX_IMAGE, PROMETHEUS_IMAGE) if podman("image", "exists", image).returncode]
    if not report.check("image.exists", not missing, f"missing {missing}" if missing else f"{IMAGE}, {NGINX_IMAGE}, {PROMETHEUS_IMAGE}"):
        return False
    sizes = {image: image_size_mb(image) for image in (IMAGE, PYTHON_BASE, NGINX_IMAGE, PROMETHEUS_IMAGE)}
    report.figure("image", sizes_mb=sizes, revision=(image_inspect(IMAGE).get("Labels") or {}).get("org.opencontainers.image.revision"))
    report.check("image.size", True, ", ".join(f"{image} {size} MB" for image, size in sizes.items()))

    probe = podman("run", "--rm", "--read-only", "--network", "none", IMAGE, "sh", "-c",
                   "id -u; for c in gcc cc c++ g++ clang; do command -v $c; done; echo --; "
                   "python -c 'import importlib.util as u; print(u.find_spec(\"torch\") is not None)'; "
                   "python -c 'import onnxruntime, engine, service, cli; print(onnxruntime.__version__)'", timeout=120)
    lines = probe.stdout.split("\n")
    uid, compilers = lines[0].strip(), lines[1:lines.index("--")] if "--" in lines else ["?"]
    after = lines[lines.index("--") + 1:] if "--" in lines else []
    config = image_inspect(IMAGE)
    user = config["Config"].get("User", "")
    report.check("image.runs_as_10001", uid == USER_ID and user.startswith(USER_ID), f"id -u → {uid!r}, USER {user}")
    report.check("image.no_compiler", probe.returncode == 0 and not compilers, f"found {compilers}" if compilers else "no gcc, cc, c++, g++, clang")
    report.check("image.no_torch", after[:1] == ["False"], "torch not importable" if after[:1] == ["False"] else f"{after} {probe.stderr[-300:]}")
    report.check("image.packages_import", len(after) > 1 and bool(after[1]), f"engine, service, cli and onnxruntime {after[1:2]}")
    healthcheck_test = config.get("Healthcheck") or config["Config"].get("Healthcheck") or {}
    report.check("image.healthcheck", "/health" in " ".join(healthcheck_test.get("Test", [])), " ".join(healthcheck_test.get("Test", [])))
    return True


# === 2. run ==========================================================================================

def phase_run(report: Report, args) -> None:
    name, port = f"{PREFIX}-run", free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.time()
    podman("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "-p", f"127.0.0.1:{port}:8000", IMAGE, check=True)
    ready = wait_for(lambda: http_status(url + "/ready") == 200, timeout=180, interval=0.1)
    seconds = round(time.time() - started, 2)
    report.figure("run", time_to_ready_s=seconds)
    if not report.check("run.ready", bool(ready), f"/ready 200 after {seconds} s (podman run → ready)", seconds=seconds):
        report.note(podman("logs", "--tail", "30", name).stdout[-2000:])
        return
    bindings = json.loads(inspect(name, "{{json .HostConfig.PortBindings}}"))
    hosts = {binding["HostIp"] for entries in bindings.values() for binding in (entries or [])}
    report.check("run.loopback_only", hosts == {"127.0.0.1"}, f"published on {sorted(hosts)}")
    healthy, status = healthcheck(name)
    report.check("run.healthcheck", healthy and status == "healthy", f"HEALTHCHECK → {status}")

    german = translate(url, "Open the file.")
    report.check("run.translate_en_de", "Datei" in german, f"'Open the file.' → {german!r}")
    english = translate(url, "Öffne die Datei.", "de", "en")
    report.check("run.translate_de_en", "file" in english.lower(), f"'Öffne die Datei.' → {english!r}")

    root = podman("exec", name, "sh", "-c", "touch /app/x").returncode
    tmp = podman("exec", name, "sh", "-c", "touch /tmp/x && rm /tmp/x").returncode
    report.check("run.read_only", root != 0 and tmp == 0 and inspect(name, "{{.HostConfig.ReadonlyRootfs}}") == "true",
                 "/ is read-only, /tmp writable" if root and not tmp else f"touch /app → {root}, /tmp → {tmp}")

    # Logs: the container's own output streams (what `podman logs` / `docker logs` collect), no files.
    log_path = inspect(name, "{{.HostConfig.LogConfig.Path}}")
    logs = podman("logs", name).stdout + podman("logs", name).stderr
    streams = {"stdout": 0, "stderr": 0}
    with contextlib.suppress(OSError):
        for line in Path(log_path).read_text(errors="replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) > 1 and parts[1] in streams:
                streams[parts[1]] += 1
    wanted = ["Uvicorn running", "ready:", '"POST /translate HTTP/1.1" 200']
    missing = [text for text in wanted if text not in logs]
    report.check("run.logs_on_output", not missing, f"podman logs has start-up, readiness and access lines "
                 f"({streams['stdout']} lines on stdout, {streams['stderr']} on stderr)" if not missing else f"missing {missing}",
                 lines=streams)

    # SIGTERM with requests in flight: every one must be answered, then the process exits 0. Raw sockets, so
    # that "in flight" is exact: each request has been sent whole on an accepted connection, and no answer
    # has arrived yet, when the signal goes.
    # 6 requests of 24 longer sentences: a few seconds of work on one core, well inside what the service
    # admits (a backlog expected to wait over half the request deadline is refused with 503 at once).
    batches = [sample_sentences(144, 60, 200)[i::6] for i in range(6)]
    sockets = [send_request(port, "/v1/translate", {"text": texts, "source": "en", "target": "de"}) for texts in batches]
    time.sleep(0.3)
    in_flight = sum(not answered(sock) for sock in sockets)
    term_at = time.time()
    podman("kill", "--signal", "TERM", name, check=True)
    with ThreadPoolExecutor(len(sockets)) as pool:
        codes = list(pool.map(read_status, sockets))
    answered_s = round(time.time() - term_at, 2)
    exited = wait_for(lambda: inspect(name, "{{.State.Status}}") == "exited", timeout=90)
    stop_s = round(time.time() - term_at, 2)
    exit_code = inspect(name, "{{.State.ExitCode}}")
    after = http_status(url + "/health")
    report.figure("run", sigterm={"requests": len(batches), "sentences_each": len(batches[0]), "in_flight_at_sigterm": in_flight,
                                  "answered_200": codes.count(200), "last_answer_after_s": answered_s, "exit_code": exit_code,
                                  "exited_after_s": stop_s})
    report.check("run.sigterm_drain", in_flight > 0 and codes.count(200) == len(batches) and bool(exited) and exit_code == "0" and after == 0,
                 f"{in_flight} of {len(batches)} requests in flight at SIGTERM, {codes.count(200)} answered 200 "
                 f"(others: {[c for c in codes if c != 200]}) within {answered_s} s; exited {exit_code} after {stop_s} s")


def send_request(port: int, path: str, payload: dict) -> socket.socket:
    body = json.dumps(payload).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    return sock


def answered(sock: socket.socket) -> bool:
    """Whether any of the answer (or the connection's end) has arrived, without waiting or consuming it."""
    return bool(select.select([sock], [], [], 0)[0])


def read_status(sock: socket.socket) -> int | str:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as error:
        return type(error).__name__
    finally:
        sock.close()
    if not data.startswith(b"HTTP/"):
        return "no answer"
    return int(data.split(b" ", 2)[1])


# === 3. compose ======================================================================================

def compose_command() -> list[str] | None:
    found = shutil.which("podman-compose", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    return [found] if found else None


def phase_compose(report: Report, args) -> None:
    command = compose_command()
    if not command:
        report.check("compose.tool", False, "podman-compose not found (make test-deploy installs it)")
        return
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, env=ENV).stdout
    found = re.search(r"podman-compose version (\d+)\.(\d+)", version)
    if not report.check("compose.tool", bool(found) and (int(found[1]), int(found[2])) >= (1, 1), version.splitlines()[0] if version else "?"):
        report.note("podman-compose before 1.1 (Debian 12 ships 1.0.3) cannot read docker-compose.yml: no profiles, no --scale, "
                    "no env_file `required:`")
        return
    lb_port, prometheus_port = free_port(), free_port()
    lb, api = f"http://127.0.0.1:{lb_port}", Prometheus(f"http://127.0.0.1:{prometheus_port}")
    # The shipped Prometheus configuration and rules, with 1 s intervals (a restart takes seconds).
    config_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-prometheus-"))
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL)
    (config_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for rule_file in config["rule_files"]:
        shutil.copy(PROMETHEUS / rule_file, config_dir / rule_file)
    config_dir.chmod(0o755)
    for path in config_dir.iterdir():
        path.chmod(0o644)
    override = config_dir / "compose.test.yml"
    override.write_text(yaml.safe_dump({"services": {"prometheus": {"volumes": [f"{config_dir}:/etc/prometheus:ro"]}}}))
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "deploy/podman/compose.podman.yml"), "-f", str(override)]
    for extra in args.compose_override:  # a variant to try (or a control: the checks must catch what it breaks)
        files += ["-f", str(Path(extra).resolve())]
    env = {**ENV, "LB_PORT": f"127.0.0.1:{lb_port}", "PROMETHEUS_PORT": str(prometheus_port)}
    up = [*command, "-p", PREFIX, *files, "up", "-d", "--no-build", "--scale", f"translator={args.replicas}", "translator", "nginx", "prometheus"]
    report.note("$ " + " ".join(up).replace(str(ROOT) + "/", ""))
    started = time.time()
    result = subprocess.run(up, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    (args.logs / "compose-up.log").write_text(result.stdout + result.stderr)
    try:
        if not report.check("compose.up", result.returncode == 0, f"exit {result.returncode} (log {args.logs / 'compose-up.log'})"):
            return
        replicas = [f"{PREFIX}_translator_{n}" for n in range(1, args.replicas + 1)]
        healthy = wait_for(lambda: all(healthcheck(name)[0] for name in replicas), timeout=180, interval=0.5)
        seconds = round(time.time() - started, 1)
        report.figure("compose", replicas=args.replicas, time_to_all_ready_s=seconds)
        if not report.check("compose.replicas_ready", bool(healthy), f"{args.replicas} replicas' readiness healthcheck passes {seconds} s after `up`"):
            return
        others = {service: bool(wait_for(lambda s=service: healthcheck(f"{PREFIX}_{s}_1")[0], 30)) for service in ("nginx", "prometheus")}
        report.check("compose.nginx_prometheus_healthy", all(others.values()),
                     ", ".join(f"{service} {'healthy' if ok else 'unhealthy'}" for service, ok in others.items()))
        published = {}
        for name in [*replicas, f"{PREFIX}_nginx_1", f"{PREFIX}_prometheus_1"]:
            bindings = json.loads(inspect(name, "{{json .HostConfig.PortBindings}}") or "{}") or {}
            published[name] = sorted({b["HostIp"] for entries in bindings.values() for b in (entries or [])})
        report.check("compose.loopback_only", all(hosts in ([], ["127.0.0.1"]) for hosts in published.values()),
                     "published: " + ", ".join(f"{n.removeprefix(PREFIX + '_')} {h or 'none'}" for n, h in published.items()))

        german = translate(lb, "Open the file.")
        report.check("compose.translate_through_nginx", "Datei" in german, f"'Open the file.' → {german!r}")

        # Prometheus: one target per replica, all up; the rules loaded and evaluating.
        ips = {name: container_ip(name) for name in replicas}
        up_targets = wait_for(lambda: (lambda ts: ts if len(ts) == args.replicas and all(t["health"] == "up" for t in ts) else None)(api.targets("translator")), 60)
        targets = api.targets("translator")
        report.check("compose.prometheus_targets_up", bool(up_targets),
                     ", ".join(f"{t['labels']['instance']} {t['health']}" for t in targets) or "no targets")
        expected_rules = {rule["alert"] for rule in alert_rules()}

        def rules_evaluated():
            rules = [r for g in api.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
            return rules if rules and not any(r["lastEvaluation"].startswith("0001") for r in rules) else None

        rules = wait_for(rules_evaluated, 30) or []
        unhealthy = [r["name"] for r in rules if r["health"] != "ok"]
        report.check("compose.alert_rules_loaded", {r["name"] for r in rules} == expected_rules and not unhealthy,
                     f"{len(rules)} rules loaded, unhealthy {unhealthy}" if rules else "no rules")

        # Requests spread over the replicas: each replica's own counter, as Prometheus scraped it.
        counter = 'sum by (instance) (translator_request_duration_seconds_count{job="translator", route="/translate"})'
        before = api.vector(counter)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda text: translate(lb, text), sample_sentences(60)))
        time.sleep(3)  # a few scrapes
        after = api.vector(counter)
        spread = {instance: int(after.get(instance, 0) - before.get(instance, 0)) for instance in after}
        report.figure("compose", spread_60_requests=spread)
        report.check("compose.requests_spread", len(answers) == 60 and len(spread) == args.replicas and all(v > 0 for v in spread.values()),
                     f"60 requests through nginx → per replica {spread}")

        # File translation through the load balancer: the upload and the download may reach different
        # replicas, so the store must be shared, and the download URL must carry the balancer's address.
        trips = []
        for n in range(2 * args.replicas):
            upload = httpx.post(lb + "/translate_file", data={"source": "en", "target": "de"}, timeout=60,
                                files={"file": (f"note-{n}.txt", b"Open the file.\nSave the document.\n", "text/plain")})
            link = upload.json().get("translatedFileUrl", "") if upload.status_code == 200 else ""
            download = httpx.get(link, timeout=30) if link.startswith(lb + "/") else None
            trips.append((upload.status_code, link.removeprefix(lb)[:40] or upload.text[:80],
                          download.status_code if download is not None else None,
                          download is not None and download.status_code == 200 and "Datei" in download.text))
        report.check("compose.file_translation_across_replicas", all(trip[3] for trip in trips),
                     f"{sum(trip[3] for trip in trips)} of {len(trips)} uploads downloaded through nginx"
                     + ("" if all(trip[3] for trip in trips) else f": {[trip for trip in trips if not trip[3]]}"))

        # A streamed answer through nginx: each text's event as soon as it is translated, not all at the end.
        stream_check(report, lb)

        # The dashboard, the alerts and the adapter rules against this Prometheus, after traffic on every route.
        problems = every_route(lb)
        time.sleep(5)
        problems += every_route(lb)
        time.sleep(5)
        report.check("compose.traffic_every_route", not problems, f"problems {problems}" if problems else "every route answered as expected, twice")
        queries = [(f"panel {title!r} {target['refId']}", grafana_to_promql(target["expr"], WINDOW)) for title, target in dashboard_targets()]
        queries += [(f"alert {rule['alert']}", signal_query(rule["expr"])) for rule in alert_rules()]
        queries += [(f"adapter {rule['name']['as']}", adapter_to_promql(rule, 'job="translator"', "instance")) for rule in adapter_rules()]
        failed = {where: problem for where, expr in queries if (problem := api.returns_data(expr))}
        report.figure("compose", promql_queries=len(queries), promql_failed=failed)
        report.check("compose.dashboard_alert_adapter_queries", not failed,
                     f"{len(queries)} PromQL expressions return data" + (f"; failed: {failed}" if failed else ""))

        failover(report, args, lb, api, replicas, ips)
    finally:
        logs = {name: podman("logs", name) for name in podman("ps", "-a", "--format", "{{.Names}}",
                "--filter", f"label=io.podman.compose.project={PREFIX}").stdout.split()}
        (args.logs / "compose-logs.txt").write_text("".join(f"=== {n}\n{r.stdout}{r.stderr}\n" for n, r in logs.items()))
        shutil.rmtree(config_dir, ignore_errors=True)


def stream_check(report: Report, lb: str) -> None:
    """POST /v1/translate with "stream": true, a short text and four long ones (40 sentences each): the first
    event must reach the client well before the last, or nginx is holding the stream back. The short text
    comes first: the batch scheduler serves the group of the sentence that has waited longest first, so
    its one sentence is answered by the first batch, whatever the model's speed (last, it could share the
    last batch with the long texts' sentences, and every event would arrive at once)."""
    sentences = sample_sentences(160, 60, 110)
    long_texts = [" ".join(sentences[i::4]) for i in range(4)]
    payload = {"text": ["Click OK.", *long_texts], "source": "en", "target": "de", "stream": True}
    started, events = time.monotonic(), []
    with httpx.stream("POST", lb + "/v1/translate", json=payload, timeout=120) as answer:
        kind = answer.headers.get("content-type", "")
        for line in answer.iter_lines():
            if line.startswith("event:"):
                events.append((line.split(":", 1)[1].strip(), round(time.monotonic() - started, 3)))
            elif line.startswith("data:") and events and events[-1][0] == "translation":
                events[-1] = (f"translation {json.loads(line[5:]).get('index')}", events[-1][1])
    names = [name for name, _ in events]
    first, done = (events[0][1], events[-1][1]) if events else (0, 0)
    report.figure("compose", stream_events=events)
    report.check("compose.stream_through_nginx", answer.status_code == 200 and kind.startswith("text/event-stream")
                 and sorted(names) == ["done", *(f"translation {i}" for i in range(5))] and names[-1] == "done"
                 and done - first >= 0.3,
                 f"{answer.status_code} {kind.split(';')[0]}: " + ", ".join(f"{name} at {t} s" for name, t in events))


def failover(report: Report, args, lb: str, api: Prometheus, replicas: list[str], ips: dict[str, str]) -> None:
    victim = replicas[1]
    instance = f"{ips[victim]}:8000"
    restarts_before = int(inspect(victim, "{{.RestartCount}}"))
    pid = int(inspect(victim, "{{.State.Pid}}"))
    report.note(f"failover: {args.clients} clients for {args.failover_seconds} s; SIGKILL to {victim} ({instance}, pid {pid}) "
                f"after {args.kill_after} s")
    with Load(lb, args.clients) as load:
        time.sleep(args.kill_after)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)  # a crash: the restart policy applies (a `podman stop` would not restart)
        time.sleep(max(0.0, args.failover_seconds - args.kill_after))
    summary = load.summary()
    back = wait_for(lambda: int(inspect(victim, "{{.RestartCount}}")) > restarts_before and healthcheck(victim)[0], timeout=120, interval=0.5)
    restarted_at = inspect(victim, "{{.State.StartedAt}}")
    new_instance = f"{container_ip(victim)}:8000"
    # Prometheus: `up` of that replica, every second from before the kill until it has been up again for a few scrapes.
    wait_for(lambda: api.vector(f'up{{job="translator", instance="{new_instance}"}}').get(new_instance) == 1, 60)
    time.sleep(3)
    end = time.time()
    series = api.get("/api/v1/query_range", query='up{job="translator"}', start=killed_at - 10, end=end, step=1)["data"]["result"]
    samples = sorted((float(t), v) for s in series if s["metric"]["instance"] in (instance, new_instance) for t, v in s["values"])
    down = next((t for t, v in samples if t >= killed_at and v == "0"), None)
    up_again = next((t for t, v in samples if down and t > down and v == "1"), None)
    others_down = [s["metric"]["instance"] for s in series if s["metric"]["instance"] not in (instance, new_instance)
                   and any(v == "0" for _, v in s["values"])]
    during = [r for r in load.results if killed_at <= r[0] <= (up_again or end)]
    # What nginx did with the requests that met the dead replica (its error log names the upstream address):
    # each was passed to the next replica, so the client saw an answer.
    nginx_log = podman("logs", "--since", str(int(killed_at) - 1), f"{PREFIX}_nginx_1")
    met = [line for line in (nginx_log.stdout + nginx_log.stderr).splitlines() if f'upstream: "http://{ips[victim]}:8000' in line]
    retried = {"while connecting": sum("while connecting to upstream" in line for line in met),
               "in flight (reset or closed)": sum("while reading response header" in line for line in met)}
    other_errors = [line for line in met if "while connecting to upstream" not in line and "while reading response header" not in line]
    failed_requests = [{"sent_after_kill_s": round(sent - killed_at, 3), "seconds": round(seconds, 3), "outcome": str(outcome)}
                       for sent, seconds, outcome in load.results if outcome != 200]
    figures = {
        **summary, "clients": args.clients, "duration_s": args.failover_seconds, "killed": victim, "instance": instance,
        "instance_after_restart": new_instance, "restart_count": int(inspect(victim, "{{.RestartCount}}")),
        "restarted_at": restarted_at,
        "killed_at": iso(killed_at), "prometheus_down_at": iso(down), "prometheus_up_again_at": iso(up_again),
        "prometheus_down_after_kill_s": round(down - killed_at, 1) if down else None,
        "prometheus_up_after_kill_s": round(up_again - killed_at, 1) if up_again else None,
        "prometheus_down_for_s": round(up_again - down, 1) if down and up_again else None,
        "requests_while_down": len(during), "nginx_passed_to_next_replica": retried,
        "nginx_other_upstream_errors": other_errors[:10], "failed_requests": failed_requests[:20],
        "up_series": "".join("1" if v == "1" else "0" for _, v in samples),
    }
    report.figure("failover", **figures)
    report.check("failover.no_failed_requests", summary["requests"] > 0 and summary["failed"] == 0,
                 f"{summary['requests']} requests, {summary['failed']} failed {summary['failures'] or ''}; "
                 f"p50 {summary['latency_p50_ms']} ms, p99 {summary['latency_p99_ms']} ms, max {summary['latency_max_ms']} ms; "
                 f"{len(during)} sent while it was down; nginx passed to the next replica: {retried}")
    report.check("failover.restarted_by_policy", bool(back), f"restart count {restarts_before} → {figures['restart_count']}, "
                 f"ready again (restart policy {inspect(victim, '{{.HostConfig.RestartPolicy.Name}}')})")
    report.check("failover.prometheus_down_then_up", bool(down and up_again) and not others_down,
                 f"up{{instance={instance!r}}} 0 at +{figures['prometheus_down_after_kill_s']} s, 1 again at "
                 f"+{figures['prometheus_up_after_kill_s']} s after the kill ({figures['up_series']}); other replicas down: {others_down or 'none'}")


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


# === main ============================================================================================

def preflight(report: Report) -> str | None:
    """Why podman cannot run containers here, or None."""
    if not shutil.which("podman"):
        return "podman is not installed (make test-deploy installs it with apt-get where it can)"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)
    if info.returncode:
        return f"`podman info` failed: {info.stderr.strip()[-500:]}"
    image = next((i for i in (IMAGE, PYTHON_BASE) if podman("image", "exists", i).returncode == 0), None)
    if image:
        smoke = podman("run", "--rm", "--network", "none", "--entrypoint", "true", image, timeout=120)
        if smoke.returncode:
            return f"podman cannot start a container: {smoke.stderr.strip()[-500:]}"
    report.figure("machine", oci_runtime=info.stdout.strip(), containers_conf=ENV.get("CONTAINERS_CONF"))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default="image,run,compose,kube")
    parser.add_argument("--skip-build", action="store_true", help="use the images already built")
    parser.add_argument("--image-source", default=os.environ.get("IMAGE_SOURCE", "HEAD"),
                        help="worktree, or a git revision whose files the image is built from (default HEAD)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="failover: concurrent clients")
    parser.add_argument("--failover-seconds", type=float, default=30)
    parser.add_argument("--kill-after", type=float, default=8)
    parser.add_argument("--compose-override", action="append", default=[], metavar="FILE",
                        help="a further compose file merged over the stack (absolute paths inside it)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "deploy", help="where report.json goes")
    parser.add_argument("--logs", type=Path, default=ROOT / "results" / "tmp" / "deploy",
                        help="the build's and the containers' logs (not committed: pip's log names this machine's index)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.logs.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "report.json")
    optional = os.environ.get("DEPLOY_TEST_OPTIONAL") == "1"
    ENV.update(podman_env() if shutil.which("podman") else os.environ)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the clean-up below runs

    problem = preflight(report)
    if problem:
        banner = "=" * 100
        print(f"{banner}\nPODMAN CANNOT RUN CONTAINERS ON THIS MACHINE: {problem}\n"
              f"The container tests did not run.{' (DEPLOY_TEST_OPTIONAL=1: not an error)' if optional else ''}\n{banner}", flush=True)
        report.write("not run", problem)
        return 0 if optional else 1

    phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
    status = "failed"
    try:
        cleanup()
        if "image" in phases:
            print("--- image", flush=True)
            try:
                built = phase_image(report, args)
            except Exception as error:
                built = report.check("image.completed", False, f"{type(error).__name__}: {error}")
            if not built:
                raise RuntimeError("no image to test")
        for phase, run in (("run", phase_run), ("compose", phase_compose), ("kube", phase_kube)):
            if phase in phases:
                print(f"--- {phase}", flush=True)
                try:
                    run(report, args)
                except Exception as error:  # a broken phase fails its check and lets the others run
                    report.check(f"{phase}.completed", False, f"{type(error).__name__}: {error}")
                finally:
                    cleanup()
        status = "passed" if not report.failed else "failed"
    except RuntimeError as error:
        report.check("run.completed", False, str(error))
    finally:
        cleanup()
        report.write(status)
    print(f"\n{len(report.checks) - len(report.failed)} of {len(report.checks)} checks passed in "
          f"{time.time() - report.started:.0f} s; report: {report.path.relative_to(ROOT) if report.path.is_relative_to(ROOT) else report.path}")
    if report.failed:
        print("FAILED: " + ", ".join(report.failed))
    return 0 if not report.failed else 1


if __name__ == "__main__":
    sys.exit(main())
