"""The sweep: batching settings × load levels, each point a load run; then the throughput–latency
frontier and the recommendation.

A point is one batching setting (the TRANSLATOR_* variables that shape batches) under one load level
(closed-loop concurrency or open-loop rate). More load raises throughput until the model is busy all
the time, then only latency grows; batching settings move that knee. The Pareto frontier is the set
of points no other point beats on both throughput and p95 latency; the recommendation is the
frontier's highest throughput whose p95 meets the user's target without rejections or errors, and
its gain is measured against the service's default setting, which every local sweep includes."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loadtest.ceiling import ClientView
from loadtest.load import Latency, LoadResult
from loadtest.scrape import ServerView

# service.config's defaults, not imported (that imports onnxruntime); tests/test_tuning.py checks they agree.
DEFAULT_BUCKETS = (16, 32, 64, 128)
MAX_REJECTED_SHARE = 0.01  # a point that turns away more than 1 % of requests is past capacity, however fast


def edges_text(edges: tuple[int, ...]) -> str:
    return ",".join(map(str, edges))


class BatchingSetting(BaseModel):
    """The batcher's knobs, as the service reads them from the environment."""

    model_config = ConfigDict(frozen=True)

    scheduler: Literal["continuous", "batch"] = "batch"
    batch_token_budget: int = Field(2048, ge=1)
    max_batch_sentences: int = Field(32, ge=1)
    max_wait_ms: float = Field(0.0, ge=0)
    length_buckets: tuple[int, ...] = DEFAULT_BUCKETS
    inference_workers: int = Field(-1, ge=-1)  # -1: the service's default (one per usable CPU, at most 4)
    inference_worker_kind: Literal["auto", "process", "thread"] = "auto"  # auto: the service's (processes, batch scheduler)

    def effective(self) -> "BatchingSetting":
        """The same setting with the knobs its scheduler ignores at their defaults (continuous batching has no
        batch token budget, wait or length buckets), so that the grid does not measure one setting twice."""
        if self.scheduler == "batch":
            return self
        return BatchingSetting(scheduler="continuous", max_batch_sentences=self.max_batch_sentences)  # one worker

    def environment(self) -> dict[str, str]:
        return {"TRANSLATOR_SCHEDULER": self.scheduler, "TRANSLATOR_BATCH_TOKEN_BUDGET": str(self.batch_token_budget),
                "TRANSLATOR_MAX_BATCH_SENTENCES": str(self.max_batch_sentences),
                "TRANSLATOR_MAX_WAIT_MS": f"{self.max_wait_ms:g}",
                "TRANSLATOR_LENGTH_BUCKETS": edges_text(self.length_buckets),
                "TRANSLATOR_INFERENCE_WORKERS": str(self.inference_workers),
                "TRANSLATOR_INFERENCE_WORKER_KIND": self.inference_worker_kind}

    def label(self) -> str:
        defaults = " (defaults)" if self == BatchingSetting() else ""
        if self.scheduler == "continuous":
            return f"continuous, ≤{self.max_batch_sentences} sent.{defaults}"
        return (f"batch, budget {self.batch_token_budget}, ≤{self.max_batch_sentences} sent., wait {self.max_wait_ms:g} ms, "
                f"buckets {edges_text(self.length_buckets)}"
                + (f", {self.inference_workers} worker{'s' * (self.inference_workers != 1)}" if self.inference_workers != -1 else "")
                + (f", worker {self.inference_worker_kind}s" if self.inference_worker_kind != "auto" else "")
                + defaults)


class LoadLevel(BaseModel):
    model_config = ConfigDict(frozen=True)

    concurrency: int | None = None
    rate: float | None = None

    def label(self) -> str:
        if self.concurrency:
            return f"{self.concurrency} client{'s' * (self.concurrency != 1)}"
        return f"{self.rate:g} req/s"


class SweepGrid(BaseModel):
    """Every combination of the setting axes is a setting; every setting runs every load level."""

    scheduler: list[Literal["continuous", "batch"]] = ["continuous", "batch"]
    batch_token_budget: list[int] = [2048]
    max_batch_sentences: list[int] = [8, 32]
    max_wait_ms: list[float] = [0.0, 5.0]
    length_buckets: list[tuple[int, ...]] = [DEFAULT_BUCKETS]
    inference_workers: list[int] = [-1]
    inference_worker_kind: list[Literal["auto", "process", "thread"]] = ["auto"]
    concurrency: list[int] = [1, 4, 16, 32]
    rate: list[float] = []  # when given, open-loop levels instead of concurrency
    seconds_per_point: float = Field(20.0, gt=0)
    warmup_per_point: float = Field(3.0, ge=0)
    with_defaults: bool = Field(True, description="measure the service's default setting too (first), as the baseline")

    def settings(self) -> list[BatchingSetting]:
        grid = []
        for c, b, s, w, e, n, k in itertools.product(self.scheduler, self.batch_token_budget, self.max_batch_sentences,
                                                     self.max_wait_ms, self.length_buckets, self.inference_workers,
                                                     self.inference_worker_kind):
            setting = BatchingSetting(scheduler=c, batch_token_budget=b, max_batch_sentences=s, max_wait_ms=w,
                                      length_buckets=e, inference_workers=n, inference_worker_kind=k).effective()
            if setting not in grid:
                grid.append(setting)
        return [BatchingSetting()] + grid if self.with_defaults and BatchingSetting() not in grid else grid

    def levels(self) -> list[LoadLevel]:
        if self.rate:
            return [LoadLevel(rate=r) for r in self.rate]
        return [LoadLevel(concurrency=c) for c in self.concurrency]


class SweepPoint(BaseModel):
    setting: BatchingSetting | None = Field(description="None: a server at a URL, run as it is configured")
    level: LoadLevel
    requests: int
    ok: int
    rejected: int
    errors: int
    requests_per_s: float
    target_tokens_per_s: float
    latency: Latency | None
    server: ServerView | None
    rss_bytes: int | None = Field(None, description="server resident memory after the point")
    peak_rss_bytes: int | None = Field(None, description="server peak resident memory so far (VmHWM)")
    client: ClientView | None = Field(None, description="the load generator's CPU and share of its own ceiling")
    length_latency: list[tuple[int, float]] = Field(
        default_factory=list, description="(source tokens, latency ms) of answered single-text requests, for the plots")

    @classmethod
    def from_load(cls, setting: BatchingSetting | None, level: LoadLevel, result: LoadResult,
                  rss_bytes: int | None = None, peak_rss_bytes: int | None = None) -> "SweepPoint":
        samples = [(r.source_tokens, r.latency_ms) for r in result.records if r.status == 200 and r.texts == 1]
        return cls(setting=setting, level=level, requests=result.requests, ok=result.ok, rejected=result.rejected,
                   errors=result.errors, requests_per_s=result.requests_per_s,
                   target_tokens_per_s=result.target_tokens_per_s, latency=result.latency, server=result.server,
                   rss_bytes=rss_bytes, peak_rss_bytes=peak_rss_bytes, client=result.client, length_latency=samples)

    @property
    def p95_ms(self) -> float:
        return self.latency.p95_ms if self.latency else float("inf")

    def healthy(self) -> bool:
        """Answered everything it could: no errors, rejections within MAX_REJECTED_SHARE."""
        return self.ok > 0 and self.errors == 0 and self.rejected <= MAX_REJECTED_SHARE * self.requests

    def setting_label(self) -> str:
        return self.setting.label() if self.setting else "as configured at the URL"


def pareto_frontier(points: list[SweepPoint]) -> list[int]:
    """Indexes of the healthy points that no other healthy point beats on both throughput (higher)
    and p95 latency (lower), by increasing p95."""
    healthy = [i for i, p in enumerate(points) if p.healthy()]

    def beaten(i: int) -> bool:
        a = points[i]
        return any(b.target_tokens_per_s >= a.target_tokens_per_s and b.p95_ms <= a.p95_ms
                   and (b.target_tokens_per_s > a.target_tokens_per_s or b.p95_ms < a.p95_ms)
                   for b in (points[j] for j in healthy if j != i))

    return sorted((i for i in healthy if not beaten(i)), key=lambda i: (points[i].p95_ms, -points[i].target_tokens_per_s))


class Recommendation(BaseModel):
    point: int | None = Field(description="index into the sweep's points; None when no point was healthy")
    met_target: bool
    reason: str


def recommend(points: list[SweepPoint], p95_target_ms: float) -> Recommendation:
    """Most throughput within the p95 target; failing that, the frontier's lowest latency, said plainly."""
    frontier = pareto_frontier(points)
    if not frontier:
        return Recommendation(point=None, met_target=False,
                              reason="no point answered without errors or heavy rejection: nothing to recommend")
    within = [i for i in frontier if points[i].p95_ms <= p95_target_ms]
    if within:
        best = max(within, key=lambda i: points[i].target_tokens_per_s)
        p = points[best]
        return Recommendation(point=best, met_target=True, reason=(
            f"highest throughput with p95 ≤ {p95_target_ms:g} ms: {p.target_tokens_per_s:.1f} target tokens/s at "
            f"{p.level.label()}, p95 {p.p95_ms:.0f} ms"))
    fastest = frontier[0]
    p = points[fastest]
    return Recommendation(point=fastest, met_target=False, reason=(
        f"no point met p95 ≤ {p95_target_ms:g} ms; the lowest p95 was {p.p95_ms:.0f} ms ({p.level.label()}): "
        "a faster machine, fewer threads competing, greedy search or shorter inputs are needed for that target"))


class Gain(BaseModel):
    """The recommendation against the service's defaults, both at their best load level within the target."""

    defaults_point: int | None = Field(description="the defaults' fastest healthy point within the target, if any")
    ratio: float | None = Field(description="recommended / defaults target tokens/s; None when not comparable")
    text: str


def gain_over_defaults(points: list[SweepPoint], recommendation: Recommendation, p95_target_ms: float) -> Gain:
    measured = [i for i, p in enumerate(points) if p.setting == BatchingSetting()]
    if not measured:
        return Gain(defaults_point=None, ratio=None, text="the service's default setting was not measured")
    within = [i for i in measured if points[i].healthy() and points[i].p95_ms <= p95_target_ms]
    if recommendation.point is None or not recommendation.met_target:
        return Gain(defaults_point=None, ratio=None, text="no recommendation within the target to compare with the defaults")
    chosen = points[recommendation.point]
    if not within:
        return Gain(defaults_point=None, ratio=None, text=(
            f"the defaults met p95 ≤ {p95_target_ms:g} ms at no load level measured; the recommendation does, "
            f"with {chosen.target_tokens_per_s:.1f} target tokens/s"))
    best = max(within, key=lambda i: points[i].target_tokens_per_s)
    base = points[best]
    ratio = chosen.target_tokens_per_s / base.target_tokens_per_s if base.target_tokens_per_s else None
    if chosen.setting == base.setting:
        return Gain(defaults_point=best, ratio=ratio, text="the service's defaults are the recommendation: no gain to be had")
    return Gain(defaults_point=best, ratio=ratio, text=(
        f"{chosen.target_tokens_per_s:.1f} target tokens/s against the defaults' {base.target_tokens_per_s:.1f} "
        f"(at {base.level.label()}, p95 {base.p95_ms:.0f} ms), both within p95 ≤ {p95_target_ms:g} ms"
        + (f": {ratio - 1:+.0%}" if ratio else "")))
