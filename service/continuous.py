"""Iteration-level (continuous) batching: one running batch per model and search setting.

At every decoder step boundary, waiting sentences join the running batch (their encoder runs
batched, sources of any length together) and finished sentences leave and are answered at once,
instead of a batch running until its longest sentence ends while newcomers wait for the next one.
Greedy and beam sentences cannot share a decoder step (the beam width is one per step), so each
search setting has its own running batch; a model's inference thread steps them in turn.

Admission keeps the running batch within the policy: at most `max_sentences` sentences, and the
cache they may fill (beams × output limit per sentence) within `cache_budget`. Everything about the
queue (deadlines, cancellation, backpressure, drain) stays the batcher's: a sentence whose caller
went away or whose deadline passed leaves the running batch at the next step. All decisions are
taken on the event loop; the inference thread only runs the engine, one step per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.search import Decoding, SearchOptions, SearchResult
from service.lanes import DeadlineExceeded, GroupKey, InferenceFailed, Job, Lane

if TYPE_CHECKING:
    from service.batcher import Batcher

log = logging.getLogger(__name__)
RATE_WINDOW_S = 0.25  # model seconds over which finished work updates the lane's tokens-per-second estimate


@dataclass
class RunningBatch:
    """The sentences of one search setting being decoded; `decoding` is touched by the inference thread only."""

    decoding: Decoding
    jobs: set[Job] = field(default_factory=set)
    cache_slots: int = 0  # Σ beams × output limit of its sentences


@dataclass
class StepReport:
    """What one call of the inference thread did."""

    finished: list[tuple[Job, SearchResult]] = field(default_factory=list)
    failed: list[tuple[SearchOptions, BaseException]] = field(default_factory=list)
    encode_seconds: float = 0.0
    step_seconds: float = 0.0


class ContinuousScheduler:
    def __init__(self, batcher: Batcher, lane: Lane):
        self.batcher, self.lane = batcher, lane
        self.translator = lane.translator
        self.running: dict[SearchOptions, RunningBatch] = {}
        self.window_tokens, self.window_seconds = 0, 0.0

    async def run(self) -> None:
        batcher, lane = self.batcher, self.lane
        loop = asyncio.get_running_loop()
        while True:
            withdrawn = self.withdrawals()
            admitted = self.admit()
            encode_key = next((key for key in lane.groups if key.task == "encode"), None)
            if encode_key is not None:  # sentence embeddings run between two steps, as a batch of their own
                batch = batcher._take(lane, encode_key)
                if batch:
                    await batcher._run(lane, encode_key, batch)
            if not any(r.jobs for r in self.running.values()):
                self.running.clear()  # the next sentence starts a fresh running batch
                if not lane.groups:
                    if batcher.closing:
                        return
                    lane.wakeup.clear()
                    await lane.wakeup.wait()
                continue
            report = await loop.run_in_executor(lane.executor, self.advance, admitted, withdrawn)
            self.settle(report)

    # --- on the event loop -----------------------------------------------------------------------
    def withdrawals(self) -> dict[SearchOptions, set[Job]]:
        """Running sentences whose caller went away or whose deadline passed: they leave at the next step."""
        now, gone = time.monotonic(), {}
        for options, running in self.running.items():
            leaving = {job for job in running.jobs if job.future.done() or now > job.deadline}
            for job in leaving:
                if not job.future.done():
                    job.future.set_exception(DeadlineExceeded("deadline passed while being translated"))
                running.jobs.discard(job)
                running.cache_slots -= self.cache_slots(job, options)
            if leaving:
                gone[options] = leaving
        return gone

    def cache_slots(self, job: Job, options: SearchOptions) -> int:
        return max(1, options.beam_size) * int(options.output_limits(np.array([len(job.ids)]))[0])

    def admit(self) -> dict[SearchOptions, list[Job]]:
        """Waiting sentences that join their running batch at the next step, oldest first, within the policy."""
        policy, lane, admitted = self.batcher.policy, self.lane, {}
        now = time.monotonic()
        for key in [k for k in lane.groups if k.task == "translate"]:
            options = key.options
            running = self.running.get(options)
            if running is None:
                running = self.running[options] = RunningBatch(self.translator.decoding(options))
            joining: list[Job] = []
            for job in list(lane.groups[key]):
                slots = self.cache_slots(job, options)
                count = len(running.jobs) + len(joining)
                if count >= policy.max_sentences or (count and running.cache_slots + slots > policy.cache_budget):
                    break
                self.take(key, job)
                if job.future.done():
                    continue
                if now > job.deadline:  # the caller's timer may not have fired yet while the loop was busy
                    job.future.set_exception(DeadlineExceeded("deadline passed in the queue"))
                    continue
                joining.append(job)
                running.cache_slots += slots
            if joining:
                self.observe_join(joining, running, now)
                running.jobs.update(joining)
                admitted[options] = joining
        return admitted

    def take(self, key: GroupKey, job: Job) -> None:
        self.lane.remove(job)
        job.queued = False
        self.batcher._set_depth(self.batcher.depth - 1)

    def observe_join(self, joining: list[Job], running: RunningBatch, now: float) -> None:
        m, name = self.batcher.metrics, self.translator.name
        lengths = [len(job.ids) for job in joining]
        for job, length in zip(joining, lengths):
            m.queue_wait.observe(now - job.enqueued)
            m.input_tokens.labels(model=name).observe(length)
        m.batch_size.observe(len(joining))
        padded = len(joining) * max(lengths)
        m.batch_tokens.observe(padded)
        m.padding_ratio.observe(1.0 - sum(lengths) / padded)
        if running.jobs:
            m.joined_sentences.labels(model=name).inc(len(joining))

    def settle(self, report: StepReport) -> None:
        """Answer what finished, fail what broke, and account the model time."""
        m, name = self.batcher.metrics, self.translator.name
        for job, result in report.finished:
            running = self.running.get(job.group.options)
            if running is not None and job in running.jobs:
                running.jobs.discard(job)
                running.cache_slots -= self.cache_slots(job, job.group.options)
            generated = len(result.hypotheses[0].tokens) if result.hypotheses else 0
            m.output_tokens.labels(model=name).observe(generated)
            m.generated_tokens.labels(model=name).inc(generated)
            if not job.future.done():
                job.future.set_result(result)
        for options, error in report.failed:
            running = self.running.pop(options)
            log.error("%s running batch of %d sentences failed", name, len(running.jobs), exc_info=error)
            for job in running.jobs:
                if not job.future.done():
                    job.future.set_exception(InferenceFailed(f"{name}: inference failed ({type(error).__name__})"))
        self.window_tokens += sum(len(job.ids) for job, _ in report.finished)
        self.window_seconds += report.encode_seconds + report.step_seconds
        if self.window_seconds >= RATE_WINDOW_S:
            self.lane.note_batch(self.window_tokens, self.window_seconds)
            self.window_tokens, self.window_seconds = 0, 0.0

    # --- in the model's inference thread ---------------------------------------------------------
    def advance(self, admitted: dict[SearchOptions, list[Job]], withdrawn: dict[SearchOptions, set[Job]]) -> StepReport:
        """Withdraw, join, then one decoder step of every running batch."""
        report, m, name = StepReport(), self.batcher.metrics, self.translator.name
        with self.translator.lock:
            for options, running in list(self.running.items()):
                try:
                    if options in withdrawn:
                        running.decoding.withdraw(withdrawn[options])
                    if options in admitted:
                        started = time.perf_counter()
                        jobs = admitted[options]
                        self.translator.join(running.decoding, [job.ids for job in jobs], jobs)
                        seconds = time.perf_counter() - started
                        m.inference_duration.labels(model=name, stage="encode").observe(seconds)
                        report.encode_seconds += seconds
                    if running.decoding.sentences:
                        m.running_sentences.labels(model=name).observe(running.decoding.sentences)
                        started = time.perf_counter()
                        report.finished += running.decoding.step()
                        seconds = time.perf_counter() - started
                        m.step_duration.labels(model=name).observe(seconds)
                        m.inference_duration.labels(model=name, stage="decode").observe(seconds)
                        report.step_seconds += seconds
                except Exception as error:  # noqa: BLE001 - only this running batch's sentences hear of it
                    report.failed.append((options, error))
        return report
