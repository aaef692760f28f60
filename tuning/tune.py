"""`translator tune`: sweep batching settings and load levels, find the throughput–latency frontier,
recommend settings for a p95 latency target, measure how latency and memory grow with input length,
and write a report (Markdown, PNG plots, JSON) and an env file of TRANSLATOR_* settings.

    translator tune --models-dir models --p95-ms 500 --out results/tuning
    translator tune --models-dir models --max-batch-sentences 1,8,32 --max-wait-ms 2,10 --concurrency 1,8,32 --seconds 30
    translator tune --url http://127.0.0.1:8000 --rate 2,5,10,20      # a running server: load levels only
    translator tune --quick                                           # a one-minute smoke run of the whole session

With --models-dir, every batching setting gets its own `translator serve` subprocess on a free
127.0.0.1 port, configured by TRANSLATOR_* variables; every load level runs against it for --seconds
after --warmup. The service's default setting is always measured too (unless --no-defaults), so the
report can state what the recommendation gains over it. With --url the batching settings are whatever
that server was started with, so only load levels are swept (and the env file holds the input length
limit and bucket edges only). The grid is the product of the setting lists; keep it small: each point
costs warm-up + seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

from dotenv import dotenv_values  # python-dotenv: a dependency of pydantic-settings, which reads env files the same way

from loadtest.ceiling import ClientCeiling
from loadtest.corpus import SentencePicker, counter_for, package_max_source_tokens, read_corpus
from loadtest.load import LoadSpec, client_ceiling, load, picker_for
from loadtest.server import LocalServer
from loadtest.wrk import bodies_for, wrk_ceiling, wrk_load
from tuning.lengths import DEFAULT_LENGTHS, study_lengths
from tuning.report import FILES, TuningRun, write_report
from tuning.sweep import (DEFAULT_BUCKETS, BatchingSetting, LoadLevel, SweepGrid, SweepPoint, gain_over_defaults,
                          pareto_frontier, recommend)

# --quick: every default below, so options given explicitly still win. A check that the session works
# end to end (a minute or two), not a measurement to tune by: each point is too short to be steady.
QUICK = {"max_batch_sentences": [8], "max_wait_ms": [5.0], "concurrency": [1, 8], "seconds": 4.0, "warmup": 1.0,
         "lengths": [8, 32, 64], "length_seconds": 2.0,
         "note": "quick run (--quick): points of a few seconds, to check the setup, not to tune by"}


def numbers(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        return [kind(part) for part in text.split(",") if part.strip()]
    parse.__name__ = f"comma-separated {kind.__name__}s"
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="translator tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--models-dir", type=Path, default=Path("models"), help="serve these packages, a server per setting")
    where.add_argument("--url", help="tune against a running server instead (load levels only)")
    p.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"), help="corpus: TSV split or one sentence a line")
    p.add_argument("--source", default="en")
    p.add_argument("--target", default="de")
    p.add_argument("--p95-ms", type=float, default=500.0, help="latency target: p95 of answered requests, ms")
    p.add_argument("--out", type=Path, default=Path("results/tuning"))
    grid = SweepGrid()
    p.add_argument("--scheduler", type=lambda text: [v.strip() for v in text.split(",")], default=grid.scheduler,
                   help="TRANSLATOR_SCHEDULER values (continuous, batch; the batch knobs apply to batch only)")
    p.add_argument("--token-budget", type=numbers(int), default=grid.batch_token_budget, help="TRANSLATOR_BATCH_TOKEN_BUDGET values")
    p.add_argument("--max-batch-sentences", type=numbers(int), default=grid.max_batch_sentences,
                   help="TRANSLATOR_MAX_BATCH_SENTENCES values (1 = batching off, a useful baseline)")
    p.add_argument("--max-wait-ms", type=numbers(float), default=grid.max_wait_ms, help="TRANSLATOR_MAX_WAIT_MS values")
    p.add_argument("--inference-workers", type=numbers(int), default=grid.inference_workers,
                   help="TRANSLATOR_INFERENCE_WORKERS values (batch scheduler; -1 = the service's default)")
    p.add_argument("--inference-worker-kind", type=lambda text: [v.strip() for v in text.split(",")],
                   default=grid.inference_worker_kind,
                   help="TRANSLATOR_INFERENCE_WORKER_KIND values (auto, process, thread; batch scheduler)")
    p.add_argument("--length-buckets", type=numbers(int), action="append",
                   help="TRANSLATOR_LENGTH_BUCKETS, one set per use of the option (default: the service's)")
    load_levels = p.add_mutually_exclusive_group()
    load_levels.add_argument("--concurrency", type=numbers(int), default=grid.concurrency, help="closed-loop client counts")
    load_levels.add_argument("--rate", type=numbers(float), help="open-loop Poisson rates, requests/s (instead of --concurrency)")
    p.add_argument("--seconds", type=float, default=grid.seconds_per_point, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=grid.warmup_per_point, help="unmeasured seconds before each point")
    p.add_argument("--mix", help="length mix of the sweep's requests, as for `translator load --mix`")
    p.add_argument("--beam-size", type=int, help="sent with every request (default: the server's TRANSLATOR_DEFAULT_BEAM_SIZE)")
    p.add_argument("--threads", type=int, help="TRANSLATOR_INTRA_OP_THREADS of the servers started (default: the service's)")
    p.add_argument("--env", action="append", default=[], metavar="TRANSLATOR_X=VALUE",
                   help="more settings fixed for every server started (repeatable)")
    p.add_argument("--lengths", type=numbers(int), default=list(DEFAULT_LENGTHS),
                   help="input lengths (source tokens) of the length study; empty to skip it")
    p.add_argument("--length-seconds", type=float, default=8.0, help="seconds per length")
    p.add_argument("--length-concurrency", type=int, default=1, help="clients during the length study")
    p.add_argument("--generator", choices=["python", "wrk"], default="python",
                   help="the sweep's load generator: python (aiohttp on uvloop; every request recorded, which the "
                        "latency-by-length scatter needs) or wrk (closed loop only; a fifth of python's CPU, no "
                        "per-request records); the length study always uses python, at one client")
    p.add_argument("--ceiling-seconds", type=float, default=2.0,
                   help="measure the load generator's own ceiling per load level against a stub server for this long "
                        "(0: skip); the report flags points where the client, not the server, set the pace")
    p.add_argument("--no-defaults", action="store_true",
                   help="do not add the service's default setting to the sweep (then the report states no gain)")
    p.add_argument("--no-verify", action="store_true", help="skip serving the env file and measuring it once more")
    p.add_argument("--quick", action="store_true", help="a short budget for every option not given: " + ", ".join(
        f"--{name.replace('_', '-')} {','.join(map(str, value)) if isinstance(value, list) else value}"
        for name, value in QUICK.items() if name != "note"))
    p.add_argument("--note", help="a line for the top of the report (e.g. that the machine was busy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


class Session:
    """One tuning session: what every point shares, and the points as they come."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.grid = SweepGrid(scheduler=args.scheduler, batch_token_budget=args.token_budget,
                              max_batch_sentences=args.max_batch_sentences,
                              max_wait_ms=args.max_wait_ms, length_buckets=args.length_buckets or [DEFAULT_BUCKETS],
                              inference_workers=args.inference_workers, inference_worker_kind=args.inference_worker_kind,
                              concurrency=args.concurrency if not args.rate else [], rate=args.rate or [],
                              seconds_per_point=args.seconds, warmup_per_point=args.warmup,
                              with_defaults=not args.no_defaults)
        self.sentences = read_corpus(args.data, args.source)
        self.models_dir = None if args.url else args.models_dir
        self.fixed_env = dict(item.split("=", 1) for item in args.env)
        if args.threads is not None:
            self.fixed_env |= {"TRANSLATOR_INTRA_OP_THREADS": str(args.threads), "OMP_NUM_THREADS": str(max(1, args.threads))}
        self.logs = args.out / "logs"
        self.ceilings: dict[LoadLevel, ClientCeiling] = {}

    def ceiling(self, level: LoadLevel) -> ClientCeiling | None:
        """The load generator's own ceiling at this load level, measured once per session (--ceiling-seconds)."""
        if not self.args.ceiling_seconds:
            return None
        if level not in self.ceilings:
            spec = self.spec("http://stub", level, self.args.ceiling_seconds, 0)
            if self.args.generator == "wrk":
                sample = bodies_for(spec, SentencePicker(self.sentences[:1024], "sequential"))
                self.ceilings[level] = wrk_ceiling(sample, level.concurrency, self.args.ceiling_seconds)
            else:
                self.ceilings[level] = client_ceiling(spec, self.sentences[:1024], self.args.ceiling_seconds)
        return self.ceilings[level]

    def spec(self, url: str, level: LoadLevel, seconds: float, warmup: float) -> LoadSpec:
        a = self.args
        return LoadSpec(url=url, source=a.source, target=a.target, concurrency=level.concurrency, rate=level.rate,
                        duration_s=seconds, warmup_s=warmup, beam_size=a.beam_size, seed=a.seed)

    def measure(self, url: str, setting: BatchingSetting | None, level: LoadLevel, sentences: list[str],
                server: LocalServer | None = None) -> SweepPoint:
        picker = picker_for(sentences, self.args.mix, "random", self.models_dir, url, self.args.source,
                            self.args.target, self.args.seed)
        label = f"{setting.label() if setting else url} @ {level.label()}"
        ceiling, spec = self.ceiling(level), self.spec(url, level, self.grid.seconds_per_point, self.grid.warmup_per_point)
        if self.args.generator == "wrk":
            result = wrk_load(spec, picker, ceiling)
        else:
            result = load(spec, picker, progress=not self.args.no_progress, label=label[:60], ceiling=ceiling)
        point = SweepPoint.from_load(setting, level, result, server and server.rss_bytes(), server and server.peak_rss_bytes())
        client = point.client
        print(f"  {label}: {point.target_tokens_per_s:.1f} target tokens/s, p95 {point.p95_ms:.0f} ms, "
              f"{point.ok} ok / {point.rejected} rejected / {point.errors} errors; client {client.cpu_cores:.2f} cores"
              + (f", {client.share_of_ceiling:.0%} of its ceiling" if client.ceiling else "")
              + (" (CLIENT-LIMITED)" if client.limited else ""), file=sys.stderr, flush=True)
        return point

    def serve(self, environment: dict[str, str], name: str) -> LocalServer:
        server = LocalServer(self.models_dir, {**self.fixed_env, **environment}, self.logs / f"{name}.log")
        try:
            return server.wait_ready()
        except BaseException:
            server.stop()
            raise

    def sweep(self) -> list[SweepPoint]:
        if self.args.url:
            return [self.measure(self.args.url, None, level, self.sentences) for level in self.grid.levels()]
        points = []
        for number, setting in enumerate(self.grid.settings()):
            print(f"setting {number + 1}/{len(self.grid.settings())}: {setting.label()}", file=sys.stderr, flush=True)
            with self.serve(setting.environment(), f"setting-{number + 1}") as server:
                points += [self.measure(server.url, setting, level, self.sentences, server) for level in self.grid.levels()]
        return points

    def study_lengths(self, setting: BatchingSetting | None):
        a = self.args
        lengths = tuple(a.lengths)
        limit = package_max_source_tokens(self.models_dir, a.source, a.target) if self.models_dir else None
        if limit:
            lengths = tuple(n for n in lengths if n <= limit) or (limit,)
        if not lengths:
            return None
        print(f"length study: {', '.join(map(str, lengths))} tokens", file=sys.stderr, flush=True)
        spec_of = lambda url: LoadSpec(url=url, source=a.source, target=a.target, concurrency=a.length_concurrency,  # noqa: E731
                                       duration_s=a.length_seconds, warmup_s=0, beam_size=a.beam_size, seed=a.seed)
        if a.url:
            return study_lengths(spec_of(a.url), self.sentences, counter_for(None, a.url, a.source, a.target), lengths, a.p95_ms)
        with self.serve(setting.environment() if setting else {}, "lengths") as server:
            counter = counter_for(self.models_dir, server.url, a.source, a.target)
            return study_lengths(spec_of(server.url), self.sentences, counter, lengths, a.p95_ms,
                                 memory=lambda: (server.rss_bytes(), server.peak_rss_bytes()))

    def verify(self, env_file: Path, level: LoadLevel, max_chars: int | None) -> SweepPoint:
        """Serve the env file exactly as written and measure the recommended load level again."""
        environment = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        sentences = [s for s in self.sentences if max_chars is None or len(s) <= max_chars]  # longer ones are refused now
        print(f"verifying {env_file}", file=sys.stderr, flush=True)
        with self.serve(environment, "verify") as server:
            return self.measure(server.url, None, level, sentences, server)


def recommended_environment(session: Session, setting: BatchingSetting | None, lengths) -> dict[str, str]:
    environment = setting.environment() if setting else {}
    if lengths:
        environment["TRANSLATOR_MAX_TEXT_CHARS"] = str(lengths.advice.max_text_chars)
        if not session.args.length_buckets:  # buckets neither swept nor given: the length study's edges
            environment["TRANSLATOR_LENGTH_BUCKETS"] = ",".join(map(str, lengths.advice.length_buckets))
    return environment


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:  # the quick budget as defaults, then parse again: what was given explicitly stays
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.generator == "wrk" and args.rate:
        parser.error("--generator wrk runs closed loops only: use --concurrency, or --generator python for --rate")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, clock = time.strftime("%Y-%m-%d %H:%M %Z"), time.monotonic()
    session = Session(args)
    settings, levels = session.grid.settings(), session.grid.levels()
    per_point = args.seconds + args.warmup
    if args.url:
        print(f"--url: only the {len(levels)} load levels are swept (a running server keeps its batching settings)", file=sys.stderr)
        settings = [None]
    print(f"{len(settings)} setting(s) × {len(levels)} load level(s) × {per_point:g} s + length study: about "
          f"{(len(settings) * len(levels) * per_point + len(args.lengths) * args.length_seconds) / 60:.1f} min "
          "plus server starts", file=sys.stderr, flush=True)
    points = session.sweep()
    recommendation = recommend(points, args.p95_ms)
    winner = points[recommendation.point].setting if recommendation.point is not None else None
    lengths = session.study_lengths(winner)
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    run = TuningRun(
        mode="url" if args.url else "local", served=args.url or str(args.models_dir), started=started,
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
                + (f", load average {load_average:.1f} at the end" if load_average is not None else ""),
        note=args.note, p95_target_ms=args.p95_ms, beam_size=args.beam_size,
        server_environment={k: v for k, v in session.fixed_env.items() if k.startswith("TRANSLATOR_")}
                           | ({"beam_size (per request)": str(args.beam_size)} if args.beam_size else {}),
        grid=session.grid, points=points, frontier=pareto_frontier(points), recommendation=recommendation,
        gain=gain_over_defaults(points, recommendation, args.p95_ms) if not args.url else None,
        lengths=lengths, recommended_env=recommended_environment(session, winner, lengths), seconds=0)
    paths = write_report(run, args.out)
    if not args.url and not args.no_verify and recommendation.point is not None:
        run.verification = session.verify(paths["env"], points[recommendation.point].level,
                                          lengths.advice.max_text_chars if lengths else None)
    run.seconds = round(time.monotonic() - clock, 1)
    paths = write_report(run, args.out)
    print(f"\n{recommendation.reason}" + (f"\ngain over the defaults: {run.gain.text}" if run.gain else "")
          + f"\n\n{paths['env'].read_text()}")
    print("written: " + ", ".join(str(args.out / name) for name in FILES.values()))
    return 0 if recommendation.point is not None else 1


if __name__ == "__main__":
    sys.exit(main())
