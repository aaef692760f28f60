"""Our checkpoint → a CTranslate2 model directory, through CTranslate2's Python spec API.

Our Transformer stays inside what `TransformerSpec` represents (pre-norm, ReLU, sinusoidal
positions, shared embeddings), so the mapping is one assignment per weight:

  self-attention       q, k, v projections fused into linear[0]; out_proj → linear[1]
  cross-attention      q → linear[0]; k, v fused into linear[1]; out_proj → linear[2]
  layer norms          pre-norms of each sub-layer, and the final encoder/decoder norms
  embeddings           one matrix for source, target and the output projection (+ our output_bias)
  positions            our table set explicitly: ours is sin on even / cos on odd dimensions,
                       CTranslate2's default is sin-half then cos-half

Reads the weights with safetensors' numpy loader; the position table is the model's own function.
"""

from __future__ import annotations

import json
from pathlib import Path

import ctranslate2
import numpy as np
from ctranslate2.specs import common_spec, transformer_spec
from safetensors.numpy import load_file

from model.tokenizer import SPECIAL_PIECES
from model.transformer import sinusoidal_position_table


def set_linear(spec, weights: dict[str, np.ndarray], *prefixes: str) -> None:
    """One linear layer, or several fused along the output dimension (CTranslate2's fused qkv / kv)."""
    spec.weight = np.concatenate([weights[f"{p}.weight"] for p in prefixes], axis=0)
    spec.bias = np.concatenate([weights[f"{p}.bias"] for p in prefixes], axis=0)


def set_norm(spec, weights: dict[str, np.ndarray], prefix: str) -> None:
    spec.gamma, spec.beta = weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]


def set_ffn(spec, weights: dict[str, np.ndarray], layer: str) -> None:
    set_norm(spec.layer_norm, weights, f"{layer}.ffn_norm")
    set_linear(spec.linear_0, weights, f"{layer}.ffn.up")
    set_linear(spec.linear_1, weights, f"{layer}.ffn.down")


def build_spec(config: dict, weights: dict[str, np.ndarray], pieces: list[str]) -> transformer_spec.TransformerSpec:
    c = config["model"]
    activation = common_spec.Activation.GELU if c["activation"] == "gelu" else common_spec.Activation.RELU
    spec = transformer_spec.TransformerSpec.from_config(
        num_layers=(c["n_encoder_layers"], c["n_decoder_layers"]), num_heads=c["n_heads"], pre_norm=True, activation=activation,
    )
    spec.config.layer_norm_epsilon = c["layer_norm_eps"]
    positions = sinusoidal_position_table(c["max_positions"], c["d_model"]).numpy()
    embedding = weights["embedding.weight"]

    spec.encoder.embeddings[0].weight = embedding
    spec.encoder.position_encodings.encodings = positions
    set_norm(spec.encoder.layer_norm, weights, "encoder.final_norm")
    for i, layer in enumerate(spec.encoder.layer):
        name = f"encoder.layers.{i}"
        attention = layer.self_attention
        set_norm(attention.layer_norm, weights, f"{name}.self_attn_norm")
        set_linear(attention.linear[0], weights, *(f"{name}.self_attn.{p}_proj" for p in "qkv"))
        set_linear(attention.linear[1], weights, f"{name}.self_attn.out_proj")
        set_ffn(layer.ffn, weights, name)

    spec.decoder.embeddings.weight = embedding
    spec.decoder.position_encodings.encodings = positions
    set_norm(spec.decoder.layer_norm, weights, "decoder.final_norm")
    spec.decoder.projection.weight = embedding  # tied, as in Transformer.logits
    spec.decoder.projection.bias = weights["output_bias"]
    for i, layer in enumerate(spec.decoder.layer):
        name = f"decoder.layers.{i}"
        self_attention, cross_attention = layer.self_attention, layer.attention
        set_norm(self_attention.layer_norm, weights, f"{name}.self_attn_norm")
        set_linear(self_attention.linear[0], weights, *(f"{name}.self_attn.{p}_proj" for p in "qkv"))
        set_linear(self_attention.linear[1], weights, f"{name}.self_attn.out_proj")
        set_norm(cross_attention.layer_norm, weights, f"{name}.cross_attn_norm")
        set_linear(cross_attention.linear[0], weights, f"{name}.cross_attn.q_proj")
        set_linear(cross_attention.linear[1], weights, f"{name}.cross_attn.k_proj", f"{name}.cross_attn.v_proj")
        set_linear(cross_attention.linear[2], weights, f"{name}.cross_attn.out_proj")
        set_ffn(layer.ffn, weights, name)

    assert tuple(pieces[:4]) == SPECIAL_PIECES, f"vocabulary starts with {pieces[:4]}, expected {SPECIAL_PIECES}"
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)  # joint vocabulary: <pad> <unk> <s> </s> are ids 0-3 in both
    return spec


class CheckpointConverter(ctranslate2.converters.Converter):
    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)

    def _load(self) -> transformer_spec.TransformerSpec:
        import sentencepiece as spm

        config = json.loads((self.checkpoint / "config.json").read_text())
        # float32 whatever the checkpoint stores (model.average --half writes float16), like our own export
        stored = load_file(str(self.checkpoint / "model.safetensors"))
        weights = {name: array.astype("float32") for name, array in stored.items()}
        processor = spm.SentencePieceProcessor(model_file=str(self.checkpoint / "spm.model"))
        pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        return build_spec(config, weights, pieces)


def convert(checkpoint: Path, out: Path, quantization: str) -> Path:
    """→ `out`, a CTranslate2 model directory with weights stored as `quantization` (float32, int8)."""
    return Path(CheckpointConverter(checkpoint).convert(str(out), quantization=quantization, force=True))
