"""The whole search inside ONNX Runtime: a `generation.onnx` built around a package's own two graphs.

ONNX Runtime's com.microsoft BeamSearch operator (model_type=1, the encoder-decoder convention that
`onnxruntime/python/tools/transformers/convert_generation.py` uses for T5) runs the decoding loop in
C++: beam bookkeeping, top-k, cache reordering. Our encoder.onnx and decoder.onnx are wrapped,
unchanged, in the two subgraphs that operator expects (GreedySearch exists only for model_type=0, so
greedy is BeamSearch with num_beams=1):

  encoder subgraph  encoder_input_ids, encoder_attention_mask (int32, 1 on real tokens), decoder_input_ids
                    → logits [B,1,V], encoder_hidden_states, present_key_self_i, present_value_self_i,
                      present_key_cross_i, present_value_cross_i
                    = our encoder, then our first decoder step on an empty cache
  decoder subgraph  input_ids, encoder_attention_mask, past_key_self_i, past_value_self_i,
                    past_key_cross_i, past_value_cross_i → logits [B,1,V], present_key_self_i, present_value_self_i
                    = one step of our decoder

Adapters are a few ONNX nodes: int32 → int64 ids, padding mask from the int mask, log_probs [B,V] →
logits [B,1,V] (the operator applies log_softmax, the identity on log-probabilities up to rounding).

Per-sentence output limits. The operator has one max_length for the whole batch; our search ends each
sentence at its own limit (ratio × source length + offset). The top-level graph therefore takes one
more input, `eos_step` int32 [batch]: from that step on (0-based count of tokens already generated)
the decoder offers only EOS, with log-probability 0 after the operator's log_softmax. The caller
(`bench.contrib_search.generation_feeds`) sets it to limit - 1 for beam search (our beam search forces
EOS at the limit) and to limit for greedy (our greedy search stops after the limit-th token; the forced
EOS then adds 0 to the score). The subgraphs read `eos_step` from the outer scope.

Not part of a served package: the service decodes with its own loop, which is faster on the
multi-sentence batches it forms under load (README "Benchmark").

    python -m export.generation build/generation/en-de-fp32   # → PACKAGE/generation.onnx (not in package.json)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GENERATION_FILE = "generation.onnx"
MS_DOMAIN = "com.microsoft"


class Dims:
    """What the adapters need to know about the package (from package.json)."""

    def __init__(self, manifest):
        model, ids = manifest.model, manifest.special_ids
        self.vocab, self.heads, self.head_dim = model.vocab_size, model.n_heads, model.head_dim
        self.layers = model.n_decoder_layers
        self.pad, self.bos, self.eos = ids.pad, ids.bos, ids.eos


def tensor(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def cache_names(kind: str, layers: int) -> list[str]:
    """present_key_self_0, present_value_self_0, present_key_self_1, ... (kind: 'present_*_self', ...)."""
    return [kind.replace("*", part) + f"_{i}" for i in range(layers) for part in ("key", "value")]


def inline(model: onnx.ModelProto, prefix: str, renames: dict[str, str]) -> tuple[list, list]:
    """The nodes and initializers of `model`, every name prefixed (so that two graphs can live in one
    subgraph), then the graph inputs/outputs named in `renames` wired to outer names instead."""
    graph = onnx.compose.add_prefix_graph(model.graph, prefix, inplace=False)
    mapping = {prefix + inner: outer for inner, outer in renames.items()}
    for node in graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
    return list(graph.node), list(graph.initializer)


def logits_nodes(dims: Dims, log_probs: str, past_key: str, prefix: str) -> tuple[list, list]:
    """log_probs [N,V] → logits [N,1,V], EOS-only on rows whose sentence reached its `eos_step`.
    N = batch × beams (rows of one sentence are consecutive); the step is the past length."""
    p = prefix
    eos_only = np.full((1, dims.vocab), -np.inf, dtype=np.float32)
    eos_only[0, dims.eos] = 0.0
    constants = [numpy_helper.from_array(eos_only, f"{p}eos_only"),
                 numpy_helper.from_array(np.array([1], np.int64), f"{p}axis1"),
                 numpy_helper.from_array(np.array([-1, 1], np.int64), f"{p}column")]
    nodes = [
        helper.make_node("Shape", [past_key], [f"{p}step"], start=2, end=3),  # [1] tokens generated so far
        helper.make_node("Shape", [log_probs], [f"{p}rows"], start=0, end=1),  # [1] N
        helper.make_node("Shape", ["eos_step"], [f"{p}batch"]),  # [1] B
        helper.make_node("Div", [f"{p}rows", f"{p}batch"], [f"{p}beams"]),
        helper.make_node("Concat", [f"{p}batch", f"{p}beams"], [f"{p}expanded_shape"], axis=0),
        helper.make_node("Cast", ["eos_step"], [f"{p}eos_step64"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", [f"{p}eos_step64", f"{p}axis1"], [f"{p}eos_step_b1"]),
        helper.make_node("Expand", [f"{p}eos_step_b1", f"{p}expanded_shape"], [f"{p}eos_step_bk"]),
        helper.make_node("Reshape", [f"{p}eos_step_bk", f"{p}column"], [f"{p}eos_step_rows"]),  # [N,1]
        helper.make_node("LessOrEqual", [f"{p}eos_step_rows", f"{p}step"], [f"{p}force_eos"]),
        helper.make_node("Where", [f"{p}force_eos", f"{p}eos_only", log_probs], [f"{p}limited"]),
        helper.make_node("Unsqueeze", [f"{p}limited", f"{p}axis1"], ["logits"]),
    ]
    return nodes, constants


def decoder_renames(dims: Dims, past: list[str], cross: list[str], present: list[str]) -> dict[str, str]:
    """Our decoder graph's cache inputs/outputs → the subgraph's names."""
    ours = lambda kind: cache_names(kind, dims.layers)  # noqa: E731
    return {**dict(zip(ours("past_*"), past)), **dict(zip(ours("cross_*"), cross)),
            **dict(zip(ours("present_*"), present)), "input_ids": "dec_ids", "source_padding_mask": "dec_padding"}


def input_adapters(ids: str) -> list:
    """int32 ids → int64 for our graph; int32 attention mask (1 on tokens) → bool padding mask."""
    return [
        helper.make_node("Cast", [ids], ["dec_ids"], to=TensorProto.INT64),
        helper.make_node("Constant", [], ["zero_i32"], value=numpy_helper.from_array(np.array(0, np.int32))),
        helper.make_node("Equal", ["encoder_attention_mask", "zero_i32"], ["dec_padding"]),
    ]


def cache_outputs(dims: Dims, names: list[str], length) -> list:
    return [tensor(name, TensorProto.FLOAT, ["batch", dims.heads, length, dims.head_dim]) for name in names]


def encoder_subgraph(dims: Dims, encoder: onnx.ModelProto, decoder: onnx.ModelProto) -> onnx.GraphProto:
    """Our encoder, then our decoder's first step on an empty self-attention cache."""
    n = dims.layers
    cross, present_self = cache_names("present_*_cross", n), cache_names("present_*_self", n)
    enc_nodes, enc_weights = inline(encoder, "enc/", {"input_ids": "enc_ids", "memory": "encoder_hidden_states",
                                                      **dict(zip(cache_names("cross_*", n), cross))})
    renames = decoder_renames(dims, ["empty_past"] * (2 * n), cross, present_self)
    dec_nodes, dec_weights = inline(decoder, "dec/", renames)
    empty = [  # [B, H, 0, K]: the cache before the first token
        helper.make_node("Shape", ["encoder_input_ids"], ["batch"], start=0, end=1),
        helper.make_node("Constant", [], ["empty_dims"],
                         value=numpy_helper.from_array(np.array([dims.heads, 0, dims.head_dim], np.int64))),
        helper.make_node("Concat", ["batch", "empty_dims"], ["empty_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["empty_shape"], ["empty_past"],
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
    ]
    head, head_weights = logits_nodes(dims, "dec/log_probs", "empty_past", "head/")
    nodes = [helper.make_node("Cast", ["encoder_input_ids"], ["enc_ids"], to=TensorProto.INT64), *enc_nodes,
             *input_adapters("decoder_input_ids"), *empty, *dec_nodes, *head]
    inputs = [tensor("encoder_input_ids", TensorProto.INT32, ["batch", "src_len"]),
              tensor("encoder_attention_mask", TensorProto.INT32, ["batch", "src_len"]),
              tensor("decoder_input_ids", TensorProto.INT32, ["batch", 1])]
    outputs = [tensor("logits", TensorProto.FLOAT, ["batch", 1, dims.vocab]),
               tensor("encoder_hidden_states", TensorProto.FLOAT, ["batch", "src_len", "d_model"]),
               *cache_outputs(dims, present_self, 1), *cache_outputs(dims, cross, "src_len")]
    weights = enc_weights + dec_weights + head_weights
    return helper.make_graph(nodes, "encoder and first decoder step", inputs, outputs, weights)


def decoder_subgraph(dims: Dims, decoder: onnx.ModelProto) -> onnx.GraphProto:
    """One step of our decoder."""
    n = dims.layers
    past, cross = cache_names("past_*_self", n), cache_names("past_*_cross", n)
    present = cache_names("present_*_self", n)
    dec_nodes, dec_weights = inline(decoder, "dec/", decoder_renames(dims, past, cross, present))
    head, head_weights = logits_nodes(dims, "dec/log_probs", past[0], "head/")
    inputs = [tensor("input_ids", TensorProto.INT32, ["batch", 1]),
              tensor("encoder_attention_mask", TensorProto.INT32, ["batch", "src_len"]),
              *cache_outputs(dims, past, "past_len"), *cache_outputs(dims, cross, "src_len")]
    outputs = [tensor("logits", TensorProto.FLOAT, ["batch", 1, dims.vocab]),
               *cache_outputs(dims, present, "past_len + 1")]
    return helper.make_graph([*input_adapters("input_ids"), *dec_nodes, *head], "decoder step", inputs, outputs,
                             dec_weights + head_weights)


def build_generation(encoder: onnx.ModelProto, decoder: onnx.ModelProto, dims: Dims) -> onnx.ModelProto:
    """→ the model: inputs input_ids int32 [B,S] (right-padded), max_length, min_length, num_beams,
    num_return_sequences (int32 [1]), length_penalty (float [1]), eos_step int32 [B];
    outputs sequences int32 [B, num_return_sequences, max_length] (decoder start token first, EOS/pad
    after the end) and sequences_scores float [B, num_return_sequences]."""
    # Without an attention_mask input the operator masks only *left* padding (Hugging Face's T5 convention);
    # ours is right padding, so the mask is computed here. Inputs 6-8 (repetition_penalty, vocab masks) unused.
    mask = [helper.make_node("Constant", [], ["pad_id"], value=numpy_helper.from_array(np.array(dims.pad, np.int32))),
            helper.make_node("Equal", ["input_ids", "pad_id"], ["is_pad"]),
            helper.make_node("Not", ["is_pad"], ["is_token"]),
            helper.make_node("Cast", ["is_token"], ["attention_mask"], to=TensorProto.INT32)]
    node = helper.make_node(
        "BeamSearch", ["input_ids", "max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty",
                       "", "", "", "attention_mask"],
        ["sequences", "sequences_scores"], name="BeamSearch", domain=MS_DOMAIN,
        eos_token_id=dims.eos, pad_token_id=dims.pad, decoder_start_token_id=dims.bos,
        # early_stopping: a sentence ends once it has `num_beams` finished hypotheses, as in our beam search
        model_type=1, early_stopping=1, no_repeat_ngram_size=0,
        encoder=encoder_subgraph(dims, encoder, decoder), decoder=decoder_subgraph(dims, decoder),
    )
    scalar = lambda name, kind: tensor(name, kind, [1])  # noqa: E731
    inputs = [tensor("input_ids", TensorProto.INT32, ["batch", "src_len"]),
              *(scalar(name, TensorProto.INT32)
                for name in ("max_length", "min_length", "num_beams", "num_return_sequences")),
              scalar("length_penalty", TensorProto.FLOAT), tensor("eos_step", TensorProto.INT32, ["batch"])]
    outputs = [tensor("sequences", TensorProto.INT32, ["batch", "n_best", "max_length"]),
               tensor("sequences_scores", TensorProto.FLOAT, ["batch", "n_best"])]
    opsets = {o.domain: o.version for m in (encoder, decoder) for o in m.opset_import}
    opsets[MS_DOMAIN] = max(opsets.get(MS_DOMAIN, 1), 1)
    return helper.make_model(helper.make_graph([*mask, node], "generation", inputs, outputs),
                             opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                             producer_name="translator export.generation", ir_version=encoder.ir_version)


def write_generation(package: Path, out: Path | None = None) -> Path:
    """package directory (encoder.onnx, decoder.onnx, package.json) → its generation.onnx."""
    from engine.package import read_manifest

    package = Path(package)
    manifest = read_manifest(package)
    graphs = manifest.graphs
    encoder, decoder = (onnx.load(str(package / graph.file)) for graph in (graphs.encoder, graphs.decoder))
    model = build_generation(encoder, decoder, Dims(manifest))
    out = Path(out) if out else package / GENERATION_FILE
    onnx.save(model, str(out))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path)
    parser.add_argument("--out", type=Path, help=f"default: PACKAGE/{GENERATION_FILE}")
    args = parser.parse_args()
    print(write_generation(args.package, args.out))
