"""Iteration-level (continuous) batching: one running batch per model and search setting.

At every decoder step boundary, waiting sentences join the running batch (their encoder runs
batched, sources of any length together) and finished sentences leave and are answered at once,
instead of a batch running until its longest sentence ends while newcomers wait for the next one.
Greedy and beam sentences cannot share a decoder step (the beam width is one per step), so each
search setting has its own running batch; the model's decoding thread steps them in turn.

The decoding thread never waits for the event loop: it takes what the event loop sent it (sentences
to join, sentences to withdraw) from an inbox between two steps, and posts each step's finished
sentences back without waiting for an answer. The event loop decides everything about the queue:
admission keeps the running batch within the policy (at most `max_sentences` sentences, and the
cache they may fill, beams × output limit per sentence, within `cache_budget`); deadlines,
cancellation, backpressure and drain stay the batcher's, and a sentence whose caller went away or
whose deadline passed is withdrawn from the running batch at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from engine.search import Decoding, SearchOptions, SearchResult
from service.lanes import DeadlineExceeded, InferenceFailed, Job, Lane, ShuttingDown

if TYPE_CHECKING:
    from service.batcher import Batcher

log = logging.getLogger(__name__)
RATE_WINDOW_S = 0.25  # model seconds over which finished work updates the lane's tokens-per-second estimate
REPORT_EVERY_S = 0.02  # with nothing finished, the event loop still hears from the thread this often (deadlines)


@dataclass
class Running:
    """The event loop's account of one search setting's running batch."""

    jobs: set[Job] = field(default_factory=set)
    cache_slots: int = 0  # Σ beams × output limit of its sentences


@dataclass
class StepReport:
    """What one step of the decoding thread did."""

    finished: list[tuple[Job, SearchResult]] = field(default_factory=list)
    failed: list[tuple[SearchOptions, list[Job], BaseException]] = field(default_factory=list)
    model_seconds: float = 0.0


class ContinuousScheduler:
    def __init__(self, batcher: Batcher, lane: Lane):
        self.batcher, self.lane = batcher, lane
        self.translator = lane.translator
        self.running: dict[SearchOptions, Running] = {}
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # ("join" | "withdraw", options, jobs), or None: stop
        self.window_tokens, self.window_seconds = 0, 0.0

    async def run(self) -> None:
        batcher, lane = self.batcher, self.lane
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self.decode, args=(loop,), name=f"decoding-{self.translator.name}", daemon=True)
        thread.start()
        try:
            while True:
                self.admit()
                encode_key = next((key for key in lane.groups if key.task == "encode"), None)
                if encode_key is not None:  # sentence embeddings: batches of their own, in the lane's executor
                    batch = batcher.take_batch(lane, encode_key)
                    if batch:
                        await batcher.run_batch(lane, encode_key, batch)
                    continue
                if batcher.closing and not lane.groups and not any(r.jobs for r in self.running.values()):
                    return
                lane.wakeup.clear()
                await lane.wakeup.wait()  # a new sentence, a finished step, a withdrawal, or the drain
        finally:  # drained, or the drain ran out of time: whatever still runs is answered
            self.inbox.put(None)
            await asyncio.to_thread(thread.join)
            for running in self.running.values():
                for job in running.jobs:
                    if not job.future.done():
                        job.future.set_exception(ShuttingDown("the server stopped before this sentence finished"))

    # --- on the event loop -----------------------------------------------------------------------
    def cache_slots(self, job: Job) -> int:
        options = job.group.options
        return max(1, options.beam_size) * int(options.output_limits(np.array([len(job.ids)]))[0])

    def admit(self) -> None:
        """Send waiting sentences to their running batch, oldest first, within the policy."""
        policy, lane = self.batcher.policy, self.lane
        for key in [k for k in lane.groups if k.task == "translate"]:
            running = self.running.setdefault(key.options, Running())
            count, slots = 0, running.cache_slots
            for job in lane.groups[key]:
                need = self.cache_slots(job)
                full = len(running.jobs) + count >= policy.max_sentences
                if full or ((running.jobs or count) and slots + need > policy.cache_budget):
                    break
                count, slots = count + 1, slots + need
            joining = self.batcher.claim(lane.take_oldest(key, count)) if count else []
            if not joining:
                continue
            self.batcher.observe_batch(self.translator.name, joining)
            if running.jobs:
                self.batcher.metrics.joined_sentences.labels(model=self.translator.name).inc(len(joining))
            running.jobs.update(joining)
            running.cache_slots += sum(self.cache_slots(job) for job in joining)
            for job in joining:
                job.future.add_done_callback(partial(self.abandoned, job))
            self.inbox.put(("join", key.options, joining))

    def leave(self, job: Job) -> bool:
        """Take a job out of its running batch's account → whether it was there (not withdrawn meanwhile)."""
        running = self.running.get(job.group.options)
        if running is None or job not in running.jobs:
            return False
        running.jobs.discard(job)
        running.cache_slots -= self.cache_slots(job)
        return True

    def abandoned(self, job: Job, future: asyncio.Future) -> None:
        """A running sentence's future was cancelled (its caller went away, or its request's deadline passed):
        withdrawn before the decoding thread's next step, not at its next report, and its place offered at once."""
        if future.cancelled() and self.leave(job):
            self.inbox.put(("withdraw", job.group.options, [job]))
            self.lane.wakeup.set()

    def settle(self, report: StepReport) -> None:
        """Answer what finished, fail what broke, withdraw what passed its deadline; then admit again. (A sentence
        whose future was cancelled has left already: `abandoned`.)"""
        m, name, now = self.batcher.metrics, self.translator.name, time.monotonic()
        for job, result in report.finished:
            if not self.leave(job):
                continue  # withdrawn meanwhile
            generated = len(result.hypotheses[0].tokens) if result.hypotheses else 0
            m.output_tokens.labels(model=name).observe(generated)
            m.generated_tokens.labels(model=name).inc(generated)
            if not job.future.done():
                job.future.set_result(result)
        for options, jobs, error in report.failed:
            log.error("%s running batch of %d sentences failed", name, len(jobs), exc_info=error)
            for job in jobs:
                self.leave(job)
                if not job.future.done():
                    job.future.set_exception(InferenceFailed(f"{name}: inference failed ({type(error).__name__})"))
        for options, running in self.running.items():
            leaving = [job for job in running.jobs if now > job.deadline]
            for job in leaving:
                if not job.future.done():
                    job.future.set_exception(DeadlineExceeded("deadline passed while being translated"))
                self.leave(job)
            if leaving:
                self.inbox.put(("withdraw", options, leaving))
        for options in [options for options, running in self.running.items() if not running.jobs]:
            del self.running[options]  # every search setting a client asks for gets a running batch: not for long
        self.window_tokens += sum(len(job.ids) for job, _ in report.finished)
        self.window_seconds += report.model_seconds
        if self.window_seconds >= RATE_WINDOW_S:
            self.lane.note_batch(self.window_tokens, self.window_seconds)
            self.window_tokens, self.window_seconds = 0, 0.0
        self.lane.wakeup.set()

    # --- the decoding thread ---------------------------------------------------------------------
    def take_inbox(self, block: bool) -> list:
        """Every message waiting in the inbox, in order (when `block`, waiting for the first)."""
        messages = []
        try:
            messages.append(self.inbox.get(block=block))
            while True:
                messages.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        return messages

    def apply(self, decodings: dict[SearchOptions, Decoding], report: StepReport, kind: str, options: SearchOptions,
              jobs: list[Job]) -> None:
        """Join sentences to their running batch (their encoder runs), or withdraw them from it."""
        decoding, encode_duration = decodings.get(options), self.batcher.metrics.inference_duration
        try:
            with self.translator.lock:
                if kind == "withdraw" and decoding is not None:
                    decoding.withdraw(set(jobs))
                elif kind == "join":
                    if decoding is None:
                        decoding = decodings[options] = self.translator.decoding(options)
                    started = time.perf_counter()
                    self.translator.join(decoding, [job.ids for job in jobs], jobs)
                    seconds = time.perf_counter() - started
                    encode_duration.labels(model=self.translator.name, stage="encode").observe(seconds)
                    report.model_seconds += seconds
        except Exception as error:  # noqa: BLE001 - only this running batch's sentences hear of it
            report.failed.append((options, [*jobs, *(decoding.tags if decoding else [])], error))
            decodings.pop(options, None)

    def decode(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join, withdraw, step every running batch once, post the outcome; block only when idle."""
        decodings: dict[SearchOptions, Decoding] = {}
        m, name = self.batcher.metrics, self.translator.name
        report, reported = StepReport(), time.monotonic()
        while True:
            idle = not any(d.sentences for d in decodings.values())
            messages = self.take_inbox(block=idle)
            while messages:
                # a sentence abandoned before its join reached the model is not encoded at all
                withdrawn = {job for message in messages if message and message[0] == "withdraw" for job in message[2]}
                for message in messages:
                    if message is None:
                        return
                    kind, options, jobs = message
                    if kind == "join":
                        jobs = [job for job in jobs if job not in withdrawn]
                        if not jobs:
                            continue
                    self.apply(decodings, report, kind, options, jobs)
                messages = self.take_inbox(block=False)
            for options, decoding in list(decodings.items()):
                if not decoding.sentences:
                    continue
                m.running_sentences.labels(model=name).observe(decoding.sentences)
                started = time.perf_counter()
                try:
                    with self.translator.lock:
                        report.finished += decoding.step()
                except Exception as error:  # noqa: BLE001
                    report.failed.append((options, list(decoding.tags), error))
                    del decodings[options]
                    continue
                seconds = time.perf_counter() - started
                m.step_duration.labels(model=name).observe(seconds)
                m.inference_duration.labels(model=name, stage="decode").observe(seconds)
                report.model_seconds += seconds
            decodings = {options: decoding for options, decoding in decodings.items() if decoding.sentences}
            if report.finished or report.failed or (report.model_seconds and time.monotonic() - reported > REPORT_EVERY_S):
                loop.call_soon_threadsafe(self.settle, report)
                report, reported = StepReport(), time.monotonic()
