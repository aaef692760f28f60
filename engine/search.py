"""Greedy and beam search over any encoder-decoder that decodes with a key/value cache.

The search knows nothing about the engine: a `StepModel` encodes a batch, runs one decoder
step and selects rows of its state (to reorder beams and to drop finished sentences, so a
batch shrinks as its sentences end). ONNX Runtime serves through it, and the PyTorch
reference model is evaluated through the very same code, so engines differ only in the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

State = Any  # whatever the engine keeps between steps (caches, memory, masks)


class StepModel(Protocol):
    def encode(self, src_ids: np.ndarray) -> State:
        """src_ids [B, S] int64, padded → state with B rows."""

    def step(self, state: State, tokens: np.ndarray) -> tuple[np.ndarray, State]:
        """tokens [N] int64, the last token of each row → log-probabilities [N, V] float32 and the next state."""

    def select(self, state: State, rows: np.ndarray, sources_changed: bool) -> State:
        """Keep `rows` (int64 indices, repeats allowed) of the state. `sources_changed` is False when every
        row keeps the same source sentence (a beam reorder), so per-source tensors need no copy."""


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


def search(model: StepModel, src_ids: np.ndarray, pad_id: int, options: SearchOptions) -> list[SearchResult]:
    limits = options.output_limits(source_lengths(src_ids, pad_id))
    if options.beam_size <= 1:
        return greedy_search(model, src_ids, limits, options)
    return beam_search(model, src_ids, limits, options)


def greedy_search(model: StepModel, src_ids: np.ndarray, limits: np.ndarray, options: SearchOptions) -> list[SearchResult]:
    batch = src_ids.shape[0]
    state = model.encode(src_ids)
    output = np.zeros((batch, int(limits.max())), dtype=np.int64)  # [B, max limit]
    scores = np.zeros(batch, dtype=np.float64)
    lengths = np.zeros(batch, dtype=np.int64)
    active = np.arange(batch)  # source index of each live row
    tokens = np.full(batch, options.bos_id, dtype=np.int64)
    for step in range(int(limits.max())):
        log_probs, state = model.step(state, tokens)  # [N, V]
        best = log_probs.argmax(axis=-1)
        scores[active] += log_probs[np.arange(len(active)), best]
        ended = (best == options.eos_id) | (step + 1 >= limits[active])
        writing = best != options.eos_id
        output[active[writing], step] = best[writing]
        lengths[active[writing]] = step + 1
        keep = ~ended
        if not keep.any():
            break
        if not keep.all():  # drop finished sentences so later steps compute only live rows
            state = model.select(state, np.flatnonzero(keep), sources_changed=True)
            active = active[keep]
        tokens = best[keep]
    return [SearchResult([Hypothesis(output[i, : lengths[i]].tolist(), float(scores[i]))]) for i in range(batch)]


def best_k(candidates: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest entries of each row [n, m], best first, ties to the lower index.
    k argmax passes: at beam widths (k = 2·width ≪ m = width·vocab) several times faster than a
    partition of each row, which cost as much as the decoder step itself at batch 32."""
    remaining = candidates.copy()
    rows = np.arange(len(remaining))
    picked = np.empty((len(remaining), k), dtype=np.int64)
    for j in range(k):
        picked[:, j] = remaining.argmax(axis=1)
        remaining[rows, picked[:, j]] = -np.inf
    return picked


def beam_search(model: StepModel, src_ids: np.ndarray, limits: np.ndarray, options: SearchOptions) -> list[SearchResult]:
    batch, width = src_ids.shape[0], options.beam_size
    state = model.select(model.encode(src_ids), np.repeat(np.arange(batch), width), sources_changed=True)
    live = np.arange(batch)  # source index of each live sentence; its beams are rows [i*width, (i+1)*width)
    scores = np.full((batch, width), -np.inf, dtype=np.float32)  # cumulative log-probs [n, width]
    scores[:, 0] = 0.0  # all beams start identical: keep one so the first step does not pick duplicates
    sequences = np.zeros((batch, width, 0), dtype=np.int64)  # [n, width, step]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    tokens = np.full(batch * width, options.bos_id, dtype=np.int64)
    for step in range(int(limits.max())):
        log_probs, state = model.step(state, tokens)
        n, vocab = len(live), log_probs.shape[-1]
        log_probs = log_probs.reshape(n, width, vocab)
        at_limit = step + 1 >= limits[live]  # these must end now: only EOS is allowed
        if at_limit.any():
            forced = np.full_like(log_probs[at_limit], -np.inf)
            forced[..., options.eos_id] = log_probs[at_limit][..., options.eos_id]
            log_probs[at_limit] = forced
        candidates = (scores[:, :, None] + log_probs).reshape(n, width * vocab)  # float32
        top = best_k(candidates, 2 * width)
        top_scores = np.take_along_axis(candidates, top, 1)  # [n, 2·width], best first
        top_beam, top_token = top // vocab, top % vocab
        is_eos = top_token == options.eos_id
        # An EOS among the best `width` candidates completes a hypothesis.
        for i, j in zip(*np.nonzero(is_eos[:, :width] & np.isfinite(top_scores[:, :width]))):
            length = step + 1
            tokens_so_far = sequences[i, top_beam[i, j]].tolist()
            finished[live[i]].append(Hypothesis(tokens_so_far, float(top_scores[i, j]) / length**options.length_penalty))
        # The best `width` candidates that do not end carry on (there are always enough of them).
        carry = np.argsort(is_eos, axis=1, kind="stable")[:, :width]
        next_beam = np.take_along_axis(top_beam, carry, 1)
        scores = np.take_along_axis(top_scores, carry, 1)
        sequences = np.concatenate(
            [np.take_along_axis(sequences, next_beam[:, :, None], 1), np.take_along_axis(top_token, carry, 1)[:, :, None]],
            axis=2,
        )
        done = at_limit | np.array([len(finished[s]) >= width for s in live])
        keep = ~done
        if not keep.any():
            break
        rows = (np.arange(n)[:, None] * width + next_beam)[keep].reshape(-1)
        state = model.select(state, rows, sources_changed=not keep.all())
        live, scores, sequences = live[keep], scores[keep], sequences[keep]
        tokens = sequences[:, :, -1].reshape(-1)
    results = []
    for hypotheses in finished:
        hypotheses.sort(key=lambda h: h.score, reverse=True)
        results.append(SearchResult(hypotheses[: options.n_best]))
    return results
