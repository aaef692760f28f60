"""What the schedulers share: the batching policy, queued sentences (jobs), and a model's lane.

A lane is one model: its waiting sentences, grouped by what may share a batch (task, search options
and, for the batch scheduler, length bucket), its scheduler task and its inference workers: copies of the
model's ONNX Runtime sessions, in this process or in processes of their own, each with the one thread its
batches are run from.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.search import SearchOptions
from engine.translator import Translator
from service.worker_process import WorkerProcess

# What runs an inference worker's batches: a copy of the model in this process (Translator.copy), or in a process of its
# own. Both answer translate_ids, encode_ids and warmup alike.
ModelCopy = Translator | WorkerProcess
ADMIT_WAIT_SHARE = 0.5  # refuse work expected to wait longer than this share of the deadline
RATE_SMOOTHING = 0.3  # weight of the latest batch in a lane's tokens-per-second estimate

Task = Literal["translate", "encode"]


class BatcherError(Exception):
    """Base of the errors a caller of the batcher handles."""


class QueueFull(BatcherError):
    pass


class DeadlineExceeded(BatcherError):
    pass


class ShuttingDown(BatcherError):
    pass


class InferenceFailed(BatcherError):
    """The batch this request's sentences ran in failed; other batches are unaffected."""


@dataclass(frozen=True)
class BatchPolicy:
    scheduler: Literal["continuous", "batch"] = "batch"
    cache_budget: int = 8192  # continuous: Σ beams × output limit over the running batch's sentences
    token_budget: int = 2048  # padded tokens: sentences × longest sentence
    max_sentences: int = 32
    max_wait_s: float = 0.0
    length_buckets: tuple[int, ...] = (16, 32, 64, 128)
    queue_limit: int = 512  # sentences waiting, all models together
    deadline_s: float = 30.0

    def bucket(self, task: Task, length: int) -> int:
        """Index of the first bucket whose upper edge holds `length`; past the last edge, one more bucket. The
        continuous scheduler runs sources of any length in one batch: one bucket for translations."""
        if self.scheduler == "continuous" and task == "translate":
            return 0
        return bisect.bisect_left(self.length_buckets, length)


@dataclass(frozen=True)
class GroupKey:
    """Sentences that may share a batch."""

    task: Task
    options: SearchOptions | None  # None for encode
    bucket: int


@dataclass(eq=False)
class Job:
    ids: list[int]
    group: GroupKey
    future: asyncio.Future
    enqueued: float  # time.monotonic()
    deadline: float
    queued: bool = True


@dataclass
class Embedding:
    vector: np.ndarray  # [D], L2-normalised
    token_states: np.ndarray  # [length, D]


@dataclass(eq=False)
class InferenceWorker:
    """One copy of a model's ONNX Runtime sessions and the single thread its batches are run from: a Translator of its own
    (ONNX Runtime releases the GIL while it computes, so two such workers run two batches at once) or one in a process of
    its own (service/worker_process.py), which the thread waits for."""

    model: ModelCopy
    executor: ThreadPoolExecutor

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if isinstance(self.model, WorkerProcess):
            self.model.close()


@dataclass(eq=False)
class Lane:
    """One model: its waiting groups, its scheduler task and its inference workers (the batch scheduler runs a batch on
    each idle one; the continuous scheduler runs its encoder-only batches on the first and decodes in a thread of its own)."""

    translator: Translator  # the model in this process: names, limits, tokenization, the continuous scheduler's decoding
    workers: list[InferenceWorker]
    groups: dict[GroupKey, deque[Job]] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    tokens_per_s: float | None = None  # source tokens one worker translates per second of model time (smoothed)
    # Source tokens waiting in `groups`, kept by the three methods below (and drain, which empties
    # `groups`): admission reads it for every request under overload, too often to sum the queue.
    queued_tokens: int = 0
    idle: list[InferenceWorker] = field(init=False)  # workers with no batch now, the next one to take at the end

    def __post_init__(self) -> None:
        self.idle = list(reversed(self.workers))  # the first worker is taken first: one request at a time stays on it

    def enqueue(self, job: Job) -> None:
        self.groups.setdefault(job.group, deque()).append(job)
        self.queued_tokens += len(job.ids)

    def remove(self, job: Job) -> None:
        group = self.groups[job.group]
        group.remove(job)
        if not group:
            del self.groups[job.group]
        self.queued_tokens -= len(job.ids)

    def take_oldest(self, key: GroupKey, count: int) -> list[Job]:
        jobs = self.groups[key]
        taken = [jobs.popleft() for _ in range(count)]
        if not jobs:
            del self.groups[key]
        self.queued_tokens -= sum(len(job.ids) for job in taken)
        return taken

    def expected_wait_s(self) -> float | None:
        """Seconds until the work queued now is done; None before any batch ran. Only the work ahead
        counts: a large request to an idle lane is let in (its deadline still holds). The rate is one worker's (each
        batch's model time, measured while the other workers ran theirs), and the workers clear the queue together."""
        return self.queued_tokens / (self.tokens_per_s * len(self.workers)) if self.tokens_per_s else None

    def note_batch(self, tokens: int, seconds: float) -> None:
        rate = tokens / max(seconds, 1e-6)
        self.tokens_per_s = rate if self.tokens_per_s is None else (1 - RATE_SMOOTHING) * self.tokens_per_s + RATE_SMOOTHING * rate
