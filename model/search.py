"""The PyTorch model as a `StepModel`, so that it decodes through the same search as the service."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.search import Candidates, SearchOptions, SearchResult, pad_batch, search
from model.transformer import KeyValue, Transformer


@dataclass
class TorchDecoderState:
    beam_width: int
    cross_kv: list[KeyValue]  # per layer, [B, H, S, K] each (one row per sentence)
    memory_mask: torch.Tensor  # [B, 1, 1, S]
    past_kv: list[KeyValue] | None = None  # per layer, [B·W, H, T, K] each (one row per beam)


class TorchStepModel:
    """Caches are gathered physically (the ONNX engine rewrites an indirection table instead); the
    network and the search are the same, so both must find the same translations."""

    def __init__(self, model: Transformer):
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    @torch.inference_mode()
    def start(self, src_ids: np.ndarray, beam_width: int, max_steps: int) -> TorchDecoderState:
        memory, memory_mask = self.model.encoder(self.tensor(src_ids))
        return TorchDecoderState(beam_width, self.model.decoder.cross_attention_cache(memory), memory_mask)

    @torch.inference_mode()
    def step(self, state: TorchDecoderState, tokens: np.ndarray, k: int) -> Candidates:
        width = state.beam_width

        def per_beam(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(width, dim=0) if width > 1 else t

        cross = [(per_beam(key), per_beam(value)) for key, value in state.cross_kv]
        log_probs, state.past_kv = self.model.decode_step(self.tensor(tokens)[:, None], cross,
                                                          per_beam(state.memory_mask), state.past_kv)
        top = torch.topk(log_probs, k, dim=-1)
        eos = log_probs[:, self.model.config.eos_id]
        return Candidates(top.values.cpu().numpy(), top.indices.cpu().numpy(), eos.cpu().numpy())

    @torch.inference_mode()
    def reorder(self, state: TorchDecoderState, parents: np.ndarray) -> None:
        rows = self.tensor((np.arange(len(parents))[:, None] * state.beam_width + parents).reshape(-1))
        state.past_kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in state.past_kv]

    @torch.inference_mode()
    def keep(self, state: TorchDecoderState, sentences: np.ndarray) -> None:
        index = self.tensor(sentences)
        rows = self.tensor((sentences[:, None] * state.beam_width + np.arange(state.beam_width)).reshape(-1))
        state.cross_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in state.cross_kv]
        state.memory_mask = state.memory_mask.index_select(0, index)
        state.past_kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in state.past_kv]


def translate_ids(
    model: Transformer, sources: list[list[int]], options: SearchOptions, batch_size: int = 64
) -> list[SearchResult]:
    """Decode in batches of similar length, returning results in input order."""
    step_model = TorchStepModel(model)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[SearchResult | None] = [None] * len(sources)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad_batch([sources[i] for i in chunk], model.config.pad_id)
        for i, result in zip(chunk, search(step_model, batch, model.config.pad_id, options)):
            results[i] = result
    return results  # type: ignore[return-value]
