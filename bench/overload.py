"""Overload test (docs/reliability.md): the real server on 127.0.0.1, pushed to several times its
capacity for a fixed time, then back to a light load.

    python -m bench.overload --duration 60 --factor 4 --json results/reliability/overload.json
    python -m bench.overload --duration 10 --capacity-s 5 --recovery-s 5      # a quick look

1. idle: sequential requests, the latency of an unloaded server;
2. capacity: a closed loop of --clients clients (loadtest.load) for --capacity-s seconds: answered
   requests per second with the server saturated;
3. overload: Poisson arrivals at --factor × capacity for --duration seconds, each request one test
   sentence, whatever the server does;
4. recovery: arrivals at --recovery-factor × capacity for --recovery-s seconds;
5. SIGTERM: the server must exit cleanly.

Every request is recorded: status, Retry-After, latency from the moment it was sent and from the
moment it was due. The checks: no connection errors and no 5xx but 503 (that is, no 500s), every 429/503
carries Retry-After, every answer within the request deadline, rejections fast (p99 under
--reject-p99-ms), accepted throughput during overload at least --throughput-share of capacity, and after
the load drops every request answered. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Coroutine, TypeVar

import aiohttp
import uvloop

from bench.reliability import finish, parser_for, server_environment
from loadtest.corpus import SentencePicker, read_corpus
from loadtest.load import LoadSpec, Latency, percentiles, run_load
from loadtest.scrape import scrape
from loadtest.server import LocalServer

T = TypeVar("T")
RETRY_LATER = (429, 503)
DEADLINE_GRACE_S = 1.0  # the server answers a request at its deadline; allow for the answer's way back
SETTLE_S = 2.0  # accepted throughput is counted after the queue has filled
# The service under test: a deadline the overload must respect, and the default queue.
SERVER_ENVIRONMENT = {"TRANSLATOR_REQUEST_DEADLINE_S": "10", "TRANSLATOR_LOG_LEVEL": "warning"}


@dataclass
class Answer:
    due_s: float  # when it was due, seconds after its phase began
    done_s: float  # when its answer (or error) came
    latency_ms: float  # from the moment it was sent
    lag_ms: float  # how late the client sent it (a busy client machine shows here, not in latency)
    status: int  # 0: no HTTP answer (connection error, client timeout)
    retry_after: str | None
    error: str | None


async def fire(client: aiohttp.ClientSession, body: dict, due: float, origin: float, answers: list[Answer]) -> None:
    sent = time.perf_counter()
    status, retry_after, error = 0, None, None
    try:
        async with client.post("/v1/translate", json=body) as response:
            await response.read()
            status, retry_after = response.status, response.headers.get("retry-after")
    except (aiohttp.ClientError, TimeoutError) as failure:
        error = f"{type(failure).__name__}: {failure}"
    now = time.perf_counter()
    answers.append(Answer(round(due - origin, 4), round(now - origin, 4), round((now - sent) * 1000, 2),
                          round((sent - due) * 1000, 2), status, retry_after, error))


async def arrivals(url: str, picker: SentencePicker, rate: float, seconds: float, seed: int,
                   timeout_s: float) -> list[Answer]:
    """Open loop: Poisson arrivals at `rate` per second for `seconds`, each on its own connection if need be.
    aiohttp on uvloop rather than httpx: the client shares the machine's cores with the server, and at
    hundreds of requests per second httpx alone needs most of a core, which shows up as client lag and
    as latency the server did not cause."""
    chance, answers, pending = random.Random(seed), [], set()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)  # no cap: every due request goes out
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout) as client:
        origin = due = time.perf_counter()
        while (due := due + chance.expovariate(rate)) < origin + seconds:
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            body = {"text": picker.pick(), "source": "en", "target": "de"}
            task = asyncio.create_task(fire(client, body, due, origin, answers))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return sorted(answers, key=lambda answer: answer.due_s)


def on_uvloop(work: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


def latency(answers: list[Answer]) -> dict | None:
    summary: Latency | None = percentiles([answer.latency_ms for answer in answers])
    return summary.model_dump() if summary else None


def timeline(answers: list[Answer]) -> list[dict]:
    """Per second of arrivals: how many came, and how they were answered."""
    seconds: dict[int, dict] = {}
    for answer in answers:
        row = seconds.setdefault(int(answer.due_s), {"second": int(answer.due_s), "sent": 0, "ok": 0, "rejected": 0, "failed": 0})
        row["sent"] += 1
        row["ok" if answer.status == 200 else "rejected" if answer.status in RETRY_LATER else "failed"] += 1
    return [seconds[second] for second in sorted(seconds)]


def phase(answers: list[Answer], seconds: float, deadline_s: float) -> dict:
    ok = [a for a in answers if a.status == 200]
    rejected = [a for a in answers if a.status in RETRY_LATER]
    counted = [a for a in ok if SETTLE_S <= a.done_s <= seconds]  # completions inside the phase, queue full
    failures = [a for a in answers if a.status not in (200, *RETRY_LATER)]
    return {
        "seconds": seconds, "requests": len(answers), "ok": len(ok), "rejected": len(rejected),
        "status_counts": {str(s): sum(a.status == s for a in answers) for s in sorted({a.status for a in answers})},
        "connection_errors": sum(a.status == 0 for a in answers),
        "server_errors": sum(a.status >= 500 and a.status != 503 for a in answers),
        "rejections_without_retry_after": sum(not a.retry_after for a in rejected),
        "over_deadline": sum(a.latency_ms > (deadline_s + DEADLINE_GRACE_S) * 1000 for a in answers),
        "accepted_per_s": round(len(counted) / max(seconds - SETTLE_S, 1e-9), 2),
        "ok_latency_ms": latency(ok), "rejection_latency_ms": latency(rejected),
        "client_lag_ms": (percentiles([a.lag_ms for a in answers]) or Latency(**dict.fromkeys(Latency.model_fields, 0.0))).model_dump(),
        "failure_examples": sorted({a.error or f"HTTP {a.status}" for a in failures})[:5],
        "timeline": timeline(answers),
    }


def recovery_seconds(answers: list[Answer]) -> float | None:
    """Seconds after the load dropped until every later request was answered 200 (None: never)."""
    unanswered = [a.due_s for a in answers if a.status != 200]
    if not answers:
        return None
    if not unanswered:
        return 0.0
    later = [a for a in answers if a.due_s > max(unanswered)]
    return round(later[0].due_s, 3) if later else None


def checks(report: dict, args: argparse.Namespace) -> dict[str, dict]:
    overload, recovery = report["overload"], report["recovery"]
    both = (overload, recovery)
    rejection_p99 = (overload["rejection_latency_ms"] or {}).get("p99_ms")
    zero, positive = ("== 0", lambda v: v == 0), ("> 0", lambda v: v > 0)
    found = {
        "no connection errors": (sum(p["connection_errors"] for p in both), *zero),
        "no 500s": (sum(p["server_errors"] for p in both), *zero),
        "every 429/503 has Retry-After": (sum(p["rejections_without_retry_after"] for p in both), *zero),
        "every answer within the deadline": (sum(p["over_deadline"] for p in both), *zero),
        "overload was reached (some rejections)": (overload["rejected"], *positive),
        "rejection p99": (rejection_p99, f"< {args.reject_p99_ms:g} ms", lambda v: v < args.reject_p99_ms),
        "accepted throughput / capacity": (round(overload["accepted_per_s"] / report["capacity"]["requests_per_s"], 3),
                                           f">= {args.throughput_share:g}", lambda v: v >= args.throughput_share),
        "recovered after (s)": (report["recovery_s"], f"<= {args.recovery_within_s:g}", lambda v: v <= args.recovery_within_s),
        "clean exit on SIGTERM": (report["exit_status"], "0 or -15", lambda v: v in (0, -15)),
    }
    return {name: {"value": value, "wanted": wanted, "passed": value is not None and bool(test(value))}
            for name, (value, wanted, test) in found.items()}


def run(args: argparse.Namespace) -> dict:
    picker = SentencePicker(read_corpus(args.data, "en"), "random", args.seed)
    environment = server_environment(args, SERVER_ENVIRONMENT)
    deadline_s = float(environment["TRANSLATOR_REQUEST_DEADLINE_S"])
    timeout_s = deadline_s + 30  # the client waits past the deadline: a late answer is seen, not cut off
    with LocalServer(args.models_dir, environment, args.log) as server:
        server.wait_ready()
        idle = on_uvloop(arrivals(server.url, picker, 5.0, 2.0, args.seed, timeout_s))  # a light trickle
        spec = LoadSpec(url=server.url, concurrency=args.clients, duration_s=args.capacity_s, warmup_s=2.0,
                        timeout_s=timeout_s, seed=args.seed)
        capacity = asyncio.run(run_load(spec, picker, progress=False, label="capacity"))
        rate = args.factor * capacity.requests_per_s
        print(f"capacity {capacity.requests_per_s:.1f} requests/s; overload at {rate:.1f}/s for {args.duration:g} s", file=sys.stderr)
        overload = on_uvloop(arrivals(server.url, picker, rate, args.duration, args.seed + 1, timeout_s))
        calm = on_uvloop(arrivals(server.url, picker, args.recovery_factor * capacity.requests_per_s,
                                    args.recovery_s, args.seed + 2, timeout_s))
        reasons = scrape(server.url).by_label("translator_requests_rejected_total", "reason")
        exit_status = server.stop()
    report = {
        "command": "python -m bench.overload " + " ".join(sys.argv[1:]), "server_environment": environment,
        "idle_latency_ms": latency([a for a in idle if a.status == 200]),
        "capacity": {"clients": args.clients, "seconds": args.capacity_s, "requests_per_s": capacity.requests_per_s,
                     "latency_ms": capacity.latency.model_dump() if capacity.latency else None,
                     "rejected": capacity.rejected, "errors": capacity.errors},
        "offered_per_s": round(rate, 2), "factor": args.factor,
        "overload": phase(overload, args.duration, deadline_s),
        "recovery": phase(calm, args.recovery_s, deadline_s), "recovery_s": recovery_seconds(calm),
        "server_rejections": {reason: int(count) for reason, count in reasons.items() if count},
        "exit_status": exit_status,
    }
    report["checks"] = checks(report, args)
    if args.records:
        report["records"] = {"overload": [asdict(a) for a in overload], "recovery": [asdict(a) for a in calm]}
    return report


def summary(report: dict) -> str:
    o, r = report["overload"], report["recovery"]
    lines = [f"capacity {report['capacity']['requests_per_s']} requests/s; offered {report['offered_per_s']}/s "
             f"({report['factor']:g}×) for {o['seconds']:g} s: {o['requests']} requests, {o['ok']} answered, "
             f"{o['rejected']} rejected, statuses {o['status_counts']}",
             f"accepted {o['accepted_per_s']}/s; answered p99 {(o['ok_latency_ms'] or {}).get('p99_ms')} ms, "
             f"rejections p50 {(o['rejection_latency_ms'] or {}).get('p50_ms')} / p99 {(o['rejection_latency_ms'] or {}).get('p99_ms')} ms",
             f"recovery: {r['requests']} requests, {r['ok']} answered, recovered after {report['recovery_s']} s; "
             f"exit status {report['exit_status']}; the server's rejections by reason: {report['server_rejections']}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("overload", __doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of overload")
    parser.add_argument("--factor", type=float, default=4.0, help="offered load as a multiple of the measured capacity")
    parser.add_argument("--capacity-s", type=float, default=20.0, help="seconds of the capacity measurement")
    parser.add_argument("--clients", type=int, default=64, help="closed-loop clients for the capacity measurement")
    parser.add_argument("--recovery-s", type=float, default=15.0)
    parser.add_argument("--recovery-factor", type=float, default=0.5)
    parser.add_argument("--reject-p99-ms", type=float, default=50.0)
    parser.add_argument("--throughput-share", type=float, default=0.9)
    parser.add_argument("--recovery-within-s", type=float, default=5.0)
    parser.add_argument("--records", action="store_true", help="with --json: every request's record too")
    return parser


def main(argv: list[str] | None = None) -> int:
    return finish(run, summary, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
