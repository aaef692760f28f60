"""`translator serve` as a process: graceful shutdown on SIGTERM, refusing a broken package, no torch."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from loadtest.server import process_tree
from tests.service_support import (  # noqa: F401 - models_dir is a fixture
    ROOT, STOPPED_BY_SIGTERM, ServerProcess, metric, models_dir, running, wait_until,
)


def longest_sentences(package, count: int) -> list[str]:
    """The longest test sentences the package accepts."""
    import sentencepiece

    limit = json.loads((package / "package.json").read_text())["limits"]["max_source_tokens"]
    tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(package / "spm.model"))
    sentences = [line.split("\t")[0] for line in (ROOT / "data/en-de/test.tsv").read_text().splitlines()[:300]]
    lengths = dict(zip(sentences, map(len, tokenizer.encode(sentences))))
    return sorted((s for s in sentences if lengths[s] < limit), key=lengths.get)[-count:]


def queued_so_far(exposition: str) -> float:
    """Sentences that reached the batcher: those waiting plus those that left the queue for a batch."""
    return metric(exposition, "translator_queue_depth") + metric(exposition, "translator_queue_wait_seconds_count")


def test_sigterm_answers_every_request_in_flight_then_exits(models_dir, tmp_path):  # noqa: F811
    sentences = longest_sentences(models_dir / "en-de", 32)  # the queue must still hold work at SIGTERM
    bodies = [{"text": sentences[i::8], "source": "en", "target": "de", "beam_size": 2} for i in range(8)]
    with ServerProcess(models_dir, tmp_path / "server.log", TRANSLATOR_MAX_BATCH_SENTENCES="1") as server, \
            ThreadPoolExecutor(len(bodies)) as pool:
        server.wait_ready()
        futures = [pool.submit(httpx.post, server.url + "/v1/translate", json=body, timeout=120) for body in bodies]
        # Every request read and its sentences queued (or already taken by a batch): a request still being received
        # at SIGTERM has its connection closed, which is uvicorn's shutdown and not what this test is about.
        wait_until(lambda: queued_so_far(httpx.get(server.url + "/metrics").text) >= len(sentences),
                   what="every request's sentences queued")
        in_flight = sum(not f.done() for f in futures)
        workers = process_tree(server.process.pid)[1:]  # the defaults' inference worker processes
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections once shutdown has begun
            httpx.get(server.url + "/health", timeout=5)
        answers = [f.result() for f in futures]
        assert server.terminate(timeout=120) in STOPPED_BY_SIGTERM
    assert in_flight > 0, "every request had finished before SIGTERM: the test proved nothing"
    assert workers, "the defaults ran no inference worker processes"
    wait_until(lambda: not any(map(running, workers)), timeout=10, what="the worker processes to exit with the server")
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert [len(a.json()["translations"]) for a in answers] == [len(b["text"]) for b in bodies]
    log = server.output()
    assert "drained" in log and "Traceback" not in log
    assert '"POST /v1/translate HTTP/1.1" 200' in log  # the access log, on by default


def test_the_access_log_can_be_turned_off(models_dir, tmp_path):  # noqa: F811
    with ServerProcess(models_dir, tmp_path / "server.log", TRANSLATOR_ACCESS_LOG="false") as server:
        server.wait_ready()
        answer = httpx.post(server.url + "/v1/translate", json={"text": "Open the file.", "source": "en", "target": "de"}, timeout=60)
        assert server.terminate() in STOPPED_BY_SIGTERM
    assert answer.status_code == 200
    log = server.output()
    assert "drained" in log and "/v1/translate" not in log


def test_a_broken_package_stops_the_start(models_dir, tmp_path):  # noqa: F811
    broken = tmp_path / "models"
    shutil.copytree(models_dir / "en-de", broken / "en-de")
    decoder = broken / "en-de" / "decoder.onnx"
    data = bytearray(decoder.read_bytes())
    data[len(data) // 2] ^= 0xFF
    decoder.write_bytes(bytes(data))
    with ServerProcess(broken, tmp_path / "server.log") as server:
        assert server.process.wait(120) == 3  # uvicorn's "startup failed"
    assert "decoder.onnx is corrupted" in server.output()
    with ServerProcess(tmp_path / "nothing", tmp_path / "empty.log") as empty:
        assert empty.process.wait(120) == 3
    assert "no model packages" in empty.output()


def test_serving_never_imports_torch(models_dir):  # noqa: F811
    program = (
        "import sys\n"
        "from cli.main import build_parser\n"
        "from service.app import create_app, load_translators\n"
        "from service.config import Settings\n"
        f"settings = Settings(models_dir={str(models_dir)!r})\n"
        "create_app(settings, load_translators(settings))\n"
        "build_parser()\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'model', 'export'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
