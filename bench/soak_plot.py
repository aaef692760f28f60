"""The memory soak's curves on one figure: the server's resident set against requests answered, one
line per `bench.soak` report (one per arena setting), with each report's warm-up marked.

    python -m bench.soak_plot results/reliability/soak*.json --out results/reliability/soak.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tuning.plots import FIGURE_DPI, plt  # matplotlib on its Agg backend, as the tuning report's figures


def setting_label(report: dict) -> str:
    """The server settings a soak ran with, e.g. `TRANSLATOR_SHRINK_ARENA=true`."""
    settings = [f"{name}={value}" for name, value in report["server_environment"].items()]
    return ", ".join(settings) or "server defaults"


def plot_soaks(reports: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(9, 4.8))
    for report in reports:
        curve = report["curve"]
        growth = report["memory"].get("growth")
        label = f"{setting_label(report)}: {report['requests']:,} requests"
        label += f", growth after warm-up {growth:+.1%}" if growth is not None else ""
        line, = axes.plot([p["requests"] for p in curve], [p["rss_mib"] for p in curve], label=label)
        axes.axvline(report["warmup_requests"], color=line.get_color(), linestyle=":", alpha=0.6)
    axes.set_xlabel("requests answered (dotted: end of each run's warm-up)")
    axes.set_ylabel("server resident set, MiB")
    axes.set_ylim(bottom=0)
    axes.set_title("Memory soak: input lengths from 2 tokens to the maximum, in random order")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="bench.soak JSON reports")
    parser.add_argument("--out", type=Path, default=Path("results/reliability/soak.png"))
    args = parser.parse_args(argv)
    plot_soaks([json.loads(path.read_text()) for path in args.reports], args.out)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
