"""Readiness, batching across requests and backpressure over real HTTP, with uvicorn in a thread
serving the loaded model: the test holds the model's lock to stand inference still, so what is
queued when is known rather than hoped for."""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest

from tests.service_support import (  # noqa: F401 - models_dir and translators are fixtures
    ThreadServer, inference_paused, metric, models_dir, serving, settings_for, translators, wait_until,
)

SENTENCE = {"text": "Open the file.", "source": "en", "target": "de"}


@pytest.fixture()
def en_de(translators):  # noqa: F811
    return translators["en-de"]


# The queue's behaviour under both schedulers. With the model stood still, the continuous scheduler has
# already let the running batch's sentences in (up to its cap), the batch one holds them all in the queue:
# a cap of one running sentence makes "what is queued" the same for both.
SCHEDULERS = {"batch": {"scheduler": "batch"}, "continuous": {"scheduler": "continuous", "max_batch_sentences": 1}}


@pytest.fixture(params=list(SCHEDULERS))
def scheduler(request) -> dict:
    return SCHEDULERS[request.param]


@pytest.fixture()
def pool():
    with ThreadPoolExecutor(16) as executor:
        yield executor


def send(pool: ThreadPoolExecutor, url: str, path: str = "/v1/translate", timeout: float = 60, **kwargs) -> Future:
    return pool.submit(httpx.post, url + path, timeout=timeout, **kwargs)


def value(server, name: str, **labels) -> float:
    return metric(server.metrics(), name, **labels)


def test_ready_only_after_warmup(models_dir, translators, en_de):  # noqa: F811
    paused = inference_paused(en_de)
    paused.__enter__()  # the warm-up cannot run yet
    try:
        with ThreadServer(settings_for(models_dir), translators) as server:
            assert httpx.get(server.url + "/health").status_code == 200
            starting = httpx.get(server.url + "/ready")
            assert starting.status_code == 503 and starting.json()["status"] == "starting"
            paused.__exit__(None, None, None)
            paused = None
            wait_until(lambda: httpx.get(server.url + "/ready").status_code == 200, what="/ready after warm-up")
            assert httpx.get(server.url + "/ready").json()["models"][0]["provider"] == "CPUExecutionProvider"
    finally:
        if paused:
            paused.__exit__(None, None, None)


def test_concurrent_requests_share_a_batch(models_dir, translators, en_de, pool):  # noqa: F811
    with serving(models_dir, translators, max_wait_ms=0, scheduler="batch") as server:
        with inference_paused(en_de):
            first = send(pool, server.url, json=SENTENCE)
            wait_until(lambda: value(server, "translator_batch_size_count") == 1, what="the first batch")
            others = [send(pool, server.url, json=SENTENCE) for _ in range(8)]
            wait_until(lambda: value(server, "translator_queue_depth") == 8, what="8 queued sentences")
        answers = [f.result() for f in [first, *others]]
        assert [a.status_code for a in answers] == [200] * 9
        assert len({a.json()["translations"][0]["text"] for a in answers[1:]}) == 1
        exposition = server.metrics()
        assert metric(exposition, "translator_batch_size_count") == 2
        assert metric(exposition, "translator_batch_size_sum") == 9  # 1, then the 8 that waited together
        assert metric(exposition, "translator_batch_size_bucket", le="6.0") == 1
        assert metric(exposition, "translator_request_duration_seconds_count", route="/v1/translate", status="200") == 9
        assert metric(exposition, "translator_queue_wait_seconds_count") == 9
        assert metric(exposition, "translator_queue_depth") == 0


@contextlib.contextmanager
def full_queue(server, en_de, pool: ThreadPoolExecutor) -> Iterator[tuple[Future, Future]]:
    """Inference stands still on a first request while a second one fills a queue of 4 sentences."""
    with inference_paused(en_de):
        first = send(pool, server.url, json=SENTENCE)
        wait_until(lambda: value(server, "translator_batch_size_count") == 1, what="the first batch")
        filling = send(pool, server.url, json={**SENTENCE, "text": ["Open the file."] * 4})
        wait_until(lambda: value(server, "translator_queue_depth") == 4, what="a full queue")
        yield first, filling


def test_full_queue_answers_at_once_with_retry_after(models_dir, translators, en_de, pool, scheduler):  # noqa: F811
    limits = {"queue_limit": 4, "max_texts_per_request": 4, "max_wait_ms": 0, "retry_after_s": 2}
    with serving(models_dir, translators, **limits, **scheduler) as server:
        with full_queue(server, en_de, pool) as (first, filling):
            native = httpx.post(server.url + "/v1/translate", json=SENTENCE, timeout=5)
            libre = httpx.post(server.url + "/translate", data={"q": "Hello", "source": "en", "target": "de"}, timeout=5)
        assert (native.status_code, native.headers["retry-after"]) == (503, "2")
        assert "queue holds 4" in native.json()["detail"]
        assert (libre.status_code, libre.headers["retry-after"]) == (429, "2")
        assert "retry later" in libre.json()["error"]
        assert first.result().status_code == filling.result().status_code == 200
        assert value(server, "translator_requests_rejected_total", reason="queue_full") == 2


def test_a_full_queue_refuses_before_reading_the_body(models_dir, translators, en_de, pool, scheduler):  # noqa: F811
    """Load shedding: with the queue full, even a malformed body is answered 503 (it is never read,
    let alone parsed); once the queue has room the same body is a 400 again. CORS headers and the
    route's request metric still apply to the refusal."""
    garbled = {"content": b'{"text": "unterminated', "headers": {"content-type": "application/json", "origin": "https://app.example"}}
    limits = {"queue_limit": 4, "max_texts_per_request": 4, "max_wait_ms": 0, "cors_origins": ["https://app.example"]}
    with serving(models_dir, translators, **limits, **scheduler) as server:
        with full_queue(server, en_de, pool) as (first, filling):
            shed = httpx.post(server.url + "/v1/translate", timeout=5, **garbled)
            encode = httpx.post(server.url + "/v1/encode", json={"text": "Hello", "source": "en"}, timeout=5)
        assert shed.status_code == 503 and shed.headers["retry-after"] and "queue holds 4" in shed.json()["detail"]
        assert shed.headers["access-control-allow-origin"] == "https://app.example"
        assert encode.status_code == 503
        assert first.result().status_code == filling.result().status_code == 200
        assert httpx.post(server.url + "/v1/translate", timeout=5, **garbled).status_code == 400
        exposition = server.metrics()
        assert metric(exposition, "translator_requests_rejected_total", reason="queue_full") == 2
        assert metric(exposition, "translator_request_duration_seconds_count", route="/v1/translate", status="503") == 1


def test_deadline_expiry_answers_and_the_sentences_do_no_work(models_dir, translators, en_de, pool, scheduler):  # noqa: F811
    with serving(models_dir, translators, request_deadline_s=0.5, max_wait_ms=0, **scheduler) as server:
        with inference_paused(en_de):
            first = send(pool, server.url, json=SENTENCE)
            wait_until(lambda: value(server, "translator_batch_size_count") == 1, what="the first batch")
            late = httpx.post(server.url + "/v1/translate", json={**SENTENCE, "text": ["Close it."] * 3}, timeout=10)
            assert late.status_code == 503 and "deadline" in late.json()["detail"] and late.headers["retry-after"]
            assert first.result().status_code == 503  # its batch is stuck too
        wait_until(lambda: not en_de.lock.locked(), what="the stuck batch to end")
        exposition = server.metrics()
        # The three late sentences never reached the model. (The continuous scheduler admits them when the first
        # sentence's deadline frees its place, so admissions, translator_batch_size, do not tell; encoder runs do.)
        assert metric(exposition, "translator_inference_duration_seconds_count", model="en-de", stage="encode") == 1
        assert metric(exposition, "translator_requests_rejected_total", reason="deadline") == 2
        assert metric(exposition, "translator_queue_depth") == 0


def test_a_client_that_disconnects_leaves_the_queue(models_dir, translators, en_de, pool, scheduler):  # noqa: F811
    with serving(models_dir, translators, max_wait_ms=0, **scheduler) as server:
        with inference_paused(en_de):
            first = send(pool, server.url, json=SENTENCE)
            wait_until(lambda: value(server, "translator_batch_size_count") == 1, what="the first batch")
            impatient = send(pool, server.url, json={**SENTENCE, "text": ["Close it."] * 3}, timeout=0.5)
            wait_until(lambda: value(server, "translator_queue_depth") == 3, what="3 queued sentences")
            with pytest.raises(httpx.TimeoutException):
                impatient.result()  # the client gives up and closes its connection
            wait_until(lambda: value(server, "translator_requests_rejected_total", reason="disconnected") == 1,
                       what="the server to notice the disconnect")
            assert value(server, "translator_queue_depth") == 0
        assert first.result().status_code == 200
        assert value(server, "translator_batch_size_sum") == 1  # the disconnected request's sentences never ran


def test_libretranslate_api_keys(models_dir, translators):  # noqa: F811
    with serving(models_dir, translators, api_keys=("secret",)) as server:
        form = {"q": "Open the file.", "source": "en", "target": "de"}
        for key in (None, "wrong"):
            refused = httpx.post(server.url + "/translate", data={**form, **({"api_key": key} if key else {})})
            assert refused.status_code == 403 and "API key" in refused.json()["error"], refused.text
        assert httpx.post(server.url + "/translate", data={**form, "api_key": "secret"}).status_code == 200
        assert httpx.post(server.url + "/detect", data={"q": "Hello", "api_key": "secret"}).status_code == 200
        assert value(server, "translator_requests_rejected_total", reason="unauthorized") == 1  # no key
        assert value(server, "translator_requests_rejected_total", reason="forbidden") == 1  # a wrong one
