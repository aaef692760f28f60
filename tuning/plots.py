"""The report's figures (matplotlib, Agg backend: files only, no display needed)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from tuning.lengths import LengthStudy  # noqa: E402
from tuning.sweep import BatchingSetting, LoadLevel, SweepPoint, edges_text  # noqa: E402

FIGURE_DPI = 110
LEVEL_MARKERS = "os^Dvp<>h*"  # one marker shape per load level, in sweep order
LEGEND_FONT = 8


def setting_parts(point: SweepPoint) -> dict[str, str]:
    """A setting's knobs by kind (the continuous scheduler has no batch budget, wait or buckets)."""
    s = point.setting
    if s is None:
        return {"url": "as configured at the URL"}
    parts = {"scheduler": s.scheduler, "sentences": f"≤{s.max_batch_sentences} sent."}
    if s.scheduler == "batch":
        parts |= {"budget": f"budget {s.batch_token_budget}", "wait": f"wait {s.max_wait_ms:g} ms",
                  "buckets": f"buckets {edges_text(s.length_buckets)}",
                  "workers": ("a worker per CPU" if s.inference_workers == -1
                              else f"{s.inference_workers} worker{'s' * (s.inference_workers != 1)}")
                  + ("" if s.inference_worker_kind == "auto" else f" ({s.inference_worker_kind}s)")}
    return parts


def setting_names(points: list[SweepPoint]) -> tuple[dict[str, str], str]:
    """Short legend names for the settings (only what differs between them, "(defaults)" marked) and the parts
    they all share, for the title: full labels repeated in every entry made the legends wider than the plots.
    A knob counts as shared when every setting that has it has the same value."""
    parts = {p.setting_label(): setting_parts(p) for p in points}
    common: dict[str, str] = {}
    if len(parts) > 1:
        for kind in dict.fromkeys(kind for ps in parts.values() for kind in ps):
            values = {ps[kind] for ps in parts.values() if kind in ps}
            if len(values) == 1:
                common[kind] = values.pop()
    names = {}
    for p in points:
        own = [text for kind, text in parts[p.setting_label()].items() if kind not in common] or ["one setting"]
        names[p.setting_label()] = ", ".join(own) + (" (defaults)" if p.setting == BatchingSetting() else "")
    return names, ", ".join(common.values())


def by_setting(points: list[SweepPoint]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, point in enumerate(points):
        groups.setdefault(point.setting_label(), []).append(i)
    return groups


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 steps covering low..high, for a log axis labelled with plain numbers."""
    ticks, decade = [], 10 ** math.floor(math.log10(max(low, 1e-9)))
    while decade <= high * 10:
        ticks += [decade * m for m in (1, 2, 5) if low / 1.5 <= decade * m <= high * 1.5]
        decade *= 10
    return ticks


def legend_below(figure, handles, labels, columns: int) -> None:
    """One legend under the plots, outside every axes: it can cover no point, line or label."""
    figure.legend(handles, labels, loc="lower center", ncol=max(1, columns), fontsize=LEGEND_FONT, frameon=False)


def plot_frontier(points: list[SweepPoint], frontier: list[int], chosen: int | None, p95_target_ms: float, path: Path) -> None:
    """Throughput against p95 latency: a line (colour) per setting through its load levels (marker shapes), the
    frontier, the recommendation and the target. No text at the points: levels are told apart by shape."""
    names, common = setting_names(points)
    levels = list(dict.fromkeys(p.level for p in points))
    marker = {level: LEVEL_MARKERS[n % len(LEVEL_MARKERS)] for n, level in enumerate(levels)}
    figure, axes = plt.subplots(figsize=(9, 6.2))
    handles, labels = [], []
    for label, members in by_setting(points).items():
        members = [i for i in members if points[i].latency]
        if not members:
            continue
        (line,) = axes.plot([points[i].p95_ms for i in members], [points[i].target_tokens_per_s for i in members],
                            linewidth=1.2, zorder=2)
        for i in members:
            axes.plot(points[i].p95_ms, points[i].target_tokens_per_s, marker=marker[points[i].level], markersize=7,
                      color=line.get_color(), linestyle="none", zorder=3)
            if not points[i].healthy():  # rejections or errors: ringed in red
                axes.plot(points[i].p95_ms, points[i].target_tokens_per_s, marker="o", markersize=13,
                          markerfacecolor="none", color="red", linestyle="none", zorder=4)
        handles.append(Line2D([], [], color=line.get_color(), linewidth=2))
        labels.append(names[label])
    for level in levels:
        handles.append(Line2D([], [], color="dimgray", marker=marker[level], linestyle="none"))
        labels.append(level.label())
    if frontier:
        (line,) = axes.plot([points[i].p95_ms for i in frontier], [points[i].target_tokens_per_s for i in frontier],
                            linestyle="--", color="black", linewidth=1, zorder=1)
        handles.append(line)
        labels.append("Pareto frontier")
    if chosen is not None and points[chosen].latency:
        (star,) = axes.plot(points[chosen].p95_ms, points[chosen].target_tokens_per_s, marker="*", markersize=20,
                            color="gold", markeredgecolor="black", linestyle="none", zorder=5, alpha=0.9)
        handles.append(star)
        labels.append("recommended")
    if any(not p.healthy() for p in points):
        handles.append(Line2D([], [], marker="o", markersize=10, markerfacecolor="none", color="red", linestyle="none"))
        labels.append("rejections or errors")
    target = axes.axvline(p95_target_ms, color="grey", linestyle=":")
    handles.append(target)
    labels.append(f"p95 target {p95_target_ms:g} ms")
    latencies = [p.p95_ms for p in points if p.latency] + [p95_target_ms]
    if max(latencies) > 8 * min(latencies):  # a wide range: log scale, plain numbers at 1-2-5 steps, no minor labels
        axes.set_xscale("log")
        axes.set_xticks(log_ticks(min(latencies), max(latencies)))
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("p95 latency, ms")
    axes.set_ylabel("throughput, target tokens/s")
    axes.set_title("Throughput vs p95 latency" + (f"\n{common}" if common else ""), fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    rows = math.ceil(len(labels) / 3)
    figure.tight_layout(rect=(0, 0.034 * rows + 0.01, 1, 1))
    legend_below(figure, handles, labels, 3)
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)


def summed_buckets(points: list[SweepPoint], members: list[int], field: str) -> tuple[list[str], list[float]]:
    """One setting's histogram over all its load levels, as shares of its batches."""
    totals: dict[str, int] = {}
    for i in members:
        server = points[i].server
        for edge, count in getattr(server, field) if server else []:
            totals[edge] = totals.get(edge, 0) + count
    whole = sum(totals.values()) or 1
    return list(totals), [count / whole for count in totals.values()]


def plot_batching(points: list[SweepPoint], path: Path) -> None:
    """Batch-size and padding distributions from the server's histograms, a bar group per setting."""
    groups = by_setting(points)
    names, common = setting_names(points)
    figure, (sizes, padding) = plt.subplots(1, 2, figsize=(12, 5.2))
    width = 0.8 / max(1, len(groups))
    for axes, field, title, xlabel in ((sizes, "batch_size_buckets", "Batch size", "sentences per batch (≤ bucket edge)"),
                                        (padding, "padding_ratio_buckets", "Padding", "padding share of a batch (≤ edge)")):
        histograms = [summed_buckets(points, members, field) for members in groups.values()]
        edges = max((names_ for names_, _ in histograms), key=len, default=[])
        used = max((k + 1 for _, shares in histograms for k, share in enumerate(shares) if share), default=len(edges))
        edges = edges[:used]  # the empty buckets past the largest observed are left off
        for n, (label, (_, shares)) in enumerate(zip(groups, histograms)):
            axes.bar([k + n * width for k in range(len(shares[:used]))], shares[:used], width=width, label=names[label])
        axes.set_xticks([k + width * (len(groups) - 1) / 2 for k in range(len(edges))], edges, rotation=45, fontsize=8)
        axes.set_title(f"{title} (all load levels of a setting)", fontsize=10)
        axes.set_xlabel(xlabel)
        axes.set_ylabel("share of batches")
        axes.grid(True, axis="y", alpha=0.3)
    if common:
        figure.suptitle(common, fontsize=9)
    handles, labels = sizes.get_legend_handles_labels()
    columns = min(len(labels), 3)
    figure.tight_layout(rect=(0, 0.05 * math.ceil(len(labels) / max(1, columns)) + 0.02, 1, 1))
    legend_below(figure, handles, labels, columns)
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)


def plot_lengths(study: LengthStudy | None, samples: list[tuple[int, float]], sample_label: str, p95_target_ms: float,
                 path: Path) -> None:
    """Latency (and server memory) against input length: the length study, and the sweep's own requests."""
    figure, (measured, observed) = plt.subplots(1, 2, figsize=(12, 5.2))
    handles, labels = [], []
    if study and study.points:
        tokens = [p.tokens for p in study.points]
        measured.plot(tokens, [p.p50_ms for p in study.points], marker="o", label="p50 latency")
        measured.plot(tokens, [p.p95_ms for p in study.points], marker="o", label="p95 latency")
        measured.axhline(p95_target_ms, color="grey", linestyle=":", label=f"p95 target {p95_target_ms:g} ms")
        measured.axvline(study.advice.max_tokens, color="green", linestyle="--", label=f"recommended max {study.advice.max_tokens}")
        measured.set_xscale("log", base=2)
        measured.set_xticks(tokens, [str(t) for t in tokens])
        measured.xaxis.set_minor_formatter(NullFormatter())
        handles, labels = measured.get_legend_handles_labels()
        if any(p.rss_bytes or p.peak_rss_bytes for p in study.points):
            rss_axes = measured.twinx()
            for field, style, label in (("rss_bytes", "-.", "server RSS after the length"), ("peak_rss_bytes", ":", "server peak RSS")):
                memory = [(p.tokens, getattr(p, field)) for p in study.points if getattr(p, field)]
                rss_axes.plot([t for t, _ in memory], [b / 2**20 for _, b in memory], color="purple", marker="s",
                              markersize=4, linestyle=style, label=label)
            rss_axes.set_ylabel("server memory, MiB", color="purple")
            more_handles, more_labels = rss_axes.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        measured.set_title(f"Latency vs input length ({LoadLevel(concurrency=study.concurrency).label()})", fontsize=10)
    else:
        measured.text(0.5, 0.5, "no length study", ha="center", va="center", transform=measured.transAxes)
    measured.set_xlabel("source tokens per text")
    measured.set_ylabel("latency, ms")
    measured.grid(True, alpha=0.3)
    if samples:
        observed.scatter([t for t, _ in samples], [ms for _, ms in samples], s=6, alpha=0.4)
    else:
        observed.text(0.5, 0.5, "no per-request records\n(the sweep ran on wrk, which keeps none)", ha="center", va="center",
                      transform=observed.transAxes)
    observed.set_title("Sweep requests: latency vs source tokens\n" + textwrap.shorten(sample_label, 90), fontsize=9)
    observed.set_xlabel("source tokens")
    observed.set_ylabel("latency, ms")
    observed.grid(True, alpha=0.3)
    columns = 3
    figure.tight_layout(rect=(0, 0.05 * math.ceil(len(labels) / columns) + 0.02 if labels else 0, 1, 1))
    if labels:  # one legend for both y axes, under the plots: the memory line cannot run through it
        legend_below(figure, handles, labels, columns)
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
