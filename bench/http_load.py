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
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
MODES = {"on": None, "off": "1"}  # TRANSLATOR_MAX_BATCH_SENTENCES per mode (None: the configured default)
SERVER_METRICS = ("translator_batch_size_sum", "translator_batch_size_count", "translator_padding_ratio_sum",
                  "translator_padding_ratio_count", "translator_queue_wait_seconds_sum", "translator_queue_wait_seconds_count")


def read_sentences(data: Path, source: str, limit: int | None) -> list[str]:
    columns = json.loads((data.parent / "columns.json").read_text())["columns"]
    column = columns.index(source)
    lines = data.read_text(encoding="utf-8").splitlines()[:limit]
    return [line.split("\t")[column] for line in lines if line.strip()]


def server_counters(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    values = {name: 0.0 for name in SERVER_METRICS}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in values:
                values[sample.name] += sample.value
    return values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models_dir: Path, threads: int, environment: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRANSLATOR_INTRA_OP_THREADS": str(threads),
           "TRANSLATOR_MODELS_DIR": str(models_dir), "TRANSLATOR_LOG_LEVEL": "warning",
           "HOST": "127.0.0.1", "PORT": str(port), **environment}
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT, env=env,
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not ready after 120 s; see {log}")


async def load(url: str, sentences: list[str], clients: int, source: str, target: str, timeout: float) -> dict:
    """`clients` loops, each sending the next unsent sentence alone and waiting for the answer."""
    queue = list(reversed(sentences))
    latencies: list[float] = []
    target_tokens = errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal target_tokens, errors
        while queue:
            sentence = queue.pop()
            started = time.perf_counter()
            response = await http.post("/v1/translate", json={"text": sentence, "source": source, "target": target})
            latencies.append(time.perf_counter() - started)
            if response.status_code == 200:
                target_tokens += response.json()["translations"][0]["target_tokens"]
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies), "errors": errors, "seconds": round(seconds, 2), "target_tokens": target_tokens,
        "tokens_per_second": round(target_tokens / seconds, 1), "requests_per_second": round(len(latencies) / seconds, 1),
        "latency_p50_ms": round(float(np.percentile(ms, 50)), 1), "latency_p95_ms": round(float(np.percentile(ms, 95)), 1),
        "latency_p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def batching_stats(before: dict[str, float], after: dict[str, float]) -> dict:
    delta = {name: after[name] - before[name] for name in SERVER_METRICS}

    def mean(name: str) -> float:
        count = delta[f"{name}_count"]
        return delta[f"{name}_sum"] / count if count else 0.0

    return {"batches": int(delta["translator_batch_size_count"]), "mean_batch_size": round(mean("translator_batch_size"), 2),
            "mean_padding_ratio": round(mean("translator_padding_ratio"), 3),
            "mean_queue_wait_ms": round(1000 * mean("translator_queue_wait_seconds"), 1)}


def run_mode(args: argparse.Namespace, mode: str, sentences: list[str]) -> dict:
    environment = {"TRANSLATOR_DEFAULT_BEAM_SIZE": str(args.beam_size),
                   "TRANSLATOR_QUEUE_LIMIT": str(max(512, args.clients * 2))}
    if MODES[mode]:
        environment["TRANSLATOR_MAX_BATCH_SENTENCES"] = MODES[mode]
    process = None
    url = args.url
    if not url:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        process, url = start_server(args.models_dir, args.threads, environment, args.out.with_name(f"http_load_{mode}.log"))
    try:
        asyncio.run(load(url, sentences[: args.clients], args.clients, args.source, args.target, args.timeout))  # warm caches
        before = server_counters(url)
        result = asyncio.run(load(url, sentences, args.clients, args.source, args.target, args.timeout))
        return {"batching": mode, **result, **batching_stats(before, server_counters(url))}
    finally:
        if process:
            process.send_signal(signal.SIGTERM)
            process.wait(120)


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

    sentences = read_sentences(args.data, args.source, args.limit)
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
