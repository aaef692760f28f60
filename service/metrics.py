"""Every Prometheus metric of the service, defined once, in a registry of its own per app.

Observed where things happen: queue wait, batch shape and stage timings in the batcher, request
duration in the HTTP middleware. Histograms (not summaries) so replicas aggregate; bucket edges sit
around the latencies this service has (queue waits of a few milliseconds, batches of tens to hundreds
of milliseconds on a CPU). No label takes unbounded values: `route` is the route template, `model`
one of the served packages, `reason` and `stage` fixed sets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REQUEST_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
QUEUE_WAIT_SECONDS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
INFERENCE_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SENTENCES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
BATCH_TOKENS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PADDING_RATIO = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SENTENCE_TOKENS = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)
STEP_SECONDS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25)

REJECT_REASONS = ("queue_full", "deadline", "disconnected", "shutting_down", "invalid_request", "body_too_large", "unauthorized",
                  "forbidden", "rate_limited")
STAGES = ("encode", "decode")


class Metrics:
    """One set of the service's metrics; several apps (tests) each get their own registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, …: the dashboard reads them
        self.request_duration = Histogram(
            "translator_request_duration_seconds", "HTTP request duration by route template and status code.",
            ["route", "status"], buckets=REQUEST_SECONDS, registry=r)
        self.queue_wait = Histogram(
            "translator_queue_wait_seconds", "Time a sentence waited in the queue before its batch started.",
            buckets=QUEUE_WAIT_SECONDS, registry=r)
        self.inference_duration = Histogram(
            "translator_inference_duration_seconds",
            "Inference time: encode = an encoder pass; decode = a batch's decoder step loop (batch scheduler) or one "
            "decoder step of a running batch (continuous scheduler).",
            ["model", "stage"], buckets=INFERENCE_SECONDS, registry=r)
        self.batch_size = Histogram(
            "translator_batch_size", "Sentences per inference batch.", buckets=BATCH_SENTENCES, registry=r)
        self.batch_tokens = Histogram(
            "translator_batch_tokens", "Padded source tokens per batch (sentences × longest sentence).",
            buckets=BATCH_TOKENS, registry=r)
        self.padding_ratio = Histogram(
            "translator_padding_ratio", "Share of a batch's padded source tokens that are padding.",
            buckets=PADDING_RATIO, registry=r)
        self.input_tokens = Histogram(
            "translator_input_tokens", "Source tokens per sentence (including EOS).",
            ["model"], buckets=SENTENCE_TOKENS, registry=r)
        self.output_tokens = Histogram(
            "translator_output_tokens", "Generated tokens per translated sentence (best hypothesis, without EOS).",
            ["model"], buckets=SENTENCE_TOKENS, registry=r)
        self.running_sentences = Histogram(
            "translator_running_batch_sentences", "Sentences in the running batch at each decoder step (continuous scheduler).",
            ["model"], buckets=BATCH_SENTENCES, registry=r)
        self.step_duration = Histogram(
            "translator_step_duration_seconds", "Duration of one decoder step of a running batch (continuous scheduler).",
            ["model"], buckets=STEP_SECONDS, registry=r)
        self.joined_sentences = Counter(
            "translator_joined_sentences", "Sentences that joined a batch already decoding (continuous scheduler).",
            ["model"], registry=r)
        self.busy_workers = Gauge(
            "translator_busy_inference_workers", "Inference workers running a batch now (batch scheduler), per model; "
            "all of them busy with sentences queued is saturation.", ["model"], registry=r)
        self.worker_memory = Gauge(
            "translator_worker_process_resident_memory_bytes", "Resident memory of the inference worker processes, summed per "
            "model (TRANSLATOR_INFERENCE_WORKER_KIND=process); the server process's own is process_resident_memory_bytes.",
            ["model"], registry=r)
        self.queue_depth = Gauge(
            "translator_queue_depth", "Sentences waiting for a batch, all models together.", registry=r)
        self.generated_tokens = Counter(
            "translator_generated_tokens", "Tokens generated (best hypotheses), per model.", ["model"], registry=r)
        self.requests_rejected = Counter(
            "translator_requests_rejected", "Requests refused or abandoned, by reason.", ["reason"], registry=r)
        self.model_info = Gauge(
            "translator_model_info", "The served models: execution provider and precision (value 1).",
            ["model", "provider", "precision"], registry=r)
        self.cuda_requested = Gauge(
            "translator_cuda_requested", "1 when the configuration asks for CUDA first (alerts compare it with the provider that runs).",
            registry=r)
        for reason in REJECT_REASONS:  # present from the start, so rate() sees the first rejection
            self.requests_rejected.labels(reason=reason)

    def add_model(self, name: str, provider: str, precision: str) -> None:
        self.model_info.labels(model=name, provider=provider, precision=precision).set(1)
        for stage in STAGES:
            self.inference_duration.labels(model=name, stage=stage)
        self.generated_tokens.labels(model=name)
        self.joined_sentences.labels(model=name)
        self.busy_workers.labels(model=name)

    def reject(self, reason: str) -> None:
        if reason not in REJECT_REASONS:  # a typo must not create a new label value
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.requests_rejected.labels(reason=reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
