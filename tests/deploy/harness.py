"""What every phase of `tests/deploy/run.py` shares: the report, podman, a closed-loop client load and a
Prometheus client, and the names of what the run builds and starts."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.deploy_support import sample_sentences

ROOT = Path(__file__).resolve().parents[2]
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
