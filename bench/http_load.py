"""HTTP load benchmark (`make bench-http`): N concurrent clients, each sending one test sentence per
request to `translator serve`, with cross-request batching on and off (off = one sentence per
inference). Reports target tokens/s, latency percentiles, and mean batch size, padding ratio and
queue wait read from the server's /metrics.

    python -m bench.http_load --clients 32 --limit 256 --beam-size 4
    python -m bench.http_load --url http://127.0.0.1:8000 --modes on     # a server already running

With `results/bench_engines.json` from `python -m bench.engines` on the same sentences (`--limit`),
the report adds the ratio to CTranslate2 int8 translating them offline in batches of 32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from loadtest.corpus import SentencePicker, read_corpus
from loadtest.load import LoadResult, LoadSpec, load
from loadtest.server import LocalServer

MODES = {"on": None, "off": "1"}  # TRANSLATOR_MAX_BATCH_SENTENCES per mode (None: the configured default)


def row(result: LoadResult) -> dict:
    """The columns this benchmark has always reported, from the load generator's result."""
    server, latency = result.server, result.latency
    return {
        "requests": result.requests, "errors": result.errors + result.rejected, "seconds": round(result.elapsed_s, 2),
        "target_tokens": result.target_tokens, "tokens_per_second": round(result.target_tokens_per_s, 1),
        "requests_per_second": round(result.requests_per_s, 1),
        "latency_p50_ms": latency.p50_ms if latency else None, "latency_p95_ms": latency.p95_ms if latency else None,
        "latency_p99_ms": latency.p99_ms if latency else None,
        "batches": server.batches if server else None,
        "mean_batch_size": round(server.mean_batch_size or 0, 2) if server else None,
        "mean_padding_ratio": round(server.mean_padding_ratio or 0, 3) if server else None,
        "mean_queue_wait_ms": round(server.mean_queue_wait_ms or 0, 1) if server else None,
    }


def run_mode(args: argparse.Namespace, mode: str, sentences: list[str]) -> dict:
    """Each sentence once, in order, from `--clients` closed-loop clients (after one unmeasured round)."""
    environment = {"TRANSLATOR_DEFAULT_BEAM_SIZE": str(args.beam_size), "TRANSLATOR_QUEUE_LIMIT": str(max(512, args.clients * 2)),
                   "OMP_NUM_THREADS": str(args.threads), "TRANSLATOR_INTRA_OP_THREADS": str(args.threads)}
    if MODES[mode]:
        environment["TRANSLATOR_MAX_BATCH_SENTENCES"] = MODES[mode]
    spec = dict(source=args.source, target=args.target, concurrency=args.clients, duration_s=None, timeout_s=args.timeout)
    server = None
    url = args.url
    if not url:
        server = LocalServer(args.models_dir, environment, args.out.with_name(f"http_load_{mode}.log"))
    try:
        url = server.wait_ready().url if server else url
        load(LoadSpec(url=url, max_requests=args.clients, **spec), SentencePicker(sentences, "sequential"), progress=False)  # warm caches
        result = load(LoadSpec(url=url, max_requests=len(sentences), **spec), SentencePicker(sentences, "sequential"),
                      label=f"batching {mode}")
        return {"batching": mode, **row(result)}
    finally:
        if server:
            server.stop(120)


def ct2_reference(path: Path, beam_size: int) -> dict | None:
    """CTranslate2 int8 in batches of 32 from bench.engines' results, if they are there."""
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    search = "greedy" if beam_size == 1 else f"beam{beam_size}"
    for setting in summary.get("engines", {}).get("ct2-int8", {}).get("settings", []):
        if setting["search"] == search and setting["batch_size"] == 32:
            return {"tokens_per_second": setting["tokens_per_second"], "sentences": summary["sentences"],
                    "threads": summary["threads"], "file": str(path)}
    return None


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"))
    parser.add_argument("--source", default="en")
    parser.add_argument("--target", default="de")
    parser.add_argument("--limit", type=int, default=256, help="the first N test sentences")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime threads of the server")
    parser.add_argument("--modes", default="on,off", help="batching on, off (one sentence per inference), or both")
    parser.add_argument("--url", help="measure a running server instead of starting one (one mode)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--compare", type=Path, default=Path("results/bench_engines.json"))
    parser.add_argument("--out", type=Path, default=Path("results/http_load.json"))
    args = parser.parse_args(argv)

    sentences = read_corpus(args.data, args.source)[: args.limit]
    rows = []
    for mode in args.modes.split(","):
        print(f"batching {mode}: {len(sentences)} sentences, {args.clients} clients ...", file=sys.stderr, flush=True)
        rows.append(run_mode(args, mode, sentences))
    reference = ct2_reference(args.compare, args.beam_size)
    for row in rows:
        if reference:
            row["vs_ct2_int8_batch32"] = round(row["tokens_per_second"] / reference["tokens_per_second"], 2)
    summary = {"data": str(args.data), "sentences": len(sentences), "clients": args.clients, "beam_size": args.beam_size,
               "threads": args.threads, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ct2_int8_batch32": reference, "results": rows}
    columns = ["batching", "requests", "errors", "tokens_per_second", "latency_p50_ms", "latency_p95_ms",
               "latency_p99_ms", "mean_batch_size", "mean_padding_ratio", "mean_queue_wait_ms"]
    if reference:
        columns.append("vs_ct2_int8_batch32")
    text = (f"{len(sentences)} sentences of {args.data}, {args.clients} clients, beam {args.beam_size}, "
            f"{args.threads} threads, {summary['machine']}\n\n" + table(rows, columns))
    if reference:
        text += (f"\n\nCTranslate2 int8, batches of 32: {reference['tokens_per_second']} tokens/s "
                 f"({reference['sentences']} sentences, {reference['threads']} threads, {reference['file']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {args.out} and {args.out.with_suffix('.txt')}")


if __name__ == "__main__":
    main()
