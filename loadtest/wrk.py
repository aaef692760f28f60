"""The compiled load generator: Debian's `wrk` (`apt-get install wrk`) driven by a Lua script that posts
JSON request bodies to /v1/translate in turn, cycling, and counts the answers by HTTP status.

A closed loop only (each connection sends its next request when the previous one is answered), with
no per-request records: wrk gives counts and a latency distribution, the server's /metrics give the
tokens. What it buys is a client that costs next to nothing: about 0.01 ms of CPU per request
against the Python generator's 0.15 (aiohttp on uvloop) or 1.6 (httpx) on this project's 2-core
machine (README "Load benchmark"), so on a shared machine nearly all the CPU goes to the server.

    run_wrk(url, bodies, connections=32, duration_s=20)               → WrkRun
    wrk_load(spec, picker)                                            → LoadResult (`translator load --generator wrk`)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

from loadtest.ceiling import ClientCeiling, client_view
from loadtest.corpus import SentencePicker
from loadtest.load import REJECTED, Latency, LoadResult, LoadSpec
from loadtest.scrape import MetricsSnapshot, scrape, server_view, settle
from loadtest.stub import StubServer

GENERATOR = "wrk + Lua (compiled, one thread)"
DRAWN_BODIES = 4096  # bodies drawn from a random or mixed picker; a sequential one gives its corpus once, in order
# Arguments after `--`: BODIES_FILE [MAX_ANSWERS]. MAX_ANSWERS counts per wrk thread (use one thread for an
# exact count). done() prints one line, WRK_RESULT {json}.
SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef("int getpid(void); int kill(int pid, int sig);")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  limit = tonumber(args[2] or "0")
  position, answered, statuses = 0, 0, {}
  headers = {["Content-Type"] = "application/json"}
end

function request()
  position = position % #bodies + 1
  return wrk.format("POST", "/v1/translate", headers, bodies[position])
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  answered = answered + 1
  if limit > 0 and answered >= limit then
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), 2)  -- wrk's main thread sleeps for all of -d; SIGINT, its own stop signal, wakes it
  end
end

function done(summary, latency, requests)
  local totals, counts, quantiles = {}, {}, {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do totals[status] = (totals[status] or 0) + n end
  end
  for status, n in pairs(totals) do counts[#counts + 1] = string.format('"%s": %d', status, n) end
  for _, q in ipairs({50, 90, 95, 99}) do
    quantiles[#quantiles + 1] = string.format('"p%d": %d', q, latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK_RESULT {"duration_us": %d, "requests": %d, "statuses": {%s}, ' ..
    '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_us": {%s, "mean": %.1f, "max": %d}}\n',
    summary.duration, summary.requests, table.concat(counts, ", "), e.connect, e.read, e.write, e.timeout,
    table.concat(quantiles, ", "), latency.mean, latency.max))
end
"""


class WrkRun(BaseModel):
    connections: int
    threads: int
    elapsed_s: float
    statuses: dict[str, int] = Field(description="answers by HTTP status")
    socket_errors: dict[str, int] = Field(description="connect, read, write errors and client timeouts (no answer)")
    latency: Latency | None = Field(description="every answer, whatever its status (wrk keeps one distribution)")
    cpu_s: float = Field(description="wrk's CPU time (user + system)")

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("2"))

    @property
    def rejected(self) -> int:
        return sum(self.statuses.get(str(status), 0) for status in REJECTED)

    @property
    def failed(self) -> int:
        """Answers that were neither 2xx nor a rejection, and requests without an answer."""
        return self.answered - self.ok - self.rejected + sum(self.socket_errors.values())

    def non_2xx(self) -> dict[str, int]:
        return {status: n for status, n in sorted(self.statuses.items()) if not status.startswith("2")}


def wrk_installed() -> bool:
    return shutil.which("wrk") is not None


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise FileNotFoundError("wrk is not installed: `apt-get install wrk` (Debian), or `make system-tools`")
    return found


def body(texts: list[str], spec: LoadSpec) -> str:
    return json.dumps(spec.request_body(texts), ensure_ascii=False)


def run_wrk(url: str, bodies: list[str], connections: int, duration_s: float, *, max_requests: int | None = None,
            timeout_s: float = 120.0, threads: int = 1, cpus: str | None = None) -> WrkRun:
    """wrk against `url`'s /v1/translate with `bodies` in turn for `duration_s` (whole seconds, at least 1), or until
    `max_requests` answers (one thread) with `duration_s` as the cap. `cpus`: taskset's CPU list for wrk."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as scratch:
        script, bodies_file = Path(scratch) / "translate.lua", Path(scratch) / "bodies.jsonl"
        script.write_text(SCRIPT)
        bodies_file.write_text("".join(b.replace("\n", " ") + "\n" for b in bodies), encoding="utf-8")
        command = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
                   f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), url.rstrip("/"), "--", str(bodies_file)]
        command += [str(max_requests)] if max_requests else []
        process = subprocess.Popen((["taskset", "-c", cpus] if cpus else []) + command, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)  # wait4, not wait(): wrk's own CPU time comes with it
        process.returncode = os.waitstatus_to_exitcode(status)
    found = re.search(r"^WRK_RESULT (\{.*\})$", output, re.MULTILINE)
    if not found:
        raise RuntimeError(f"wrk exited with {process.returncode} without a result:\n{output[-2000:]}")
    raw = json.loads(found.group(1))
    us = raw["latency_us"]
    latency = None if not raw["requests"] else Latency(
        p50_ms=us["p50"] / 1000, p90_ms=us["p90"] / 1000, p95_ms=us["p95"] / 1000, p99_ms=us["p99"] / 1000,
        mean_ms=round(us["mean"] / 1000, 3), max_ms=us["max"] / 1000)
    return WrkRun(connections=connections, threads=threads, elapsed_s=raw["duration_us"] / 1e6, statuses=raw["statuses"],
                  socket_errors=raw["socket_errors"], latency=latency, cpu_s=round(usage.ru_utime + usage.ru_stime, 3))


def wrk_ceiling(bodies: list[str], connections: int, seconds: float = 3.0, cpus: str | None = None) -> ClientCeiling:
    """wrk with the same script, bodies and connections against the stub server."""
    with StubServer() as stub:
        run = run_wrk(stub.url, bodies, connections, seconds, cpus=cpus)
    return ClientCeiling(generator=GENERATOR, connections=connections, requests_per_s=round(run.ok / run.elapsed_s, 1),
                         cpu_ms_per_request=round(run.cpu_s / run.ok * 1000, 4) if run.ok else None,
                         seconds=round(run.elapsed_s, 2))


def bodies_for(spec: LoadSpec, picker: SentencePicker) -> list[str]:
    count = len(picker.bins[0]) if picker.order == "sequential" else DRAWN_BODIES
    return [body([picker.pick() for _ in range(spec.texts_per_request)], spec) for _ in range(count)]


def metrics(url: str) -> MetricsSnapshot | None:
    try:
        return scrape(url)
    except Exception:  # noqa: BLE001 - a server without /metrics (or not this service): no server view
        return None


def wrk_load(spec: LoadSpec, picker: SentencePicker, ceiling: ClientCeiling | None = None) -> LoadResult:
    """`translator load --generator wrk`: a closed loop through wrk, as a LoadResult (tokens from /metrics).
    `ceiling` (wrk_ceiling's, measured beforehand) makes the result say whether the client set the pace."""
    if not spec.concurrency:
        raise ValueError("wrk runs a closed loop only: give --concurrency (an open loop needs --generator python)")
    bodies = bodies_for(spec, picker)
    duration = spec.duration_s or 3600.0
    if spec.warmup_s:
        run_wrk(spec.url, bodies, spec.concurrency, spec.warmup_s, timeout_s=spec.timeout_s)
        if metrics(spec.url) is not None:  # the warm-up's last requests must not count as the run's
            settle(spec.url)
    before = metrics(spec.url)
    started = time.perf_counter()
    run = run_wrk(spec.url, bodies, spec.concurrency, duration, max_requests=spec.max_requests, timeout_s=spec.timeout_s)
    time.sleep(0.1)  # the server records a request's duration just after answering it
    after = metrics(spec.url)
    view = server_view(before, after) if before and after else None
    elapsed = run.elapsed_s or time.perf_counter() - started
    return LoadResult(
        spec=spec, elapsed_s=round(elapsed, 3), requests=run.answered + sum(run.socket_errors.values()), ok=run.ok,
        rejected=run.rejected, errors=run.failed,
        error_examples=[f"HTTP {status}: {n} answers" for status, n in run.non_2xx().items() if int(status) not in REJECTED]
        + [f"{kind}: {n}" for kind, n in run.socket_errors.items() if n],
        requests_per_s=round(run.ok / elapsed, 3),
        target_tokens_per_s=round(view.generated_tokens / elapsed, 2) if view else 0.0,
        source_tokens=view.input_tokens if view else 0, target_tokens=view.generated_tokens if view else 0,
        latency=run.latency, server=view,
        server_note=None if view else "no Prometheus /metrics at this URL: no server-side view, and no token counts",
        client=client_view(GENERATOR, run.cpu_s, elapsed, run.ok / elapsed, ceiling))
