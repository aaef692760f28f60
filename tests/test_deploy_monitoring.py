"""The Prometheus configuration, alert rules and their unit tests (promtool, Debian package `prometheus`), and the
Grafana dashboard: generated, complete, and reading only metrics the service exports."""

from __future__ import annotations

import re
import sys

from tests.deploy_support import (DEPLOY, PROMETHEUS, adapter_rules, alert_rules, dashboard, dashboard_targets,
                                  dashboard_variables, exported_metric_names, load_yaml, metric_names, run,
                                  signal_query, tool)

# The metrics issue 4 defines: the dashboard must show every one of them.
SERVICE_METRICS = [
    "translator_request_duration_seconds", "translator_queue_wait_seconds", "translator_inference_duration_seconds",
    "translator_batch_size", "translator_batch_tokens", "translator_padding_ratio", "translator_input_tokens",
    "translator_output_tokens", "translator_queue_depth", "translator_generated_tokens_total",
    "translator_requests_rejected_total", "translator_model_info",
]


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
