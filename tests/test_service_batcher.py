"""The batcher on a real model, without HTTP: what shares a batch, backpressure, deadlines,
cancellation, failure isolation and draining, with the batch scheduler (the continuous one:
tests/test_service_continuous.py). Holding the model's lock stands the inference thread
still, so "this sentence is still queued" is a fact, not a timing guess."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batcher import Batcher, BatchPolicy, DeadlineExceeded, InferenceFailed, QueueFull, ShuttingDown
from service.metrics import Metrics
from tests.service_support import inference_paused, models_dir, translators  # noqa: F401 - fixtures


@pytest.fixture()
def en_de(translators):  # noqa: F811
    return translators["en-de"]


def sentence(translator, length: int, token: int = 10) -> list[int]:
    """`length` ids ending with EOS (content does not matter to batching)."""
    return [token] * (length - 1) + [translator.manifest.special_ids.eos]


def sample(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def started(translator, copies: tuple = (), **policy) -> tuple[Batcher, Metrics]:
    metrics = Metrics()
    batcher = Batcher({translator.name: translator}, BatchPolicy(**{"scheduler": "batch", "max_wait_s": 0.05, **policy}),
                      metrics, {translator.name: [translator, *copies]})
    batcher.start()
    return batcher, metrics


async def until(condition, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_concurrent_requests_share_one_batch_and_each_gets_its_own_result(en_de):
    options = en_de.search_options(max_length=8)
    sources = en_de.tokenize(["Open the file.", "Close the window.", "Print the page.", "Save the document as PDF."])

    async def scenario():
        batcher, metrics = await started(en_de, length_buckets=(64,))
        results = await asyncio.gather(*(batcher.translate("en-de", [ids], options) for ids in sources))
        await batcher.drain(5)
        return results, metrics

    results, metrics = asyncio.run(scenario())
    assert (sample(metrics, "translator_batch_size_count"), sample(metrics, "translator_batch_size_sum")) == (1, 4)
    expected = en_de.translate_ids(sources, options)  # the same padded batch, computed directly
    assert [r[0].hypotheses[0].tokens for r in results] == [e.hypotheses[0].tokens for e in expected]
    assert sample(metrics, "translator_queue_wait_seconds_count") == 4
    assert sample(metrics, "translator_inference_duration_seconds_count", model="en-de", stage="encode") == 1
    assert sample(metrics, "translator_inference_duration_seconds_count", model="en-de", stage="decode") == 1
    assert sample(metrics, "translator_generated_tokens_total", model="en-de") == sum(
        len(e.hypotheses[0].tokens) for e in expected)


def test_a_sentence_is_answered_the_step_it_ends_not_when_its_batch_does(en_de):
    options = en_de.search_options()
    short, long = en_de.tokenize([
        "Open the file.",
        "Select the cells that you want to copy, then choose Edit - Copy and paste them into another sheet of the document."])

    async def scenario():
        batcher, metrics = await started(en_de, length_buckets=(64,))
        first, second = (asyncio.create_task(batcher.translate("en-de", [ids], options)) for ids in (short, long))
        long_done_when_short_answered = []
        first.add_done_callback(lambda _: long_done_when_short_answered.append(second.done()))
        results = await asyncio.gather(first, second)
        await batcher.drain(5)
        return results, long_done_when_short_answered, metrics

    results, long_done_when_short_answered, metrics = asyncio.run(scenario())
    assert sample(metrics, "translator_batch_size_count") == 1  # one batch: the short sentence did not run alone
    assert long_done_when_short_answered == [False]
    expected = en_de.translate_ids([short, long], options)
    assert [r[0].hypotheses[0].tokens for r in results] == [e.hypotheses[0].tokens for e in expected]
    assert len(expected[0].hypotheses[0].tokens) < len(expected[1].hypotheses[0].tokens)


def test_length_buckets_and_search_options_split_batches(en_de):
    greedy, beam = en_de.search_options(max_length=4), en_de.search_options(beam_size=2, max_length=4)
    short, long = sentence(en_de, 5), sentence(en_de, 40)

    async def scenario():
        batcher, metrics = await started(en_de, length_buckets=(8, 16, 32, 64))
        await asyncio.gather(*(batcher.translate("en-de", [ids], greedy) for ids in (short, short, long, long)),
                             *(batcher.translate("en-de", [short], beam) for _ in range(2)))
        await batcher.drain(5)
        return metrics

    metrics = asyncio.run(scenario())
    # short greedy, long greedy, short beam: three batches of two, none padded
    assert (sample(metrics, "translator_batch_size_count"), sample(metrics, "translator_batch_size_sum")) == (3, 6)
    assert sample(metrics, "translator_padding_ratio_sum") == 0.0
    assert sample(metrics, "translator_batch_tokens_sum") == 2 * 5 + 2 * 40 + 2 * 5


def test_token_budget_caps_padded_tokens_but_a_long_sentence_still_runs(en_de):
    options = en_de.search_options(max_length=4)

    async def scenario():
        batcher, metrics = await started(en_de, token_budget=32, length_buckets=(32,))
        await asyncio.gather(*(batcher.translate("en-de", [sentence(en_de, 10)], options) for _ in range(8)))
        await batcher.translate("en-de", [sentence(en_de, 40)], options)  # alone over the budget
        await batcher.drain(5)
        return metrics

    metrics = asyncio.run(scenario())
    assert (sample(metrics, "translator_batch_size_count"), sample(metrics, "translator_batch_size_sum")) == (4, 9)
    assert sample(metrics, "translator_batch_tokens_bucket", le="32.0") == 3  # 3 × 10, 3 × 10, 2 × 10
    assert sample(metrics, "translator_batch_tokens_sum") == 30 + 30 + 20 + 40


def test_full_queue_refuses_at_once(en_de):
    options = en_de.search_options(max_length=4)

    async def scenario():
        batcher, metrics = await started(en_de, queue_limit=4, max_wait_s=0.0)
        with inference_paused(en_de):
            running = asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 5)], options))
            await until(lambda: batcher.depth == 0 and sample(metrics, "translator_batch_size_count") == 1)
            queued = asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 5)] * 4, options))
            await until(lambda: batcher.depth == 4)
            assert sample(metrics, "translator_queue_depth") == 4
            with pytest.raises(QueueFull, match="queue holds 4"):
                await batcher.translate("en-de", [sentence(en_de, 5)], options)
        assert len(await queued) == 4 and len(await running) == 1
        await batcher.drain(5)

    asyncio.run(scenario())


def test_deadline_and_cancellation_take_sentences_out_of_the_queue_before_any_work(en_de):
    options = en_de.search_options(max_length=4)

    async def scenario():
        batcher, metrics = await started(en_de, deadline_s=0.3, max_wait_s=0.0)
        with inference_paused(en_de):
            running = asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 5)], options))
            await until(lambda: sample(metrics, "translator_batch_size_count") == 1)
            abandoned = asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 6)] * 3, options))
            await until(lambda: batcher.depth == 3)
            abandoned.cancel()  # what a client disconnect does
            await asyncio.gather(abandoned, return_exceptions=True)
            assert batcher.depth == 0
            with pytest.raises(DeadlineExceeded):
                await batcher.translate("en-de", [sentence(en_de, 7)] * 2, options)
            assert batcher.depth == 0
            with pytest.raises(DeadlineExceeded):  # its batch is stuck behind the lock too
                await running
        await until(lambda: not en_de.lock.locked())
        await batcher.drain(5)
        return metrics

    metrics = asyncio.run(scenario())
    assert (sample(metrics, "translator_batch_size_count"), sample(metrics, "translator_batch_size_sum")) == (1, 1)
    assert sample(metrics, "translator_queue_depth") == 0


def test_a_failing_batch_fails_only_its_own_requests(en_de):
    options = en_de.search_options(max_length=4)
    outside_vocabulary = [en_de.manifest.model.vocab_size] * 30 + [en_de.manifest.special_ids.eos]

    async def scenario():
        batcher, _ = await started(en_de, length_buckets=(8, 64))
        results = await asyncio.gather(batcher.translate("en-de", [outside_vocabulary], options),
                                       batcher.translate("en-de", [sentence(en_de, 5)], options),
                                       return_exceptions=True)
        after = await batcher.translate("en-de", [sentence(en_de, 40)], options)  # the lane still works
        await batcher.drain(5)
        return results, after

    (failed, fine), after = asyncio.run(scenario())
    assert isinstance(failed, InferenceFailed) and "en-de" in str(failed)
    assert len(fine) == 1 and fine[0].hypotheses and len(after) == 1


def test_drain_finishes_queued_work_and_refuses_new(en_de):
    options = en_de.search_options(max_length=4)

    async def scenario():
        batcher, metrics = await started(en_de, max_wait_s=0.0)
        with inference_paused(en_de):
            first = asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 5)], options))
            await until(lambda: sample(metrics, "translator_batch_size_count") == 1)
            queued = asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 5)] * 2, options))
            await until(lambda: batcher.depth == 2)
            draining = asyncio.create_task(batcher.drain(10))
            await asyncio.sleep(0.05)
            with pytest.raises(ShuttingDown):
                await batcher.translate("en-de", [sentence(en_de, 5)], options)
        await draining
        return len(await first), len(await queued), metrics

    first, queued, metrics = asyncio.run(scenario())
    assert (first, queued) == (1, 2)
    assert sample(metrics, "translator_batch_size_sum") == 3


@pytest.fixture(scope="module")
def en_de_copy(translators):  # noqa: F811
    return translators["en-de"].copy()


def test_a_second_worker_runs_a_batch_while_the_first_is_busy_and_answers_alike(en_de, en_de_copy):
    options = en_de.search_options(beam_size=2, max_length=12)
    first_ids, second_ids = en_de.tokenize(["Open the file."]), en_de.tokenize(["Close the window.", "Print the page."])

    async def scenario():
        batcher, metrics = await started(en_de, copies=(en_de_copy,), max_wait_s=0.0, length_buckets=(64,))
        with inference_paused(en_de):  # the first worker's batch is stuck on its model's lock
            first = asyncio.create_task(batcher.translate("en-de", first_ids, options))
            await until(lambda: sample(metrics, "translator_batch_size_count") == 1)
            second = await asyncio.wait_for(batcher.translate("en-de", second_ids, options), 10)  # the copy answers
            assert not first.done()
            # The copy's answers come the step each sentence ends; its batch is over (its worker idle) just after.
            await until(lambda: sample(metrics, "translator_busy_inference_workers", model="en-de") == 1)
            draining = asyncio.create_task(batcher.drain(10))  # a drain waits for the batch still running
            await asyncio.sleep(0.05)
            assert not draining.done()
        await draining
        return await first, second, metrics

    first, second, metrics = asyncio.run(scenario())
    assert sample(metrics, "translator_busy_inference_workers", model="en-de") == 0
    alone = [en_de.translate_ids(first_ids, options)[0], *en_de.translate_ids(second_ids, options)]
    assert [(h.tokens, round(h.score, 4)) for r in [*first, *second] for h in r.hypotheses] == \
        [(h.tokens, round(h.score, 4)) for r in alone for h in r.hypotheses]


def test_a_drain_out_of_time_answers_every_workers_batch(en_de, en_de_copy):
    options = en_de.search_options(max_length=4)

    async def scenario():
        batcher, metrics = await started(en_de, copies=(en_de_copy,), max_wait_s=0.0, length_buckets=(64,))
        with inference_paused(en_de), inference_paused(en_de_copy):  # both workers stuck
            tasks = []
            for taken in (1, 2, 2):  # a batch per worker, and one sentence left waiting in the queue
                tasks.append(asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 5)], options)))
                await until(lambda: sample(metrics, "translator_batch_size_count") == taken and batcher.depth == len(tasks) - taken)
            await batcher.drain(0.2)
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, ShuttingDown) for outcome in outcomes), outcomes


def test_encode_batches_return_unit_embeddings(en_de):
    sources = en_de.tokenize(["Open the file.", "Close the window."])

    async def scenario():
        batcher, metrics = await started(en_de, length_buckets=(64,))
        embeddings = await asyncio.gather(*(batcher.encode("en-de", [ids]) for ids in sources))
        await batcher.drain(5)
        return [e[0] for e in embeddings], metrics

    embeddings, metrics = asyncio.run(scenario())
    d = en_de.manifest.model.d_model
    assert [e.vector.shape for e in embeddings] == [(d,), (d,)]
    assert np.allclose([np.linalg.norm(e.vector) for e in embeddings], 1.0, atol=1e-5)
    assert [e.token_states.shape for e in embeddings] == [(len(s), d) for s in sources]
    assert sample(metrics, "translator_batch_size_count") == 1
    assert sample(metrics, "translator_inference_duration_seconds_count", model="en-de", stage="encode") == 1


def test_work_that_could_not_meet_its_deadline_is_refused_at_once(en_de):
    options = en_de.search_options(max_length=4)

    async def scenario():
        batcher, metrics = await started(en_de, deadline_s=2.0, max_wait_s=0.0, length_buckets=(64,), queue_limit=100_000)
        await batcher.translate("en-de", [sentence(en_de, 20)] * 4, options)  # measures the lane's tokens per second
        lane = batcher.lanes["en-de"]
        await until(lambda: lane.tokens_per_s)  # noted once the batch is over, which may be just after its answers
        rate = lane.tokens_per_s
        assert rate > 0
        with inference_paused(en_de):
            blocker = asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 5)], options))
            await until(lambda: sample(metrics, "translator_batch_size_count") == 2)  # taken, stuck on the lock
            needed = int(rate * 1.0 / 30) + 2  # 30-token sentences: more than half the deadline's worth of work
            queued = asyncio.create_task(batcher.translate("en-de", [sentence(en_de, 30)] * needed, options))
            await until(lambda: lane.queued_tokens == 30 * needed)
            assert lane.expected_wait_s() > 1.0
            started_at = asyncio.get_running_loop().time()
            with pytest.raises(QueueFull, match="more than this request's 2 s deadline allows"):
                await batcher.translate("en-de", [sentence(en_de, 5)], options)
            assert asyncio.get_running_loop().time() - started_at < 0.05  # refused at once, not at the deadline
            assert batcher.depth == needed  # the refused request left nothing behind
        await asyncio.gather(blocker, queued, return_exceptions=True)
        await batcher.drain(5)
        return lane

    lane = asyncio.run(scenario())
    assert lane.queued_tokens == 0
