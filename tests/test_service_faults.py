"""Faults: a broken model package, keys file or setting refuses the start with one clear line (no
traceback, nothing listening); CUDA asked for on a machine without it falls back loudly or refuses,
by configuration; a batch that fails answers its own requests with 500 and the next ones are served.
(SIGTERM with requests in flight: tests/test_service_process.py.)"""

from __future__ import annotations

import json
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import onnxruntime
import pytest

from engine.package import read_manifest, write_manifest
from tests.service_support import ServerProcess, metric, models_dir, serving, translators, wait_until  # noqa: F401 - fixtures

NATIVE = {"text": "Open the file.", "source": "en", "target": "de"}
no_cuda = pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                             reason="this onnxruntime build has CUDA: nothing to fall back from")


def missing_file(models: Path) -> dict:
    (models / "en-de" / "encoder.onnx").unlink()
    return {}


def missing_package(models: Path) -> dict:
    (models / "de-en").mkdir()  # the pair's directory is there, its package is not
    return {}


def truncated(models: Path) -> dict:
    decoder = models / "en-de" / "decoder.onnx"
    decoder.write_bytes(decoder.read_bytes()[: decoder.stat().st_size // 2])
    return {}


def truncated_with_matching_checksums(models: Path) -> dict:
    """A package whose manifest was rewritten after the damage: only ONNX Runtime can tell."""
    truncated(models)
    write_manifest(models / "en-de", read_manifest(models / "en-de"))
    return {}


def wrong_pair(models: Path) -> dict:
    (models / "en-de").rename(models / "de-en")
    return {}


def empty_keys_file(models: Path) -> dict:
    keys = models.parent / "keys"
    keys.write_text("# nobody\n")
    return {"TRANSLATOR_API_KEYS_FILE": str(keys)}


def invalid_setting(models: Path) -> dict:
    return {"TRANSLATOR_RATE_LIMIT_PER_S": "-1", "TRANSLATOR_API_KEYS": '["secret-one", 5]'}


@pytest.mark.parametrize("damage, message", [
    (missing_file, "en-de: encoder.onnx is missing"),
    (missing_package, "de-en: no package.json; the package is missing or incomplete"),
    (truncated, "en-de: decoder.onnx is corrupted or was changed (sha256 mismatch)"),
    (truncated_with_matching_checksums, "en-de: ONNX Runtime cannot load decoder.onnx"),
    (wrong_pair, "de-en: package translates en-de, expected de-en"),
    (empty_keys_file, "keys: holds no key"),
    (invalid_setting, "api_keys.1: Input should be a valid string; rate_limit_per_s: Input should be greater than or equal to 0"),
], ids=lambda value: getattr(value, "__name__", ""))
def test_a_broken_start_is_refused_with_one_clear_line(models_dir, tmp_path, damage, message):  # noqa: F811
    models = tmp_path / "models"
    shutil.copytree(models_dir / "en-de", models / "en-de")
    environment = damage(models)
    with ServerProcess(models, tmp_path / "server.log", **environment) as server:
        assert server.process.wait(120) == 3
        with pytest.raises(OSError):  # nothing ever listened
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    log = server.output()
    assert message in log and "Traceback" not in log, log
    assert ("refusing to start" in log or "invalid settings" in log) and "secret-one" not in log


@no_cuda
def test_cuda_without_cuda_falls_back_with_a_warning_and_a_metric(models_dir, tmp_path):  # noqa: F811
    cuda_first = {"TRANSLATOR_PROVIDERS": "CUDAExecutionProvider,CPUExecutionProvider"}
    with ServerProcess(models_dir, tmp_path / "fallback.log", **cuda_first) as server:
        server.wait_ready()
        ready = httpx.get(server.url + "/ready").json()
        exposition = httpx.get(server.url + "/metrics").text
        assert httpx.post(server.url + "/v1/translate", json=NATIVE, timeout=60).status_code == 200
    assert {model["provider"] for model in ready["models"]} == {"CPUExecutionProvider"}
    assert "CUDAExecutionProvider was requested first but CPUExecutionProvider runs it" in server.output()
    # The alert TranslatorCudaFallback fires on exactly this pair of samples.
    assert metric(exposition, "translator_cuda_requested") == 1
    assert metric(exposition, "translator_model_info", provider="CPUExecutionProvider") == 1


@no_cuda
def test_cuda_without_cuda_refuses_the_start_when_strict(models_dir, tmp_path):  # noqa: F811
    strict = {"TRANSLATOR_PROVIDERS": "CUDAExecutionProvider", "TRANSLATOR_STRICT_PROVIDERS": "true"}
    with ServerProcess(models_dir, tmp_path / "strict.log", **strict) as server:
        assert server.process.wait(120) == 3
    log = server.output()
    assert "refusing to start" in log and "TRANSLATOR_STRICT_PROVIDERS is set" in log and "Traceback" not in log


class FailingBatch:
    """The translator's step model, failing the first batch it starts: a real inference error, in the real
    decoding loop, at a place the batcher cannot see coming."""

    def __init__(self, inner):
        self.inner, self.armed = inner, True

    def start(self, src_ids, beam_width, max_steps):
        if self.armed:
            self.armed = False
            raise RuntimeError("injected fault in /srv/secret/path/model.py")
        return self.inner.start(src_ids, beam_width, max_steps)

    def __getattr__(self, name):  # step, reorder, keep: the real ones
        return getattr(self.inner, name)


def test_a_failing_batch_answers_its_requests_with_500_and_the_server_serves_the_next(models_dir, translators, caplog):  # noqa: F811
    # Three sentences fill a batch (the cap), and the long wait guarantees they go together (the batch scheduler;
    # the continuous one's failure handling: tests/test_service_continuous.py).
    with serving(models_dir, translators, scheduler="batch", max_batch_sentences=3, max_wait_ms=3000) as server, \
            ThreadPoolExecutor(3) as pool:
        translator = server.app.state.service.batcher.lanes["en-de"].translator
        healthy = translator.step_model
        translator.step_model = FailingBatch(healthy)
        try:
            failed = list(pool.map(lambda _: httpx.post(server.url + "/v1/translate", json=NATIVE, timeout=60), range(3)))
            after = list(pool.map(lambda _: httpx.post(server.url + "/v1/translate", json=NATIVE, timeout=60), range(3)))
        finally:
            translator.step_model = healthy
        ready = httpx.get(server.url + "/ready").status_code
        exposition = server.metrics()
    assert [answer.status_code for answer in failed] == [500] * 3
    assert {answer.text for answer in failed} == {json.dumps({"detail": "translation failed; the error was logged"}, separators=(",", ":"))}
    assert [answer.status_code for answer in after] == [200] * 3 and ready == 200
    assert "en-de batch of 3 sentences failed" in caplog.text and "injected fault" in caplog.text  # the log has it all
    assert metric(exposition, "translator_batch_size_count") >= 2
    assert metric(exposition, "translator_request_duration_seconds_count", route="/v1/translate", status="500") == 3
