"""An encoder-decoder Transformer (Vaswani et al., 2017), written out from its parts.

One file, in the spirit of nanoGPT's model.py: a dataclass config and small modules
named after the concept they implement. Pre-norm residual blocks, sinusoidal positions,
ReLU feed-forward and one embedding matrix shared by the encoder input, the decoder
input and the output projection: all of it stays inside what CTranslate2's
`TransformerSpec` can represent, so the benchmark can run CTranslate2 on these weights.

Shapes: B batch, S source length, T target length, D d_model, H heads, K = D / H.
Incremental decoding keeps a key/value cache: each decoder layer's self-attention cache
grows by one step per token, and the cross-attention keys/values are computed once
from the encoder output (`Decoder.cross_attention_cache`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

# A key/value pair of one attention layer, each [B, H, length, K].
KeyValue = tuple[torch.Tensor, torch.Tensor]
# Regularisation, not architecture: weights trained under one setting are the same model under another, so a run
# that continues from a checkpoint may change them and its snapshots still average with the checkpoint's.
TRAINING_SETTINGS = ("dropout", "attention_dropout", "activation_dropout")


@dataclass
class TransformerConfig:
    vocab_size: int = 8000  # joint source/target SentencePiece vocabulary
    d_model: int = 256
    n_heads: int = 4
    n_encoder_layers: int = 4
    n_decoder_layers: int = 3  # a shallower decoder: the per-token loop is what costs at inference
    d_ff: int = 1024
    dropout: float = 0.1  # on embeddings and residual branches
    attention_dropout: float = 0.0  # on attention weights; off by default: CPU random masks of [B, H, T, S] cost more than they help
    activation_dropout: float = 0.0  # inside the feed-forward, likewise
    max_positions: int = 1024
    activation: str = "relu"  # "relu" or "gelu"
    layer_norm_eps: float = 1e-5
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    def architecture(self) -> dict:
        """What the weights' meaning depends on: everything but the training settings."""
        return {name: value for name, value in self.to_dict().items() if name not in TRAINING_SETTINGS}

    @classmethod
    def from_dict(cls, values: dict) -> "TransformerConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def sinusoidal_position_table(max_positions: int, d_model: int) -> torch.Tensor:
    """[max_positions, D] table: sin on even dimensions, cos on odd ones."""
    position = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)  # [P, 1]
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_positions, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table; `offset` is the position of the first token."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.register_buffer("table", sinusoidal_position_table(config.max_positions, config.d_model), persistent=False)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | int = 0) -> torch.Tensor:
        length = x.size(1)
        positions = torch.arange(length, device=x.device) + offset  # [L]
        return x + self.table[positions].to(x.dtype)  # [B, L, D]


class MultiHeadAttention(nn.Module):
    """softmax(Q Kᵀ / √K) V over H heads, with separate q, k, v projections."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        assert config.d_model % config.n_heads == 0
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.attention_dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, L, K]

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim)  # [B, L, D]

    def project_key_value(self, x: torch.Tensor) -> KeyValue:
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(self, query: torch.Tensor, key_value: KeyValue, mask: torch.Tensor | None) -> torch.Tensor:
        """query [B, Lq, D]; key/value [B, H, Lk, K]; mask broadcastable to [B, H, Lq, Lk], True = hidden."""
        q = self.split_heads(self.q_proj(query))  # [B, H, Lq, K]
        k, v = key_value
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # [B, H, Lq, Lk]
        if mask is not None:
            scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out_proj(self.merge_heads(weights @ v))  # [B, Lq, D]


class FeedForward(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff)
        self.down = nn.Linear(config.d_ff, config.d_model)
        self.activation = F.gelu if config.activation == "gelu" else F.relu
        self.dropout = nn.Dropout(config.activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dropout(self.activation(self.up(x))))


class EncoderLayer(nn.Module):
    """Pre-norm: x + SelfAttention(LN(x)), then x + FeedForward(LN(x))."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.self_attn = MultiHeadAttention(config)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        h = self.self_attn_norm(x)
        x = x + self.dropout(self.self_attn.attend(h, self.self_attn.project_key_value(h), padding_mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention over the encoder output, feed-forward."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.self_attn = MultiHeadAttention(config)
        self.cross_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.cross_attn = MultiHeadAttention(config)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, D], the new target positions only when decoding step by step
        self_mask: torch.Tensor | None,  # causal mask [1, 1, T, T_total], or None for a single step
        cross_kv: KeyValue,  # [B, H, S, K] each
        memory_mask: torch.Tensor,  # [B, 1, 1, S], True on source padding
        past_kv: KeyValue | None = None,  # [B, H, T_past, K] each
    ) -> tuple[torch.Tensor, KeyValue]:
        h = self.self_attn_norm(x)
        k, v = self.self_attn.project_key_value(h)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)  # the cache grows by the new positions
            v = torch.cat([past_kv[1], v], dim=2)
        x = x + self.dropout(self.self_attn.attend(h, (k, v), self_mask))
        x = x + self.dropout(self.cross_attn.attend(self.cross_attn_norm(x), cross_kv, memory_mask))
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, (k, v)


class Encoder(nn.Module):
    def __init__(self, config: TransformerConfig, embedding: nn.Embedding):
        super().__init__()
        self.config = config
        self.embedding = embedding
        self.positions = PositionalEncoding(config)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_encoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src [B, S] token ids → memory [B, S, D] and memory mask [B, 1, 1, S] (True = padding)."""
        padding_mask = (src == self.config.pad_id)[:, None, None, :]
        x = self.embedding(src) * math.sqrt(self.config.d_model)
        x = self.dropout(self.positions(x))
        for layer in self.layers:
            x = layer(x, padding_mask)
        return self.final_norm(x), padding_mask


class Decoder(nn.Module):
    def __init__(self, config: TransformerConfig, embedding: nn.Embedding):
        super().__init__()
        self.config = config
        self.embedding = embedding
        self.positions = PositionalEncoding(config)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_decoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def cross_attention_cache(self, memory: torch.Tensor) -> list[KeyValue]:
        """Keys/values of every layer's cross-attention, computed once per source: [B, H, S, K] each."""
        return [layer.cross_attn.project_key_value(memory) for layer in self.layers]

    def forward(
        self,
        tgt: torch.Tensor,  # [B, T] target ids (all positions, or the new ones when past_kv is given)
        cross_kv: list[KeyValue],
        memory_mask: torch.Tensor,  # [B, 1, 1, S]
        past_kv: list[KeyValue] | None = None,  # per layer, [B, H, T_past, K] each
    ) -> tuple[torch.Tensor, list[KeyValue]]:
        """→ hidden states [B, T, D] after the final norm, and each layer's self-attention cache."""
        past_length = 0 if past_kv is None else past_kv[0][0].size(2)
        length = tgt.size(1)
        # Position i may attend to every cached position and to new positions ≤ i.
        causal = torch.ones(length, past_length + length, dtype=torch.bool, device=tgt.device)
        causal = torch.triu(causal, diagonal=past_length + 1)[None, None]  # [1, 1, T, T_past + T]
        x = self.embedding(tgt) * math.sqrt(self.config.d_model)
        x = self.dropout(self.positions(x, offset=past_length))
        present = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, causal, cross_kv[i], memory_mask, None if past_kv is None else past_kv[i])
            present.append(kv)
        return self.final_norm(x), present


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        # One matrix for source, target and output: the vocabulary is joint.
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=config.d_model**-0.5)
        with torch.no_grad():
            self.embedding.weight[config.pad_id].zero_()
        self.encoder = Encoder(config, self.embedding)
        self.decoder = Decoder(config, self.embedding)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., D] → [..., V] through the tied embedding matrix."""
        return F.linear(hidden, self.embedding.weight, self.output_bias)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: src [B, S], tgt_in [B, T] (starts with BOS) → logits [B, T, V].

        With `positions` (a bool mask [B, T]) only those positions are projected → logits [N, V]: training
        skips the vocabulary projection of padding, the largest matrix product in the model.
        """
        memory, memory_mask = self.encoder(src)
        hidden, _ = self.decoder(tgt_in, self.decoder.cross_attention_cache(memory), memory_mask)
        return self.logits(hidden if positions is None else hidden[positions])

    def decode_step(
        self,
        tokens: torch.Tensor,  # [B, 1] the last generated token
        cross_kv: list[KeyValue],
        memory_mask: torch.Tensor,  # [B, 1, 1, S]
        past_kv: list[KeyValue] | None,
    ) -> tuple[torch.Tensor, list[KeyValue]]:
        """One incremental step → log-probabilities [B, V] and the grown cache."""
        hidden, present = self.decoder(tokens, cross_kv, memory_mask, past_kv)
        return torch.log_softmax(self.logits(hidden[:, -1]).float(), dim=-1), present

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
