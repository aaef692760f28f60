"""The network's parts behave as the architecture says."""

import math

import pytest
import torch

from model.transformer import Transformer, TransformerConfig, sinusoidal_position_table


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=300, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0)
    return Transformer(config).eval()


def test_sinusoidal_table_sin_on_even_cos_on_odd():
    table = sinusoidal_position_table(50, 16)
    position, i = 7, 3  # dimension pair (6, 7)
    angle = position / 10000 ** (2 * i / 16)
    assert table[position, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert table[position, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_incremental_decoding_matches_full_forward(model):
    src = torch.randint(4, 300, (3, 9))
    src[1, 6:] = model.config.pad_id
    tgt = torch.randint(4, 300, (3, 7))
    full = torch.log_softmax(model(src, tgt), dim=-1)  # [B, T, V]
    memory, mask = model.encoder(src)
    cross = model.decoder.cross_attention_cache(memory)
    past, steps = None, []
    for t in range(tgt.size(1)):
        log_probs, past = model.decode_step(tgt[:, t : t + 1], cross, mask, past)
        steps.append(log_probs)
        assert past[0][0].shape == (3, 4, t + 1, 8)  # the self-attention cache grows by one step
    assert torch.allclose(full, torch.stack(steps, 1), atol=1e-5)


def test_decoder_is_causal(model):
    src = torch.randint(4, 300, (2, 5))
    tgt = torch.randint(4, 300, (2, 6))
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(4, 300, (2, 2))
    before, after = model(src, tgt), model(src, changed)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_source_padding_is_ignored(model):
    src = torch.randint(4, 300, (1, 5))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    tgt = torch.randint(4, 300, (1, 4))
    assert torch.allclose(model(src, tgt), model(padded, tgt), atol=1e-5)


def test_output_projection_is_tied_to_embeddings(model):
    assert model.encoder.embedding is model.embedding and model.decoder.embedding is model.embedding
    hidden = torch.randn(2, 32)
    assert torch.allclose(model.logits(hidden), hidden @ model.embedding.weight.T + model.output_bias)
