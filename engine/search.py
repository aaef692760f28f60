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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

State = Any  # whatever the engine keeps between steps (caches, memory, masks)


@dataclass
class Candidates:
    log_probs: np.ndarray  # [N, k] float32, best first
    ids: np.ndarray  # [N, k] int64
    eos_log_probs: np.ndarray  # [N] float32: what ending now would score (a row at its length limit must end)


def unexplained_id_differences(expected: Candidates, got: Candidates, tolerance: float) -> int:
    """Places where two engines' candidate lists name different tokens although no near-tie explains it: ranks whose
    expected log-prob stands more than 2 × tolerance from both neighbours must hold the same token (parity checks)."""
    padded = np.pad(expected.log_probs, ((0, 0), (1, 1)), constant_values=(np.inf, -np.inf))
    clear = (padded[:, :-2] - padded[:, 1:-1] > 2 * tolerance) & (padded[:, 1:-1] - padded[:, 2:] > 2 * tolerance)
    return int(((expected.ids != got.ids) & clear).sum())


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

    def join(self, state: State, src_ids: np.ndarray, limits: np.ndarray) -> None:
        """Add sentences (src_ids [m, S] padded, each with its output limit) after the current ones; their
        beams start from BOS at the next step. Optional: an engine without it decodes fixed batches only."""


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


FinishedHook = Callable[[list[tuple[int, SearchResult]]], None]  # one step's finished sentences: (index, result)


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
           times: StageTimes | None = None, on_finished: FinishedHook | None = None) -> list[SearchResult]:
    """Decode one batch to the end → each sentence's result, in order. `on_finished`, when given, also
    receives each step's finished sentences as (index, result) pairs the step they end, so that a caller can
    answer them before the batch's longest sentence is done."""
    times = times if times is not None else StageTimes()
    started = time.perf_counter()
    decoding = Decoding(model, options)
    decoding.join(src_ids, list(range(len(src_ids))), pad_id)
    encoded = time.perf_counter()
    times.encode_seconds += encoded - started
    results: list[SearchResult | None] = [None] * len(src_ids)
    while decoding.sentences:
        ended = decoding.step()
        for index, result in ended:
            results[index] = result
        if ended and on_finished is not None:
            on_finished(ended)
    times.decode_seconds += time.perf_counter() - encoded
    times.steps = decoding.steps_run
    return results  # type: ignore[return-value]


def backtrack(tokens: np.ndarray, parents: np.ndarray, beam: int, last: int) -> list[int]:
    """The tokens of the hypothesis that is beam `beam` at step `last`, from per-step tokens and parents [W, steps]."""
    out = []
    for t in range(last, -1, -1):
        out.append(int(tokens[beam, t]))
        beam = int(parents[beam, t])
    return out[::-1]


class Decoding:
    """Sentences searched together, one decoder step at a time, with one set of search options.

    Sentences may join between steps (continuous batching: they start from BOS while the others are
    mid-sentence) and leave when they finish or are withdrawn; each keeps its own step count, output
    limit and history. `step` advances every sentence by one token and returns those that finished.
    Greedy search is the one-beam case with greedy's rules: a sentence ends on EOS or at its limit, and
    its score is the plain sum of log-probabilities.
    """

    def __init__(self, model: StepModel, options: SearchOptions):
        self.model, self.options = model, options
        self.width = max(1, options.beam_size)
        self.state: State | None = None
        self.tags: list = []  # the caller's name for each sentence, in the model's order
        self.limits = np.zeros(0, dtype=np.int64)  # output limit of each sentence
        self.steps = np.zeros(0, dtype=np.int64)  # steps each sentence has taken
        self.scores = np.zeros((0, self.width), dtype=np.float64)  # cumulative log-probs of each beam
        self.tokens = np.zeros(0, dtype=np.int64)  # the last token of each row (sentence-major)
        self.finished: list[list[Hypothesis]] = []  # hypotheses ended so far, per sentence
        # History as back-pointers, by a slot per sentence: the token each beam chose at each of the sentence's
        # steps and the beam it continued. Reordering beams costs nothing here; a hypothesis is read back when
        # it ends. Slots are reused once their sentence leaves.
        self.slots = np.zeros(0, dtype=np.int64)
        self.free_slots: list[int] = []
        self.chosen = np.zeros((0, self.width, options.max_length), dtype=np.int32)
        self.parent = np.zeros((0, self.width, options.max_length), dtype=np.int8 if self.width < 128 else np.int32)
        self.steps_run = 0

    @property
    def sentences(self) -> int:
        return len(self.tags)

    # --- joining and leaving -----------------------------------------------------------------------
    def join(self, src_ids: np.ndarray, tags: list, pad_id: int) -> None:
        """Add sentences (src_ids [m, S], padded with pad_id); they take their first step with the others'
        next one."""
        limits = self.options.output_limits(source_lengths(src_ids, pad_id))
        if self.state is None:
            self.state = self.model.start(src_ids, self.width, int(limits.max()))
        else:
            self.model.join(self.state, src_ids, limits)
        count = len(tags)
        scores = np.full((count, self.width), -np.inf)
        scores[:, 0] = 0.0  # all beams start identical: keep one so the first step does not pick duplicates
        self.tags += list(tags)
        self.limits = np.concatenate([self.limits, limits])
        self.steps = np.concatenate([self.steps, np.zeros(count, dtype=np.int64)])
        self.scores = np.concatenate([self.scores, scores])
        self.tokens = np.concatenate([self.tokens, np.full(count * self.width, self.options.bos_id, dtype=np.int64)])
        self.finished += [[] for _ in range(count)]
        self.slots = np.concatenate([self.slots, self.take_slots(count)])

    def take_slots(self, count: int) -> np.ndarray:
        while len(self.free_slots) < count:  # grow the history by doubling
            old = len(self.chosen)
            grown = max(count - len(self.free_slots), old)
            self.chosen = np.concatenate([self.chosen, np.zeros((grown, *self.chosen.shape[1:]), self.chosen.dtype)])
            self.parent = np.concatenate([self.parent, np.zeros((grown, *self.parent.shape[1:]), self.parent.dtype)])
            self.free_slots += range(old, old + grown)
        taken, self.free_slots = self.free_slots[:count], self.free_slots[count:]
        return np.array(taken, dtype=np.int64)

    def withdraw(self, tags: set) -> None:
        """Drop these sentences (cancelled, past their deadline) before the next step."""
        keep = np.array([tag not in tags for tag in self.tags], dtype=bool)
        if not keep.all():
            self.leave(keep)

    def leave(self, keep: np.ndarray) -> None:
        """Keep only the sentences where `keep` is True (their rows stay in the model's order)."""
        self.free_slots += self.slots[~keep].tolist()
        if keep.any():
            self.model.keep(self.state, np.flatnonzero(keep))
        else:
            self.state = None  # nothing left: the next join starts afresh
        self.tags = [tag for tag, kept in zip(self.tags, keep) if kept]
        self.finished = [f for f, kept in zip(self.finished, keep) if kept]
        self.limits, self.steps, self.scores, self.slots = (a[keep] for a in (self.limits, self.steps, self.scores, self.slots))
        self.tokens = self.tokens.reshape(-1, self.width)[keep].reshape(-1)

    # --- one step --------------------------------------------------------------------------------
    def step(self) -> list[tuple]:
        """Advance every sentence by one token → (tag, result) of each sentence that ended at this step."""
        ended = self.greedy_step() if self.width == 1 else self.beam_step()
        self.steps += 1
        self.steps_run += 1
        if not ended.any():
            return []
        results = [(self.tags[i], self.result(i)) for i in np.flatnonzero(ended)]
        self.leave(~ended)
        return results

    def result(self, i: int) -> SearchResult:
        hypotheses = sorted(self.finished[i], key=lambda h: h.score, reverse=True)
        return SearchResult(hypotheses[: self.options.n_best])

    def greedy_step(self) -> np.ndarray:
        found = self.model.step(self.state, self.tokens, 1)
        best = found.ids[:, 0]
        self.scores[:, 0] += found.log_probs[:, 0]
        self.chosen[self.slots, 0, self.steps] = best
        ended = (best == self.options.eos_id) | (self.steps + 1 >= self.limits)
        if ended.any():  # most steps end no sentence
            for i in np.flatnonzero(ended):  # EOS is not part of the output; a token written at the limit is
                length = self.steps[i] + (best[i] != self.options.eos_id)
                self.finished[i].append(Hypothesis(self.chosen[self.slots[i], 0, :length].tolist(), float(self.scores[i, 0])))
        self.tokens = best
        return ended

    def beam_step(self) -> np.ndarray:
        width, eos = self.width, self.options.eos_id
        k = 2 * width  # candidates kept per beam, and per sentence
        n = self.sentences
        found = self.model.step(self.state, self.tokens, k)
        # [n, W·k] candidate scores, beam-major; a sentence at its length limit may only end (EOS) now.
        flat = (self.scores[:, :, None] + found.log_probs.reshape(n, width, k)).reshape(n, width * k)
        ids = found.ids.reshape(n, width * k)
        at_limit = self.steps + 1 >= self.limits
        if at_limit.any():
            forced = np.full((int(at_limit.sum()), width, k), -np.inf)
            forced[:, :, 0] = self.scores[at_limit] + found.eos_log_probs.reshape(n, width)[at_limit]
            flat[at_limit] = forced.reshape(-1, width * k)
            ids = ids.copy()
            ids[at_limit] = eos
        # The k best of each sentence, best first; ties go to the lower beam, then the better-ranked token.
        top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
        rows = np.arange(n)[:, None]
        top_scores, top_token, top_beam = flat[rows, top], ids[rows, top], top // k
        is_eos = top_token == eos
        # An EOS among the best W candidates completes a hypothesis (normalised by its length with EOS).
        for i, j in zip(*np.nonzero(is_eos[:, :width] & np.isfinite(top_scores[:, :width]))):
            step = int(self.steps[i])
            history = backtrack(self.chosen[self.slots[i]], self.parent[self.slots[i]], int(top_beam[i, j]),
                                step - 1) if step else []
            self.finished[i].append(Hypothesis(history, float(top_scores[i, j]) / (step + 1) ** self.options.length_penalty))
        # The best W candidates that do not end carry on (there are always enough of them).
        carry = np.argsort(is_eos, axis=1, kind="stable")[:, :width]
        parents = top_beam[rows, carry]  # [n, W]
        self.scores = top_scores[rows, carry]
        self.tokens = top_token[rows, carry].reshape(-1)
        self.chosen[self.slots[:, None], np.arange(width), self.steps[:, None]] = self.tokens.reshape(n, width)
        self.parent[self.slots[:, None], np.arange(width), self.steps[:, None]] = parents
        self.model.reorder(self.state, parents)
        return at_limit | np.array([len(f) >= width for f in self.finished])
