"""The report's figures (matplotlib, Agg backend: files only, no display needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
from matplotlib.ticker import ScalarFormatter  # noqa: E402

from tuning.lengths import LengthStudy  # noqa: E402
from tuning.sweep import LoadLevel, SweepPoint  # noqa: E402

FIGURE_DPI = 110


def by_setting(points: list[SweepPoint]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, point in enumerate(points):
        groups.setdefault(point.setting_label(), []).append(i)
    return groups


def plot_frontier(points: list[SweepPoint], frontier: list[int], chosen: int | None, p95_target_ms: float, path: Path) -> None:
    """Throughput against p95 latency: a line per setting through its load levels, the frontier, the target."""
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for label, members in by_setting(points).items():
        members = [i for i in members if points[i].latency]
        if not members:
            continue
        xs = [points[i].p95_ms for i in members]
        ys = [points[i].target_tokens_per_s for i in members]
        (line,) = axes.plot(xs, ys, marker="o", linewidth=1.2, label=label)
        for i, x, y in zip(members, xs, ys):
            if not points[i].healthy():  # rejections or errors: drawn hollow
                axes.plot(x, y, marker="o", markersize=11, markerfacecolor="none", color="red")
            axes.annotate(points[i].level.label(), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                          color=line.get_color())
    if frontier:
        axes.plot([points[i].p95_ms for i in frontier], [points[i].target_tokens_per_s for i in frontier],
                  linestyle="--", color="black", linewidth=1, label="Pareto frontier", zorder=1)
    if chosen is not None and points[chosen].latency:
        axes.plot(points[chosen].p95_ms, points[chosen].target_tokens_per_s, marker="*", markersize=18, color="gold",
                  markeredgecolor="black", linestyle="none", label="recommended", zorder=5)
    axes.axvline(p95_target_ms, color="grey", linestyle=":", label=f"p95 target {p95_target_ms:g} ms")
    latencies = [p.p95_ms for p in points if p.latency] + [p95_target_ms]
    if max(latencies) > 8 * min(latencies):  # a wide range: log scale, with plain numbers on the ticks
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(ScalarFormatter())
        axes.tick_params(axis="x", which="minor", labelsize=7)
    axes.set_xlabel("p95 latency, ms")
    axes.set_ylabel("throughput, target tokens/s")
    axes.set_title("Throughput vs p95 latency (red ring: rejections or errors)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
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
    figure, (sizes, padding) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / max(1, len(groups))
    for axes, field, title, xlabel in ((sizes, "batch_size_buckets", "Batch size", "sentences per batch (≤ bucket edge)"),
                                        (padding, "padding_ratio_buckets", "Padding", "padding share of a batch (≤ edge)")):
        histograms = [summed_buckets(points, members, field) for members in groups.values()]
        edges = max((names for names, _ in histograms), key=len, default=[])
        used = max((k + 1 for _, shares in histograms for k, share in enumerate(shares) if share), default=len(edges))
        edges = edges[:used]  # the empty buckets past the largest observed are left off
        for n, (label, (_, shares)) in enumerate(zip(groups, histograms)):
            axes.bar([k + n * width for k in range(len(shares[:used]))], shares[:used], width=width, label=label)
        axes.set_xticks([k + width * (len(groups) - 1) / 2 for k in range(len(edges))], edges, rotation=45, fontsize=8)
        axes.set_title(f"{title} (all load levels of a setting)")
        axes.set_xlabel(xlabel)
        axes.set_ylabel("share of batches")
        axes.grid(True, axis="y", alpha=0.3)
    sizes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)


def plot_lengths(study: LengthStudy | None, samples: list[tuple[int, float]], sample_label: str, p95_target_ms: float,
                 path: Path) -> None:
    """Latency (and server memory) against input length: the length study, and the sweep's own requests."""
    figure, (measured, observed) = plt.subplots(1, 2, figsize=(12, 4.8))
    if study and study.points:
        tokens = [p.tokens for p in study.points]
        measured.plot(tokens, [p.p50_ms for p in study.points], marker="o", label="p50")
        measured.plot(tokens, [p.p95_ms for p in study.points], marker="o", label="p95")
        measured.axhline(p95_target_ms, color="grey", linestyle=":", label=f"p95 target {p95_target_ms:g} ms")
        measured.axvline(study.advice.max_tokens, color="green", linestyle="--", label=f"recommended max {study.advice.max_tokens}")
        measured.set_xscale("log", base=2)
        measured.set_xticks(tokens, [str(t) for t in tokens])
        if any(p.rss_bytes or p.peak_rss_bytes for p in study.points):
            rss_axes = measured.twinx()
            for field, style, label in (("rss_bytes", "-.", "server RSS after the length"), ("peak_rss_bytes", ":", "server peak RSS")):
                memory = [(p.tokens, getattr(p, field)) for p in study.points if getattr(p, field)]
                rss_axes.plot([t for t, _ in memory], [b / 2**20 for _, b in memory], color="purple", marker="s",
                              linestyle=style, label=label)
            rss_axes.set_ylabel("server memory, MiB", color="purple")
            rss_axes.legend(fontsize=7, loc="lower right")
        measured.legend(fontsize=7, loc="upper left")
        measured.set_title(f"Latency vs input length ({LoadLevel(concurrency=study.concurrency).label()})")
    else:
        measured.text(0.5, 0.5, "no length study", ha="center", va="center", transform=measured.transAxes)
    measured.set_xlabel("source tokens per text")
    measured.set_ylabel("latency, ms")
    measured.grid(True, alpha=0.3)
    if samples:
        observed.scatter([t for t, _ in samples], [ms for _, ms in samples], s=6, alpha=0.4)
    observed.set_title("Sweep requests: latency vs source tokens\n" + textwrap.fill(f"({sample_label})", 80), fontsize=9)
    observed.set_xlabel("source tokens")
    observed.set_ylabel("latency, ms")
    observed.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
