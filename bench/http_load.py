"""HTTP load benchmark (`make bench-http`): the service as `make run` serves it, driven by a compiled load
generator, against CTranslate2 int8 translating the same sentences offline on the same weights.

    python -m bench.http_load                                      # make run's defaults, greedy and beam 4
    python -m bench.http_load --env TRANSLATOR_INTRA_OP_THREADS=1  # a setting for every server started
    python -m bench.http_load --variant continuous:TRANSLATOR_SCHEDULER=continuous --variant batch:TRANSLATOR_SCHEDULER=batch
    python -m bench.http_load --url http://127.0.0.1:8000          # a server already running (one variant)

Per server variant (default: one, the service's defaults): `translator serve` on a free 127.0.0.1 port
with the shipped models; then for greedy and for beam 4 (`beam_size` in each /v1/translate body) wrk,
one thread, --connections (32) connections, each request one of the first --limit (256) test sentences
in turn, --seconds (20) after --warmup (3) unmeasured seconds. Target tokens come from the server's own
counter (`translator_generated_tokens_total` deltas), answers by HTTP status from wrk (non-2xx
reported), p50/p99 latency from wrk. Then one connection, one pass over the same sentences (after a
short warm-up): its p50 against the engine's own batch-1 p50 on them (bench.engines, ort-int8, that
server's thread count, on the server's CPUs while the server idles, just before and just after the pass:
this machine's speed drifts by a third within minutes, so a reference taken minutes away says little):
the serving overhead, which should stay within 1.2 x the engine + 2 ms.

Offline, once per run: bench.engines' CTranslate2 int8 worker on the same sentences in batches of 32,
with 1 and with 2 threads, the best of the two; the table gives service tokens/s over it. wrk's own
ceiling (the same script against loadtest.stub) shows the client was not the limit.

JSON in --out (results/bench_http.json), the table beside it (.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.engines import machine
from engine.sessions import CUDA
from loadtest.corpus import read_corpus
from loadtest.load import LoadSpec
from loadtest.scrape import scrape, server_view, settle
from loadtest.server import ROOT, LocalServer
from loadtest.wrk import GENERATOR, WrkRun, body, run_wrk, wrk_ceiling

SEARCHES = {"greedy": 1, "beam4": 4}
LATENCY_BOUND = (1.2, 2.0)  # p50 at one connection ≤ 1.2 × the engine's batch-1 p50 + 2 ms
ONE_CONNECTION_WARMUP = 32  # requests before the one-connection pass


def service_threads(environment: dict[str, str], server_cpus: str | None) -> int:
    """The ONNX Runtime thread count a server started with this environment (over this process's) uses,
    pinned to `server_cpus` (a taskset list) if given."""
    from service.config import Settings

    settings = Settings(**{k.removeprefix("TRANSLATOR_").lower(): v for k, v in environment.items()
                           if k.startswith("TRANSLATOR_")})
    cpus = len(cpu_list(server_cpus)) if server_cpus else None  # what the pinned server sees as its CPUs
    return settings.onnx_threads(cpus) or physical_cores()


def cpu_list(cpus: str) -> set[int]:
    """taskset's list syntax: 0,2-3 → {0, 2, 3}."""
    chosen = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        chosen.update(range(int(first), int(last or first) + 1))
    return chosen


def physical_cores() -> int:
    """ONNX Runtime's default intra-op thread count (TRANSLATOR_INTRA_OP_THREADS=0): one per physical core."""
    cores = set()
    for topology in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            pass
    return len(cores) or os.cpu_count() or 1


def scheduler_of(environment: dict[str, str]) -> str:
    """The scheduler a server with this environment runs (TRANSLATOR_SCHEDULER)."""
    from service.config import Settings

    default = Settings.model_fields["scheduler"].default
    return environment.get("TRANSLATOR_SCHEDULER") or os.environ.get("TRANSLATOR_SCHEDULER") or f"{default} (default)"


def measure(url: str, bodies: list[str], connections: int, seconds: float, warmup: float, timeout: float,
            cpus: str | None, max_requests: int | None = None) -> dict:
    """One wrk run, its server-side deltas, as a row."""
    if warmup:
        run_wrk(url, bodies, connections, warmup, timeout_s=timeout, cpus=cpus)
    settle(url)
    before = scrape(url)
    run: WrkRun = run_wrk(url, bodies, connections, seconds, max_requests=max_requests, timeout_s=timeout, cpus=cpus)
    time.sleep(0.1)  # the server records a request's duration just after answering it
    view = server_view(before, scrape(url))
    lat = run.latency
    return {
        "connections": connections, "seconds": round(run.elapsed_s, 2), "answers": run.answered, "ok": run.ok,
        "non_2xx": run.non_2xx(), "socket_errors": {k: n for k, n in run.socket_errors.items() if n},
        "requests_per_second": round(run.ok / run.elapsed_s, 1),
        "tokens_per_second": round(view.generated_tokens / run.elapsed_s, 1), "generated_tokens": view.generated_tokens,
        "latency_p50_ms": lat.p50_ms if lat else None, "latency_p99_ms": lat.p99_ms if lat else None,
        "latency_mean_ms": lat.mean_ms if lat else None,
        "server_responses": view.translate_responses, "mean_batch_size": view.mean_batch_size,
        "mean_queue_wait_ms": view.mean_queue_wait_ms, "client_cpu_cores": round(run.cpu_s / run.elapsed_s, 3),
        # where a request's time goes, by the server's own histograms (means: the stages do not add up to a p50)
        "server_request_ms": view.mean_request_ms, "encode_ms": view.mean_encode_ms, "decode_ms": view.mean_decode_ms,
    }


def run_variant(args: argparse.Namespace, name: str, environment: dict[str, str], bodies: dict[str, list[str]]) -> dict:
    server = None
    if not args.url:
        server = LocalServer(args.models_dir, environment, args.out.with_name(f"{args.out.stem}_{name}.log"), cpus=args.server_cpus)
    try:
        url = server.wait_ready().url if server else args.url
        result = {"variant": name, "environment": environment, "scheduler": scheduler_of(environment), "url": url,
                  "engine_threads": args.engine_threads or service_threads(environment, args.server_cpus),
                  "saturated": {}, "one_connection": {}}
        for search, requests in bodies.items():
            print(f"{name}: {search}, {args.connections} connections, {args.seconds:g} s ...", file=sys.stderr, flush=True)
            result["saturated"][search] = measure(url, requests, args.connections, args.seconds, args.warmup, args.timeout,
                                                  args.client_cpus)
        for search, requests in bodies.items() if args.one_connection else ():
            result["one_connection"][search] = one_connection(args, url, result["engine_threads"], search, requests)
        if server:
            result["server_peak_rss_mb"] = round((server.peak_rss_bytes() or 0) / 2**20, 1)
        return result
    finally:
        if server:
            server.stop(120)


def engines(args: argparse.Namespace, engine: str, batch_size: int, threads: int,
            beams: tuple[int, ...] = tuple(SEARCHES.values())) -> dict:
    """bench.engines for one engine and batch size on the same sentences, in its own processes → its settings by
    search name."""
    with tempfile.TemporaryDirectory(prefix="bench-http-") as scratch:
        out = Path(scratch) / "engines.json"
        command = [sys.executable, "-m", "bench.engines", "--limit", str(args.limit), "--engines", engine,
                   "--batch-sizes", str(batch_size), "--beam-sizes", ",".join(str(b) for b in beams),
                   "--threads", str(threads), "--lengths", "8", "--out", str(out),
                   "--data", str(args.data), "--int8-package", str(args.models_dir / "en-de")]  # the server's sentences and package
        print(f"offline: {engine}, batch {batch_size}, beam {'/'.join(map(str, beams))}, {threads} thread(s) ...",
              file=sys.stderr, flush=True)
        pin = ["taskset", "-c", args.server_cpus] if args.server_cpus else []
        subprocess.run(pin + command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads(out.read_text())
    return {s["search"]: s for s in summary["engines"][engine]["settings"]}


def counted_as_served(setting: dict) -> float:
    """An offline setting's target tokens/s as the service's translator_generated_tokens_total counts them: the
    translations' tokens, without the end-of-sentence step that bench.engines counts too (for every engine alike)."""
    return round((setting["target_tokens"] - setting["sentences"]) / setting["seconds"], 1)


def offline(args: argparse.Namespace) -> dict:
    ct2 = {threads: engines(args, "ct2-int8", 32, threads) for threads in args.ct2_threads}
    best = {search: max(({"threads": t, **by_search[search]} for t, by_search in ct2.items()), key=counted_as_served)
            for search in SEARCHES}
    return {"ct2_int8_batch32": {search: {"tokens_per_second": counted_as_served(s), "threads": s["threads"],
                                          "tokens_per_second_with_eos": s["tokens_per_second"],
                                          "all_threads": {t: counted_as_served(ct2[t][search]) for t in ct2}}
                                 for search, s in best.items()}}


def engine_batch1_p50_ms(args: argparse.Namespace, threads: int, search: str) -> float:
    """The engine's own batch-1 p50 on the same sentences (ort-int8, `threads`), measured now."""
    return engines(args, "ort-int8", 1, threads, (SEARCHES[search],))[search]["latency_p50_ms"]


def one_connection(args: argparse.Namespace, url: str, threads: int, search: str, requests: list[str]) -> dict:
    """One pass over the sentences at one connection, with the engine's batch-1 p50 just before and just after it
    (unless --no-offline) and the latency bound against their mean."""
    print(f"{search}: 1 connection, {len(requests)} requests ...", file=sys.stderr, flush=True)
    run_wrk(url, requests, 1, 600, max_requests=ONE_CONNECTION_WARMUP, timeout_s=args.timeout, cpus=args.client_cpus)
    before = None if args.no_offline else engine_batch1_p50_ms(args, threads, search)
    row = measure(url, requests, 1, 600, 0, args.timeout, args.client_cpus, max_requests=len(requests))
    if before is not None:
        after = engine_batch1_p50_ms(args, threads, search)
        engine = round((before + after) / 2, 2)
        bound = LATENCY_BOUND[0] * engine + LATENCY_BOUND[1]
        row.update(engine_batch1_p50_ms=engine, engine_before_after_ms=[before, after], bound_ms=round(bound, 2),
                   within_bound=row["latency_p50_ms"] <= bound, over_engine_ms=round(row["latency_p50_ms"] - engine, 2))
    return row


def compare(variants: list[dict], reference: dict | None) -> None:
    """Ratios to CTranslate2 offline, written into each variant's saturated rows."""
    if not reference:
        return
    for variant in variants:
        for search, row in variant["saturated"].items():
            row["vs_ct2_int8_batch32"] = round(row["tokens_per_second"] / reference["ct2_int8_batch32"][search]["tokens_per_second"], 3)


def table(rows: list[dict], columns: list[str]) -> str:
    def text(value) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k}: {v}" for k, v in value.items()) or "0"
        return "–" if value is None else str(value)

    widths = [max([len(c), *(len(text(r.get(c))) for r in rows)]) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(text(r.get(c)).ljust(w) for c, w in zip(columns, widths)) for r in rows])


def report(summary: dict) -> str:
    ref = summary["offline"]
    parts = [f"{summary['sentences']} sentences of {summary['data']}; {summary['machine']}; load average "
             f"{summary['load_average_before']} before, {summary['load_average_after']} after",
             f"client: {summary['client']['generator']}, {summary['connections']} connections, {summary['seconds']:g} s "
             f"after {summary['warmup']:g} s of warm-up; its own ceiling {summary['client']['ceiling']['requests_per_s']:,.0f} "
             f"requests/s against a stub server" + (f"; server pinned to CPUs {summary['server_cpus']}" if summary['server_cpus'] else "")
             + (f", client to {summary['client_cpus']}" if summary['client_cpus'] else "")]
    saturated, single = [], []
    for v in summary["variants"]:
        for search, row in v["saturated"].items():
            saturated.append({"variant": v["variant"], "scheduler": v["scheduler"].split(" ")[0], "search": search, **row,
                              "ct2_int8_b32_tok_s": ref and ref["ct2_int8_batch32"][search]["tokens_per_second"]})
        for search, row in v["one_connection"].items():
            single.append({"variant": v["variant"], "search": search, "engine_threads": v["engine_threads"], **row})
    parts.append("saturated: service target tokens/s (server counter) / CTranslate2 int8 offline, batches of 32 (best threads)\n"
                 + table(saturated, ["variant", "scheduler", "search", "tokens_per_second", "ct2_int8_b32_tok_s",
                                     "vs_ct2_int8_batch32", "requests_per_second", "ok", "non_2xx", "socket_errors",
                                     "latency_p50_ms", "latency_p99_ms", "mean_batch_size", "client_cpu_cores"])
                 + "\nmean_batch_size: the mean of translator_batch_size, sentences per batch for the batch scheduler but "
                   "sentences per admission into the running batch for the continuous one (not comparable between them)")
    if single:  # absent with --no-one-connection
        parts.append(f"one connection, one pass over the {summary['sentences']} sentences: p50 against the engine's batch-1 p50 "
                     f"(ort-int8, the variant's server's threads); bound = {LATENCY_BOUND[0]:g} x engine + {LATENCY_BOUND[1]:g} ms\n"
                     + table(single, ["variant", "search", "engine_threads", "ok", "non_2xx", "latency_p50_ms", "engine_batch1_p50_ms",
                                      "engine_before_after_ms", "bound_ms", "within_bound", "over_engine_ms", "latency_p99_ms", "mean_queue_wait_ms",
                                      "encode_ms", "decode_ms", "server_request_ms", "latency_mean_ms"])
                     + "\nengine_batch1_p50_ms: the mean of the engine's batch-1 p50 just before and just after the pass "
                       "(engine_before_after_ms), on the server's CPUs while it idles"
                       "\nencode_ms, decode_ms, server_request_ms: means by the server's histograms (a request's encoder "
                       "pass, its decoder steps, the whole request inside the server); latency_mean_ms (wrk's) less "
                       "server_request_ms is HTTP outside the app")
    if ref:
        parts.append("CTranslate2 int8, batches of 32, target tokens/s by threads: " + "; ".join(
            f"{search} " + ", ".join(f"{t} thread(s) {tps}" for t, tps in r["all_threads"].items())
            for search, r in ref["ct2_int8_batch32"].items()))
    parts += [f"{v['variant']}: scheduler {v['scheduler']}; environment {v['environment'] or 'the service defaults (make run)'}"
              for v in summary["variants"]]
    source = summary["source"]
    parts.append(f"source: commit {source['commit']}" + (f", uncommitted changes in {', '.join(source['uncommitted'])}"
                                                          if source["uncommitted"] else ""))
    return "\n\n".join(parts)


def source_state() -> dict:
    """What was measured: the commit, and the files of the serving path that differed from it."""
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.rstrip() if done.returncode == 0 else ""  # porcelain lines start with a status column

    changed = git("status", "--porcelain", "--", "engine", "service", "cli", "models")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": [line[3:] for line in changed.splitlines()]}


def variants_of(args: argparse.Namespace) -> list[tuple[str, dict[str, str]]]:
    common = dict(item.split("=", 1) for item in args.env)
    if not args.variant:
        return [("defaults", common)]
    variants = []
    for item in args.variant:
        name, _, settings = item.partition(":")
        pairs = re.split(r",(?=TRANSLATOR_)", settings)  # a value may hold commas (TRANSLATOR_LENGTH_BUCKETS=32,128)
        variants.append((name, common | dict(pair.split("=", 1) for pair in pairs if pair)))
    return variants


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"))
    parser.add_argument("--limit", type=int, default=256, help="the first N test sentences")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per search")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each")
    parser.add_argument("--env", action="append", default=[], metavar="TRANSLATOR_X=VALUE",
                        help="server environment for every variant (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:TRANSLATOR_X=V[,TRANSLATOR_Y=W]",
                        help="a server with these settings, measured in turn (repeatable; default: one, the defaults)")
    parser.add_argument("--url", help="measure a running server instead of starting one (no variants)")
    parser.add_argument("--server-cpus", help="taskset CPU list for the server and the offline engines, e.g. 0,1")
    parser.add_argument("--client-cpus", help="taskset CPU list for wrk, e.g. 1")
    parser.add_argument("--ct2-threads", default="1,2", help="CTranslate2 thread counts to try; the best is the reference")
    parser.add_argument("--engine-threads", type=int, default=0,
                        help="threads of the engine's batch-1 reference (default: each variant's server's own)")
    parser.add_argument("--no-offline", action="store_true", help="skip CTranslate2 and the engine reference")
    parser.add_argument("--timeout", type=float, default=120.0, help="wrk's per-request timeout, seconds")
    parser.add_argument("--one-connection", action=argparse.BooleanOptionalAction, default=True,
                        help="the one-connection latency pass after the saturated runs")
    parser.add_argument("--out", type=Path, default=Path("results/bench_http.json"))
    args = parser.parse_args(argv)
    args.ct2_threads = [int(t) for t in args.ct2_threads.split(",") if t]
    if args.url and args.variant:
        parser.error("--variant starts servers; with --url the server runs as it was started")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sentences = read_corpus(args.data, "en")[: args.limit]
    bodies = {search: [body([s], LoadSpec(url="-", concurrency=1, beam_size=beam)) for s in sentences]
              for search, beam in SEARCHES.items()}
    load_before = round(os.getloadavg()[0], 2)
    ceiling = wrk_ceiling(bodies["greedy"], args.connections, cpus=args.client_cpus)
    variants = [run_variant(args, name, environment, bodies) for name, environment in variants_of(args)]
    reference = None if args.no_offline else offline(args)
    compare(variants, reference)
    summary = {
        "data": str(args.data), "sentences": len(sentences), "connections": args.connections, "seconds": args.seconds,
        "warmup": args.warmup, "machine": machine("cuda" if any(CUDA in v["environment"].get("TRANSLATOR_PROVIDERS", "")
                                                               for v in variants) else "cpu"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_before": load_before,
        "load_average_after": round(os.getloadavg()[0], 2), "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
        "source": source_state(),
        "client": {"generator": GENERATOR, "ceiling": ceiling.model_dump()}, "offline": reference, "variants": variants,
    }
    text = report(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {args.out} and {args.out.with_suffix('.txt')}")
    failed = any(row["non_2xx"] or row["socket_errors"] for v in variants for rows in (v["saturated"], v["one_connection"])
                 for row in rows.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
