"""The load-testing harness (loadtest/) against real servers on 127.0.0.1, on short budgets: the Python and
the wrk generator's counts against the server's own metrics, rejections apart from errors, the client's
ceiling against the stub server and the verdict on who set the pace, and `translator load`'s JSON."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import pytest

from loadtest import load as load_command
from loadtest.ceiling import ClientCeiling, client_view
from loadtest.corpus import SentencePicker, read_corpus
from loadtest.load import LoadSpec, client_ceiling, load
from loadtest.stub import StubServer
from tests.service_support import ROOT, ServerProcess, metric, models_dir  # noqa: F401 - models_dir is a fixture

TEST_SPLIT = ROOT / "data/en-de/test.tsv"
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk; make system-tools)")


def one_sentence_texts(texts: list[str]) -> list[str]:
    """Texts without a sentence mark before their end: the service's segmenter keeps each whole, so one request
    is one sentence to the batcher (some test sentences, e.g. 'SFWidgets.Menu …', are cut in two)."""
    return [t for t in texts if not re.search(r"[.!?]\S|[.!?]\s+\S", t.rstrip(".!? "))]


def delta(before: str, after: str, name: str, **labels: str) -> float:
    return metric(after, name, **labels) - metric(before, name, **labels)


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):  # noqa: F811
    with ServerProcess(models_dir, tmp_path_factory.mktemp("load") / "server.log") as running:
        yield running.wait_ready()


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return one_sentence_texts(read_corpus(TEST_SPLIT, "en"))


def test_closed_loop_counts_agree_with_the_servers_own_metrics(server, sentences):
    before = httpx.get(server.url + "/metrics").text
    result = load(LoadSpec(url=server.url, concurrency=3, duration_s=2.0), SentencePicker(sentences), progress=False)
    after = httpx.get(server.url + "/metrics").text

    answered = delta(before, after, "translator_request_duration_seconds_count", route="/v1/translate", status="200")
    assert result.ok == result.requests == answered > 0
    assert result.rejected == result.errors == 0
    assert result.source_tokens == delta(before, after, "translator_input_tokens_sum", model="en-de")
    assert result.target_tokens == delta(before, after, "translator_generated_tokens_total", model="en-de") > 0
    assert result.elapsed_s >= 2.0
    assert result.target_tokens_per_s == pytest.approx(result.target_tokens / result.elapsed_s, rel=0.01)
    view = result.server
    assert view.translate_responses == {"200": result.ok} and view.sentences == result.ok
    assert 1 <= view.mean_batch_size <= 3  # one text per request, three clients: never more than three per batch
    assert sum(n for _, n in view.batch_size_buckets) == view.batches > 0
    lat = result.latency
    # the server's stages (a request answered as its sentence ends may take less than its batch's decoder loop, so the
    # stages are checked against a request's time only at one connection: test_bench_http_measures_a_running_server)
    assert 0 < view.mean_encode_ms and 0 < view.mean_decode_ms and 0 < view.mean_request_ms < lat.mean_ms
    assert 0 < lat.p50_ms <= lat.p90_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms
    client = result.client  # its CPU is measured; without a ceiling there is no verdict
    assert client.generator.startswith("aiohttp") and 0 < client.cpu_s and client.cpu_cores < 2 and client.limited is None


def test_open_loop_counts_rejections_apart_from_errors(models_dir, sentences, tmp_path):  # noqa: F811
    # A queue of one sentence: a Poisson burst finds it full and is refused with 503.
    with ServerProcess(models_dir, tmp_path / "server.log", TRANSLATOR_QUEUE_LIMIT="1",
                       TRANSLATOR_MAX_TEXTS_PER_REQUEST="1") as small:
        small.wait_ready()
        before = httpx.get(small.url + "/metrics").text
        result = load(LoadSpec(url=small.url, rate=80, duration_s=2.0), SentencePicker(sentences), progress=False)
        after = httpx.get(small.url + "/metrics").text
    assert result.rejected > 0 and result.ok > 0 and result.errors == 0
    assert result.rejected == delta(before, after, "translator_requests_rejected_total", reason="queue_full")
    assert result.server.translate_responses == {"200": result.ok, "503": result.rejected}
    assert 80 <= result.requests <= 240  # Poisson, 80/s for 2 s


def test_the_verdict_on_who_set_the_pace():
    ceiling = ClientCeiling(generator="g", connections=8, requests_per_s=1000, cpu_ms_per_request=0.2, seconds=3)
    slow_server = client_view("g", cpu_s=0.5, elapsed_s=10, requests_per_s=100, ceiling=ceiling)
    assert slow_server.cpu_cores == 0.05 and slow_server.share_of_ceiling == 0.1 and slow_server.limited is False
    assert "the server was the limit" in slow_server.text()
    busy_client = client_view("g", cpu_s=9.5, elapsed_s=10, requests_per_s=850, ceiling=ceiling)
    assert busy_client.limited is True and "the CLIENT was the limit" in busy_client.text()


def test_the_python_generators_ceiling_against_the_stub(sentences):
    with StubServer() as stub:  # answers any request at once, shaped like /v1/translate's answer
        answer = httpx.post(stub.url + "/v1/translate", json={"text": "x", "source": "en", "target": "de"})
        assert answer.status_code == 200 and answer.json()["translations"][0]["target_tokens"] > 0
    ceiling = client_ceiling(LoadSpec(url="http://unused", concurrency=4, duration_s=10), sentences[:50], seconds=1.0)
    assert ceiling.connections == 4 and ceiling.requests_per_s > 200 and 0 < ceiling.cpu_ms_per_request < 10
    open_loop = client_ceiling(LoadSpec(url="http://unused", rate=5, duration_s=10), sentences[:50], seconds=0.5)
    assert open_loop.connections == 64


@needs_wrk
def test_wrk_counts_agree_with_the_servers_own_metrics(server, sentences):
    from loadtest.wrk import body, bodies_for, run_wrk, wrk_ceiling, wrk_load

    spec = LoadSpec(url=server.url, concurrency=2, duration_s=2.0, beam_size=1)
    picker = SentencePicker(sentences[:64], "sequential")
    ceiling = wrk_ceiling(bodies_for(spec, picker), spec.concurrency, seconds=1.0)
    result = wrk_load(spec, picker, ceiling)
    # wrk stops with up to one request per connection in flight: the server logs each of them as 499 (it saw the
    # connection close) or as 200 (its answer was written first), and wrk counts none of them.
    served, cut_off = result.server.translate_responses.get("200", 0), result.server.translate_responses.get("499", 0)
    assert result.ok == result.requests > 0 and result.errors == 0 and result.ok <= served, \
        (result.ok, result.requests, result.rejected, result.server.translate_responses, result.errors, result.error_examples)
    assert (served - result.ok) + cut_off <= spec.concurrency, result.server.translate_responses
    assert result.target_tokens == result.server.generated_tokens > 0 and result.records == []
    assert result.latency.p50_ms <= result.latency.p99_ms and result.elapsed_s == pytest.approx(2.0, abs=0.5)
    client = result.client
    assert client.generator.startswith("wrk") and client.ceiling.requests_per_s > 1000 and client.limited is False
    # Exactly N answers (wrk stops itself), and non-2xx answers counted: beam 99 is over the server's limit (400).
    bad = [body([text], spec.model_copy(update={"beam_size": 99})) for text in sentences[:3]]
    run = run_wrk(server.url, bad, connections=1, duration_s=30, max_requests=5)
    assert run.statuses == {"400": 5} and run.ok == 0 and run.failed == 5 and run.elapsed_s < 10
    with pytest.raises(ValueError, match="closed loop"):
        wrk_load(LoadSpec(url=server.url, rate=5, duration_s=1), SentencePicker(sentences))


def test_load_command_writes_json_and_fails_when_nothing_is_answered(server, tmp_path, capsys):
    out = tmp_path / "load.json"
    assert load_command.main(["--url", server.url, "--data", str(TEST_SPLIT), "--concurrency", "2", "--duration", "0",
                              "--requests", "6", "--mix", "1-12:1,13-:1", "--json", str(out), "--records",
                              "--no-progress", "--ceiling-seconds", "0.5"]) == 0
    written = json.loads(out.read_text())
    assert written["requests"] == written["ok"] == len(written["records"]) == 6
    assert written["client"]["ceiling"]["connections"] == 2 and written["client"]["limited"] is False
    printed = capsys.readouterr().out
    assert "6 requests (6 ok, 0 rejected 429/503, 0 errors)" in printed and "the server was the limit" in printed
    # Two texts per request where the server takes one: every answer is a 400, an error, not a rejection.
    text_file = tmp_path / "sentences.txt"
    text_file.write_text("Open the file.\n\nClose the window.\n")
    assert load_command.main(["--url", server.url, "--data", str(text_file), "--requests", "3", "--duration", "0",
                              "--texts-per-request", "65", "--no-progress", "--json", str(out), "--ceiling-seconds", "0",
                              "--generator", "python"]) == 1
    written = json.loads(out.read_text())
    assert written["errors"] == written["requests"] == 3 and written["rejected"] == 0 and "records" not in written
    assert "HTTP 400" in written["error_examples"][0] and written["client"]["ceiling"] is None


def test_the_generator_by_default():
    parse = load_command.build_parser().parse_args
    closed = "wrk" if shutil.which("wrk") else "python"
    assert load_command.generator_for(parse(["--url", "u", "--concurrency", "4"])) == closed
    assert load_command.generator_for(parse(["--url", "u", "--concurrency", "4", "--records"])) == "python"
    assert load_command.generator_for(parse(["--url", "u", "--rate", "4"])) == "python"
    assert load_command.generator_for(parse(["--url", "u", "--rate", "4", "--generator", "wrk"])) == "wrk"


@needs_wrk
def test_bench_http_measures_a_running_server(server, tmp_path):
    from bench import http_load

    out = tmp_path / "bench_http.json"
    assert http_load.main(["--url", server.url, "--limit", "8", "--seconds", "1", "--warmup", "0", "--connections", "2",
                           "--no-offline", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    (variant,) = summary["variants"]
    for search in ("greedy", "beam4"):
        saturated, single = variant["saturated"][search], variant["one_connection"][search]
        assert saturated["ok"] > 0 and saturated["non_2xx"] == {} and saturated["generated_tokens"] > 0
        assert single["ok"] == 8 == single["server_responses"]["200"]  # exactly one pass over the sentences
        assert single["latency_p50_ms"] <= single["latency_p99_ms"]
        assert 0 < single["encode_ms"] + single["decode_ms"] < single["server_request_ms"] < single["latency_mean_ms"]
    assert summary["client"]["ceiling"]["requests_per_s"] > 1000 and summary["source"]["commit"]
    assert "one connection, one pass over the 8 sentences" in out.with_suffix(".txt").read_text()


def test_bench_http_counts_offline_tokens_as_the_service_does_and_threads_as_the_pinned_server_would():
    from bench import http_load

    # bench.engines counts each sentence's end-of-sentence step; translator_generated_tokens_total does not
    setting = {"target_tokens": 1100, "sentences": 100, "seconds": 2.0, "tokens_per_second": 550.0}
    assert http_load.counted_as_served(setting) == 500.0
    # a server pinned to 4 CPUs runs min(4, 4) workers of (4 - 1) // 4 → 1 thread each, not 3
    assert http_load.service_threads({}, "0-3") == 1
    assert http_load.service_threads({"TRANSLATOR_INFERENCE_WORKERS": "1"}, "0-3") == 3
    assert http_load.service_threads({"TRANSLATOR_INTRA_OP_THREADS": "2"}, "0,1") == 2
