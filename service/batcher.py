"""Cross-request batching: sentences from concurrent requests share one inference call.

The batcher knows nothing about HTTP. A request hands it token id lists; each sentence waits in a
group of sentences that may share a batch: the same model, the same task (translate or encode),
the same search options (a beam-4 sentence never rides with a greedy one) and the same length
bucket (so a 5-token sentence is not padded to 120). One scheduler task per model picks the group
whose oldest sentence has waited longest and sends it, as soon as an inference worker is idle, once
it is full (token budget of padded tokens, or the sentence cap) or its oldest sentence has waited
`max_wait`. Inference runs off the event loop in the model's workers, each a copy of the model's
sessions (in this process or in one of its own: service/worker_process.py) with a thread that runs its
batches, so the server keeps accepting while batches compute, and with several workers several batches
compute at once (one per CPU beats one batch on every CPU's thread: README, Load benchmark); meanwhile
the next batch fills up by itself. Each sentence is answered the step it ends, not when its batch's
longest one does. That is the `batch` scheduler; with the `continuous` one (service/continuous.py) a
lane's sentences join a running batch at decoder steps instead, and the queue, backpressure, deadlines,
cancellation and drain below are this module's for both.

Backpressure: the queue holds at most `queue_limit` sentences and refuses more at once (QueueFull).
It also refuses, at once, a request that could not be answered within its deadline: each model's
lane measures the source tokens its batches get through per second, and a request that would wait
behind more queued work than the lane clears in half the deadline is turned away (a fast 429/503
instead of a slow one at the deadline, when the client has waited for nothing).
A request whose deadline passes or whose caller goes away (its task is cancelled) takes its
sentences out of the queue, so they do no work. On shutdown the batcher stops accepting and
finishes what is queued.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator
from typing import Any

from engine.search import FinishedHook, SearchOptions, SearchResult, StageTimes
from engine.translator import Translator
from service.continuous import ContinuousScheduler
from service.lanes import (
    ADMIT_WAIT_SHARE, BatchPolicy, DeadlineExceeded, Embedding, GroupKey, InferenceFailed, InferenceWorker, Job,
    Lane, ModelCopy, QueueFull, ShuttingDown, Task,
)
from service.metrics import Metrics
from service.worker_process import WorkerProcess

log = logging.getLogger(__name__)

class Submission:
    """One request's sentences in the batcher. Closing it (a `with` block) takes whatever still waits out of the
    queue: answered, failed, timed out or cancelled, the sentences do no more work."""

    def __init__(self, batcher: "Batcher", lane: Lane, jobs: list[Job]):
        self.batcher, self.lane, self.jobs = batcher, lane, jobs
        self.deadline_s = batcher.policy.deadline_s

    def __enter__(self) -> "Submission":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.batcher._withdraw(self.lane, self.jobs)

    async def results(self) -> list:
        """Every sentence's result, in order."""
        try:
            async with asyncio.timeout(self.deadline_s):
                return await asyncio.gather(*(job.future for job in self.jobs))
        except TimeoutError:
            raise DeadlineExceeded(f"not answered within the {self.deadline_s:g} s deadline") from None

    async def as_completed(self) -> AsyncIterator[tuple[int, Any]]:
        """(index, result) of each sentence as it finishes; raises the first error, or DeadlineExceeded."""
        index = {job.future: i for i, job in enumerate(self.jobs)}
        pending = set(index)
        try:
            async with asyncio.timeout(self.deadline_s):
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for future in sorted(done, key=index.__getitem__):
                        yield index[future], future.result()
        except TimeoutError:
            raise DeadlineExceeded(f"not answered within the {self.deadline_s:g} s deadline") from None


class Batcher:
    def __init__(self, translators: dict[str, Translator], policy: BatchPolicy, metrics: Metrics,
                 workers: dict[str, list[ModelCopy]] | None = None):
        """`workers`: what runs each model's batches, each an inference worker with a thread of its own (the batch scheduler:
        one batch at a time per worker): copies of the model (Translator.copy) or worker processes; default: the model
        of `translators` itself."""
        self.policy = policy
        self.metrics = metrics
        workers = workers or {}
        self.lanes = {
            name: Lane(translator, [InferenceWorker(t, ThreadPoolExecutor(1, thread_name_prefix=f"inference-{name}-{i}"))
                                    for i, t in enumerate(workers.get(name) or [translator])])
            for name, translator in translators.items()
        }
        for name, lane in self.lanes.items():
            processes = [w.model for w in lane.workers if isinstance(w.model, WorkerProcess)]
            if processes:  # read at each scrape
                metrics.worker_memory.labels(model=name).set_function(lambda p=processes: sum(w.resident_bytes() for w in p))
        self.depth = 0  # sentences waiting, all lanes
        self.closing = False

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        for name, lane in self.lanes.items():
            runner = ContinuousScheduler(self, lane).run() if self.policy.scheduler == "continuous" else self._schedule(lane)
            lane.task = asyncio.create_task(runner, name=f"batcher-{name}")

    async def warmup(self, batch_size: int) -> None:
        """Warm every copy of every model in its own inference thread: requests that arrive meanwhile queue behind it."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(worker.executor, worker.model.warmup, batch_size)
                               for lane in self.lanes.values() for worker in lane.workers))

    async def drain(self, timeout: float) -> None:
        """Stop accepting, finish what is queued (up to `timeout` seconds), close the inference workers."""
        self.closing = True
        for lane in self.lanes.values():
            lane.wakeup.set()
        tasks = [lane.task for lane in self.lanes.values() if lane.task]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("drain timed out after %.1f s; failing the sentences still queued", timeout)
                await asyncio.gather(*pending, return_exceptions=True)
        for lane in self.lanes.values():
            for jobs in lane.groups.values():
                for job in jobs:
                    job.queued = False  # out of the queue: its submission must not look for it there when it closes
                    if not job.future.done():
                        job.future.set_exception(ShuttingDown("the server is shutting down"))
            lane.groups.clear()
            lane.queued_tokens = 0
        self._set_depth(0)
        # Worker processes are told to stop and waited for (one stuck in a batch is killed): off the event loop.
        await asyncio.gather(*(asyncio.to_thread(worker.close) for lane in self.lanes.values() for worker in lane.workers))

    # --- submitting ------------------------------------------------------------------------------
    async def translate(self, model: str, sources: list[list[int]], options: SearchOptions) -> list[SearchResult]:
        return await self._submit(model, "translate", options, sources)

    async def encode(self, model: str, sources: list[list[int]]) -> list[Embedding]:
        return await self._submit(model, "encode", None, sources)

    def submit(self, model: str, sources: list[list[int]], options: SearchOptions) -> Submission:
        """Queue sentences for translation now (refused at once when overloaded) → their results as they come;
        close the submission when done with it."""
        return self._enqueue(model, "translate", options, sources)

    async def _submit(self, model: str, task: Task, options: SearchOptions | None, sources: list[list[int]]) -> list:
        with self._enqueue(model, task, options, sources) as submission:
            return await submission.results()

    def _enqueue(self, model: str, task: Task, options: SearchOptions | None, sources: list[list[int]]) -> Submission:
        if self.closing:
            raise ShuttingDown("the server is shutting down")
        lane = self.lanes[model]
        if self.depth + len(sources) > self.policy.queue_limit:
            raise QueueFull(f"{self.depth} sentences are waiting; the queue holds {self.policy.queue_limit}")
        if (backlog := self._backlog(model, lane)) is not None:
            raise QueueFull(backlog)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        jobs = [Job(ids, GroupKey(task, options, self.policy.bucket(task, len(ids))), loop.create_future(), now,
                    now + self.policy.deadline_s) for ids in sources]
        for job in jobs:
            lane.enqueue(job)
        self._set_depth(self.depth + len(jobs))
        lane.wakeup.set()
        return Submission(self, lane, jobs)

    def _backlog(self, model: str, lane: Lane) -> str | None:
        """Why `lane` refuses new work for its queued backlog, or None."""
        expected = lane.expected_wait_s()
        if expected is not None and expected > ADMIT_WAIT_SHARE * self.policy.deadline_s:
            return (f"about {expected:.1f} s of work is queued for {model}, more than this request's "
                    f"{self.policy.deadline_s:g} s deadline allows")
        return None

    def refusal(self) -> str | None:
        """Why any request would be refused now (queue full, or every model's backlog over the
        admission limit), else None. The HTTP layer asks before reading a body: under overload a
        refusal must cost next to nothing, since parsing, validating and tokenising a request that is
        then refused takes the cores inference needs."""
        if self.closing:
            return None  # the routes answer that one, with its own message
        if self.depth >= self.policy.queue_limit:
            return f"{self.depth} sentences are waiting; the queue holds {self.policy.queue_limit}"
        reasons = [self._backlog(model, lane) for model, lane in self.lanes.items()]
        return reasons[0] if reasons and all(reasons) else None

    def _withdraw(self, lane: Lane, jobs: list[Job]) -> None:
        removed = 0
        for job in jobs:
            if not job.future.done():
                job.future.cancel()
            if job.queued:
                lane.remove(job)
                job.queued = False
                removed += 1
        if removed:
            self._set_depth(self.depth - removed)
            lane.wakeup.set()  # the group the scheduler waits on may be gone

    def _set_depth(self, depth: int) -> None:
        self.depth = depth
        self.metrics.queue_depth.set(depth)

    # --- scheduling ------------------------------------------------------------------------------
    async def _schedule(self, lane: Lane) -> None:
        running: set[asyncio.Task] = set()
        try:
            await self._dispatch(lane, running)
            await asyncio.gather(*running)  # drained: the batches still running finish
        finally:  # the drain ran out of time (cancelled): each running batch answers its sentences so
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _dispatch(self, lane: Lane, running: set[asyncio.Task]) -> None:
        """Send batches to idle workers until drained; a batch taken is formed the moment a worker is free for it."""
        while True:
            if not lane.groups or not lane.idle:  # nothing to send, or every worker busy: a finished batch wakes us
                if self.closing and not lane.groups:
                    return
                lane.wakeup.clear()
                await lane.wakeup.wait()
                continue
            key = min(lane.groups, key=lambda k: lane.groups[k][0].enqueued)  # the longest-waiting sentence first
            jobs = lane.groups[key]
            wait = jobs[0].enqueued + self.policy.max_wait_s - time.monotonic()
            if wait > 0 and not self.closing and not self._full(jobs):
                lane.wakeup.clear()
                try:  # a new sentence may fill the batch sooner; re-evaluate on every arrival
                    async with asyncio.timeout(wait):
                        await lane.wakeup.wait()
                except TimeoutError:
                    pass
                continue
            batch = self.take_batch(lane, key)
            if batch:
                task = asyncio.create_task(self._run_on_worker(lane, lane.idle.pop(), key, batch))
                running.add(task)
                task.add_done_callback(running.discard)

    async def _run_on_worker(self, lane: Lane, worker: InferenceWorker, key: GroupKey, batch: list[Job]) -> None:
        busy = self.metrics.busy_workers.labels(model=lane.translator.name)
        busy.inc()
        try:
            await self.run_batch(lane, key, batch, worker)
        finally:
            busy.dec()
            lane.idle.append(worker)
            lane.wakeup.set()

    def _fitting(self, jobs: deque[Job]) -> tuple[int, int]:
        """How many of the oldest jobs fit one batch, and the longest of them."""
        count = longest = 0
        for job in jobs:
            longer = max(longest, len(job.ids))
            if count and ((count + 1) * longer > self.policy.token_budget or count >= self.policy.max_sentences):
                break
            count, longest = count + 1, longer
        return count, longest

    def _full(self, jobs: deque[Job]) -> bool:
        count, longest = self._fitting(jobs)
        return (count < len(jobs) or count >= self.policy.max_sentences
                or (count + 1) * longest > self.policy.token_budget)

    def take_batch(self, lane: Lane, key: GroupKey) -> list[Job]:
        """The oldest jobs of a group that fit one batch, claimed (both schedulers: the continuous one for its
        encoder-only batches)."""
        count, _ = self._fitting(lane.groups[key])
        return self.claim(lane.take_oldest(key, count))

    def claim(self, taken: list[Job]) -> list[Job]:
        """Jobs just taken out of their lane's queue → those still worth running: a job whose caller went away
        is dropped, one whose deadline passed is answered so (its caller's timer may not have fired yet while
        the loop was busy)."""
        self._set_depth(self.depth - len(taken))
        now = time.monotonic()
        batch = []
        for job in taken:
            job.queued = False
            if job.future.done():
                continue
            if now > job.deadline:
                job.future.set_exception(DeadlineExceeded("deadline passed in the queue"))
                continue
            batch.append(job)
        return batch

    def observe_batch(self, model: str, batch: list[Job]) -> None:
        """Queue waits and batch shape, when sentences start (a batch, or a join into the running batch)."""
        m, now = self.metrics, time.monotonic()
        lengths = [len(job.ids) for job in batch]
        padded = len(batch) * max(lengths)
        for job, length in zip(batch, lengths):
            m.queue_wait.observe(now - job.enqueued)
            m.input_tokens.labels(model=model).observe(length)
        m.batch_size.observe(len(batch))
        m.batch_tokens.observe(padded)
        m.padding_ratio.observe(1.0 - sum(lengths) / padded)

    async def run_batch(self, lane: Lane, key: GroupKey, batch: list[Job], worker: InferenceWorker | None = None) -> None:
        """Run one batch on `worker` (default: the lane's first) and answer its sentences."""
        worker = worker or lane.workers[0]
        name = lane.translator.name
        self.observe_batch(name, batch)
        sources = [job.ids for job in batch]
        loop = asyncio.get_running_loop()
        # Stays ShuttingDown only if the batch is cancelled: a drain that ran out of time.
        outcome: list[Any] | BaseException = ShuttingDown("the server stopped before this batch finished")
        try:
            if key.task == "translate":
                # Each sentence is answered the step it ends, not when the batch's longest one does: its client
                # sends its next request meanwhile, in time for the next batch.
                answer_finished = functools.partial(loop.call_soon_threadsafe, self._answer_finished, batch)
                times = StageTimes()
                outcome = await loop.run_in_executor(worker.executor, self._translate, worker.model, sources,
                                                     key.options, times, answer_finished, self._quiet())
                # Model time only (the engine's stage times): a test holding the model's lock does not skew it.
                lane.note_batch(sum(len(job.ids) for job in batch), times.encode_seconds + times.decode_seconds)
            else:
                outcome = await loop.run_in_executor(worker.executor, self._encode, worker.model, sources)
        except Exception as error:  # noqa: BLE001 - whatever broke, only this batch's requests hear of it
            log.exception("%s batch of %d sentences failed", name, len(batch))
            outcome = error
        finally:
            self._answer(batch, outcome, name)

    def _quiet(self) -> bool:
        """Nothing queued in any lane and no worker busy but the one just given a batch: a lone client's request (a
        worker process then stays awake for the next one: service/worker_process.py)."""
        busy = sum(len(lane.workers) - len(lane.idle) for lane in self.lanes.values())
        return busy <= 1 and not any(lane.groups for lane in self.lanes.values())

    @staticmethod
    def _answer_finished(batch: list[Job], ended: list[tuple[int, SearchResult]]) -> None:
        for index, result in ended:
            if not batch[index].future.done():  # its caller may have gone away
                batch[index].future.set_result(result)

    @staticmethod
    def _answer(batch: list[Job], outcome: list[Any] | BaseException, name: str) -> None:
        for i, job in enumerate(batch):
            if job.future.done():  # its caller went away while the batch ran
                continue
            if isinstance(outcome, ShuttingDown):
                job.future.set_exception(ShuttingDown(str(outcome)))
            elif isinstance(outcome, BaseException):
                job.future.set_exception(InferenceFailed(f"{name}: inference failed ({type(outcome).__name__})"))
            else:
                job.future.set_result(outcome[i])

    # --- in the model's inference thread --------------------------------------------------------
    def _translate(self, translator: ModelCopy, sources: list[list[int]], options: SearchOptions, times: StageTimes,
                   on_finished: FinishedHook | None, quiet: bool = False) -> list[SearchResult]:
        name, m = translator.name, self.metrics
        if isinstance(translator, WorkerProcess):
            results = translator.translate_ids(sources, options, times, on_finished, awake=quiet)
        else:
            results = translator.translate_ids(sources, options, times, on_finished)
        m.inference_duration.labels(model=name, stage="encode").observe(times.encode_seconds)
        m.inference_duration.labels(model=name, stage="decode").observe(times.decode_seconds)
        generated = [len(r.hypotheses[0].tokens) if r.hypotheses else 0 for r in results]
        for count in generated:
            m.output_tokens.labels(model=name).observe(count)
        m.generated_tokens.labels(model=name).inc(sum(generated))
        return results

    def _encode(self, translator: ModelCopy, sources: list[list[int]]) -> list[Embedding]:
        start = time.perf_counter()
        vectors, states = translator.encode_ids(sources)
        self.metrics.inference_duration.labels(model=translator.name, stage="encode").observe(time.perf_counter() - start)
        return [Embedding(vector, state) for vector, state in zip(vectors, states)]
