"""The encoder graph, written node by node from the trained weights.

One fused QKV projection and ONNX Runtime's `com.microsoft.MultiHeadAttention` per layer (the
exported PyTorch attention was a dozen reshapes, transposes and matrix products), and every decoder
layer's cross-attention keys and values from one projection of the encoder output.

  in   input_ids            int64 [B, S]         right-padded with pad_id
  out  memory               float [B, S, D]      encoder output (sentence embeddings)
       cross_key_i          float [B, H, S, K]   decoder layer i's cross-attention keys, computed once
       cross_value_i        float [B, H, S, K]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from export.graph_builder import FLOAT, INT32, INT64, MS_DOMAIN, GraphBuilder, Linear, Norm, make_model, residual_block


def encoder_output_names(n_decoder_layers: int) -> list[str]:
    return ["memory"] + [f"cross_{kind}_{i}" for i in range(n_decoder_layers) for kind in ("key", "value")]


@dataclass
class EncoderLayerWeights:
    self_attn_norm: Norm
    qkv: Linear  # [D, 3D]
    self_out: Linear
    ffn_norm: Norm
    up: Linear
    down: Linear


@dataclass
class EncoderWeights:
    embedding: np.ndarray  # [V, D], already multiplied by the embedding scale
    positions: np.ndarray  # [P, D], added to the embedding
    layers: list[EncoderLayerWeights]
    final_norm: Norm | None
    cross: Linear  # [D, 2·L·D]: key_0, value_0, key_1, ... of the decoder's L cross-attentions
    n_heads: int
    pad_id: int
    activation: str = "relu"
    pre_norm: bool = True
    layer_norm_eps: float = 1e-5


def build_encoder(weights: EncoderWeights, half: bool = False) -> onnx.ModelProto:
    g = GraphBuilder(half)
    d_model = weights.embedding.shape[1]
    heads, head_dim = weights.n_heads, d_model // weights.n_heads
    n_cross = weights.cross.weight.shape[1] // d_model  # 2 per decoder layer

    source_mask = g.op("Cast", [g.op("Not", [g.op("Equal", ["input_ids", g.constant(np.array(weights.pad_id, np.int64),
                                                                                      "pad_id")])])], to=INT32)
    length = g.op("Gather", [g.op("Shape", ["input_ids"]), g.constant(np.array(1, np.int64), "axis1")], axis=0)
    positions = g.op("Range", [g.constant(np.array(0, np.int64), "zero"), length, g.constant(np.array(1, np.int64), "one")])
    token = g.op("Gather", [g.weight(weights.embedding, "embedding"), "input_ids"], axis=0)  # [B, S, D]
    x = g.op("Add", [token, g.op("Gather", [g.weight(weights.positions, "position_table"), positions], axis=0)])

    for i, layer in enumerate(weights.layers):
        def self_attention(h: str, i=i, layer=layer) -> str:
            qkv = g.to_float32(g.linear(h, layer.qkv, f"layer{i}_qkv"))  # [B, S, 3D]
            q, k, v = g.op("Split", [qkv, g.constant(np.array([d_model] * 3, np.int64), "split")], outputs=3, axis=-1)
            attended = g.op("MultiHeadAttention", [q, k, v, "", source_mask], domain=MS_DOMAIN, num_heads=heads,
                            scale=float(1 / np.sqrt(head_dim)))
            return g.linear(g.to_compute(attended), layer.self_out, f"layer{i}_self_out")

        def feed_forward(h: str, i=i, layer=layer) -> str:
            return g.linear(g.activation(g.linear(h, layer.up, f"layer{i}_up"), weights.activation), layer.down,
                            f"layer{i}_down")

        eps, pre = weights.layer_norm_eps, weights.pre_norm
        x = residual_block(g, x, layer.self_attn_norm, eps, pre, self_attention)
        x = residual_block(g, x, layer.ffn_norm, eps, pre, feed_forward)
    if weights.final_norm is not None:
        x = g.norm(x, weights.final_norm, weights.layer_norm_eps, "final_norm")
    g.op("Identity", [g.to_float32(x)], outputs=["memory"])

    # [B, S, 2L·D] → [B, S, 2L·H, K] → [B, 2L·H, S, K] → 2L × [B, H, S, K]
    cross = g.to_float32(g.linear(x, weights.cross, "cross"))
    split_heads = g.op("Reshape", [cross, g.constant(np.array([0, 0, n_cross * heads, head_dim], np.int64), "heads")])
    by_head = g.op("Transpose", [split_heads], perm=[0, 2, 1, 3])
    g.op("Split", [by_head, g.constant(np.array([heads] * n_cross, np.int64), "per_layer")],
         outputs=encoder_output_names(n_cross // 2)[1:], axis=1)

    batch, source = "B", "S"
    inputs = [helper.make_tensor_value_info("input_ids", INT64, [batch, source])]
    outputs = [helper.make_tensor_value_info("memory", FLOAT, [batch, source, d_model])]
    outputs += [helper.make_tensor_value_info(name, FLOAT, [batch, heads, source, head_dim])
                for name in encoder_output_names(n_cross // 2)[1:]]
    return make_model(g, "encoder", inputs, outputs)
