"""PyTorch → ONNX export: dynamic shapes, precision variants, parity, and the shipped package."""

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx_export import check_dynamic_shapes
from export.package import build_package
from export.parity import ParityError, check_parity
from export.quantize import check_fp16, convert_fp16, gemm_to_matmul
from model.checkpoint import load_model
from model.tokenizer import read_tsv_pairs
from engine.search import SearchOptions
from engine.package import PackageError, load_package, sha256_of
from engine.translator import Translator
from engine.sessions import RuntimeOptions

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = RuntimeOptions(intra_op_threads=1)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def decoder_feeds(batch: int, src_len: int, past_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for the tiny model's decoder graph (4 heads × 8, 2 layers)."""
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(4, 96, (batch, 1)), "source_padding_mask": np.zeros((batch, src_len), bool)}
    for i in range(2):
        for kind in ("key", "value"):
            feeds[f"cross_{kind}_{i}"] = rng.standard_normal((batch, 4, src_len, 8), dtype=np.float32)
            feeds[f"past_{kind}_{i}"] = rng.standard_normal((batch, 4, past_len, 8), dtype=np.float32)
    return feeds


def test_graphs_match_pytorch_at_shapes_the_export_never_saw(tiny_checkpoint, tiny_fp32_graphs):
    model = load_model(tiny_checkpoint)[0]
    shapes = ((1, 1, 0), (7, 50, 0), (3, 2, 30), (16, 12, 1), (1, 127, 126))  # 127 + 1 = max_positions
    worst = check_dynamic_shapes(model, tiny_fp32_graphs / "encoder.onnx", tiny_fp32_graphs / "decoder.onnx", shapes)
    assert worst < 1e-4


def test_decoder_cache_grows_by_one_position(tiny_fp32_graphs):
    decoder = session(tiny_fp32_graphs / "decoder.onnx")
    log_probs, *present = decoder.run(None, decoder_feeds(batch=3, src_len=5, past_len=4))
    assert log_probs.shape == (3, 96)
    assert np.allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-5)
    assert all(t.shape == (3, 4, 5, 8) for t in present)


def test_fp32_package_parity(tiny_packages):
    report = json.loads((tiny_packages["fp32"] / "parity.json").read_text())
    assert report["passed"] and report["greedy_agreement"] == 1.0
    assert report["log_probs_max_abs_diff"] < 1e-4
    manifest = load_package(tiny_packages["fp32"])
    assert manifest.parity["passed"] and "parity.json" in manifest.files


def test_int8_package_is_quantized_smaller_and_within_bleu(tiny_packages):
    ops = {node.op_type for node in onnx.load(str(tiny_packages["int8"] / "decoder.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"} and "Gemm" not in ops  # the output projection too
    fp32_size = (tiny_packages["fp32"] / "decoder.onnx").stat().st_size
    assert (tiny_packages["int8"] / "decoder.onnx").stat().st_size < 0.6 * fp32_size
    report = json.loads((tiny_packages["int8"] / "parity.json").read_text())
    assert report["passed"] and report["bleu_drop"] <= 0.5
    assert 0 < report["log_probs_max_abs_diff"] < 5  # int8 is not exact, and not wildly off either
    manifest = load_package(tiny_packages["int8"])
    assert manifest.precision == "int8" and manifest.versions["opset"] == 18


def test_gemm_rewrite_keeps_the_output(tiny_fp32_graphs, tmp_path):
    model = onnx.load(str(tiny_fp32_graphs / "decoder.onnx"))
    assert gemm_to_matmul(model) == 1
    onnx.save(model, str(tmp_path / "decoder.onnx"))
    feeds = decoder_feeds(batch=2, src_len=6, past_len=3)
    before = session(tiny_fp32_graphs / "decoder.onnx").run(None, feeds)
    after = session(tmp_path / "decoder.onnx").run(None, feeds)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(before, after))


def test_fp16_variant_is_float16_inside_float32_outside(tiny_fp32_graphs, tmp_path):
    convert_fp16(tiny_fp32_graphs / "decoder.onnx", tmp_path / "decoder.onnx")  # runs check_fp16
    check_fp16(tmp_path / "decoder.onnx")
    feeds = decoder_feeds(batch=2, src_len=6, past_len=3)
    # ONNX Runtime's CPU provider happens to run these ops in fp16: compare with fp32 loosely
    reference = session(tiny_fp32_graphs / "decoder.onnx").run(None, feeds)[0]
    half = session(tmp_path / "decoder.onnx").run(None, feeds)[0]
    assert half.dtype == np.float32 and np.abs(half - reference).max() < 0.05


def test_parity_fails_against_a_different_model(tiny_checkpoint, tiny_fp32_graphs, tmp_path):
    out = tmp_path / "package"
    build_package(tiny_checkpoint, out, "fp32", max_source_tokens=64, fp32_dir=tiny_fp32_graphs)
    other = load_model(tiny_checkpoint)[0]
    with torch.no_grad():
        other.output_bias.add_(torch.randn_like(other.output_bias))  # not the weights that were exported
    with pytest.raises(ParityError, match="parity failed"):
        check_parity(other, out, tiny_checkpoint.parent / "data" / "test.tsv", sample_size=20)
    assert json.loads((out / "parity.json").read_text())["passed"] is False
    with pytest.raises(PackageError, match="parity"):
        Translator(out, ONE_THREAD)  # the service refuses a package whose parity failed


TEST_SPLIT = ROOT / "data" / "en-de" / "test.tsv"  # both directions' pairs, English in column 0
SHIPPED_PAIRS = [pair for pair in ("en-de", "de-en") if (ROOT / "models" / pair / "package.json").exists()]


@pytest.mark.skipif(not SHIPPED_PAIRS, reason="models/en-de/ has not been exported yet")
@pytest.mark.parametrize("pair", SHIPPED_PAIRS)
def test_shipped_package_is_an_export_of_the_shipped_checkpoint(tmp_path, pair):
    package, checkpoint = ROOT / "models" / pair, ROOT / "checkpoints" / pair
    manifest = load_package(package, expect_pair=tuple(pair.split("-")))
    assert manifest.precision == "int8"
    if not (checkpoint / "model.safetensors").exists():
        pytest.skip(f"checkpoints/{pair}/model.safetensors is not here: cannot re-export")
    assert manifest.source_checkpoint.model_safetensors_sha256 == sha256_of(checkpoint / "model.safetensors"), \
        f"models/{pair} was exported from other weights than checkpoints/{pair}: re-export it"
    assert manifest.files["spm.model"] == sha256_of(checkpoint / "spm.model")
    options = manifest.export_options
    build_package(checkpoint, tmp_path / "fresh", "int8", manifest.limits.max_source_tokens,
                  per_channel=bool(options.get("per_channel")), reduce_range=bool(options.get("reduce_range")))
    shipped = Translator(package, ONE_THREAD)
    fresh = Translator(tmp_path / "fresh", ONE_THREAD, require_parity=False)
    column = 0 if pair == "en-de" else 1
    sentences = [row[column] for row in read_tsv_pairs(TEST_SPLIT)[:20]] if TEST_SPLIT.exists() else [
        "Click the button to open a new document.", "The file could not be saved."]
    options = SearchOptions(bos_id=manifest.special_ids.bos, eos_id=manifest.special_ids.eos)
    ids = shipped.tokenize(sentences)
    expected = [r.hypotheses[0].tokens for r in shipped.translate_ids(ids, options)]
    assert [r.hypotheses[0].tokens for r in fresh.translate_ids(ids, options)] == expected


def test_no_torch_is_imported_by_the_service():
    import subprocess
    import sys

    code = ("import sys, engine.translator, engine.package, engine.sessions, engine.iobinding, engine.search; "
            "assert 'torch' not in sys.modules, 'service imports torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
