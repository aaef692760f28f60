"""PyTorch → ONNX: an encoder graph and a one-step decoder graph with a key/value cache.

The model's own modules do the math; the two small wrappers below only fix the calling
convention of the graphs (flat, named tensors), so the exported network is exactly the
network that was trained and evaluated.

Graph convention (L decoder layers, B batch, S source length, P past length, H heads, K head dim):

  encoder.onnx
    in   input_ids            int64 [B, S]         right-padded with pad_id
    out  memory               float [B, S, D]      encoder output (for sentence embeddings)
         cross_key_i          float [B, H, S, K]   layer i's cross-attention keys, computed once
         cross_value_i        float [B, H, S, K]
  decoder.onnx
    in   input_ids            int64 [B, 1]         the last token of each row
         source_padding_mask  bool  [B, S]         True on source padding
         cross_key_i, cross_value_i                from the encoder
         past_key_i           float [B, H, P, K]   P = 0 on the first step
         past_value_i         float [B, H, P, K]
    out  log_probs            float [B, V]         next-token log-probabilities
         present_key_i        float [B, H, P+1, K]
         present_value_i      float [B, H, P+1, K]

The position of the new token is P, read from the shape of past_key_0 inside the graph.
Separate tensors per layer (rather than one stacked cache) avoid a slice per layer and a
full-cache copy per step inside the graph; the per-step Concat that grows the cache is the
only copy.

Exporter: torch.onnx's dynamo exporter (the default of torch 2.13) at a fixed opset. The
legacy TorchScript exporter froze sequence lengths of attention reshapes (toolchain notes),
so dynamic axes are declared with torch.export dims and verified by `check_dynamic_shapes`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from model.transformer import KeyValue, Transformer

OPSET = 18
EXPORTER = "torch.onnx.export(dynamo=True)"
log = logging.getLogger(__name__)


def encoder_output_names(n_layers: int) -> list[str]:
    return ["memory"] + [f"cross_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def decoder_input_names(n_layers: int) -> list[str]:
    cross = [f"cross_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    past = [f"past_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    return ["input_ids", "source_padding_mask", *cross, *past]


def decoder_output_names(n_layers: int) -> list[str]:
    return ["log_probs"] + [f"present_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def pairs(flat: tuple[torch.Tensor, ...]) -> list[KeyValue]:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


class EncoderGraph(nn.Module):
    """input_ids → memory and every decoder layer's cross-attention keys/values."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory, _ = self.model.encoder(input_ids)  # [B, S, D]
        cross = self.model.decoder.cross_attention_cache(memory)
        return (memory, *[t for kv in cross for t in kv])


class DecoderStepGraph(nn.Module):
    """One cached decoder step: last tokens + caches → log-probabilities and the grown cache."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model
        self.n_layers = model.config.n_decoder_layers

    def forward(self, input_ids: torch.Tensor, source_padding_mask: torch.Tensor, *caches: torch.Tensor):
        cross, past = pairs(caches[: 2 * self.n_layers]), pairs(caches[2 * self.n_layers :])
        memory_mask = source_padding_mask[:, None, None, :]  # [B, 1, 1, S], as the encoder builds it
        log_probs, present = self.model.decode_step(input_ids, cross, memory_mask, past)
        return (log_probs, *[t for kv in present for t in kv])


def example_decoder_inputs(model: Transformer, batch: int, src_len: int, past_len: int) -> tuple[torch.Tensor, ...]:
    """Random decoder-graph inputs of the given shape (sizes ≥ 2 keep torch.export from specialising)."""
    config = model.config
    heads, head_dim = config.n_heads, config.d_model // config.n_heads
    input_ids = torch.randint(4, config.vocab_size, (batch, 1))
    mask = torch.zeros(batch, src_len, dtype=torch.bool)
    mask[0, -1] = True
    cross = [torch.randn(batch, heads, src_len, head_dim) for _ in range(2 * config.n_decoder_layers)]
    past = [torch.randn(batch, heads, past_len, head_dim) for _ in range(2 * config.n_decoder_layers)]
    return (input_ids, mask, *cross, *past)


def export_encoder(model: Transformer, path: Path) -> None:
    n = model.config.n_decoder_layers
    batch, src_len = torch.export.Dim("batch"), torch.export.Dim("src_len", max=model.config.max_positions)
    input_ids = torch.randint(4, model.config.vocab_size, (3, 7))
    program = quiet_export(
        EncoderGraph(model).eval(),
        (input_ids,),
        input_names=["input_ids"],
        output_names=encoder_output_names(n),
        dynamic_shapes={"input_ids": {0: batch, 1: src_len}},
    )
    save(program, path)


def export_decoder(model: Transformer, path: Path) -> None:
    n = model.config.n_decoder_layers
    batch = torch.export.Dim("batch")
    src_len = torch.export.Dim("src_len", max=model.config.max_positions)
    past_len = torch.export.Dim("past_len", max=model.config.max_positions - 1)
    args = example_decoder_inputs(model, batch=3, src_len=7, past_len=5)
    cache_shapes = [{0: batch, 2: src_len}] * (2 * n) + [{0: batch, 2: past_len}] * (2 * n)
    program = quiet_export(
        DecoderStepGraph(model).eval(),
        args,
        input_names=decoder_input_names(n),
        output_names=decoder_output_names(n),
        # forward takes *caches: its dynamic shapes are given positionally, as a tuple
        dynamic_shapes=({0: batch}, {0: batch, 1: src_len}, tuple(cache_shapes)),
    )
    save(program, path)


def quiet_export(module: nn.Module, args: tuple, **options):
    """torch.onnx.export, without the deprecation and axis-renaming warnings torch 2.13 prints on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        return torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, **options)


def save(program, path: Path) -> None:
    """One self-contained .onnx file (our models are far below protobuf's 2 GB limit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


def export_fp32(model: Transformer, directory: Path) -> tuple[Path, Path]:
    """→ paths of encoder.onnx and decoder.onnx, exported in float32 from the model in eval mode."""
    model = model.eval().float()
    encoder_path, decoder_path = directory / "encoder.onnx", directory / "decoder.onnx"
    with torch.no_grad():
        export_encoder(model, encoder_path)
        export_decoder(model, decoder_path)
    return encoder_path, decoder_path


def check_dynamic_shapes(
    model: Transformer, encoder_path: Path, decoder_path: Path,
    shapes: tuple[tuple[int, int, int], ...] = ((1, 1, 0), (1, 9, 3), (4, 3, 0), (5, 17, 11), (2, 40, 1)),
    tolerance: float = 1e-4,
) -> float:
    """Run both graphs at several (batch, src_len, past_len) shapes, including the ones the export never
    saw (batch 1, length 1, zero past), against PyTorch. → the largest absolute difference."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder = ort.InferenceSession(str(encoder_path), options, providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(decoder_path), options, providers=["CPUExecutionProvider"])
    n = model.config.n_decoder_layers
    generator = torch.Generator().manual_seed(0)
    worst = 0.0

    def compare(expected: tuple[torch.Tensor, ...], got: list[np.ndarray], where: tuple[int, int, int]) -> float:
        for e, g in zip(expected, got, strict=True):
            if tuple(e.shape) != g.shape:
                raise AssertionError(f"shape {g.shape} from ORT, {tuple(e.shape)} from PyTorch at {where}")
        return max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got))

    model = model.eval()
    with torch.no_grad():
        for shape in shapes:
            batch, src_len, past_len = shape
            src = torch.randint(4, model.config.vocab_size, (batch, src_len), generator=generator)
            if src_len > 2:
                src[0, -(src_len // 3) :] = model.config.pad_id  # one padded row
            encoded = EncoderGraph(model)(src)
            worst = max(worst, compare(encoded, encoder.run(None, {"input_ids": src.numpy()}), shape))
            random_inputs = example_decoder_inputs(model, batch, src_len, past_len)
            args = (random_inputs[0], src == model.config.pad_id, *encoded[1:], *random_inputs[2 + 2 * n :])
            feeds = dict(zip(decoder_input_names(n), (a.numpy() for a in args)))
            worst = max(worst, compare(DecoderStepGraph(model)(*args), decoder.run(None, feeds), shape))
    if worst > tolerance:
        raise AssertionError(f"ONNX graphs differ from PyTorch by {worst:.2e} (tolerance {tolerance:.0e})")
    log.info("dynamic shapes %s: max abs diff %.2e", shapes, worst)
    return worst
