"""Writes deploy/grafana/dashboards/translator.json, the tuning dashboard, from the plain dictionaries
below (standard library only). Review this file; commit both it and its output.

    python deploy/grafana/build_dashboard.py            # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check    # exit 1 if the committed JSON differs from this file's output

What the panels answer, row by row: how much traffic and how fast (requests), whether replicas keep up
(queue), whether batches are well filled and little padded (batching: TRANSLATOR_BATCH_TOKEN_BUDGET,
TRANSLATOR_MAX_BATCH_SENTENCES, TRANSLATOR_MAX_WAIT_MS, TRANSLATOR_LENGTH_BUCKETS), what the traffic
looks like (lengths), where inference time goes (encode vs decode) and what each model runs on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "translator.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"  # Grafana's window: at least four scrape intervals, so rate() always has samples
QUANTILES = (0.5, 0.95, 0.99)

# Label matchers, driven by the dashboard's variables.
TARGETS = 'job=~"$job", instance=~"$instance"'
MODELS = f'{TARGETS}, model=~"$model"'
# Routes whose latency users feel; probes and scrapes would only dilute the percentiles.
USER_ROUTES = f'{TARGETS}, route!~"/metrics|/health|/ready"'
TRANSLATION_ROUTES = f'{TARGETS}, route=~"/v1/translate|/v1/encode|/translate"'


# --- PromQL --------------------------------------------------------------------------------------

def rate(metric: str, matchers: str, by: str = "") -> str:
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}(rate({metric}{{{matchers}}}[{RATE}]))"


def quantile(q: float, histogram: str, matchers: str, by: str = "") -> str:
    labels = ", ".join(["le", *filter(None, [by])])
    return f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket{{{matchers}}}[{RATE}])))"


def mean(histogram: str, matchers: str, by: str = "") -> str:
    """Mean of a histogram's observations in the window: rate of the sum over rate of the count."""
    return f"{rate(histogram + '_sum', matchers, by)} / {rate(histogram + '_count', matchers, by)}"


# --- panels --------------------------------------------------------------------------------------

def target(expr: str, legend: str = "", **extra) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, **extra}


def quantile_targets(histogram: str, matchers: str, by: str = "", quantiles=QUANTILES) -> list[dict]:
    prefix = "".join(f"{{{{{label.strip()}}}}} " for label in by.split(",") if label.strip())  # "{{model}} {{stage}} "
    return [target(quantile(q, histogram, matchers, by), f"{prefix}p{round(q * 100)}") for q in quantiles]


def timeseries(title: str, description: str, targets: list[dict], unit: str, stack: bool = False) -> dict:
    custom = {"fillOpacity": 10, "showPoints": "never", "spanNulls": True}
    if stack:
        custom |= {"stacking": {"mode": "normal"}, "fillOpacity": 40}
    return {
        "type": "timeseries", "title": title, "description": description, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def heatmap(title: str, description: str, histogram: str, matchers: str, unit: str) -> dict:
    """The histogram's buckets as they are (no re-bucketing by Grafana): observations per bucket and window."""
    return {
        "type": "heatmap", "title": title, "description": description,
        "targets": [target(f"sum by (le) (increase({histogram}_bucket{{{matchers}}}[{RATE}]))", "{{le}}", format="heatmap")],
        "options": {"calculate": False, "cellGap": 1, "yAxis": {"unit": unit},
                    "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential", "exponent": 0.5, "steps": 64},
                    "tooltip": {"mode": "single", "yHistogram": True}, "legend": {"show": True}},
        "fieldConfig": {"defaults": {}, "overrides": []},
    }


def stat(title: str, description: str, expr: str, unit: str, thresholds: list[tuple[float | None, str]]) -> dict:
    return {
        "type": "stat", "title": title, "description": description, "targets": [target(expr)],
        "fieldConfig": {"defaults": {"unit": unit, "decimals": 2, "thresholds": {
            "mode": "absolute", "steps": [{"value": value, "color": color} for value, color in thresholds]}}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "textMode": "value"},
    }


def models_table() -> dict:
    """One row per replica and model: the provider that really runs it and the package's precision."""
    return {
        "type": "table", "title": "Models: execution provider and precision",
        "description": "From translator_model_info. A CUDA deployment showing CPUExecutionProvider has fallen back "
                       "to the CPU (alert TranslatorCudaFallback).",
        "targets": [target(f"max by (instance, model, provider, precision) (translator_model_info{{{MODELS}}})",
                           format="table", instant=True)],
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True},
                                                           "indexByName": {"instance": 0, "model": 1, "provider": 2, "precision": 3}}}],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
    }


class Grid:
    """Places panels left to right on Grafana's 24-column grid, under collapsible rows."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = self.y = self.row_height = 0

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}})
        self.y += 1

    def add(self, panel: dict, width: int, height: int = 8) -> None:
        if self.x + width > 24:
            self.newline()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": width, "h": height}
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)

    def newline(self) -> None:
        self.y += self.row_height
        self.x = self.row_height = 0


def panels() -> list[dict]:
    grid = Grid()

    grid.row("Overview")
    overview = [
        stat("Replicas up", "Targets Prometheus scrapes successfully.",
             f"sum(up{{{TARGETS}}})", "none", [(None, "red"), (1, "green")]),
        stat("Translation requests/s", "/v1/translate, /v1/encode and /translate together.",
             rate("translator_request_duration_seconds_count", TRANSLATION_ROUTES), "reqps", [(None, "blue")]),
        stat("p95 latency", "Whole-request time of the translation routes (alert above 2.5 s).",
             quantile(0.95, "translator_request_duration_seconds", TRANSLATION_ROUTES), "s",
             [(None, "green"), (1, "orange"), (2.5, "red")]),
        stat("Generated tokens/s", "Throughput in target tokens, all models.",
             rate("translator_generated_tokens_total", MODELS), "short", [(None, "blue")]),
        stat("Queue depth", "Sentences waiting for a batch, all replicas.",
             f"sum(translator_queue_depth{{{TARGETS}}})", "short", [(None, "green"), (64, "orange"), (256, "red")]),
        stat("Rejected/s", "Requests refused or abandoned, all reasons.",
             rate("translator_requests_rejected_total", TARGETS), "reqps", [(None, "green"), (0.01, "red")]),
    ]
    for panel in overview:
        grid.add(panel, width=4, height=4)

    grid.row("Requests")
    grid.add(timeseries(
        "Request rate by route and status",
        "Requests per second by route template and HTTP status; 429/503 are overload answers (see Rejections).",
        [target(rate("translator_request_duration_seconds_count", TARGETS, "route, status"), "{{route}} {{status}}")],
        "reqps", stack=True), width=12)
    grid.add(timeseries(
        "Latency by route (p50, p95, p99)",
        "Whole-request time as the service measured it (nginx adds little). Compare with queue wait and "
        "inference time below to see where it goes.",
        quantile_targets("translator_request_duration_seconds", USER_ROUTES, "route"), "s"), width=12)

    grid.row("Queue")
    grid.add(timeseries(
        "Queue wait (p50, p95, p99)",
        "Time a sentence waits before its batch starts. About TRANSLATOR_MAX_WAIT_MS when idle; about one batch's "
        "duration when busy; growing without bound when the replicas are short of capacity.",
        quantile_targets("translator_queue_wait_seconds", TARGETS), "s"), width=8)
    grid.add(timeseries(
        "Queue depth by replica",
        "Sentences waiting for a batch. Past TRANSLATOR_QUEUE_LIMIT requests are refused at once.",
        [target(f"sum by (instance) (translator_queue_depth{{{TARGETS}}})", "{{instance}}")], "short"), width=8)
    grid.add(timeseries(
        "Rejections by reason",
        "queue_full and deadline mean too little capacity; invalid_request, body_too_large and forbidden are "
        "client errors; disconnected: clients gave up; shutting_down: a replica was draining.",
        [target(rate("translator_requests_rejected_total", TARGETS, "reason"), "{{reason}}")], "reqps", stack=True), width=8)

    grid.row("Batching")
    grid.add(heatmap(
        "Batch size (sentences)",
        "Sentences per inference batch. Mostly 1 under load means batching is not happening: check the length "
        "buckets, or measure a few ms of TRANSLATOR_MAX_WAIT_MS with translator tune; a pile at TRANSLATOR_MAX_BATCH_SENTENCES means the cap binds.",
        "translator_batch_size", TARGETS, "short"), width=8)
    grid.add(heatmap(
        "Batch tokens (padded)",
        "Sentences × longest sentence per batch. A pile at TRANSLATOR_BATCH_TOKEN_BUDGET means the budget binds.",
        "translator_batch_tokens", TARGETS, "short"), width=8)
    grid.add(timeseries(
        "Padding ratio (p50, p95, mean)",
        "Share of a batch's tokens that are padding: wasted compute. Narrower TRANSLATOR_LENGTH_BUCKETS lower it, "
        "at the price of smaller batches.",
        [*quantile_targets("translator_padding_ratio", TARGETS, quantiles=(0.5, 0.95)),
         target(mean("translator_padding_ratio", TARGETS), "mean")], "percentunit"), width=8)
    grid.add(timeseries(
        "Batch size and padded tokens (mean)",
        "Mean sentences and padded tokens per batch.",
        [target(mean("translator_batch_size", TARGETS), "sentences per batch"),
         target(mean("translator_batch_tokens", TARGETS), "padded tokens per batch")], "short"), width=24, height=6)

    grid.row("Lengths")
    grid.add(timeseries(
        "Input length per sentence (p50, p95, p99)",
        "Source tokens per sentence, by model: what the length buckets and the token budget must fit.",
        quantile_targets("translator_input_tokens", MODELS, "model"), "short"), width=8)
    grid.add(timeseries(
        "Output length per sentence (p50, p95, p99)",
        "Generated tokens per sentence, by model: decode time grows with it.",
        quantile_targets("translator_output_tokens", MODELS, "model"), "short"), width=8)
    grid.add(heatmap(
        "Input length distribution",
        "Source tokens per sentence, all models: choose TRANSLATOR_LENGTH_BUCKETS edges where the traffic is.",
        "translator_input_tokens", MODELS, "short"), width=8)

    grid.row("Inference")
    grid.add(timeseries(
        "Inference time per batch: encode vs decode (p50, p95)",
        "The encoder runs once per batch; decode is the whole step loop (beam or greedy search) and usually dominates.",
        quantile_targets("translator_inference_duration_seconds", MODELS, "model, stage", quantiles=(0.5, 0.95)), "s"), width=8)
    grid.add(timeseries(
        "Inference time per second, by stage",
        "Seconds of encode and decode per second of wall time, by model, summed over replicas and inference workers: a "
        "total near replicas × TRANSLATOR_INFERENCE_WORKERS means the models never idle, and more traffic can only queue.",
        [target(rate("translator_inference_duration_seconds_sum", MODELS, "model, stage"), "{{model}} {{stage}}")],
        "s", stack=True), width=8)
    grid.add(timeseries(
        "Generated tokens/s by model",
        "Target tokens generated per second (best hypotheses): the throughput figure the benchmark reports.",
        [target(rate("translator_generated_tokens_total", MODELS, "model"), "{{model}}")], "short", stack=True), width=8)
    grid.add(timeseries(
        "Busy inference workers (mean over the window)",
        "Inference workers running a batch, by model, summed over replicas (batch scheduler). At replicas × "
        "TRANSLATOR_INFERENCE_WORKERS with sentences queued the models are saturated; well below it under load, the "
        "event loop (HTTP, tokenization) is the limit instead.",
        [target(f"sum by (model) (avg_over_time(translator_busy_inference_workers{{{MODELS}}}[{RATE}]))", "{{model}}")],
        "short", stack=True), width=12, height=6)
    grid.add(timeseries(
        "Resident memory",
        "The server process and its inference worker processes (TRANSLATOR_INFERENCE_WORKER_KIND=process; a copy of a "
        "model each), summed over replicas. Flat after warm-up is healthy; growth with traffic that never comes back "
        "down is a leak (docs/reliability.md measures it).",
        [target(f"sum(process_resident_memory_bytes{{{TARGETS}}})", "server processes"),
         target(f"sum by (model) (translator_worker_process_resident_memory_bytes{{{MODELS}}})", "{{model}} worker processes")],
        "bytes", stack=True), width=12, height=6)

    grid.row("Models")
    grid.add(models_table(), width=24, height=6)

    for number, panel in enumerate(grid.panels, start=1):
        panel["id"] = number
        if panel["type"] != "row":
            panel["datasource"] = DATASOURCE
            for ref, item in enumerate(panel["targets"]):
                item["refId"] = chr(ord("A") + ref)
    return grid.panels


def query_variable(name: str, label: str, query: str) -> dict:
    """A multi-value variable over a label of translator_model_info; "All" is the regex .* (so `=~` matches any)."""
    return {
        "type": "query", "name": name, "label": label, "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
        "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard() -> dict:
    return {
        "uid": "translator-tuning",
        "title": "Translator: tuning",
        "description": "Request latency, queueing, batching, lengths and inference time of the translator service.",
        "tags": ["translator"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: line up queue wait, batch size and latency at one instant
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "schemaVersion": 39,
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
             "current": {"selected": True, "text": "Prometheus", "value": "prometheus"}},
            query_variable("job", "Job", "label_values(translator_model_info, job)"),
            query_variable("instance", "Replica", 'label_values(translator_model_info{job=~"$job"}, instance)'),
            query_variable("model", "Model", 'label_values(translator_model_info{job=~"$job"}, model)'),
        ]},
        "annotations": {"list": []},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
