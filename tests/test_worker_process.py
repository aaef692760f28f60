"""Inference workers in processes of their own (service/worker_process.py): the real package in a real child process,
answering as the model in this process does; errors, a child that dies, and the batcher's drain."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from engine.search import StageTimes
from engine.translator import SessionsReleased, Translator
from service.batcher import Batcher, BatchPolicy, InferenceFailed
from service.metrics import Metrics
from service.worker_process import WorkerProcess, WorkerProcessFailed
from tests.service_support import ThreadServer, cpu_seconds, metric, models_dir, running, settings_for, translators, wait_until  # noqa: F401 - fixtures


@pytest.fixture()
def en_de(translators):  # noqa: F811
    return translators["en-de"]


@pytest.fixture()
def worker(en_de):
    process = WorkerProcess(en_de)
    yield process
    process.close()


def as_compared(results) -> list:
    return [[(h.tokens, round(h.score, 5)) for h in r.hypotheses] for r in results]


@pytest.mark.parametrize("beam", [1, 3])
def test_a_worker_process_translates_and_encodes_as_the_model_does(en_de, worker, beam):
    sources = en_de.tokenize(["Open the file.", "Select the cells that you want to copy, then choose Edit - Copy.",
                              "Close the window."])
    options = en_de.search_options(beam_size=beam, n_best=beam)
    ended, times = [], StageTimes()
    results = worker.translate_ids(sources, options, times, ended.append)
    assert worker.pid != os.getpid()
    assert as_compared(results) == as_compared(en_de.translate_ids(sources, options))
    # Each step's finished sentences came back as they ended, every sentence once, before the batch's results.
    assert sorted(index for step in ended for index, _ in step) == [0, 1, 2] and len(ended) >= 2
    assert times.encode_seconds > 0 and times.decode_seconds > 0 and times.steps > 0
    vectors, states = worker.encode_ids(sources)
    expected_vectors, expected_states = en_de.encode_ids(sources)
    np.testing.assert_array_equal(vectors, expected_vectors)
    assert all(np.array_equal(a, b) for a, b in zip(states, expected_states))


def test_an_error_inside_the_worker_fails_that_call_only(en_de, worker):
    outside_vocabulary = [en_de.manifest.model.vocab_size] * 5 + [en_de.manifest.special_ids.eos]
    pid = worker.pid
    with pytest.raises(WorkerProcessFailed, match="en-de: .*Error"):
        worker.translate_ids([outside_vocabulary], en_de.search_options(max_length=4))
    assert worker.translate_ids(en_de.tokenize(["Open the file."]), en_de.search_options())[0].hypotheses
    assert worker.pid == pid  # the same child went on


def test_a_failing_finished_hook_fails_its_call_and_the_next_call_reads_its_own_answers(en_de, worker):
    sources = en_de.tokenize(["Open the file.", "Select the cells that you want to copy, then choose Edit - Copy."])
    options = en_de.search_options(beam_size=2)

    def broken_hook(ended):
        raise RuntimeError("the event loop is closed")

    with pytest.raises(RuntimeError, match="event loop is closed"):
        worker.translate_ids(sources, options, None, broken_hook)
    assert as_compared(worker.translate_ids(sources[:1], options)) == as_compared(en_de.translate_ids(sources[:1], options))


def test_a_worker_stays_awake_after_a_batch_sent_awake_only(en_de):
    worker = WorkerProcess(en_de, awake_s=0.5)
    try:
        options, sources = en_de.search_options(), en_de.tokenize(["Open the file."])

        def cpu_while_waiting(awake: bool) -> float:
            results = worker.translate_ids(sources, options, awake=awake)
            assert as_compared(results) == as_compared(en_de.translate_ids(sources, options))
            before = cpu_seconds(worker.pid)
            time.sleep(0.6)  # past its awake time: then it sleeps in its socket
            return cpu_seconds(worker.pid) - before

        assert cpu_while_waiting(awake=True) > 0.2  # it polled for its next call (yielding: it may share the CPU)
        assert cpu_while_waiting(awake=False) < 0.05  # it went to sleep at once
    finally:
        worker.close()


def test_the_batcher_keeps_a_worker_awake_for_a_lone_request_only(en_de):
    options = en_de.search_options()
    first, second = en_de.tokenize(["Open the file."]), en_de.tokenize(["Close the window."])

    async def scenario():
        workers = await asyncio.gather(*(asyncio.to_thread(WorkerProcess, en_de, 0.5) for _ in range(2)))
        batcher = Batcher({"en-de": en_de}, BatchPolicy(scheduler="batch", max_sentences=1), Metrics(), {"en-de": workers})
        batcher.start()

        async def cpu_after(*requests) -> float:
            await asyncio.gather(*(batcher.translate("en-de", sources, options) for sources in requests))
            before = sum(cpu_seconds(w.pid) for w in workers)
            await asyncio.sleep(0.6)
            return sum(cpu_seconds(w.pid) for w in workers) - before

        try:
            # Alone, its worker stays awake; two at once (one queued behind the other, then both workers busy): neither.
            return await cpu_after(first), await cpu_after(first, second)
        finally:
            await batcher.drain(10)

    lone, together = asyncio.run(scenario())
    assert lone > 0.2 and together < 0.05


def test_a_worker_that_dies_fails_its_call_and_the_next_call_starts_a_new_one(en_de, worker):
    sources, options = en_de.tokenize(["Open the file."]), en_de.search_options()
    first = worker.pid
    os.kill(first, signal.SIGSTOP)  # it cannot answer: the call below is surely in flight when the child dies
    outcome = []
    call = threading.Thread(target=lambda: outcome.append(_outcome(worker.translate_ids, sources, options)))
    call.start()
    time.sleep(0.2)
    assert call.is_alive()
    os.kill(first, signal.SIGKILL)
    call.join(30)
    assert isinstance(outcome[0], WorkerProcessFailed) and "exited (code -9)" in str(outcome[0])
    assert as_compared(worker.translate_ids(sources, options)) == as_compared(en_de.translate_ids(sources, options))
    assert worker.pid not in (None, first) and not running(first)


def _outcome(function, *args):
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - the test looks at what was raised
        return error


def test_the_batcher_runs_batches_on_worker_processes_and_closes_them_at_drain(en_de):
    options = en_de.search_options(beam_size=2, max_length=12)
    texts = ["Open the file.", "Close the window.", "Print the page."]
    outside_vocabulary = [en_de.manifest.model.vocab_size] * 5 + [en_de.manifest.special_ids.eos]

    async def scenario():
        metrics = Metrics()
        workers = await asyncio.gather(*(asyncio.to_thread(WorkerProcess, en_de) for _ in range(2)))
        batcher = Batcher({"en-de": en_de}, BatchPolicy(scheduler="batch", length_buckets=(64,)), metrics, {"en-de": workers})
        batcher.start()
        await batcher.warmup(4)
        results = [await batcher.translate("en-de", en_de.tokenize([t]), options) for t in texts]  # int8: alone, as below
        failed = await asyncio.gather(batcher.translate("en-de", [outside_vocabulary], options), return_exceptions=True)
        memory = metrics.registry.get_sample_value("translator_worker_process_resident_memory_bytes", {"model": "en-de"})
        pids = [w.pid for w in workers]
        await batcher.drain(10)
        return results, failed, memory, pids, metrics

    results, (failed,), memory, pids, metrics = asyncio.run(scenario())
    alone = [en_de.translate_ids(en_de.tokenize([t]), options)[0] for t in texts]
    assert as_compared(r[0] for r in results) == as_compared(alone)
    assert isinstance(failed, InferenceFailed)
    assert memory > 10 * 2**20  # two children with a model each
    assert metrics.registry.get_sample_value("translator_generated_tokens_total", {"model": "en-de"}) == sum(
        len(r.hypotheses[0].tokens) for r in alone)
    wait_until(lambda: not any(running(pid) for pid in pids), timeout=10, what="the worker processes to exit")


def test_a_server_with_worker_processes_translates_concurrent_requests_and_reports_their_memory(models_dir, translators):  # noqa: F811
    texts = ["Open the file.", "Close the window.", "Print the page.", "Save the document as PDF."] * 4
    settings = settings_for(models_dir, inference_worker_kind="process", inference_workers=2)
    with ThreadServer(settings, translators) as server:
        wait_until(lambda: httpx.get(server.url + "/ready").status_code == 200, what="/ready")
        lanes = server.app.state.service.batcher.lanes
        pids = [worker.model.pid for lane in lanes.values() for worker in lane.workers]
        assert len(pids) == 2 * len(lanes) and os.getpid() not in pids
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda text: httpx.post(server.url + "/v1/translate", json={
                "text": text, "source": "en", "target": "de"}, timeout=60), texts))
        exposition = server.metrics()
    assert [a.status_code for a in answers] == [200] * len(texts)
    assert all(answer.json()["translations"][0]["text"] for answer in answers)  # (int8: a batch's company may vary them)
    assert metric(exposition, "translator_worker_process_resident_memory_bytes", model="en-de") > 10 * 2**20
    wait_until(lambda: not any(running(pid) for pid in pids), timeout=10, what="the worker processes to exit with the server")
    assert translators["en-de"].translate(["Open the file."])  # passed in, they may serve another app: they keep their sessions


def test_a_server_that_loads_its_models_for_worker_processes_releases_its_own_sessions(models_dir):  # noqa: F811
    settings = settings_for(models_dir, inference_worker_kind="process", inference_workers=1)
    with ThreadServer(settings, {}) as server:
        wait_until(lambda: httpx.get(server.url + "/ready").status_code == 200, what="/ready")
        answer = httpx.post(server.url + "/v1/translate", json={"text": "Open the file.", "source": "en", "target": "de"},
                            timeout=60)
        own = server.app.state.service.translators["en-de"]
        assert answer.status_code == 200 and answer.json()["translations"][0]["text"]
        assert own.tokenize(["Open the file."])[0]  # it still tokenizes for the routes
        with pytest.raises(SessionsReleased, match="released"):
            own.translate(["Open the file."])


def test_a_released_translator_refuses_inference_and_keeps_its_tokenizer(models_dir):  # noqa: F811
    model = Translator(models_dir / "en-de")
    expected = model.translate(["Save the document."])[0][0].text
    model.release_sessions()
    with pytest.raises(SessionsReleased, match="copy"):
        model.encode_ids(model.tokenize(["Save the document."]))
    with pytest.raises(SessionsReleased):
        model.decoding(model.search_options())
    assert model.detokenize(model.tokenize(["Save the document."])) == ["Save the document."]
    assert model.copy().translate(["Save the document."])[0][0].text == expected  # a copy opens sessions of its own
