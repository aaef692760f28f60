"""Memory soak (docs/reliability.md): tens of thousands of requests with input lengths from the
shortest to the model's maximum in random order, against the real server on 127.0.0.1, with the
server's resident memory (VmRSS from /proc) sampled as they go.

    python -m bench.soak --requests 20000 --json results/reliability/soak.json
    python -m bench.soak --requests 400 --warmup 100 --max-duration 60             # a quick look

ONNX Runtime's memory arena grows whenever a batch is larger than any before, so the resident set
climbs while new shapes appear and must then stay flat. The first --warmup requests are the
warm-up; after it, the growth is the mean resident set of the last quarter of the samples over the
mean of the first quarter, minus one: the check wants it under --max-growth (10 %). Every request
must be answered 200. The curve (requests done, seconds, MiB) is in the JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.reliability import finish, parser_for, server_environment
from loadtest.corpus import (SentencePieceCounter, package_max_source_tokens, package_tokenizer, read_corpus,
                             texts_of_length)
from loadtest.server import LocalServer

MIB = 1 << 20
VARIANTS = 4  # texts per length, so that equal lengths are not equal texts


def texts_by_length(models_dir: Path, data: Path, seed: int) -> dict[int, list[str]]:
    """Texts of every length from 2 source tokens (one piece and EOS) to the package's maximum."""
    tokenizer = package_tokenizer(models_dir, "en", "de")
    longest = package_max_source_tokens(models_dir, "en", "de")
    if tokenizer is None or longest is None:
        raise SystemExit(f"no en-de model package under {models_dir}")
    counter, sentences = SentencePieceCounter(tokenizer), read_corpus(data, "en")
    pool = {length: texts_of_length(sentences, counter, length, VARIANTS, seed) for length in range(2, longest + 1)}
    return {length: texts for length, texts in pool.items() if texts}


async def soak(url: str, pool: dict[int, list[str]], args: argparse.Namespace, rss) -> dict:
    chance, statuses, curve = random.Random(args.seed), Counter(), []
    lengths = list(pool)
    done = issued = 0
    started = time.perf_counter()
    end = started + args.max_duration

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done, issued
        while issued < args.requests and time.perf_counter() < end:
            issued += 1
            text = chance.choice(pool[chance.choice(lengths)])  # a length uniformly, then one of its texts
            try:
                response = await http.post("/v1/translate", json={"text": text, "source": "en", "target": "de"})
                statuses[str(response.status_code)] += 1
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1
            done += 1
            if done % args.sample_every == 0:
                curve.append({"requests": done, "seconds": round(time.perf_counter() - started, 1), "rss_mib": round(rss() / MIB, 1)})

    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=args.timeout) as http:
        curve.append({"requests": 0, "seconds": 0.0, "rss_mib": round(rss() / MIB, 1)})
        await asyncio.gather(*(client(http) for _ in range(args.concurrency)))
    return {"requests": done, "seconds": round(time.perf_counter() - started, 1), "statuses": dict(statuses),
            "stopped_early": done < args.requests, "curve": curve}


def growth(curve: list[dict], warmup: int) -> dict:
    """Resident set after the warm-up: mean of the last quarter of samples over the first quarter."""
    after = [point["rss_mib"] for point in curve if point["requests"] > warmup]
    if len(after) < 4:
        return {"samples_after_warmup": len(after), "growth": None}
    quarter = len(after) // 4
    first, last = sum(after[:quarter]) / quarter, sum(after[-quarter:]) / quarter
    return {"samples_after_warmup": len(after), "first_quarter_mib": round(first, 1), "last_quarter_mib": round(last, 1),
            "growth": round(last / first - 1, 4), "min_mib": min(after), "max_mib": max(after)}


def run(args: argparse.Namespace) -> dict:
    pool = texts_by_length(args.models_dir, args.data, args.seed)
    environment = server_environment(args)
    with LocalServer(args.models_dir, environment, args.log) as server:
        server.wait_ready()
        ready_mib = round(server.rss_bytes() / MIB, 1)
        result = asyncio.run(soak(server.url, pool, args, lambda: server.rss_bytes() or 0))
        peak_mib = round((server.peak_rss_bytes() or 0) / MIB, 1)
        exit_status = server.stop()
    memory = growth(result["curve"], args.warmup)
    answered = result["statuses"].get("200", 0)
    report = {
        "command": "python -m bench.soak " + " ".join(sys.argv[1:]), "server_environment": environment,
        "lengths": {"shortest": min(pool), "longest": max(pool), "texts": sum(map(len, pool.values()))},
        "concurrency": args.concurrency, "warmup_requests": args.warmup, "rss_at_ready_mib": ready_mib,
        "peak_rss_mib": peak_mib, **{k: v for k, v in result.items() if k != "curve"}, "memory": memory,
        "exit_status": exit_status, "curve": result["curve"],
    }
    report["checks"] = {
        "every request answered 200": {"value": result["requests"] - answered, "wanted": "== 0",
                                       "passed": answered == result["requests"] > 0},
        "resident memory flat after warm-up": {"value": memory["growth"], "wanted": f"< {args.max_growth:g}",
                                               "passed": memory["growth"] is not None and memory["growth"] < args.max_growth},
        "all requests sent": {"value": result["requests"], "wanted": f"== {args.requests}", "passed": not result["stopped_early"]},
    }
    return report


def summary(report: dict) -> str:
    memory, lengths = report["memory"], report["lengths"]
    answered = f"{report['requests']} requests in {report['seconds']} s, lengths {lengths['shortest']}–{lengths['longest']} tokens"
    resident = (f"resident: {report['rss_at_ready_mib']} MiB when ready, peak {report['peak_rss_mib']} MiB; after the warm-up "
                f"first quarter {memory.get('first_quarter_mib')} MiB, last quarter {memory.get('last_quarter_mib')} MiB")
    return f"{answered}, statuses {report['statuses']}\n{resident}, growth {memory['growth']}"


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("soak", __doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000, help="requests before the memory curve counts")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    parser.add_argument("--sample-every", type=int, default=100, help="requests between two memory samples")
    parser.add_argument("--max-duration", type=float, default=3600.0, help="stop sending after this many seconds")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--timeout", type=float, default=120.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    return finish(run, summary, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
