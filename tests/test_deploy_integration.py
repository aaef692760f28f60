"""The monitoring against the real thing: the service (`python -m cli.main serve`) and a real
Prometheus server on 127.0.0.1, with the shipped scrape config and alert rules. After traffic on every
route, every PromQL expression of the Grafana dashboard, of the alert rules and of prometheus-adapter's
rules must parse and return data through Prometheus' HTTP API, and every rule must evaluate cleanly.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy_support import (
    DEPLOY,
    PROMETHEUS,
    adapter_rules,
    adapter_to_promql,
    alert_rules,
    dashboard_targets,
    every_route,
    grafana_to_promql,
    load_yaml,
    signal_query,
    tool,
)
from tests.service_support import ServerProcess, free_port, models_dir, wait_until  # noqa: F401 - models_dir is a fixture

SCRAPE_INTERVAL = "1s"  # the shipped 15 s, shortened so that the test needs seconds, not minutes
WINDOW = "1m"  # what Grafana's $__rate_interval becomes: wide enough to hold both traffic rounds


def prometheus_config(directory: Path, service_port: int, prometheus_port: int) -> Path:
    """deploy/prometheus/prometheus.yml with the translator job's DNS discovery replaced by the test
    server's address (no Docker DNS here), its own address, short intervals, and the shipped rules."""
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL)
    config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    translator = jobs["translator"]
    assert set(translator) == {"job_name", "dns_sd_configs"}, "the translator job changed shape: update this test"
    del translator["dns_sd_configs"]
    translator["static_configs"] = [{"targets": [f"127.0.0.1:{service_port}"]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> dict:
        """The API's answer to an instant query now: status "success" means it parsed and evaluated."""
        return httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=30).json()

    def value(self, expr: str) -> float:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def prometheus(models_dir, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """The service and Prometheus scraping it, after two rounds of traffic a few scrapes apart (rate() needs a
    series to exist before it grows)."""
    binary = tool("prometheus", "apt-get install -y --no-install-recommends prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    with ServerProcess(models_dir, directory / "service.log") as server:
        server.wait_ready(timeout=120)
        port = free_port()
        config = prometheus_config(directory, server.port, port)
        with open(directory / "prometheus.log", "w") as log:
            process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        api = Prometheus(f"http://127.0.0.1:{port}")
        try:
            def ready() -> bool:
                assert process.poll() is None, (directory / "prometheus.log").read_text()
                return httpx.get(api.url + "/-/ready").status_code == 200

            wait_until(ready, timeout=60, what="Prometheus")
            assert not every_route(server.url)
            wait_until(lambda: api.value("count_over_time(translator_batch_size_count[1m])") >= 3, timeout=60,
                       interval=0.5, what="three scrapes after the first traffic")
            assert not every_route(server.url)
            scrapes = api.value('count_over_time(up{job="translator"}[1m])')
            wait_until(lambda: api.value('count_over_time(up{job="translator"}[1m])') >= scrapes + 3, timeout=60,
                       interval=0.5, what="three scrapes after the second traffic")
            yield api, server
        finally:
            process.terminate()
            process.wait(30)


def assert_returns_data(api: Prometheus, expr: str, where: str) -> None:
    answer = api.query(expr)
    assert answer["status"] == "success", f"{where}: {answer.get('error')}\n{expr}"
    values = [float(sample["value"][1]) for sample in answer["data"]["result"]]
    assert values, f"{where}: no data\n{expr}"
    assert any(math.isfinite(v) for v in values), f"{where}: only NaN (no observations in the window?)\n{expr}"


def test_the_translator_target_is_scraped(prometheus):
    api, _ = prometheus
    [target] = [t for t in httpx.get(api.url + "/api/v1/targets").json()["data"]["activeTargets"] if t["labels"]["job"] == "translator"]
    assert target["health"] == "up", target.get("lastError")


@pytest.mark.parametrize("title, target", dashboard_targets(), ids=lambda value: value if isinstance(value, str) else value["refId"])
def test_dashboard_query_returns_data(prometheus, title, target):
    api, _ = prometheus
    assert_returns_data(api, grafana_to_promql(target["expr"], WINDOW), f"panel {title!r} {target['refId']}")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_signal_returns_data(prometheus, rule):
    api, _ = prometheus
    assert_returns_data(api, signal_query(rule["expr"]), f"alert {rule['alert']}")


@pytest.mark.parametrize("rule", adapter_rules(), ids=lambda rule: rule["name"]["as"])
def test_adapter_query_returns_data(prometheus, rule):
    """As the adapter would ask for one pod; here the pod is the test target (no `pod` label outside Kubernetes)."""
    api, _ = prometheus
    assert_returns_data(api, adapter_to_promql(rule, 'job="translator"', "instance"), f"adapter rule {rule['name']['as']}")


def test_every_rule_is_loaded_and_evaluates_cleanly(prometheus):
    api, _ = prometheus
    expected = {rule["alert"] for rule in alert_rules()}

    def evaluated() -> list[dict]:
        groups = httpx.get(api.url + "/api/v1/rules").json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    never = "0001-01-01"  # Go's zero time: not evaluated yet
    wait_until(lambda: not any(rule["lastEvaluation"].startswith(never) for rule in evaluated()), timeout=30,
               what="every rule evaluated")
    rules = evaluated()
    assert {rule["name"] for rule in rules} == expected
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"


def test_container_healthcheck_against_the_service(prometheus):
    _, server = prometheus
    probe = [sys.executable, str(DEPLOY / "healthcheck.py")]
    for path in ("/health", "/ready"):
        assert subprocess.run([*probe, path], env={"PORT": str(server.port)}, timeout=30, check=False).returncode == 0, path
