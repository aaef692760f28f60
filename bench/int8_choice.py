"""Which int8 kind the packages use, by measurement: speed and agreement with PyTorch of each variant.

    python -m bench.int8_choice --checkpoint checkpoints/en-de --limit 256 --out results/int8_choice.json

Builds the checkpoint's fp32 graphs once, quantizes them several ways, and translates the first --limit
test sentences with each (one ONNX Runtime thread, length-sorted batches of 32, greedy and beam 4, the
fastest of --repeats passes in CPU seconds; greedy outputs identical to PyTorch's, and beam-4 outputs in
batches of 32 identical to the same sentence's alone):

  dynamic_tensor    DynamicQuantizeMatMul, one scale per weight matrix (`python -m export --no-per-channel`)
  dynamic_channel   the same with one scale per output channel (what `python -m export` writes)
  nbits             MatMulNBits, 8 bits, blocks of 32, accuracy level 4, every matrix
  nbits_vocabulary  MatMulNBits on the vocabulary projection only, DynamicQuantizeMatMul elsewhere
  channel_vocabulary         per output channel on the vocabulary projection, per matrix elsewhere
  channel_except_vocabulary  per matrix on the vocabulary projection, per output channel elsewhere
  float32           no quantization at all (the reference for what int8 costs)
  float32_vocabulary, float32_ffn_down, float32_encoder
                    per output channel, with the vocabulary projection, the feed-forward output projections
                    or the encoder's MatMuls left in float32
  per_row           per output channel, and every activation quantized with a scale per row (what
                    CTranslate2 does) instead of one per batch (`python -m export --row-scales`)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import sacrebleu

from bench.engines import load_test_set, table
from engine.package import read_manifest, write_manifest
from engine.search import SearchOptions
from engine.sessions import RuntimeOptions
from engine.translator import Translator
from export.package import build_package
from export.quantize import quantize_int8


def nbits(source: Path, target: Path, only: list[str] | None = None) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=8, block_size=32, is_symmetric=False,
                                     accuracy_level=4, nodes_to_include=only)
    quantizer.process()
    onnx.save(quantizer.model.model, str(target))


def vocabulary_nodes(graph: Path) -> list[str]:
    return [n.name for n in onnx.load(str(graph)).graph.node if n.op_type == "MatMul" and any("logits" in i for i in n.input)]


def nbits_vocabulary(source: Path, target: Path) -> None:
    staged = target.with_suffix(".nbits.onnx")
    if source.name == "decoder.onnx":
        nbits(source, staged, vocabulary_nodes(source))
    else:
        shutil.copyfile(source, staged)
    quantize_int8(staged, target)
    staged.unlink()


def mixed(per_channel_on_vocabulary: bool):
    """One scale per output channel on the vocabulary projection and one per matrix elsewhere, or the reverse."""
    def quantize(source: Path, target: Path) -> None:
        vocabulary = vocabulary_nodes(source) if source.name == "decoder.onnx" else []
        if not vocabulary:
            quantize_int8(source, target, per_channel=not per_channel_on_vocabulary)
            return
        staged = target.with_suffix(".vocabulary.onnx")
        quantize_int8(source, staged, per_channel=per_channel_on_vocabulary, nodes=vocabulary)
        # The vocabulary projection is a MatMulInteger by now and this pass leaves it: the rest get the other kind.
        quantize_int8(staged, target, per_channel=not per_channel_on_vocabulary)
        staged.unlink()
    return quantize


def ffn_down_nodes(graph: Path) -> list[str]:
    """The feed-forward output projections: the MatMuls that read a ReLU's output."""
    nodes = onnx.load(str(graph)).graph.node
    relu_outputs = {output for n in nodes if n.op_type == "Relu" for output in n.output}
    return [n.name for n in nodes if n.op_type == "MatMul" and n.input[0] in relu_outputs]


def matmul_nodes(graph: Path) -> list[str]:
    return [n.name for n in onnx.load(str(graph)).graph.node if n.op_type == "MatMul"]


def float_except(select: Callable[[Path], list[str]] | None):
    """One scale per output channel, with the MatMuls `select` picks left in float32 (None: the whole graph
    float32): where int8's loss of quality comes from."""
    def quantize(source: Path, target: Path) -> None:
        if select is None:
            shutil.copyfile(source, target)
        else:
            quantize_int8(source, target, per_channel=True, excluded=select(source))
    return quantize


VARIANTS = {
    "dynamic_tensor": lambda source, target: quantize_int8(source, target),
    "dynamic_channel": lambda source, target: quantize_int8(source, target, per_channel=True),
    "nbits": nbits,
    "nbits_vocabulary": nbits_vocabulary,
    "channel_vocabulary": mixed(per_channel_on_vocabulary=True),
    "channel_except_vocabulary": mixed(per_channel_on_vocabulary=False),
    "float32": float_except(None),
    "float32_vocabulary": float_except(lambda graph: vocabulary_nodes(graph) if graph.name == "decoder.onnx" else []),
    "float32_ffn_down": float_except(ffn_down_nodes),
    "float32_encoder": float_except(lambda graph: matmul_nodes(graph) if graph.name == "encoder.onnx" else []),
    "per_row": lambda source, target: quantize_int8(source, target, per_channel=True, row_scales=True),
}


def measure(package: Path, sources: list[list[int]], references: list[str], reference_outputs: list[list[int]],
            repeats: int) -> dict:
    translator = Translator(package, RuntimeOptions(intra_op_threads=1), require_parity=False)
    translator.warmup()
    row: dict = {"decoder_mb": round((package / "decoder.onnx").stat().st_size / 1e6, 1)}
    for beam in (1, 4):
        options, best, outputs = translator.search_options(beam), float("inf"), []
        for _ in range(repeats):
            started = time.process_time()
            outputs = [r.hypotheses[0].tokens for r in translator.translate_in_batches(sources, options)]
            best = min(best, time.process_time() - started)
        name = "greedy" if beam == 1 else "beam4"
        row[f"{name}_cpu_seconds"] = round(best, 3)
        row[f"{name}_bleu"] = round(sacrebleu.corpus_bleu(translator.detokenize(outputs), [references]).score, 2)
        if beam == 1:
            row["greedy_same_as_pytorch"] = sum(a == b for a, b in zip(outputs, reference_outputs))
        else:  # whether a sentence's output depends on what it was batched with
            alone = [r.hypotheses[0].tokens for r in translator.translate_in_batches(sources, options, batch_size=1)]
            row["beam4_same_alone"] = sum(a == b for a, b in zip(outputs, alone))
    return row


def main(argv: list[str] | None = None) -> None:
    from model.checkpoint import load_model
    from model.search import translate_ids

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/en-de"))
    parser.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"))
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("results/int8_choice.json"))
    args = parser.parse_args(argv)
    config = json.loads((args.checkpoint / "config.json").read_text())
    sources, references = load_test_set(args.data, config["src_lang"], config["tgt_lang"], args.checkpoint / "spm.model",
                                        args.limit)
    model = load_model(args.checkpoint)[0]
    c = model.config
    reference = [r.hypotheses[0].tokens for r in translate_ids(model, sources, SearchOptions(bos_id=c.bos_id, eos_id=c.eos_id),
                                                                batch_size=32)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32"
        build_package(args.checkpoint, fp32, "fp32")
        for name in dict.fromkeys(args.variants.split(",")):  # each once
            package = Path(scratch) / name
            shutil.copytree(fp32, package)
            for graph in ("encoder.onnx", "decoder.onnx"):
                VARIANTS[name](fp32 / graph, package / graph)
            precision = "fp32" if name == "float32" else "int8"
            write_manifest(package, read_manifest(package).model_copy(update={"precision": precision}))
            rows.append({"variant": name, **measure(package, sources, references, reference, args.repeats)})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sentences": len(sources), "repeats": args.repeats, "variants": rows}, indent=2) + "\n")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
