"""The continuous scheduler on real models, without HTTP: sentences join a running batch and get exactly
what they get alone, cancellation and deadlines free a running sentence's slot, a drain finishes the
running batch, a failing running batch fails only its own sentences, and the step-level metrics."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from engine.sessions import RuntimeOptions
from engine.translator import Translator
from service.batcher import Batcher, BatchPolicy, DeadlineExceeded, InferenceFailed
from service.metrics import Metrics
from tests.service_support import models_dir, translators  # noqa: F401 - fixtures

LONG_SENTENCE = "Choose the new green window and open the file on the table and the menu."  # fits the tiny model
# 249 tokens for the shipped models, whose translations of it run to the length cap (1.5 × 249 + 10 = 383
# beam-4 steps, 0.35 s here): a sentence that is still decoding whatever the model and the machine
LONG_TEXT = " and ".join(["open the green file on the table"] * 31) + "."


@pytest.fixture(scope="module")
def tiny(tiny_packages) -> Translator:
    return Translator(tiny_packages["fp32"], RuntimeOptions(intra_op_threads=1))


def sample(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def started(translator: Translator, **policy) -> tuple[Batcher, Metrics]:
    metrics = Metrics()
    metrics.add_model(translator.name, "CPUExecutionProvider", translator.precision)
    batcher = Batcher({translator.name: translator}, BatchPolicy(**{"scheduler": "continuous", **policy}), metrics)
    batcher.start()
    return batcher, metrics


async def until(condition, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


class StepGate:
    """The translator's step model, stopping the decoding thread after a number of steps until told to go on."""

    def __init__(self, inner, pause_after: int):
        self.inner, self.steps, self.pause_after = inner, 0, pause_after
        self.paused, self.resume = threading.Event(), threading.Event()

    def step(self, state, tokens, k):
        if self.steps == self.pause_after:
            self.paused.set()
            self.resume.wait(30)
        self.steps += 1
        return self.inner.step(state, tokens, k)

    def __getattr__(self, name):  # start, join, reorder, keep: the real ones
        return getattr(self.inner, name)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_a_sentence_joining_the_running_batch_gets_what_it_gets_alone(tiny, beam_size):
    options = tiny.search_options(beam_size=beam_size, n_best=beam_size)
    first, joining = tiny.tokenize([LONG_SENTENCE, "The house sees the small cat."])
    alone = tiny.translate_ids([joining], options)[0]

    async def scenario():
        batcher, metrics = started(tiny)
        healthy = tiny.step_model
        tiny.step_model = gate = StepGate(healthy, pause_after=2)
        try:
            running = asyncio.create_task(batcher.translate(tiny.name, [first], options))
            await until(gate.paused.is_set)  # the first sentence has taken two steps; the decoding thread waits
            joined = asyncio.create_task(batcher.translate(tiny.name, [joining], options))
            # admitted (a second batch observed; depth alone is 0 before the new task has even run): it joins
            # before the next step
            await until(lambda: sample(metrics, "translator_batch_size_count") == 2)
            gate.resume.set()
            joined = await joined
            await running
        finally:
            tiny.step_model = healthy
        await batcher.drain(5)
        return joined[0], metrics

    result, metrics = asyncio.run(scenario())
    assert [h.tokens for h in result.hypotheses] == [h.tokens for h in alone.hypotheses]
    assert [round(h.score, 4) for h in result.hypotheses] == [round(h.score, 4) for h in alone.hypotheses]
    assert sample(metrics, "translator_joined_sentences_total", model=tiny.name) == 1
    assert sample(metrics, "translator_running_batch_sentences_bucket", model=tiny.name, le="2.0") == \
        sample(metrics, "translator_running_batch_sentences_count", model=tiny.name)  # never more than two


def test_sentences_of_different_searches_run_side_by_side(tiny):
    greedy, beam = tiny.search_options(), tiny.search_options(beam_size=3)
    sources = tiny.tokenize(["Click on the button.", "Menu.", LONG_SENTENCE])

    async def scenario():
        batcher, _ = started(tiny)
        results = await asyncio.gather(*(batcher.translate(tiny.name, [ids], options)
                                         for ids in sources for options in (greedy, beam)))
        await batcher.drain(5)
        return results

    results = asyncio.run(scenario())
    expected = [tiny.translate_ids([ids], options)[0] for ids in sources for options in (greedy, beam)]
    assert [r[0].hypotheses[0].tokens for r in results] == [e.hypotheses[0].tokens for e in expected]


def test_a_cancelled_sentence_leaves_the_running_batch_and_frees_its_slot(translators):  # noqa: F811
    en_de = translators["en-de"]
    options = en_de.search_options(beam_size=4)
    long, short = en_de.tokenize([LONG_TEXT, "Open the file."])

    async def scenario():
        batcher, metrics = started(en_de, max_sentences=1)  # one sentence at a time: the short one must wait
        healthy = en_de.step_model
        en_de.step_model = gate = StepGate(healthy, pause_after=2)
        try:
            running = asyncio.create_task(batcher.translate("en-de", [long], options))
            await until(gate.paused.is_set)  # the long sentence has taken two steps; the decoding thread waits
            waiting = asyncio.create_task(batcher.translate("en-de", [short], options))
            await until(lambda: batcher.depth == 1)
            running.cancel()
            await until(lambda: batcher.depth == 0)  # the long one left the running batch; the short one took its place
            gate.resume.set()
            result = await waiting
        finally:
            en_de.step_model = healthy
        await batcher.drain(5)
        return running, result, gate.steps

    running, result, steps = asyncio.run(scenario())
    assert running.cancelled() and "Datei" in en_de.detokenize([result[0].hypotheses[0].tokens])[0]
    # The long sentence would have run to its length cap (383 steps). It took three (the third was under way
    # when it was cancelled) and left before the next: every later step was the short sentence's, within its cap.
    assert steps - 3 <= options.output_limits(np.array([len(short)]))[0]


def test_a_deadline_passing_mid_decode_frees_the_slot(translators):  # noqa: F811
    en_de = translators["en-de"]
    options = en_de.search_options(beam_size=4)
    long, short = en_de.tokenize([LONG_TEXT, "Open the file."])

    async def scenario():
        batcher, metrics = started(en_de, max_sentences=1, deadline_s=0.1)
        with pytest.raises(DeadlineExceeded):
            await batcher.translate("en-de", [long], options)
        steps_at_deadline = sample(metrics, "translator_step_duration_seconds_count", model="en-de")
        # The short sentence (its own deadline 0.1 s as well) needs the only place: the long one must have left.
        after = await batcher.translate("en-de", [short], options)
        await batcher.drain(5)
        return after, metrics, steps_at_deadline

    result, metrics, steps_at_deadline = asyncio.run(scenario())
    assert result[0].hypotheses
    # the long sentence would have taken hundreds of steps; it left within a few after its deadline
    assert sample(metrics, "translator_step_duration_seconds_count", model="en-de") < steps_at_deadline + 60


def test_drain_finishes_the_running_batch_and_loses_nothing(translators):  # noqa: F811
    en_de = translators["en-de"]
    options = en_de.search_options(beam_size=4)
    sources = en_de.tokenize(["Open the file.", "Close the window.", LONG_TEXT, "Print the page."])

    async def scenario():
        batcher, metrics = started(en_de)
        requests = [asyncio.create_task(batcher.translate("en-de", [ids], options)) for ids in sources]
        await until(lambda: sample(metrics, "translator_step_duration_seconds_count", model="en-de") >= 1)
        await batcher.drain(30)
        return await asyncio.gather(*requests, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(not isinstance(r, BaseException) and r[0].hypotheses for r in results)


class FailingJoin:
    """The translator's step model, failing when sentences join a running batch."""

    def __init__(self, inner):
        self.inner = inner

    def start(self, src_ids, beam_width, max_steps):
        raise RuntimeError("injected fault")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_failing_running_batch_fails_only_its_own_sentences(tiny):
    """A beam search's running batch fails as it starts while a greedy one is mid-decode: the beam sentence is
    answered with the failure, the greedy sentence with its translation."""
    greedy, beam = tiny.search_options(), tiny.search_options(beam_size=2)
    first, second = tiny.tokenize([LONG_SENTENCE, "Open the file."])

    async def scenario():
        batcher, _ = started(tiny)
        healthy = tiny.step_model
        tiny.step_model = gate = StepGate(healthy, pause_after=2)
        try:
            running = asyncio.create_task(batcher.translate(tiny.name, [first], greedy))
            await until(gate.paused.is_set)
            tiny.step_model = FailingJoin(healthy)  # running batches started from now on fail
            failing = asyncio.create_task(batcher.translate(tiny.name, [second], beam))
            await until(lambda: batcher.depth == 0)
            gate.resume.set()
            with pytest.raises(InferenceFailed):
                await failing
            result = await running
        finally:
            tiny.step_model = healthy
        after = await batcher.translate(tiny.name, [second], beam)
        await batcher.drain(5)
        return result, after

    result, after = asyncio.run(scenario())
    assert result[0].hypotheses[0].tokens == tiny.translate_ids([first], greedy)[0].hypotheses[0].tokens
    assert after[0].hypotheses
