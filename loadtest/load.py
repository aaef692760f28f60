"""`translator load`: a load generator for any running translator service.

    translator load --url http://127.0.0.1:8000 --concurrency 16 --duration 30
    translator load --url http://127.0.0.1:8000 --rate 20 --duration 60 --mix 1-16:0.6,17-48:0.3,49-:0.1 --json load.json
    translator load --url http://127.0.0.1:8000 --data my_sentences.txt --requests 500
    translator load --url http://127.0.0.1:8000 --concurrency 32 --generator wrk      # the compiled generator

Closed loop (`--concurrency N`): N clients, each sending its next request when the previous one is
answered; the server sets the pace, so this measures capacity. Open loop (`--rate R`): requests
arrive as a Poisson process of R per second whatever the server does, as real users do; latency is
counted from each request's scheduled arrival, so a server that falls behind is not flattered by
requests the generator failed to send in time.

Requests go to POST /v1/translate (its answer carries per-text token counts). 429 and 503 are counted
as rejections (the service's backpressure), apart from errors (anything else that is not a 200, and
connection failures). Latency percentiles cover answered (200) requests. The server's side (batch
sizes, padding, queue wait) comes from /metrics, read before and after: deltas over the run.

The generator is aiohttp on uvloop (about 0.15 ms of CPU per request here, a tenth of httpx's), and
it measures itself: first the same generator at the same concurrency against a stub server that
answers at once (loadtest.stub), which is its own ceiling; the report then says how many cores the
client used and whether the run came near that ceiling, i.e. whether the client rather than the
server set the pace (loadtest.ceiling). `--generator wrk` drives Debian's wrk instead (closed loop
only, no per-request records; loadtest.wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import uvloop
from pydantic import BaseModel, Field, model_validator
from tqdm import tqdm

from loadtest.ceiling import ClientCeiling, ClientView, client_view
from loadtest.corpus import SentencePicker, counter_for, parse_mix, read_corpus
from loadtest.scrape import MetricsSnapshot, ServerView, server_view

REJECTED = (429, 503)  # the service's "too busy, retry later" answers
OPEN_LOOP_CONNECTIONS = 512  # an open loop needs a connection per request in flight
METRICS_SETTLE_S = 0.1  # the server records a request's duration just after answering it
GENERATOR = "aiohttp on uvloop (Python)"
CEILING_S = 3.0  # seconds of the generator against the stub server
CEILING_CONNECTIONS = 64  # an open loop's ceiling is measured as a closed loop of this many connections


class LoadSpec(BaseModel):
    url: str
    source: str = "en"
    target: str = "de"
    concurrency: int | None = Field(None, ge=1, description="closed loop: clients, each waiting for its answer")
    rate: float | None = Field(None, gt=0, description="open loop: Poisson arrivals per second")
    duration_s: float | None = Field(30.0, gt=0, description="stop sending after this long")
    max_requests: int | None = Field(None, ge=1, description="stop sending after this many")
    warmup_s: float = Field(0.0, ge=0, description="load of the same shape first, not measured")
    texts_per_request: int = Field(1, ge=1)
    beam_size: int | None = Field(None, ge=1, description="sent with each request; None = the server's default")
    timeout_s: float = Field(120.0, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def one_shape(self) -> "LoadSpec":
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("give a concurrency (closed loop) or a rate (open loop), not both")
        if self.duration_s is None and self.max_requests is None:
            raise ValueError("give a duration, a number of requests, or both")
        return self

    def describe(self) -> str:
        shape = (f"closed loop, {self.concurrency} client{'s' * (self.concurrency != 1)}" if self.concurrency
                 else f"open loop, Poisson {self.rate:g} requests/s")
        limits = [f"{self.duration_s:g} s"] if self.duration_s else []
        limits += [f"at most {self.max_requests} requests"] if self.max_requests else []
        return f"{shape}, {', '.join(limits)}"

    def request_body(self, texts: list[str]) -> dict:
        """The JSON body of one `POST /v1/translate` of this load (the wrk driver sends it too)."""
        body: dict = {"text": texts if len(texts) > 1 else texts[0], "source": self.source, "target": self.target}
        if self.beam_size:
            body["beam_size"] = self.beam_size
        return body


@dataclass
class RequestRecord:
    at_s: float  # scheduled start, seconds after the run began
    latency_ms: float
    status: int  # 0 = no HTTP answer (connection error, client timeout)
    texts: int
    chars: int
    source_tokens: int  # from the answer; 0 unless 200
    target_tokens: int


class Latency(BaseModel):
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


class LoadResult(BaseModel):
    spec: LoadSpec
    elapsed_s: float = Field(description="from the first request sent to the last answer")
    requests: int
    ok: int
    rejected: int = Field(description="429 and 503 answers")
    errors: int = Field(description="other failures, connection errors included")
    error_examples: list[str]
    requests_per_s: float = Field(description="answered (200) requests per second")
    target_tokens_per_s: float
    source_tokens: int
    target_tokens: int
    latency: Latency | None = Field(description="answered requests only; None when none was answered")
    server: ServerView | None
    server_note: str | None = None
    client: ClientView | None = Field(None, description="the load generator's CPU and its own ceiling")
    records: list[RequestRecord] = Field(default_factory=list, repr=False)

    def summary(self) -> str:
        lines = [f"{self.spec.describe()}: {self.requests} requests ({self.ok} ok, {self.rejected} rejected 429/503, "
                 f"{self.errors} errors) in {self.elapsed_s:.1f} s",
                 f"throughput: {self.requests_per_s:.2f} requests/s, {self.target_tokens_per_s:.1f} target tokens/s"]
        if self.latency:
            lat = self.latency
            lines.append(f"latency (answered): p50 {lat.p50_ms:.0f} ms, p90 {lat.p90_ms:.0f}, p95 {lat.p95_ms:.0f}, "
                         f"p99 {lat.p99_ms:.0f}, max {lat.max_ms:.0f}")
        if self.server:
            s = self.server
            lines.append(f"server (/metrics deltas): {s.batches} batches, mean {s.mean_batch_size} sentences and "
                         f"{s.mean_batch_tokens} padded tokens per batch, padding {s.mean_padding_ratio}, "
                         f"queue wait {s.mean_queue_wait_ms} ms")
        lines += [f"server: {self.server_note}"] if self.server_note else []
        lines += [self.client.text()] if self.client else []
        lines += [f"e.g. {example}" for example in self.error_examples[:3]]
        return "\n".join(lines)


@dataclass
class RunLog:
    """Records of one run, with running counts for the progress bar."""

    records: list[RequestRecord] = field(default_factory=list)
    ok: int = 0
    rejected: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, record: RequestRecord, problem: str | None) -> None:
        self.records.append(record)
        if record.status == 200:
            self.ok += 1
        elif record.status in REJECTED:
            self.rejected += 1
        else:
            self.errors += 1
        if problem and len(self.examples) < 5:
            self.examples.append(problem)


async def send(client: aiohttp.ClientSession, spec: LoadSpec, texts: list[str], scheduled: float, origin: float,
               log: RunLog) -> None:
    status = source_tokens = target_tokens = 0
    problem = None
    try:
        async with client.post("/v1/translate", json=spec.request_body(texts)) as response:
            status = response.status
            if status == 200:
                items = (await response.json())["translations"]
                source_tokens = sum(item["source_tokens"] for item in items)
                target_tokens = sum(item["target_tokens"] for item in items)
            else:
                problem = f"HTTP {status}: {(await response.text())[:200]}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        problem = f"{type(error).__name__}: {error}"
    log.add(RequestRecord(round(scheduled - origin, 4), round((time.perf_counter() - scheduled) * 1000, 2), status,
                          len(texts), sum(map(len, texts)), source_tokens, target_tokens), problem)


async def drive(client: aiohttp.ClientSession, spec: LoadSpec, picker: SentencePicker, duration_s: float | None,
                max_requests: int | None, log: RunLog) -> float:
    """Sends load of the spec's shape until the duration or the request count runs out and every
    answer is in; → the seconds that took."""
    origin = time.perf_counter()
    end = origin + duration_s if duration_s else math.inf
    issued = 0

    def texts() -> list[str]:
        return [picker.pick() for _ in range(spec.texts_per_request)]

    if spec.concurrency:
        async def client_loop() -> None:
            nonlocal issued
            while time.perf_counter() < end and (max_requests is None or issued < max_requests):
                issued += 1  # claimed before awaiting, so clients never overshoot max_requests
                await send(client, spec, texts(), time.perf_counter(), origin, log)

        await asyncio.gather(*(client_loop() for _ in range(spec.concurrency)))
    else:
        arrivals = random.Random(spec.seed)
        in_flight: set[asyncio.Task] = set()
        scheduled = origin
        while max_requests is None or issued < max_requests:
            scheduled += arrivals.expovariate(spec.rate)
            if scheduled >= end:
                break
            if (delay := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            issued += 1
            task = asyncio.create_task(send(client, spec, texts(), scheduled, origin, log))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
    return time.perf_counter() - origin


async def metrics_of(client: aiohttp.ClientSession) -> MetricsSnapshot | None:
    try:
        async with client.get("/metrics") as response:
            return MetricsSnapshot.parse(await response.text()) if response.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None


async def show_progress(bar: tqdm, log: RunLog, spec: LoadSpec) -> None:
    started = time.perf_counter()
    while True:
        await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - started
        bar.n = min(round(elapsed), bar.total) if spec.duration_s else len(log.records)
        bar.set_postfix(ok=log.ok, rejected=log.rejected, errors=log.errors, rps=f"{log.ok / elapsed:.1f}", refresh=False)
        bar.refresh()


def percentiles(latencies_ms: list[float]) -> Latency | None:
    if not latencies_ms:
        return None
    values = np.asarray(latencies_ms)
    p50, p90, p95, p99 = (round(float(np.percentile(values, q)), 1) for q in (50, 90, 95, 99))
    return Latency(p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99, mean_ms=round(float(values.mean()), 1),
                   max_ms=round(float(values.max()), 1))


async def run_load(spec: LoadSpec, picker: SentencePicker, progress: bool = True, label: str = "load",
                   ceiling: ClientCeiling | None = None) -> LoadResult:
    """One run of `spec`; `ceiling` (client_ceiling's, measured beforehand) makes the result say whether the
    client set the pace."""
    connector = aiohttp.TCPConnector(limit=spec.concurrency or OPEN_LOOP_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(spec.url.rstrip("/") + "/", connector=connector, timeout=timeout) as client:
        if spec.warmup_s:
            await drive(client, spec, picker, spec.warmup_s, None, RunLog())
        before = await metrics_of(client)
        log = RunLog()
        total = math.ceil(spec.duration_s) if spec.duration_s else spec.max_requests
        bar = tqdm(total=total, desc=label, unit="s" if spec.duration_s else "req", disable=None if progress else True,
                   leave=False, file=sys.stderr, dynamic_ncols=True)
        ticker = asyncio.create_task(show_progress(bar, log, spec))
        cpu_before = time.process_time()
        try:
            elapsed = await drive(client, spec, picker, spec.duration_s, spec.max_requests, log)
            cpu_s = time.process_time() - cpu_before
        finally:
            ticker.cancel()
            bar.close()
        await asyncio.sleep(METRICS_SETTLE_S)
        after = await metrics_of(client)
    ok = [r for r in log.records if r.status == 200]
    target_tokens = sum(r.target_tokens for r in ok)
    return LoadResult(
        spec=spec, elapsed_s=round(elapsed, 3), requests=len(log.records), ok=log.ok, rejected=log.rejected,
        errors=log.errors, error_examples=log.examples, requests_per_s=round(log.ok / elapsed, 3),
        target_tokens_per_s=round(target_tokens / elapsed, 2), source_tokens=sum(r.source_tokens for r in ok),
        target_tokens=target_tokens, latency=percentiles([r.latency_ms for r in ok]),
        server=server_view(before, after) if before and after else None,
        server_note=None if before and after else "no Prometheus /metrics at this URL: no server-side view",
        client=client_view(GENERATOR, cpu_s, elapsed, log.ok / elapsed, ceiling), records=log.records)


def load(spec: LoadSpec, picker: SentencePicker, progress: bool = True, label: str = "load",
         ceiling: ClientCeiling | None = None) -> LoadResult:
    """run_load on uvloop, for callers without an event loop."""
    return uvloop.run(run_load(spec, picker, progress, label, ceiling))


def client_ceiling(spec: LoadSpec, texts: list[str], seconds: float = CEILING_S) -> ClientCeiling:
    """This generator's own ceiling for runs shaped like `spec`: the same requests (drawn from `texts`) from as
    many closed-loop clients (CEILING_CONNECTIONS for an open loop) against loadtest.stub for `seconds`."""
    from loadtest.stub import StubServer

    connections = spec.concurrency or CEILING_CONNECTIONS
    with StubServer() as stub:
        probe = spec.model_copy(update=dict(url=stub.url, concurrency=connections, rate=None, duration_s=seconds,
                                            max_requests=None, warmup_s=min(0.5, seconds / 4)))
        result = load(probe, SentencePicker(texts, seed=spec.seed), progress=False)
    return ClientCeiling(generator=GENERATOR, connections=connections, requests_per_s=result.requests_per_s,
                         cpu_ms_per_request=round(result.client.cpu_s / result.ok * 1000, 4) if result.ok else None,
                         seconds=result.elapsed_s)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="translator load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"),
                        help="a TSV split with columns.json beside it (the --source column), or one sentence per line")
    parser.add_argument("--source", default="en")
    parser.add_argument("--target", default="de")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--concurrency", type=int, help="closed loop: this many clients (default 8)")
    shape.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (0 = until --requests are sent)")
    parser.add_argument("--requests", type=int, help="stop after this many requests")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of unmeasured load first")
    parser.add_argument("--mix", help="length mix by source tokens, LOW-HIGH:WEIGHT,...: e.g. 1-16:0.6,17-48:0.3,49-:0.1 "
                                      "(default: the corpus as it is)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"),
                        help="where the package's tokenizer is, to count tokens for --mix (else the server counts)")
    parser.add_argument("--order", choices=["random", "sequential"], default="random",
                        help="sentences at random, or in corpus order (ignored with --mix)")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--beam-size", type=int, help="sent with every request (default: the server's)")
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout per request, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generator", choices=["auto", "python", "wrk"], default="auto",
                        help="wrk: Debian's wrk, closed loop only, no per-request records, tokens from the server's "
                             "/metrics, a tenth of python's CPU; python: aiohttp on uvloop, closed or open loop, every "
                             "request recorded; auto (default): wrk for a closed loop without --records when wrk is "
                             "installed, else python")
    parser.add_argument("--ceiling-seconds", type=float, default=CEILING_S,
                        help="first measure the generator's own ceiling against a stub server for this long (0: skip)")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    parser.add_argument("--records", action="store_true", help="with --json: include every request's record")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def picker_for(sentences: list[str], mix: str | None, order: str, models_dir: Path | None, url: str,
               source: str, target: str, seed: int) -> SentencePicker:
    if not mix:
        return SentencePicker(sentences, order, seed)
    counter = counter_for(models_dir, url, source, target)
    return SentencePicker.by_mix(sentences, counter.count(sentences), parse_mix(mix), seed)


def generator_for(args: argparse.Namespace) -> str:
    if args.generator != "auto":
        return args.generator
    from loadtest.wrk import wrk_installed

    return "wrk" if not args.rate and not args.records and wrk_installed() else "python"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = LoadSpec(url=args.url, source=args.source, target=args.target,
                    concurrency=args.concurrency or (None if args.rate else 8), rate=args.rate,
                    duration_s=args.duration or None, max_requests=args.requests, warmup_s=args.warmup,
                    texts_per_request=args.texts_per_request, beam_size=args.beam_size, timeout_s=args.timeout,
                    seed=args.seed)
    sentences = read_corpus(args.data, args.source)
    picker = picker_for(sentences, args.mix, args.order, args.models_dir, args.url, args.source, args.target, args.seed)
    if generator_for(args) == "wrk":
        from loadtest.wrk import bodies_for, wrk_ceiling, wrk_load

        sample = bodies_for(spec, SentencePicker(sentences[:1024], "sequential"))
        ceiling = wrk_ceiling(sample, spec.concurrency, args.ceiling_seconds) if args.ceiling_seconds else None
        result = wrk_load(spec, picker, ceiling)
    else:
        ceiling = client_ceiling(spec, sentences[:1024], args.ceiling_seconds) if args.ceiling_seconds else None
        result = load(spec, picker, progress=not args.no_progress, ceiling=ceiling)
    print(result.summary())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(result.model_dump_json(indent=2, exclude=None if args.records else {"records"}) + "\n")
        print(f"written: {args.json}")
    return 0 if result.ok else 1


if __name__ == "__main__":  # the package's module, not __main__'s copy: loadtest.wrk builds its classes
    from loadtest.load import main as package_main

    sys.exit(package_main())
