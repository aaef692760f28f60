"""The decoder step graph, written node by node from the trained weights.

torch.onnx cannot emit ONNX Runtime's contrib attention ops, and those are what make a step cheap:

- self-attention: `com.microsoft.DecoderMaskedMultiHeadAttention` on a fixed-capacity cache
  [N, H, C, K] that the op writes in place (`past_present_share_buffer`: the same buffer is bound as
  past and present), read through a cache-indirection table [B, W, C] so that reordering beams
  rewrites int32 indices instead of copying caches;
- cross-attention: `com.microsoft.MultiHeadAttention` with the beams of a sentence as its query axis
  ([B, W, D] against the encoder's keys/values [B, H, S, K]): source keys/values are computed once
  per sentence and never replicated per beam;
- one fused QKV projection per layer; log-softmax and TopK at the end, so a step hands back
  2·W candidates per row and the EOS score, never a [rows, vocabulary] matrix.

Graph convention (L layers, B sentences, W beams, N = B·W rows, C cache capacity, S source length):

  in   input_ids            int64 [N]          the last token of each row
       positions            int64 [N]          the position of that token in its sentence
       past_length          int32 [1]          cache slots already written (this step writes slot past_length)
       beam_width           int32 [1]          W
       cache_indirection    int32 [B, W, C]    slot t of beam w was written by beam cache_indirection[b, w, t]
       self_attention_mask  int32 [N, T]       1 where a row may attend (T = past_length + 1)
       source_mask          int32 [B, S]       1 on real source tokens, 0 on padding
       top_k                int64 [1]          candidates per row (at most 64 × ⌈V / 64⌉)
       query_shape          int64 [3]          [B, W, D]: the rows as sentences × beams, for cross-attention
       cross_key_i, cross_value_i   float [B, H, S, K]   from the encoder, per sentence
       key_cache_i, value_cache_i   float [N, H, C, K]   fixed capacity, updated in place
  out  top_log_probs        float [N, top_k]   best log-probabilities of each row, best first
       top_ids              int64 [N, top_k]
       eos_log_probs        float [N]          log-probability of EOS (a row at its length limit must end)
       key_cache_out_i, value_cache_out_i  the caches (bind the same buffers as the inputs)

`self_attention_mask` lets rows that joined a running batch later (continuous batching) ignore the
slots written before they joined; a batch that starts together passes all ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from export.graph_builder import FLOAT, INT32, INT64, MS_DOMAIN, GraphBuilder, Linear, Norm, make_model, residual_block
INPUTS = ["input_ids", "positions", "past_length", "beam_width", "cache_indirection", "self_attention_mask",
          "source_mask", "top_k", "query_shape"]
OUTPUTS = ["top_log_probs", "top_ids", "eos_log_probs"]
TOP_K_GROUP = 64  # vocabulary entries per group of the two-pass top-k


def cache_names(n_layers: int, prefix: str, suffix: str = "") -> list[str]:
    return [f"{prefix}{kind}_{i}{suffix}" for i in range(n_layers) for kind in ("key", "value")]


def decoder_input_names(n_layers: int) -> list[str]:
    return [*INPUTS, *cache_names(n_layers, "cross_"), *cache_names(n_layers, "", "_cache")]


def decoder_output_names(n_layers: int) -> list[str]:
    return [*OUTPUTS, *cache_names(n_layers, "", "_cache_out")]


@dataclass
class DecoderLayerWeights:
    self_attn_norm: Norm
    qkv: Linear  # [D, 3D]: q, k, v projections side by side
    self_out: Linear
    cross_attn_norm: Norm
    cross_query: Linear
    cross_out: Linear
    ffn_norm: Norm
    up: Linear
    down: Linear


@dataclass
class DecoderWeights:
    """What a decoder step needs, independent of where the weights came from."""

    embedding: np.ndarray  # [V, D], already multiplied by the embedding scale
    positions: np.ndarray  # [P, D], added to the embedding
    layers: list[DecoderLayerWeights]
    final_norm: Norm | None
    output: Linear  # [D, V] (+ bias): the vocabulary projection
    n_heads: int
    eos_id: int
    activation: str = "relu"  # relu | gelu | swish
    pre_norm: bool = True  # False: post-norm residual blocks (x = LN(x + f(x)))
    layer_norm_eps: float = 1e-5
    extra: dict = field(default_factory=dict)


def padded_output(output: Linear, group: int) -> tuple[Linear, int]:
    """The vocabulary projection widened to a multiple of `group` columns that never win (bias −10⁴:
    exp(−10⁴) is 0, so the log-softmax's normaliser is unchanged) → the projection and the group count."""
    vocab = output.weight.shape[1]
    groups = -(-vocab // group)
    extra = groups * group - vocab
    bias = output.bias if output.bias is not None else np.zeros(vocab, np.float32)
    return Linear(np.pad(output.weight, ((0, 0), (0, extra))), np.pad(bias, (0, extra), constant_values=-1e4)), groups


def grouped_top_k(g: GraphBuilder, log_probs: str, groups: int, group: int) -> None:
    """TopK over [N, G·c] in two small passes: the k best tokens lie in the k groups of c with the best maxima,
    so pick those groups by their maxima, then the k best of their k·c entries. A single TopK over the
    vocabulary cost as much as the vocabulary projection."""
    grouped = g.op("Reshape", [log_probs, g.constant(np.array([0, groups, group], np.int64), "grouped_shape")])
    maxima = g.op("ReduceMax", [grouped, g.constant(np.array([2], np.int64), "last_axis")], keepdims=0)  # [N, G]
    group_count = g.op("Min", ["top_k", g.constant(np.array([groups], np.int64), "groups")])  # k, or every group
    _, best_groups = g.op("TopK", [maxima, group_count], outputs=2, axis=-1, largest=1, sorted=1)  # [N, k]
    picked = g.op("GatherND", [grouped, g.op("Unsqueeze", [best_groups, g.constant(np.array([2], np.int64), "axis2")])],
                  batch_dims=1)  # [N, k, c]
    flat = g.op("Reshape", [picked, g.constant(np.array([0, -1], np.int64), "flat_shape")])  # [N, k·c]
    g.op("TopK", [flat, "top_k"], outputs=["top_log_probs", "local_ids"], axis=-1, largest=1, sorted=1)
    size = g.constant(np.array(group, np.int64), "group_size")
    group_of = g.op("GatherElements", [best_groups, g.op("Div", ["local_ids", size])], axis=1)
    g.op("Add", [g.op("Mul", [group_of, size]), g.op("Mod", ["local_ids", size])], outputs=["top_ids"])


def build_decoder_step(weights: DecoderWeights, half: bool = False) -> onnx.ModelProto:
    """The step graph in float32, or with `half` in float16 inside (float32 inputs, outputs and caches)."""
    g = GraphBuilder(half)
    d_model = weights.embedding.shape[1]
    heads, n_layers = weights.n_heads, len(weights.layers)
    head_dim = d_model // heads
    one_row = g.constant(np.array([-1, 1, d_model], dtype=np.int64), "rows_shape")  # [N] → [N, 1, D]
    by_sentence = "query_shape"  # rows → sentences × beams for cross-attention: [N, 1, D] → [B, W, D]

    token = g.op("Gather", [g.weight(weights.embedding, "embedding"), "input_ids"], axis=0)
    position = g.op("Gather", [g.weight(weights.positions, "position_table"), "positions"], axis=0)
    x = g.op("Reshape", [g.op("Add", [token, position]), one_row])  # [N, 1, D]

    cache_outputs = []
    for i, layer in enumerate(weights.layers):
        def self_attention(h: str, i=i, layer=layer) -> str:
            qkv = g.linear(h, layer.qkv, f"layer{i}_qkv")  # [N, 1, 3D]
            q, k, v = g.op("Split", [g.to_float32(qkv), g.constant(np.array([d_model] * 3, np.int64), "split")],
                           outputs=3, axis=-1)
            attended, key_out, value_out = g.op(
                "DecoderMaskedMultiHeadAttention",
                [q, k, v, "self_attention_mask", "", f"key_{i}_cache", f"value_{i}_cache", "past_length",
                 "beam_width", "cache_indirection"],
                outputs=[g.name(f"layer{i}_self"), f"key_{i}_cache_out", f"value_{i}_cache_out"],
                domain=MS_DOMAIN, num_heads=heads, past_present_share_buffer=1,
                scale=float(1 / np.sqrt(head_dim)))
            cache_outputs.extend([key_out, value_out])
            return g.linear(g.to_compute(attended), layer.self_out, f"layer{i}_self_out")

        def cross_attention(h: str, i=i, layer=layer) -> str:
            query = g.op("Reshape", [g.linear(h, layer.cross_query, f"layer{i}_cross_q"), by_sentence])  # [B, W, D]
            attended = g.op("MultiHeadAttention", [g.to_float32(query), f"cross_key_{i}", f"cross_value_{i}", "",
                                                   "source_mask"],
                            domain=MS_DOMAIN, num_heads=heads, scale=float(1 / np.sqrt(head_dim)))
            out = g.linear(g.to_compute(attended), layer.cross_out, f"layer{i}_cross_out")
            return g.op("Reshape", [out, one_row])  # [N, 1, D]

        def feed_forward(h: str, i=i, layer=layer) -> str:
            up = g.activation(g.linear(h, layer.up, f"layer{i}_up"), weights.activation)
            return g.linear(up, layer.down, f"layer{i}_down")

        eps, pre = weights.layer_norm_eps, weights.pre_norm
        x = residual_block(g, x, layer.self_attn_norm, eps, pre, self_attention)
        x = residual_block(g, x, layer.cross_attn_norm, eps, pre, cross_attention)
        x = residual_block(g, x, layer.ffn_norm, eps, pre, feed_forward)

    if weights.final_norm is not None:
        x = g.norm(x, weights.final_norm, weights.layer_norm_eps, "final_norm")
    hidden = g.op("Squeeze", [x, g.constant(np.array([1], np.int64), "axis1")])  # [N, D]
    output, groups = padded_output(weights.output, TOP_K_GROUP)
    log_probs = g.op("LogSoftmax", [g.to_float32(g.linear(hidden, output, "logits"))], axis=-1)  # [N, G·c]
    g.op("Gather", [log_probs, g.constant(np.array(weights.eos_id, np.int64), "eos_id")], outputs=["eos_log_probs"],
         axis=1)
    grouped_top_k(g, log_probs, groups, TOP_K_GROUP)

    rows, sentences, beams, capacity, source, total = "N", "B", "W", "C", "S", "T"
    cache_shape = [rows, heads, capacity, head_dim]
    cross_shape = [sentences, heads, source, head_dim]
    inputs = [
        helper.make_tensor_value_info("input_ids", INT64, [rows]),
        helper.make_tensor_value_info("positions", INT64, [rows]),
        helper.make_tensor_value_info("past_length", INT32, [1]),
        helper.make_tensor_value_info("beam_width", INT32, [1]),
        helper.make_tensor_value_info("cache_indirection", INT32, [sentences, beams, capacity]),
        helper.make_tensor_value_info("self_attention_mask", INT32, [rows, total]),
        helper.make_tensor_value_info("source_mask", INT32, [sentences, source]),
        helper.make_tensor_value_info("top_k", INT64, [1]),
        helper.make_tensor_value_info("query_shape", INT64, [3]),
        *[helper.make_tensor_value_info(name, FLOAT, cross_shape) for name in cache_names(n_layers, "cross_")],
        *[helper.make_tensor_value_info(name, FLOAT, cache_shape) for name in cache_names(n_layers, "", "_cache")],
    ]
    outputs = [
        helper.make_tensor_value_info("top_log_probs", FLOAT, [rows, "top_k"]),
        helper.make_tensor_value_info("top_ids", INT64, [rows, "top_k"]),
        helper.make_tensor_value_info("eos_log_probs", FLOAT, [rows]),
        *[helper.make_tensor_value_info(name, FLOAT, cache_shape) for name in cache_names(n_layers, "", "_cache_out")],
    ]
    return make_model(g, "decoder_step", inputs, outputs)
