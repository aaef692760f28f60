"""What the tests/test_deploy_*.py files share: the deploy files, the PromQL
they contain, and the metric names the service exports."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "translator.json"
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "gpu": K8S / "overlays" / "gpu", "prometheus-adapter": K8S / "prometheus-adapter"}
VENV_BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
USER_ID = 10001  # the images' non-root user; the k8s securityContext must name the same

METRIC_NAME = re.compile(r"\b(translator_[a-z_]+|process_[a-z_]+|up)\b")


def tool(name: str, why: str) -> str:
    """The path of a command-line tool (the virtualenv's first), or skip the test saying what to install."""
    found = shutil.which(name, path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip(f"{name} is not installed ({why})")
    return found


def run(command: list[str], cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


# --- the service's metric names --------------------------------------------------------------------

def exported_metric_names() -> set[str]:
    """Every series name the service can expose: histogram families as _bucket/_sum/_count, counters with _total."""
    from service.metrics import Metrics

    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",), "gauge": ("",)}
    return {family.name + suffix for family in Metrics().registry.collect() for suffix in suffixes[family.type]}


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


# --- PromQL in the alert rules -----------------------------------------------------------------------

COMPARISON = re.compile(r"^(?P<signal>.*?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$", re.DOTALL)


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"] if "alert" in rule]


def signal_query(expr: str) -> str:
    """`signal > threshold` → `signal > bool threshold`: 0 or 1 for every series of the signal, so that the
    query returns data whether or not the alert would fire."""
    match = COMPARISON.match(expr.strip())
    if not match:
        raise ValueError(f"not of the form `signal <op> threshold`: {expr}")
    return f"{match['signal']} {match['op']} bool {match['threshold']}"


# --- PromQL in the Grafana dashboard -----------------------------------------------------------------

GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets() -> list[tuple[str, dict]]:
    """(panel title, target) for every query of every panel."""
    return [(panel["title"], target) for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def dashboard_variables() -> set[str]:
    return {variable["name"] for variable in dashboard()["templating"]["list"]}


def grafana_to_promql(expr: str, window: str) -> str:
    """What Grafana sends with every variable at "All": `$__rate_interval` and friends → `window`, and a
    template variable (only ever used as `label=~"$var"`) → its allValue `.*`."""
    for builtin in GRAFANA_BUILTINS:
        expr = expr.replace(f"${builtin}", window)
    return VARIABLE.sub(".*", expr)


# --- PromQL in prometheus-adapter's rules ------------------------------------------------------------

def adapter_rules() -> list[dict]:
    configmap = load_yaml(KUSTOMIZATIONS["prometheus-adapter"] / "rules.yaml")
    return yaml.safe_load(configmap["data"]["config.yaml"])["rules"]


def adapter_to_promql(rule: dict, label_matchers: str, group_by: str) -> str:
    """The adapter's query template filled in as the adapter would for one pod (here: one target)."""
    series = rule["seriesQuery"].split("{")[0].strip("'\" ")
    return (rule["metricsQuery"].replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", label_matchers).replace("<<.GroupBy>>", group_by))


def sample_sentences(count: int, low: int = 10, high: int = 60) -> list[str]:
    """Real test-split sentences of `low`..`high` characters (the tiny test model takes 63 tokens at most)."""
    rows = (line.split("\t")[0] for line in (ROOT / "data" / "en-de" / "test.tsv").read_text().splitlines())
    return [text for text in rows if low <= len(text) <= high][:count]


def every_route(url: str) -> list[str]:
    """Traffic on every route the dashboard shows: single sentences concurrently (so that batches hold
    several), each route once, and one refused request (a rejection). → what did not answer as expected."""
    texts = sample_sentences(24, high=40)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda text: httpx.post(url + "/v1/translate", json={"text": text, "source": "en", "target": "de"},
                                                         timeout=120), texts))
    problems = [f"/v1/translate {a.status_code} {a.text[:200]}" for a in answers if a.status_code != 200]
    calls = [
        ("post", "/v1/translate", {"json": {"text": texts[:4], "source": "en", "target": "de"}}, 200),
        ("post", "/v1/encode", {"json": {"text": texts[:2], "source": "en"}}, 200),
        ("post", "/translate", {"json": {"q": texts[0], "source": "en", "target": "de"}}, 200),
        ("post", "/translate", {"data": {"q": texts[1], "source": "auto", "target": "de"}}, 200),
        ("get", "/languages", {}, 200),
        ("post", "/detect", {"data": {"q": texts[2]}}, 200),
        ("get", "/health", {}, 200),
        ("get", "/ready", {}, 200),
        ("post", "/v1/translate", {"json": {"text": "", "source": "en", "target": "de"}}, None),  # refused: a 4xx
    ]
    for method, path, arguments, expected in calls:
        answer = getattr(httpx, method)(url + path, timeout=120, **arguments)
        if not (400 <= answer.status_code < 500 if expected is None else answer.status_code == expected):
            problems.append(f"{method.upper()} {path} {answer.status_code} {answer.text[:200]}")
    return problems


def compose() -> dict:
    return load_yaml(COMPOSE)  # PyYAML's safe loader resolves the `<<: *translator` merge keys


def compose_names(spec: dict) -> set[str]:
    """Names a container can resolve on the compose network: service names and network aliases."""
    names = set(spec["services"])
    for service in spec["services"].values():
        for network in (service.get("networks") or {}).values():
            names |= set((network or {}).get("aliases", []))
    return names


@contextlib.contextmanager
def http_stub(handler: type[http.server.BaseHTTPRequestHandler]):
    """A threaded HTTP server on a free 127.0.0.1 port answering with `handler` → its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
