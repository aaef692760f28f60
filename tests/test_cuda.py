"""ONNX Runtime's CUDA provider, required (strict): these run only where onnxruntime-gpu finds a GPU
(bench/gpu_check.sh runs them on one); everywhere else the whole module is skipped, never passed.

The fp16 package of the real en-de model against PyTorch on the GPU is checked by `python -m export
--precision fp16 --device cuda` in the same script (greedy identical on a sample, BLEU within 0.5).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest

from engine.search import pad_batch
from engine.sessions import CUDA, RuntimeOptions
from engine.translator import Translator
from tests.service_support import ServerProcess, metric
from tests.test_runtime import BATCH_32, SENTENCES, decode_with_joins

pytestmark = pytest.mark.skipif(CUDA not in onnxruntime.get_available_providers(),
                                reason="this onnxruntime build has no CUDA provider")
# TF32 MatMuls (the CUDA provider's default) move fp32 log-probs by ~1e-3: enough to flip a near-tie between
# beams, so the fp32 comparisons with the CPU run in full fp32.
ON_GPU = RuntimeOptions(providers=(CUDA,), strict_providers=True, cuda_options={"use_tf32": "0"})


@pytest.fixture(scope="module")
def gpu_packages(tmp_path_factory) -> dict[str, Path]:
    """fp32 and fp16 packages of a tiny model with one head of 32: the CUDA DecoderMaskedMultiHeadAttention
    kernel refuses the shared tiny model's head size of 8 (it takes 32, 64 and 128)."""
    from tests.tiny_model import checked_packages, make_checkpoint

    checkpoint = make_checkpoint(tmp_path_factory.mktemp("tiny_gpu"), n_heads=1)
    return checked_packages(checkpoint, lambda precision: tmp_path_factory.mktemp(f"gpu_{precision}"), ("fp32", "fp16"))


@pytest.fixture(scope="module")
def on_gpu(gpu_packages) -> dict[str, Translator]:
    return {precision: Translator(gpu_packages[precision], ON_GPU) for precision in ("fp32", "fp16")}


@pytest.fixture(scope="module")
def on_cpu(gpu_packages) -> Translator:
    return Translator(gpu_packages["fp32"], RuntimeOptions(intra_op_threads=1))


def test_both_graphs_run_on_the_cuda_provider(on_gpu):
    for translator in on_gpu.values():
        assert translator.provider == CUDA
        assert translator.encoder_session.get_providers()[0] == CUDA
        assert translator.decoder_session.get_providers()[0] == CUDA
        assert translator.step_model.device == ("cuda", 0)


def test_the_caches_live_on_the_gpu_and_steps_write_them_in_place(on_gpu):
    translator = on_gpu["fp32"]
    model = translator.step_model
    state = model.start(pad_batch(translator.tokenize(SENTENCES), 0), 2, 8)
    tokens = np.full(state.rows, 2, dtype=np.int64)
    for _ in range(3):
        candidates = model.step(state, tokens, 4)
        model.reorder(state, np.tile([1, 0], (state.sentences, 1)))
        tokens = candidates.ids[:, 0].copy()
    addresses = [value.data_ptr() for value in state.device_caches]
    model.step(state, tokens, 4)
    assert [value.data_ptr() for value in state.device_caches] == addresses  # bound once, never reallocated
    assert all(value.device_name() == "cuda" for value in state.device_caches)
    model.to_host(state)  # key caches back from the kernel's tiled layout
    assert all(np.abs(c[:, :, :4]).sum(axis=(1, 3)).all() for c in state.caches)  # slots 0..3 written for every row
    assert not any(np.abs(c[:, :, 4:]).any() for c in state.caches)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_fp32_on_the_gpu_gives_the_cpu_results(on_gpu, on_cpu, beam_size):
    options = on_cpu.search_options(beam_size=beam_size, n_best=beam_size)
    ids = on_cpu.tokenize(BATCH_32)
    for expected, got in zip(on_cpu.translate_ids(ids, options), on_gpu["fp32"].translate_ids(ids, options)):
        assert [h.tokens for h in got.hypotheses] == [h.tokens for h in expected.hypotheses]
        assert np.allclose([h.score for h in got.hypotheses], [h.score for h in expected.hypotheses], atol=1e-3)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_sentences_joining_on_the_gpu_get_what_they_get_alone(on_gpu, beam_size):
    translator = on_gpu["fp32"]
    options = translator.search_options(beam_size=beam_size, n_best=beam_size)
    ids = translator.tokenize([SENTENCES[2], SENTENCES[1], *BATCH_32[:4], BATCH_32[7], SENTENCES[3]])
    alone = [translator.translate_ids([row], options)[0] for row in ids]
    results = decode_with_joins(translator, ids, options)
    for i, expected in enumerate(alone):
        assert [h.tokens for h in results[i].hypotheses] == [h.tokens for h in expected.hypotheses], i


def test_fp16_on_the_gpu_agrees_with_fp32(on_gpu, on_cpu):
    """The tiny model is random, so its near-ties make fp16 differ sometimes; most outputs must not."""
    ids = on_cpu.tokenize(BATCH_32 + SENTENCES)
    options = on_cpu.search_options(beam_size=4)
    expected = [r.hypotheses[0].tokens for r in on_cpu.translate_ids(ids, options)]
    got = [r.hypotheses[0].tokens for r in on_gpu["fp16"].translate_ids(ids, options)]
    assert sum(a == b for a, b in zip(expected, got)) >= 0.8 * len(ids)


def test_the_service_starts_on_the_gpu_when_cuda_is_required(gpu_packages, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(gpu_packages["fp16"], models / "en-de")
    strict = {"TRANSLATOR_PROVIDERS": CUDA, "TRANSLATOR_STRICT_PROVIDERS": "true"}
    with ServerProcess(models, tmp_path / "cuda.log", **strict) as server:
        server.wait_ready()
        ready = httpx.get(server.url + "/ready").json()
        answer = httpx.post(server.url + "/v1/translate", json={"text": SENTENCES[0], "source": "en", "target": "de"},
                            timeout=60)
        exposition = httpx.get(server.url + "/metrics").text
    assert {model["provider"] for model in ready["models"]} == {CUDA}
    assert answer.status_code == 200 and answer.json()["translations"][0]["text"]
    # The alert TranslatorCudaFallback stays silent: CUDA requested and CUDA running.
    assert metric(exposition, "translator_cuda_requested") == 1
    assert metric(exposition, "translator_model_info", provider=CUDA) == 1
