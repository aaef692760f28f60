"""What bench.overload and bench.soak share: the server and report options, the check lines, and
the ending (print, write the JSON report, exit 1 when a check failed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

RESULTS = Path("results/reliability")


def parser_for(name: str, description: str) -> argparse.ArgumentParser:
    """`python -m bench.NAME`'s parser with the options every runner has."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, name)
    return parser


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"),
                        help="English sentences (a TSV split with columns.json beside it, or one per line)")
    parser.add_argument("--env", action="append", default=[], metavar="TRANSLATOR_X=VALUE", help="a server setting (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=RESULTS / f"{name}-server.log", help="the server's log")
    parser.add_argument("--json", type=Path, help=f"write the report here (e.g. {RESULTS / name}.json)")


def server_environment(args: argparse.Namespace, defaults: dict[str, str] | None = None) -> dict[str, str]:
    return {**(defaults or {}), **dict(item.split("=", 1) for item in args.env)}


def check_lines(checks: dict[str, dict]) -> list[str]:
    return [f"  {'ok  ' if c['passed'] else 'FAIL'} {name}: {c['value']} (wanted {c['wanted']})" for name, c in checks.items()]


def finish(run: Callable[[argparse.Namespace], dict], summary: Callable[[dict], str], args: argparse.Namespace) -> int:
    """Run, print the summary and checks, write the report; → 0 when every check passed, else 1."""
    report = run(args)
    print("\n".join([summary(report), *check_lines(report["checks"])]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0 if all(check["passed"] for check in report["checks"].values()) else 1
