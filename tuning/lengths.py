"""Sequence length: how latency and server memory grow with input length, and what that says about
the longest input to accept (TRANSLATOR_MAX_TEXT_CHARS) and the length bucket edges.

Texts of a given token length (loadtest.corpus.texts_of_length) are cut from corpus sentences run together, at the longest word prefix
that still fits (counted by the package's tokenizer or by the server), so they read like the real
traffic rather than like repeated filler. Lengths run shortest first: the server's peak resident set
(VmHWM) after each length is then what that length and the shorter ones needed."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from pydantic import BaseModel, Field

from loadtest.corpus import SentencePicker, TokenCounter, texts_of_length
from loadtest.load import LoadSpec, load

DEFAULT_LENGTHS = (8, 16, 32, 64, 128, 256)
BUCKET_QUANTILES = (0.25, 0.5, 0.75, 0.9, 0.97)  # each bucket then gets a fair share of the traffic to batch
BUCKET_STEP = 8  # edges on multiples of 8 tokens
CHARS_PER_TOKEN_QUANTILE = 10  # percent: MAX_TEXT_CHARS lets through texts of this low a chars/token ratio

MemoryProbe = Callable[[], tuple[int | None, int | None]]  # → (resident bytes now, peak resident bytes)


class LengthPoint(BaseModel):
    tokens: int = Field(description="the length asked for: source tokens, EOS included")
    mean_source_tokens: float | None = Field(description="as the server counted them")
    mean_chars: float
    requests: int
    ok: int
    failed: int = Field(description="rejections and errors (a length over the model's limit is a 400)")
    p50_ms: float | None
    p95_ms: float | None
    rss_bytes: int | None
    peak_rss_bytes: int | None


class LengthAdvice(BaseModel):
    max_tokens: int
    max_text_chars: int
    length_buckets: tuple[int, ...]
    met_target: bool
    reasons: list[str]


class LengthStudy(BaseModel):
    concurrency: int
    seconds_per_length: float
    counter: str
    points: list[LengthPoint]
    corpus_token_quantiles: dict[str, int]
    advice: LengthAdvice


def measure_length(spec: LoadSpec, tokens: int, texts: list[str], memory: MemoryProbe | None) -> LengthPoint:
    result = load(spec, SentencePicker(texts), progress=spec.duration_s is not None and spec.duration_s >= 5,
                  label=f"{tokens} tokens")
    answered = [r for r in result.records if r.status == 200]
    rss, peak = memory() if memory else (None, None)
    if rss is None and result.server and result.server.resident_memory_bytes:
        rss = int(result.server.resident_memory_bytes)  # a server elsewhere: its own metric, if it exports one
    return LengthPoint(
        tokens=tokens, mean_source_tokens=round(float(np.mean([r.source_tokens for r in answered])), 1) if answered else None,
        mean_chars=round(float(np.mean([len(t) for t in texts])), 1), requests=result.requests, ok=result.ok,
        failed=result.rejected + result.errors, p50_ms=result.latency.p50_ms if result.latency else None,
        p95_ms=result.latency.p95_ms if result.latency else None, rss_bytes=rss, peak_rss_bytes=peak)


def bucket_edges(corpus_tokens: list[int], max_tokens: int) -> tuple[int, ...]:
    """Edges at corpus quantiles (a fair share of traffic per bucket, so batches fill), then doubling
    up to max_tokens (rare long sentences padded by at most half)."""
    edges = sorted({min(max_tokens, max(BUCKET_STEP, math.ceil(np.quantile(corpus_tokens, q) / BUCKET_STEP) * BUCKET_STEP))
                    for q in BUCKET_QUANTILES})
    while edges[-1] * 2 < max_tokens:
        edges.append(edges[-1] * 2)
    if edges[-1] < max_tokens:
        edges.append(max_tokens)
    return tuple(edges)


def advise(points: list[LengthPoint], corpus_tokens: list[int], corpus_chars: list[int], p95_target_ms: float) -> LengthAdvice:
    """The longest measured length whose p95 (and every shorter length's) meets the target."""
    ordered = sorted(points, key=lambda p: p.tokens)
    meeting = []
    for point in ordered:
        if point.ok == 0 or point.failed or point.p95_ms is None or point.p95_ms > p95_target_ms:
            break
        meeting.append(point)
    reasons = []
    if meeting:
        last, met = meeting[-1], True
        stop = ordered[len(meeting)] if len(meeting) < len(ordered) else None
        max_tokens = last.tokens
        if stop is None:
            reasons.append(f"p95 stays within {p95_target_ms:g} ms up to {last.tokens} tokens, the longest length measured")
        elif stop.failed or stop.p95_ms is None:
            reasons.append(f"p95 stays within {p95_target_ms:g} ms up to {last.tokens} tokens; {stop.tokens} tokens "
                           f"failed ({stop.failed} of {stop.requests} requests)")
        else:  # the target is crossed between two measured lengths: estimate where, on the line between them
            share = (p95_target_ms - last.p95_ms) / (stop.p95_ms - last.p95_ms) if stop.p95_ms > last.p95_ms else 0.0
            crossing = last.tokens + share * (stop.tokens - last.tokens)
            max_tokens = max(last.tokens, math.floor(crossing / BUCKET_STEP) * BUCKET_STEP)
            reasons.append(f"p95 is {last.p95_ms:.0f} ms at {last.tokens} tokens and {stop.p95_ms:.0f} ms at {stop.tokens}: "
                           f"on the line between them it reaches {p95_target_ms:g} ms near {crossing:.0f} tokens, "
                           f"rounded down to {max_tokens}")
    else:
        max_tokens, met = ordered[0].tokens, False
        reasons.append(f"even {max_tokens}-token texts miss p95 ≤ {p95_target_ms:g} ms: kept at the shortest length measured")
    ratios = [chars / tokens for chars, tokens in zip(corpus_chars, corpus_tokens) if tokens]
    chars_per_token = float(np.percentile(ratios, CHARS_PER_TOKEN_QUANTILE))
    max_chars = max(1, math.floor(max_tokens * chars_per_token))
    reasons.append(f"{CHARS_PER_TOKEN_QUANTILE} % of corpus sentences have fewer than {chars_per_token:.2f} characters "
                   f"per token: {max_tokens} tokens × {chars_per_token:.2f} = {max_chars} characters, so 9 in 10 texts "
                   "within the character limit are within the token length too (the service limits characters, "
                   "which a client can count)")
    buckets = bucket_edges(corpus_tokens, max_tokens)
    reasons.append("bucket edges at the corpus's 25/50/75/90/97 % token lengths (rounded up to 8), then doubling: a "
                   "sentence is padded at most to its bucket's edge, so short sentences keep short-sentence latency")
    return LengthAdvice(max_tokens=max_tokens, max_text_chars=max_chars, length_buckets=buckets, met_target=met, reasons=reasons)


def study_lengths(spec: LoadSpec, sentences: list[str], counter: TokenCounter, lengths: tuple[int, ...],
                  p95_target_ms: float, memory: MemoryProbe | None = None, variants: int = 16) -> LengthStudy:
    """Measure every length under `spec`'s load shape (its duration per length), then advise."""
    corpus_tokens = counter.count(sentences)
    points = [measure_length(spec, n, texts_of_length(sentences, counter, n, variants, spec.seed), memory)
              for n in sorted(lengths)]
    quantiles = {f"p{round(q * 100)}": int(np.quantile(corpus_tokens, q)) for q in (0.5, 0.9, 0.99)} | {"max": max(corpus_tokens)}
    return LengthStudy(concurrency=spec.concurrency or 0, seconds_per_length=spec.duration_s or 0, counter=counter.name,
                       points=points, corpus_token_quantiles=quantiles,
                       advice=advise(points, corpus_tokens, [len(s) for s in sentences], p95_target_ms))
