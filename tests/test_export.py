"""PyTorch → ONNX export: dynamic shapes, precision variants, parity, and the shipped package."""

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.decoder_graph import decoder_input_names
from export.onnx_export import check_graphs, export_decoder, export_encoder
from export.package import build_package
from export.parity import ParityError, check_parity
from export.quantize import check_fp16, quantize_int8
from model.checkpoint import load_model
from model.tokenizer import read_tsv_pairs
from engine.search import SearchOptions
from engine.package import PackageError, load_package, read_manifest, sha256_of
from engine.translator import Translator
from engine.sessions import RuntimeOptions

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = RuntimeOptions(intra_op_threads=1)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def decoder_feeds(batch: int, src_len: int, past_len: int, width: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for the tiny model's decoder step (4 heads × 8, 2 layers, vocabulary 96), cache capacity 2 × past."""
    rng = np.random.default_rng(seed)
    rows, capacity = batch * width, max(2 * past_len, 4)
    feeds = {"input_ids": rng.integers(4, 96, rows), "positions": np.full(rows, past_len),
             "past_length": np.array([past_len], np.int32), "beam_width": np.array([width], np.int32),
             "cache_indirection": rng.integers(0, width, (batch, width, capacity)).astype(np.int32),
             "self_attention_mask": np.ones((rows, past_len + 1), np.int32),
             "source_mask": np.ones((batch, src_len), np.int32), "top_k": np.array([5]),
             "query_shape": np.array([batch, width, 32])}
    for name in decoder_input_names(2)[len(feeds):]:
        shape = (batch, 4, src_len, 8) if name.startswith("cross_") else (rows, 4, capacity, 8)
        feeds[name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def test_graphs_match_pytorch_at_shapes_the_export_never_saw(tiny_checkpoint, tiny_fp32_graphs):
    model = load_model(tiny_checkpoint)[0]
    # (batch, source length, beams, steps); 127 + 1 = max_positions
    shapes = ((1, 1, 1, 1), (7, 50, 1, 3), (3, 2, 4, 30), (16, 12, 2, 5), (1, 127, 1, 127))
    worst = check_graphs(model, tiny_fp32_graphs / "encoder.onnx", tiny_fp32_graphs / "decoder.onnx", shapes)
    assert worst < 1e-4


def test_decoder_step_returns_sorted_candidates_and_writes_one_cache_slot(tiny_fp32_graphs):
    decoder = session(tiny_fp32_graphs / "decoder.onnx")
    feeds = decoder_feeds(batch=3, src_len=5, past_len=4, width=2)
    top, ids, eos, *caches = decoder.run(None, feeds)
    assert top.shape == ids.shape == (6, 5) and eos.shape == (6,)
    assert (np.diff(top, axis=1) <= 0).all() and (top <= 0).all() and ((0 <= ids) & (ids < 96)).all()
    assert len(set(map(tuple, ids))) > 1
    for before, after in zip((feeds[n] for n in decoder_input_names(2)[-4:]), caches):
        assert after.shape == before.shape
        unchanged = np.ones(before.shape[2], bool)
        unchanged[4] = False  # slot past_length holds this step's key/value; every other slot is as it was
        assert np.array_equal(after[:, :, unchanged], before[:, :, unchanged])
        assert not np.array_equal(after[:, :, 4], before[:, :, 4])


def test_fp32_package_parity(tiny_packages):
    report = json.loads((tiny_packages["fp32"] / "parity.json").read_text())
    assert report["passed"] and report["greedy_agreement"] == 1.0
    assert report["log_probs_max_abs_diff"] < 1e-4
    manifest = load_package(tiny_packages["fp32"])
    assert manifest.parity["passed"] and "parity.json" in manifest.files


def test_fp16_package_is_within_bleu(tiny_packages):
    report = json.loads((tiny_packages["fp16"] / "parity.json").read_text())
    assert report["passed"] and report["bleu_drop"] <= 0.5 and report["log_probs_max_abs_diff"] < 0.5
    assert load_package(tiny_packages["fp16"]).precision == "fp16"


def test_int8_package_is_quantized_smaller_and_within_bleu(tiny_packages):
    ops = {node.op_type for node in onnx.load(str(tiny_packages["int8"] / "decoder.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"} and "MatMul" not in ops  # the output projection too
    fp32_size = (tiny_packages["fp32"] / "decoder.onnx").stat().st_size
    assert (tiny_packages["int8"] / "decoder.onnx").stat().st_size < 0.6 * fp32_size
    report = json.loads((tiny_packages["int8"] / "parity.json").read_text())
    assert report["passed"] and report["bleu_drop"] <= 0.5
    assert 0 < report["log_probs_max_abs_diff"] < 5  # int8 is not exact, and not wildly off either
    manifest = load_package(tiny_packages["int8"])
    assert manifest.precision == "int8" and manifest.versions["opset"] == 18


def test_fp16_variant_is_float16_inside_float32_outside(tiny_checkpoint, tiny_fp32_graphs, tmp_path):
    model = load_model(tiny_checkpoint)[0]
    export_encoder(model, tmp_path / "encoder.onnx", half=True)
    export_decoder(model, tmp_path / "decoder.onnx", half=True)
    for name in ("encoder.onnx", "decoder.onnx"):
        check_fp16(tmp_path / name)
    feeds = decoder_feeds(batch=2, src_len=6, past_len=3, width=2)
    # ONNX Runtime's CPU provider happens to run these ops in fp16: compare with fp32 loosely
    reference = session(tiny_fp32_graphs / "decoder.onnx").run(None, feeds)[0]
    half = session(tmp_path / "decoder.onnx").run(None, dict(feeds))[0]
    assert half.dtype == np.float32 and np.abs(half - reference).max() < 0.05


def test_int8_can_leave_chosen_matmuls_in_float_the_vocabulary_projection_too(tiny_fp32_graphs, tmp_path):
    from bench.int8_choice import ffn_down_nodes, vocabulary_nodes

    source = tiny_fp32_graphs / "decoder.onnx"
    chosen = vocabulary_nodes(source) + ffn_down_nodes(source)[:1]
    assert len(chosen) == 2
    quantize_int8(source, tmp_path / "decoder.onnx", per_channel=True, excluded=chosen)
    graph = onnx.load(str(tmp_path / "decoder.onnx")).graph
    weights = {tensor.name for tensor in graph.initializer}
    # The vocabulary projection is renamed on its way through the quantizer's pre-processing (fused with its
    # bias, then split again); selecting it by its exported name must still work.
    float_projections = [n.name.split("/")[0] for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert sorted(float_projections) == sorted(chosen)
    with pytest.raises(ValueError, match="no MatMul 'nothing'"):
        quantize_int8(source, tmp_path / "other.onnx", excluded=["nothing"])


def test_int8_with_row_scales_gives_each_sentence_what_it_gets_alone(tiny_checkpoint, tiny_int8_row_scales,
                                                                      tiny_packages):
    out = tiny_int8_row_scales
    assert read_manifest(out).export_options["row_scales"] is True
    ops = {n.op_type for name in ("encoder.onnx", "decoder.onnx") for n in onnx.load(str(out / name)).graph.node}
    assert "MatMulIntegerToFloat" in ops and not ops & {"DynamicQuantizeLinear", "MatMulInteger"}
    model = load_model(tiny_checkpoint)[0]
    assert check_parity(model, out, tiny_checkpoint.parent / "data" / "test.tsv", sample_size=20)["passed"]
    pairs = read_tsv_pairs(tiny_checkpoint.parent / "data" / "test.tsv")[:12]

    def batched_and_alone(package: Path, beam: int) -> tuple[list, list]:
        translator = Translator(package, ONE_THREAD, require_parity=False)
        ids, options = translator.tokenize([pair[0] for pair in pairs]), translator.search_options(beam)
        together = translator.translate_ids(ids, options)
        alone = [translator.translate_ids([row], options)[0] for row in ids]
        return tuple([(r.hypotheses[0].tokens, r.hypotheses[0].score) for r in results]
                     for results in (together, alone))

    for beam in (1, 4):  # tokens and scores alike: nothing of a neighbour reaches a sentence
        together, alone = batched_and_alone(out, beam)
        assert together == alone
    # One scale for the whole batch (the default) is what made them differ.
    together, alone = batched_and_alone(tiny_packages["int8"], 4)
    assert together != alone


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
                  per_channel=bool(options.get("per_channel")), reduce_range=bool(options.get("reduce_range")),
                  row_scales=bool(options.get("row_scales")))
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

    code = ("import sys, engine.translator, engine.package, engine.sessions, engine.step_model, engine.search, engine.segmentation, "
            "engine.tokenization; assert 'torch' not in sys.modules, 'service imports torch'; "
            "assert 'transformers' not in sys.modules, 'service imports transformers'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
