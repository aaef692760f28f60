"""Greedy and beam search (engine/search.py) driven by the PyTorch reference model."""

import numpy as np
import pytest
import torch

from model.search import TorchStepModel, translate_ids
from model.transformer import Transformer, TransformerConfig
from engine.search import SearchOptions, pad_batch, search

BOS, EOS = 2, 3


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(1)
    config = TransformerConfig(vocab_size=50, d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=2, d_ff=64, dropout=0.0)
    model = Transformer(config).eval()
    with torch.no_grad():  # make EOS likely enough that sentences end at different steps
        model.output_bias[EOS] = 2.0
    return model


SOURCES = [[5, 6, 7, 8, EOS], [9, 10, EOS], [11, 12, 13, 14, 15, 16, 17, EOS], [20, EOS]]


def reference_greedy(model: Transformer, source: list[int], limit: int) -> list[int]:
    """Unbatched, uncached greedy decoding: the plainest possible statement of the algorithm."""
    src = torch.tensor([source])
    out = [BOS]
    with torch.no_grad():
        for _ in range(limit):
            token = int(model(src, torch.tensor([out]))[0, -1].argmax())
            if token == EOS:
                break
            out.append(token)
    return out[1:]


def test_batched_cached_greedy_equals_plain_greedy(model):
    options = SearchOptions(bos_id=BOS, eos_id=EOS, max_length_ratio=1.0, max_length_offset=4)
    results = search(TorchStepModel(model), pad_batch(SOURCES, 0), 0, options)
    for source, result in zip(SOURCES, results):
        assert result.hypotheses[0].tokens == reference_greedy(model, source, len(source) + 4)


def test_outputs_never_exceed_the_length_limit(model):
    options = SearchOptions(bos_id=BOS, eos_id=EOS, beam_size=3, max_length_ratio=0.5, max_length_offset=1)
    for source, result in zip(SOURCES, search(TorchStepModel(model), pad_batch(SOURCES, 0), 0, options)):
        limit = int(np.ceil(len(source) * 0.5)) + 1
        assert all(len(h.tokens) < limit for h in result.hypotheses)


def test_beam_returns_n_best_sorted_and_finds_at_least_greedy_probability(model):
    greedy = search(TorchStepModel(model), pad_batch(SOURCES, 0), 0, SearchOptions(bos_id=BOS, eos_id=EOS))
    options = SearchOptions(bos_id=BOS, eos_id=EOS, beam_size=4, n_best=3, length_penalty=0.0)
    beams = search(TorchStepModel(model), pad_batch(SOURCES, 0), 0, options)
    for g, b in zip(greedy, beams):
        scores = [h.score for h in b.hypotheses]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in b.hypotheses}) == 3
        # with no length normalisation the beam's best log-probability is at least greedy's
        assert scores[0] >= g.hypotheses[0].score - 1e-4


def test_batch_composition_does_not_change_results(model):
    options = SearchOptions(bos_id=BOS, eos_id=EOS, beam_size=4)
    together = translate_ids(model, SOURCES, options, batch_size=4)
    alone = [translate_ids(model, [s], options)[0] for s in SOURCES]
    assert [r.hypotheses[0].tokens for r in together] == [r.hypotheses[0].tokens for r in alone]


@pytest.mark.parametrize("beam_size", [1, 4])
def test_each_sentence_is_handed_over_the_step_it_ends(model, beam_size):
    options = SearchOptions(bos_id=BOS, eos_id=EOS, beam_size=beam_size, max_length_ratio=1.0, max_length_offset=4)
    steps: list[list[int]] = []
    results = search(TorchStepModel(model), pad_batch(SOURCES, 0), 0, options,
                     on_finished=lambda ended: steps.append([index for index, _ in ended]))
    handed = [index for step in steps for index in step]
    assert sorted(handed) == list(range(len(SOURCES)))  # each sentence once
    assert len(steps) > 1  # the sentences end at different steps: the early ones are handed over before the last
    # A sentence handed over earlier decoded no more steps than one handed over later: greedy's output length
    # orders them (beam search keeps going until every beam of a sentence has ended, so lengths do not).
    if beam_size == 1:
        lengths = [max(len(results[i].hypotheses[0].tokens) for i in step) for step in steps]
        assert lengths == sorted(lengths)


def test_parity_tells_a_wrong_token_apart_from_a_near_tie():
    from engine.search import Candidates, unexplained_id_differences

    expected = Candidates(np.array([[-0.1, -2.0, -2.0005, -5.0]], np.float32), np.array([[7, 8, 9, 10]]), np.zeros(1, np.float32))
    tie_swapped = Candidates(expected.log_probs, np.array([[7, 9, 8, 10]]), expected.eos_log_probs)
    renumbered = Candidates(expected.log_probs, np.array([[8, 9, 10, 11]]), expected.eos_log_probs)
    assert unexplained_id_differences(expected, tie_swapped, 1e-3) == 0  # -2.0 and -2.0005: either order is right
    assert unexplained_id_differences(expected, renumbered, 1e-3) == 2  # ranks 0 and 3 stand clear: wrong tokens
