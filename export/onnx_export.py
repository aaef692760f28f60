"""A trained model → its ONNX graphs: the encoder and the decoder step, written node by node from the weights.

`encoder_weights` and `decoder_weights` read the model's parameters into the builders' plain-array form
(export/encoder_graph.py, export/decoder_graph.py); the builders emit ONNX Runtime's contrib attention
ops, which torch.onnx cannot. `check_graphs` runs both graphs against the PyTorch model at several
shapes, beam widths and step counts: the graphs are only as right as that check.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from export.decoder_graph import (
    DecoderLayerWeights, DecoderWeights, build_decoder_step, decoder_input_names, decoder_output_names,
)
from export.encoder_graph import EncoderLayerWeights, EncoderWeights, build_encoder, encoder_output_names
from export.graph_builder import Linear, Norm, save
from model.transformer import Transformer

log = logging.getLogger(__name__)


class EncoderGraph(nn.Module):
    """The PyTorch reference of encoder.onnx: input_ids → memory and every decoder layer's cross-attention
    keys/values."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory, _ = self.model.encoder(input_ids)  # [B, S, D]
        cross = self.model.decoder.cross_attention_cache(memory)
        return (memory, *[t for kv in cross for t in kv])


def array(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy().copy()


def linear(m: nn.Linear) -> Linear:
    return Linear(array(m.weight).T.copy(), array(m.bias))


def norm(m: nn.LayerNorm) -> Norm:
    return Norm(array(m.weight), array(m.bias))


def fused(*projections: nn.Linear) -> Linear:
    """Projections of the same input side by side: one [D, n·D] matrix product instead of n."""
    return Linear(np.concatenate([array(p.weight).T for p in projections], axis=1),
                  np.concatenate([array(p.bias) for p in projections]))


def encoder_weights(model: Transformer) -> EncoderWeights:
    """The model's encoder, and every decoder layer's cross-attention key/value projection (applied to the
    encoder output once per sentence)."""
    c = model.config
    layers = [EncoderLayerWeights(norm(layer.self_attn_norm), fused(layer.self_attn.q_proj, layer.self_attn.k_proj,
                                                                     layer.self_attn.v_proj),
                                  linear(layer.self_attn.out_proj), norm(layer.ffn_norm), linear(layer.ffn.up),
                                  linear(layer.ffn.down))
              for layer in model.encoder.layers]
    cross = fused(*[p for layer in model.decoder.layers for p in (layer.cross_attn.k_proj, layer.cross_attn.v_proj)])
    return EncoderWeights(
        embedding=array(model.embedding.weight) * math.sqrt(c.d_model), positions=array(model.encoder.positions.table),
        layers=layers, final_norm=norm(model.encoder.final_norm), cross=cross, n_heads=c.n_heads, pad_id=c.pad_id,
        activation=c.activation, layer_norm_eps=c.layer_norm_eps)


def decoder_weights(model: Transformer) -> DecoderWeights:
    """The model's decoder, as the step-graph builder takes it: fused QKV, [in, out] matrices, the
    embedding pre-scaled by √D, the tied embedding as the output projection."""
    c = model.config
    layers = []
    for layer in model.decoder.layers:
        attn = layer.self_attn
        layers.append(DecoderLayerWeights(
            norm(layer.self_attn_norm), fused(attn.q_proj, attn.k_proj, attn.v_proj), linear(attn.out_proj),
            norm(layer.cross_attn_norm),
            linear(layer.cross_attn.q_proj), linear(layer.cross_attn.out_proj), norm(layer.ffn_norm),
            linear(layer.ffn.up), linear(layer.ffn.down)))
    embedding = array(model.embedding.weight)
    return DecoderWeights(
        embedding=embedding * math.sqrt(c.d_model), positions=array(model.decoder.positions.table), layers=layers,
        final_norm=norm(model.decoder.final_norm), output=Linear(embedding.T.copy(), array(model.output_bias)),
        n_heads=c.n_heads, eos_id=c.eos_id, activation=c.activation, layer_norm_eps=c.layer_norm_eps)


def export_encoder(model: Transformer, path: Path, half: bool = False) -> None:
    save(build_encoder(encoder_weights(model.eval()), half), path)


def export_decoder(model: Transformer, path: Path, half: bool = False) -> None:
    """The decoder step graph, float32 or (half) float16 inside."""
    save(build_decoder_step(decoder_weights(model.eval()), half), path)


def export_fp32(model: Transformer, directory: Path) -> tuple[Path, Path]:
    """→ paths of encoder.onnx and decoder.onnx, exported in float32 from the model."""
    encoder_path, decoder_path = directory / "encoder.onnx", directory / "decoder.onnx"
    export_encoder(model, encoder_path)
    export_decoder(model, decoder_path)
    return encoder_path, decoder_path


def check_graphs(
    model: Transformer, encoder_path: Path, decoder_path: Path,
    shapes: tuple[tuple[int, int, int, int], ...] = ((1, 1, 1, 1), (1, 9, 4, 3), (4, 3, 1, 2), (3, 17, 2, 12), (2, 40, 1, 2)),
    tolerance: float = 1e-4,
) -> float:
    """Run both graphs at several (batch, src_len, beam width, steps) shapes, including ones the export never
    saw (batch 1, length 1), against PyTorch: the encoder's outputs, and the decoder's candidates over `steps`
    steps of random tokens with beams reordered at random (the indirection table against gathered caches).
    → the largest absolute difference."""
    import onnxruntime as ort

    from engine.search import unexplained_id_differences
    from engine.step_model import OnnxStepModel
    from model.search import TorchStepModel

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder = ort.InferenceSession(str(encoder_path), options, providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(decoder_path), options, providers=["CPUExecutionProvider"])
    c = model.config
    n = c.n_decoder_layers
    onnx_model = OnnxStepModel(encoder, decoder, c.pad_id, encoder_output_names(n)[1:],
                               decoder_input_names(n)[-2 * n:], decoder_output_names(n)[-2 * n:],
                               (c.n_heads, c.d_model // c.n_heads), c.max_positions)
    torch_model = TorchStepModel(model.eval())
    rng = np.random.default_rng(0)
    worst = 0.0

    def compare(expected: np.ndarray, got: np.ndarray, what: str, where: tuple) -> float:
        if expected.shape != got.shape:
            raise AssertionError(f"{what}: shape {got.shape} from ORT, {expected.shape} from PyTorch at {where}")
        return float(np.abs(expected - got).max())

    with torch.no_grad():
        for shape in shapes:
            batch, src_len, width, steps = shape
            src = rng.integers(4, c.vocab_size, (batch, src_len))
            if src_len > 2:
                src[0, -(src_len // 3) :] = c.pad_id  # one padded row
            encoded = EncoderGraph(model)(torch.from_numpy(src))
            for e, g in zip(encoded, encoder.run(None, {"input_ids": src}), strict=True):
                worst = max(worst, compare(e.numpy(), g, "encoder", shape))
            torch_state, onnx_state = torch_model.start(src, width, steps), onnx_model.start(src, width, steps)
            for t in range(steps):
                tokens = rng.integers(4, c.vocab_size, batch * width)
                expected = torch_model.step(torch_state, tokens, 4)
                got = onnx_model.step(onnx_state, tokens, 4)
                worst = max(worst, compare(expected.log_probs, got.log_probs, "decoder", shape),
                            compare(expected.eos_log_probs, got.eos_log_probs, "decoder EOS", shape))
                if unexplained_id_differences(expected, got, tolerance):  # the right values under the wrong tokens
                    raise AssertionError(f"decoder: ORT's top tokens {got.ids[:2].tolist()} differ from PyTorch's "
                                         f"{expected.ids[:2].tolist()} at {shape}, step {t}")
                if width > 1:
                    parents = rng.integers(0, width, (batch, width))
                    torch_model.reorder(torch_state, parents)
                    onnx_model.reorder(onnx_state, parents)
    if worst > tolerance:
        raise AssertionError(f"ONNX graphs differ from PyTorch by {worst:.2e} (tolerance {tolerance:.0e})")
    log.info("graphs checked at %s: max abs diff %.2e", shapes, worst)
    return worst
