"""The PyTorch model as a `StepModel`, so that it decodes through the same search as the service."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.transformer import KeyValue, Transformer
from engine.search import SearchOptions, SearchResult, pad_batch, search


@dataclass
class TorchDecoderState:
    cross_kv: list[KeyValue]  # per layer, [N, H, S, K] each
    memory_mask: torch.Tensor  # [N, 1, 1, S]
    past_kv: list[KeyValue] | None  # per layer, [N, H, T, K] each


class TorchStepModel:
    def __init__(self, model: Transformer):
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    @torch.inference_mode()
    def encode(self, src_ids: np.ndarray) -> TorchDecoderState:
        memory, memory_mask = self.model.encoder(self.tensor(src_ids))
        return TorchDecoderState(self.model.decoder.cross_attention_cache(memory), memory_mask, None)

    @torch.inference_mode()
    def step(self, state: TorchDecoderState, tokens: np.ndarray) -> tuple[np.ndarray, TorchDecoderState]:
        log_probs, present = self.model.decode_step(
            self.tensor(tokens)[:, None], state.cross_kv, state.memory_mask, state.past_kv
        )
        return log_probs.cpu().numpy(), TorchDecoderState(state.cross_kv, state.memory_mask, present)

    @torch.inference_mode()
    def select(self, state: TorchDecoderState, rows: np.ndarray, sources_changed: bool) -> TorchDecoderState:
        index = self.tensor(rows)

        def pick(kv: list[KeyValue] | None) -> list[KeyValue] | None:
            return None if kv is None else [(k.index_select(0, index), v.index_select(0, index)) for k, v in kv]

        if not sources_changed:
            return TorchDecoderState(state.cross_kv, state.memory_mask, pick(state.past_kv))
        return TorchDecoderState(pick(state.cross_kv), state.memory_mask.index_select(0, index), pick(state.past_kv))


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
