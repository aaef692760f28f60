"""Greedy and beam search over any encoder-decoder that decodes step by step.

The search knows nothing about the engine. A `StepModel` encodes a batch, runs one decoder step
and hands back each row's best candidates (never a [rows, vocabulary] matrix), reorders beams, and
drops finished sentences so that a batch shrinks as its sentences end. ONNX Runtime serves through
it, and the PyTorch reference model is evaluated through the very same code, so engines differ
only in the network.

Beam search needs only the 2·W best tokens of each beam: a candidate among the 2·W best of a
sentence is among the 2·W best of its own beam, so per-row candidates give the exact search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

State = Any  # whatever the engine keeps between steps (caches, memory, masks)


@dataclass
class Candidates:
    log_probs: np.ndarray  # [N, k] float32, best first
    ids: np.ndarray  # [N, k] int64
    eos_log_probs: np.ndarray  # [N] float32: what ending now would score (a row at its length limit must end)


class StepModel(Protocol):
    def start(self, src_ids: np.ndarray, beam_width: int, max_steps: int) -> State:
        """src_ids [B, S] int64, padded → a state of B·W rows (sentence-major: row b·W + w), decoding at most
        `max_steps` steps."""

    def step(self, state: State, tokens: np.ndarray, k: int) -> Candidates:
        """tokens [N] int64, the last token of each row → each row's k best next tokens; the state advances."""

    def reorder(self, state: State, parents: np.ndarray) -> None:
        """parents [B, W]: beam w of sentence b continues the history of beam parents[b, w]."""

    def keep(self, state: State, sentences: np.ndarray) -> None:
        """Keep only these sentences (indices into the current batch, in order) and their beams."""


@dataclass(frozen=True)
class SearchOptions:
    bos_id: int
    eos_id: int
    beam_size: int = 1
    n_best: int = 1
    length_penalty: float = 1.0  # normalised score = log-prob sum / length ** length_penalty
    max_length_ratio: float = 1.5  # output limit = ratio × source length + offset, capped by max_length
    max_length_offset: int = 10
    max_length: int = 512

    def output_limits(self, src_lengths: np.ndarray) -> np.ndarray:
        limits = np.ceil(src_lengths * self.max_length_ratio).astype(np.int64) + self.max_length_offset
        return np.clip(limits, 1, self.max_length)


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, without BOS and EOS
    score: float  # normalised log-probability (beam) or plain log-probability (greedy)


@dataclass
class SearchResult:
    hypotheses: list[Hypothesis] = field(default_factory=list)  # best first


@dataclass
class StageTimes:
    """Where one search spent its time: the public hook through which callers time stages."""

    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    steps: int = 0


def pad_batch(sequences: list[list[int]], pad_id: int) -> np.ndarray:
    """Right-pad token lists into an int64 [B, max length] array."""
    width = max(len(s) for s in sequences)
    batch = np.full((len(sequences), width), pad_id, dtype=np.int64)
    for i, s in enumerate(sequences):
        batch[i, : len(s)] = s
    return batch


def length_sorted_batches(sources: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of `sources` grouped into batches of similar length (less padding), shortest first."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def source_lengths(src_ids: np.ndarray, pad_id: int) -> np.ndarray:
    return (src_ids != pad_id).sum(axis=1).astype(np.int64)


def search(model: StepModel, src_ids: np.ndarray, pad_id: int, options: SearchOptions,
           times: StageTimes | None = None) -> list[SearchResult]:
    limits = options.output_limits(source_lengths(src_ids, pad_id))
    times = times if times is not None else StageTimes()
    start = time.perf_counter()
    state = model.start(src_ids, max(1, options.beam_size), int(limits.max()))
    encoded = time.perf_counter()
    times.encode_seconds += encoded - start
    run = greedy_search if options.beam_size <= 1 else beam_search
    results, times.steps = run(model, state, limits, options)
    times.decode_seconds += time.perf_counter() - encoded
    return results


def greedy_search(model: StepModel, state: State, limits: np.ndarray, options: SearchOptions
                  ) -> tuple[list[SearchResult], int]:
    batch = len(limits)
    output = np.zeros((batch, int(limits.max())), dtype=np.int64)  # [B, max limit]
    scores = np.zeros(batch, dtype=np.float64)
    lengths = np.zeros(batch, dtype=np.int64)
    live = np.arange(batch)  # source index of each row
    tokens = np.full(batch, options.bos_id, dtype=np.int64)
    step = 0
    for step in range(int(limits.max())):
        candidates = model.step(state, tokens, 1)
        best = candidates.ids[:, 0]
        scores[live] += candidates.log_probs[:, 0]
        ended = (best == options.eos_id) | (step + 1 >= limits[live])
        writing = best != options.eos_id
        output[live[writing], step] = best[writing]
        lengths[live[writing]] = step + 1
        keep = ~ended
        if not keep.any():
            break
        if not keep.all():  # drop finished sentences so later steps compute only live rows
            model.keep(state, np.flatnonzero(keep))
            live = live[keep]
        tokens = best[keep]
    return [SearchResult([Hypothesis(output[i, : lengths[i]].tolist(), float(scores[i]))]) for i in range(batch)], step + 1


def backtrack(tokens: np.ndarray, parents: np.ndarray, beam: int, last: int) -> list[int]:
    """The tokens of the hypothesis that is beam `beam` at step `last`, from per-step tokens and parents [W, steps]."""
    out = []
    for t in range(last, -1, -1):
        out.append(int(tokens[beam, t]))
        beam = int(parents[beam, t])
    return out[::-1]


def beam_search(model: StepModel, state: State, limits: np.ndarray, options: SearchOptions
                ) -> tuple[list[SearchResult], int]:
    batch, width, eos = len(limits), options.beam_size, options.eos_id
    k = 2 * width  # candidates kept per beam, and per sentence
    steps = int(limits.max())
    live = np.arange(batch)  # source index of each live sentence; its beams are rows [i·W, (i+1)·W)
    scores = np.full((batch, width), -np.inf, dtype=np.float32)  # cumulative log-probs [n, W]
    scores[:, 0] = 0.0  # all beams start identical: keep one so the first step does not pick duplicates
    # History as back-pointers, by source sentence: the token each beam chose at each step and the beam it
    # continued. Reordering beams then costs nothing here, and a hypothesis is read back when it ends.
    chosen = np.zeros((batch, width, steps), dtype=np.int64)
    parent = np.zeros((batch, width, steps), dtype=np.int64)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done_count = np.zeros(batch, dtype=np.int64)
    tokens = np.full(batch * width, options.bos_id, dtype=np.int64)
    step = 0
    for step in range(steps):
        found = model.step(state, tokens, k)
        n = len(live)
        # [n, W·k] candidate scores, beam-major; a sentence at its length limit may only end (EOS) now.
        flat = (scores[:, :, None] + found.log_probs.reshape(n, width, k)).reshape(n, width * k)
        ids = found.ids.reshape(n, width * k)
        at_limit = step + 1 >= limits[live]
        if at_limit.any():
            forced = np.full((int(at_limit.sum()), width, k), -np.inf, dtype=np.float32)
            forced[:, :, 0] = scores[at_limit] + found.eos_log_probs.reshape(n, width)[at_limit]
            flat[at_limit] = forced.reshape(-1, width * k)
            ids = ids.copy()
            ids[at_limit] = eos
        # The k best of each sentence, best first; ties go to the lower beam, then the better-ranked token.
        top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
        rows = np.arange(n)[:, None]
        top_scores, top_token, top_beam = flat[rows, top], ids[rows, top], top // k
        is_eos = top_token == eos
        # An EOS among the best W candidates completes a hypothesis.
        for i, j in zip(*np.nonzero(is_eos[:, :width] & np.isfinite(top_scores[:, :width]))):
            source = live[i]
            history = backtrack(chosen[source], parent[source], int(top_beam[i, j]), step - 1) if step else []
            finished[source].append(Hypothesis(history, float(top_scores[i, j]) / (step + 1) ** options.length_penalty))
            done_count[source] += 1
        # The best W candidates that do not end carry on (there are always enough of them).
        carry = np.argsort(is_eos, axis=1, kind="stable")[:, :width]
        parents = top_beam[rows, carry]  # [n, W]
        scores = top_scores[rows, carry]
        tokens_now = top_token[rows, carry]
        chosen[live, :, step] = tokens_now
        parent[live, :, step] = parents
        keep = ~(at_limit | (done_count[live] >= width))
        if not keep.any():
            break
        model.reorder(state, parents)
        if not keep.all():
            model.keep(state, np.flatnonzero(keep))
            live, scores, tokens_now = live[keep], scores[keep], tokens_now[keep]
        tokens = tokens_now.reshape(-1)
    results = []
    for hypotheses in finished:
        hypotheses.sort(key=lambda h: h.score, reverse=True)
        results.append(SearchResult(hypotheses[: options.n_best]))
    return results, step + 1
