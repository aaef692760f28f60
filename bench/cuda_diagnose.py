"""Where ONNX Runtime's CUDA provider and the CPU part ways on a model package: the encoder and two decoder steps
run on both with the same inputs and every node's output compared, then whole translations (bench/gpu_check.sh).

    python -m bench.cuda_diagnose PACKAGE [PACKAGE ...] [--against CPUExecutionProvider]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from engine.search import pad_batch
from engine.sessions import CPU, CUDA, RuntimeOptions
from engine.translator import Translator

SENTENCES = ["The house sees the small cat.", "Click on the button.", "Menu.",
             "Choose the new green window and open the file on the table and the menu."]


def with_every_output(path: Path) -> tuple[bytes, list[onnx.NodeProto]]:
    """The graph with every node's outputs as graph outputs (types from ONNX's inference; float where it has none)."""
    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in known:
                model.graph.output.append(helper.make_tensor_value_info(name, types.get(name) or onnx.TensorProto.FLOAT, None))
                known.add(name)
    return model.SerializeToString(), list(model.graph.node)


def session(model: bytes, provider: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every node runs as written
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=[provider])


def run_all(graph: ort.InferenceSession, feeds: dict) -> dict[str, np.ndarray]:
    """Every output of one run, by name."""
    return dict(zip([o.name for o in graph.get_outputs()], graph.run(None, feeds)))


def compare(what: str, nodes: list[onnx.NodeProto], a: dict, b: dict, tolerance: float, skip: tuple[str, ...] = (),
            shown: int = 8) -> None:
    """Print the first nodes whose outputs differ by more than `tolerance`, in graph order (`skip`: outputs
    that may differ)."""
    worst, printed = 0.0, 0
    for node in nodes:
        for name in node.output:
            if name not in a or name not in b or name in skip:
                continue
            x, y = np.asarray(a[name]), np.asarray(b[name])
            if x.shape != y.shape:
                print(f"  {what}: {node.op_type} {name}: shapes {x.shape} vs {y.shape}")
                printed += 1
                continue
            diff = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if x.size else 0.0
            worst = max(worst, diff)
            if diff > tolerance and printed < shown:
                print(f"  {what}: {node.op_type} {node.name or name} -> {name} {x.shape}: max |diff| {diff:.3g}")
                printed += 1
    print(f"{what}: largest difference over all nodes {worst:.3g}" + ("" if printed else f" (none above {tolerance:g})"))


def diagnose(package: Path, against: str, tested: str = CUDA) -> None:
    cpu = Translator(package, RuntimeOptions(intra_op_threads=1), require_parity=False)
    tolerance = 5e-2 if cpu.precision == "fp16" else 1e-3
    print(f"== {package} ({cpu.precision}): {tested} against {against}, tolerance {tolerance:g}")
    pad = cpu.manifest.special_ids.pad
    src = pad_batch(cpu.tokenize(SENTENCES), pad)
    graphs = cpu.manifest.graphs

    encoder, encoder_nodes = with_every_output(package / graphs.encoder.file)
    runs = {p: run_all(session(encoder, p), {"input_ids": src}) for p in (against, tested)}
    compare("encoder", encoder_nodes, runs[against], runs[tested], tolerance)

    decoder, decoder_nodes = with_every_output(package / graphs.decoder.file)
    sessions = {against: session(decoder, against), tested: session(decoder, tested)}
    dims = cpu.manifest.model
    batch, width, capacity = len(src), 2, 8
    rows = batch * width
    feeds = {
        "input_ids": np.full(rows, cpu.manifest.special_ids.bos, np.int64), "positions": np.zeros(rows, np.int64),
        "past_length": np.zeros(1, np.int32), "beam_width": np.array([width], np.int32),
        "cache_indirection": np.zeros((batch, width, capacity), np.int32), "self_attention_mask": np.ones((rows, 1), np.int32),
        "source_mask": (src != pad).astype(np.int32), "top_k": np.array([2 * width], np.int64),
        "query_shape": np.array([batch, width, dims.n_heads * dims.head_dim], np.int64),
        **{name: runs[against][name] for name in graphs.encoder.outputs[1:]},
        **{name: np.zeros((rows, dims.n_heads, capacity, dims.head_dim), np.float32) for name in graphs.decoder.inputs[-2 * dims.n_decoder_layers:]},
    }
    # Each provider is fed its own caches back (CUDA keeps key caches in another layout), the rest from the reference.
    caches = list(zip(graphs.decoder.inputs[-2 * dims.n_decoder_layers:], graphs.decoder.outputs[-2 * dims.n_decoder_layers:]))
    own = {p: {} for p in sessions}
    for step in range(2):
        outputs = {p: run_all(s, feeds | own[p]) for p, s in sessions.items()}
        compare(f"decoder step {step}", decoder_nodes, outputs[against], outputs[tested], tolerance,
                skip=tuple(o for _, o in caches if o.startswith("key")))  # the CUDA kernel's key caches are tiled
        reference = outputs[against]
        feeds |= {"input_ids": reference["top_ids"][:, 0].copy(), "positions": np.full(rows, step + 1, np.int64),
                  "past_length": np.array([step + 1], np.int32), "self_attention_mask": np.ones((rows, step + 2), np.int32)}
        own = {p: {i: outputs[p][o] for i, o in caches} for p in sessions}

    gpu = Translator(package, RuntimeOptions(providers=(tested,), strict_providers=True), require_parity=False)
    ids = cpu.tokenize(SENTENCES * 8)
    for beam_size in (1, 4):
        options = cpu.search_options(beam_size=beam_size)
        expected = [r.hypotheses[0].tokens for r in cpu.translate_ids(ids, options)]
        got = [r.hypotheses[0].tokens for r in gpu.translate_ids(ids, options)]
        print(f"translations, beam {beam_size}: {sum(a == b for a, b in zip(expected, got))}/{len(ids)} identical to "
              f"the CPU's; first: {gpu.detokenize(got[:1])[0]!r} vs {cpu.detokenize(expected[:1])[0]!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", type=Path, nargs="+")
    parser.add_argument("--against", default=CPU, help="the provider taken as the reference")
    parser.add_argument("--provider", default=CUDA, help="the provider diagnosed")
    args = parser.parse_args(argv)
    for package in args.packages:
        try:
            diagnose(package, args.against, args.provider)
        except Exception as error:  # noqa: BLE001 - a diagnosis reports every failure and goes on
            print(f"{package}: {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
