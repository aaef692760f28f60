"""The server's own view of a load run: /metrics read before and after, as deltas.

Counters and histograms only ever grow, so `after - before` is exactly what the run caused (other
clients of the same server aside). Histograms give means (sum/count) and, from their buckets, the
distributions the report plots (batch sizes, padding)."""

from __future__ import annotations

import math
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels
SETTLE_S = (0.3, 10.0)  # settle: how long the server must stay idle, and the longest wait


class MetricsSnapshot:
    """Every sample of one /metrics exposition."""

    def __init__(self, samples: dict[SampleKey, float]):
        self.samples = samples

    @classmethod
    def parse(cls, text: str) -> "MetricsSnapshot":
        samples: dict[SampleKey, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return cls(samples)

    def minus(self, earlier: "MetricsSnapshot") -> "MetricsSnapshot":
        return MetricsSnapshot({key: value - earlier.samples.get(key, 0.0) for key, value in self.samples.items()})

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample of `name` whose labels include `labels` (e.g. all models)."""
        return sum(value for (sample, sample_labels), value in self.samples.items()
                   if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()))

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        values: dict[str, float] = {}
        for (sample, sample_labels), value in self.samples.items():
            found = dict(sample_labels)
            if sample == name and label in found and all(found.get(k) == v for k, v in labels.items()):
                values[found[label]] = values.get(found[label], 0.0) + value
        return values

    def mean(self, histogram: str, **labels: str) -> float | None:
        count = self.total(histogram + "_count", **labels)
        return self.total(histogram + "_sum", **labels) / count if count else None

    def bucket_counts(self, histogram: str) -> list[tuple[str, int]]:
        """(upper edge as text, "+Inf" last; observations in that bucket alone), from the cumulative `le`
        buckets. Edges as text because JSON has no infinity."""
        cumulative = sorted((float(le), value) for le, value in self.by_label(histogram + "_bucket", "le").items())
        counts, below = [], 0.0
        for edge, value in cumulative:
            counts.append(("+Inf" if math.isinf(edge) else f"{edge:g}", round(value - below)))
            below = value
        return counts

    def has(self, name: str) -> bool:
        return any(sample == name for sample, _ in self.samples)


def scrape(url: str, client: httpx.Client | None = None) -> MetricsSnapshot:
    get = client.get if client else httpx.get
    response = get(url.rstrip("/") + "/metrics", timeout=30)
    response.raise_for_status()
    return MetricsSnapshot.parse(response.text)


def settle(url: str) -> None:
    """Wait for the server to finish what an ended load run left running (wrk closes its connections with requests
    in flight, and their sentences must not count as the next run's tokens): nothing queued, no batch running (the
    batch scheduler counts a batch's tokens only when it ends) and no token generated for SETTLE_S[0] seconds; at
    most SETTLE_S[1] seconds."""
    quiet, longest = SETTLE_S
    deadline = time.monotonic() + longest
    last = None
    while time.monotonic() < deadline:
        now = scrape(url)
        tokens = now.total("translator_generated_tokens_total")
        if tokens == last and not now.total("translator_queue_depth") and not now.total("translator_busy_inference_workers"):
            return
        last = tokens
        time.sleep(quiet)


class ServerView(BaseModel):
    """What the server saw during one run."""

    translate_responses: dict[str, int] = Field(description="/v1/translate responses by HTTP status")
    rejected: dict[str, int] = Field(description="translator_requests_rejected_total by reason (non-zero only)")
    batches: int
    mean_batch_size: float | None
    mean_batch_tokens: float | None = Field(description="padded source tokens per batch")
    mean_padding_ratio: float | None
    mean_queue_wait_ms: float | None
    mean_request_ms: float | None = Field(None, description="a /v1/translate request, as the server timed it")
    mean_encode_ms: float | None = Field(None, description="an encoder pass (translator_inference_duration_seconds)")
    mean_decode_ms: float | None = Field(None, description=(
        "a batch's decoder step loop (batch scheduler) or one step of the running batch (continuous scheduler)"))
    sentences: int = Field(description="sentences batched (translator_input_tokens_count)")
    input_tokens: int = Field(description="source tokens batched, EOS included")
    generated_tokens: int
    batch_size_buckets: list[tuple[str, int]] = Field(description="(upper edge, batches in that bucket)")
    padding_ratio_buckets: list[tuple[str, int]] = Field(description="(upper edge, batches in that bucket)")
    resident_memory_bytes: float | None = Field(None, description="process_resident_memory_bytes at the end, if exported")


def server_view(before: MetricsSnapshot, after: MetricsSnapshot) -> ServerView:
    delta = after.minus(before)

    def rounded(value: float | None, scale: float = 1.0, digits: int = 3) -> float | None:
        return None if value is None else round(value * scale, digits)

    memory = after.total("process_resident_memory_bytes") if after.has("process_resident_memory_bytes") else None
    return ServerView(
        translate_responses={status: round(n) for status, n in delta.by_label(
            "translator_request_duration_seconds_count", "status", route="/v1/translate").items() if n},
        rejected={reason: round(n) for reason, n in delta.by_label("translator_requests_rejected_total", "reason").items() if n},
        batches=round(delta.total("translator_batch_size_count")),
        mean_batch_size=rounded(delta.mean("translator_batch_size")),
        mean_batch_tokens=rounded(delta.mean("translator_batch_tokens"), digits=1),
        mean_padding_ratio=rounded(delta.mean("translator_padding_ratio")),
        mean_queue_wait_ms=rounded(delta.mean("translator_queue_wait_seconds"), 1000, 2),
        mean_request_ms=rounded(delta.mean("translator_request_duration_seconds", route="/v1/translate"), 1000, 2),
        mean_encode_ms=rounded(delta.mean("translator_inference_duration_seconds", stage="encode"), 1000, 2),
        mean_decode_ms=rounded(delta.mean("translator_inference_duration_seconds", stage="decode"), 1000, 2),
        sentences=round(delta.total("translator_input_tokens_count")),
        input_tokens=round(delta.total("translator_input_tokens_sum")),
        generated_tokens=round(delta.total("translator_generated_tokens_total")),
        batch_size_buckets=delta.bucket_counts("translator_batch_size"),
        padding_ratio_buckets=delta.bucket_counts("translator_padding_ratio"),
        resident_memory_bytes=memory,
    )
