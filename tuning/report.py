"""A tuning session's results as files: report.md, the plots, recommended.env and tuning.json."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from loadtest.ceiling import LIMIT_SHARE
from tuning.lengths import LengthStudy
from tuning.sweep import Gain, LoadLevel, Recommendation, SweepGrid, SweepPoint

FILES = {"report": "report.md", "json": "tuning.json", "env": "recommended.env",
         "frontier": "frontier.png", "batching": "batching.png", "lengths": "lengths.png"}


class TuningRun(BaseModel):
    mode: Literal["local", "url"] = Field(description="local: servers started per setting; url: one server as it runs")
    served: str = Field(description="the models directory, or the URL")
    started: str
    machine: str
    note: str | None = Field(None, description="e.g. that this was a smoke run on a busy machine")
    p95_target_ms: float
    beam_size: int | None
    server_environment: dict[str, str] = Field(description="TRANSLATOR_* fixed for every point (threads, beam)")
    grid: SweepGrid
    points: list[SweepPoint]
    frontier: list[int]
    recommendation: Recommendation
    gain: Gain | None = Field(None, description="over the service's default setting; None for a server at a URL")
    lengths: LengthStudy | None
    recommended_env: dict[str, str]
    verification: SweepPoint | None = Field(None, description="the recommended env file served and measured once more")
    seconds: float


def env_file_text(run: TuningRun) -> str:
    lines = [f"# translator settings recommended by `translator tune`, {run.started}, {run.machine}",
             f"# target: p95 ≤ {run.p95_target_ms:g} ms. {run.recommendation.reason}"]
    if run.gain:
        lines.append(f"# gain over the defaults: {run.gain.text}")
    if run.note:
        lines.append(f"# {run.note}")
    measured_with = ", ".join(f"{k}={v}" for k, v in run.server_environment.items())
    if measured_with:
        lines.append(f"# measured with {measured_with}")
    if run.mode == "url":
        lines.append("# batching settings were not swept (a server at a URL runs as configured): input length and buckets only")
    return "\n".join(lines + [f"{name}={value}" for name, value in run.recommended_env.items()]) + "\n"


def cell(value: float | int | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def mib(value: int | float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.0f}"


def points_table(run: TuningRun) -> list[str]:
    rows = ["| | setting | load | req/s | target tok/s | p50 ms | p95 ms | p99 ms | ok / rejected / errors "
            "| batch size | padded tok/batch | padding | queue wait ms | RSS MiB | client cores | % of client ceiling |",
            "|" + "---|" * 16]
    for i, p in enumerate(run.points):
        mark = "★" if i == run.recommendation.point else "◆" if i in run.frontier else ""
        lat, server = p.latency, p.server
        rows.append(
            f"| {mark} | {p.setting_label()} | {p.level.label()} | {p.requests_per_s:.2f} | {p.target_tokens_per_s:.1f} "
            f"| {cell(lat and lat.p50_ms)} | {cell(lat and lat.p95_ms)} | {cell(lat and lat.p99_ms)} "
            f"| {p.ok} / {p.rejected} / {p.errors} | {cell(server and server.mean_batch_size, 2)} "
            f"| {cell(server and server.mean_batch_tokens)} | {cell(server and server.mean_padding_ratio, 3)} "
            f"| {cell(server and server.mean_queue_wait_ms, 1)} | {mib(p.rss_bytes)} "
            f"| {cell(p.client and p.client.cpu_cores, 2)} | {client_share(p)} |")
    return rows


def client_share(point: SweepPoint) -> str:
    share = point.client and point.client.share_of_ceiling
    return "–" if share is None else f"{share:.0%}" + (" **client-limited**" if point.client.limited else "")


def client_section(run: TuningRun) -> list[str]:
    """What the load generator took from the machine, and whether it ever set the pace."""
    clients = [p.client for p in run.points if p.client]
    if not clients:
        return []
    ceilings = {(c.ceiling.connections, c.ceiling.requests_per_s) for c in clients if c.ceiling}
    limited = [i for i, p in enumerate(run.points) if p.client and p.client.limited]
    lines = [f"The load generator, {clients[0].generator}, shared the machine: it used "
             f"{min(c.cpu_cores or 0 for c in clients):.2f}–{max(c.cpu_cores or 0 for c in clients):.2f} cores. "]
    if ceilings:
        lines[0] += ("Its own ceiling, the same generator against a stub server that answers at once: "
                     + ", ".join(f"{rate:,.0f} requests/s with {n} connection{'s' * (n != 1)}" for n, rate in sorted(ceilings))
                     + ". ")
        lines[0] += (f"**{len(limited)} point(s) reached {LIMIT_SHARE:.0%} of it: there the client, not the server, set "
                     "the pace, and the server may be faster than measured.**" if limited
                     else f"No point came within {LIMIT_SHARE:.0%} of it: the server set the pace.")
    return lines + [""]


def lengths_section(study: LengthStudy | None) -> list[str]:
    if study is None:
        return ["## Sequence length", "", "Not measured (`--lengths` was empty).", ""]
    lines = ["## Sequence length", "",
             f"Texts of each length cut from corpus sentences (tokens counted by {study.counter}), "
             f"{LoadLevel(concurrency=study.concurrency).label()}, {study.seconds_per_length:g} s per length, on the recommended batching "
             "setting. Corpus source lengths: " + ", ".join(f"{k} {v}" for k, v in study.corpus_token_quantiles.items())
             + " tokens.", "", "![latency vs input length](lengths.png)", "",
             "| tokens | server-counted | chars | requests | failed | p50 ms | p95 ms | RSS MiB | peak RSS MiB |",
             "|" + "---|" * 9]
    for p in study.points:
        lines.append(f"| {p.tokens} | {cell(p.mean_source_tokens, 1)} | {p.mean_chars:.0f} | {p.requests} | {p.failed} "
                     f"| {cell(p.p50_ms)} | {cell(p.p95_ms)} | {mib(p.rss_bytes)} | {mib(p.peak_rss_bytes)} |")
    advice = study.advice
    lines += ["", "The service warms up at the model's longest input before it reports ready, so its peak RSS is "
                  "mostly reached at start-up; the RSS after each length shows what longer inputs add beyond that.",
              "", f"**Longest input: {advice.max_tokens} tokens → `TRANSLATOR_MAX_TEXT_CHARS={advice.max_text_chars}`; "
                  f"bucket edges `{','.join(map(str, advice.length_buckets))}`**"
                  + ("" if advice.met_target else " (the target was not met at any length)"), ""]
    return lines + [f"- {reason}" for reason in advice.reasons] + [""]


def report_text(run: TuningRun) -> str:
    chosen = run.points[run.recommendation.point] if run.recommendation.point is not None else None
    lines = ["# Tuning report", ""]
    if run.note:
        lines += [f"> **{run.note}**", ""]
    lines += [f"{run.started}, {run.machine}. Served: {run.served} ({run.mode} mode). "
              f"Target: p95 ≤ {run.p95_target_ms:g} ms. {len(run.points)} points of "
              f"{run.grid.seconds_per_point:g} s (after {run.grid.warmup_per_point:g} s of warm-up); "
              f"the session took {run.seconds / 60:.1f} min.", ""]
    if run.server_environment:
        lines += ["Fixed for every point: " + ", ".join(f"`{k}={v}`" for k, v in run.server_environment.items()), ""]
    if run.mode == "url":
        lines += ["Only load levels were swept: a server at a URL runs with the batching settings it was started "
                  "with, which the tuner cannot change. Run `translator tune --models-dir DIR` to sweep settings.", ""]
    lines += ["## Recommendation", "", run.recommendation.reason + ".", ""]
    if run.gain:
        lines += [f"Gain over the service's defaults: {run.gain.text}.", ""]
    if chosen and chosen.setting:
        lines += [f"Setting: {chosen.setting.label()}.", ""]
    lines += ["`recommended.env` (load it with `set -a; . results/tuning/recommended.env; set +a` or "
              "`docker run --env-file`):", "", "```sh", env_file_text(run).rstrip(), "```", ""]
    if run.verification:
        v = run.verification
        lines += [f"Served from that file and measured again at {v.level.label()}: {v.target_tokens_per_s:.1f} target "
                  f"tokens/s, p95 {cell(v.latency and v.latency.p95_ms)} ms, {v.ok} ok / {v.rejected} rejected / "
                  f"{v.errors} errors.", ""]
    lines += ["## Throughput and latency", "", "![throughput vs p95 latency](frontier.png)", "",
              "Each line is one batching setting; its points are the load levels, left to right as load grows. "
              "Throughput rises with load until the model is busy all the time; past that knee more load only adds "
              "latency (queueing). The dashed line is the Pareto frontier: no point is both faster and lower-latency "
              "than a point on it. The star is the recommendation: the most throughput left of the target line. "
              "★ recommended, ◆ on the frontier:", ""]
    lines += points_table(run) + [""] + client_section(run) + ["## Batch shapes", "", "![batch size and padding](batching.png)", "",
                                  "From the server's histograms (deltas over each point). Bigger batches amortise "
                                  "each decoder step over more sentences; padding is work spent on nothing.", ""]
    return "\n".join(lines + lengths_section(run.lengths))


def write_report(run: TuningRun, out: Path) -> dict[str, Path]:
    from tuning.plots import plot_batching, plot_frontier, plot_lengths, setting_names  # matplotlib only when writing

    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / file for name, file in FILES.items()}
    chosen = run.recommendation.point
    plot_frontier(run.points, run.frontier, chosen, run.p95_target_ms, paths["frontier"])
    plot_batching(run.points, paths["batching"])
    sample_from = run.points[chosen] if chosen is not None else max(run.points, key=lambda p: p.ok)
    setting = setting_names(run.points)[0][sample_from.setting_label()]
    plot_lengths(run.lengths, sample_from.length_latency, f"{setting}, {sample_from.level.label()}", run.p95_target_ms,
                 paths["lengths"])
    paths["env"].write_text(env_file_text(run))
    paths["json"].write_text(run.model_dump_json() + "\n")  # compact: every request's (tokens, ms) is in it
    paths["report"].write_text(report_text(run))
    return paths
