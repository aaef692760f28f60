"""generation.onnx (export/generation.py): the whole search in ONNX Runtime's BeamSearch operator, against
our loop (engine.search.search) on the same tiny fp32 package.

Greedy must give the same tokens and scores. Beam search too, except for the documented difference: a
hypothesis forced to end at its output limit scores higher in the operator (its EOS adds 0, ours
log P(EOS)), so the operator's n best are our finished hypotheses, the unforced ones with our scores,
the forced ones with scores at least ours.
"""

import dataclasses

import numpy as np
import pytest

from bench.contrib_search import search_in_graph
from export.generation import write_generation
from engine.search import length_sorted_batches, pad_batch, search, source_lengths
from engine.translator import Translator
from engine.sessions import RuntimeOptions, create_session

ONE_THREAD = RuntimeOptions(intra_op_threads=1)
TOLERANCE = 1e-4
# Default limits (sentences end by EOS) and tight ones (most reach their limit, each at its own step).
LIMITS = {"default": {}, "tight": {"max_length_ratio": 0.5, "max_length_offset": 1}}


@pytest.fixture(scope="module")
def engines(tiny_packages, tmp_path_factory):
    """Our translator and a session of the package's generation.onnx (written beside, not into, the package)."""
    translator = Translator(tiny_packages["fp32"], ONE_THREAD)
    graph = write_generation(tiny_packages["fp32"], tmp_path_factory.mktemp("generation") / "generation.onnx")
    session, _ = create_session(graph, ONE_THREAD)
    return translator, session


@pytest.fixture(scope="module")
def batches(engines, tiny_checkpoint) -> list[np.ndarray]:
    """The tiny test split in length-sorted batches of 8 (sentences of different lengths share a batch)."""
    translator, _ = engines
    lines = (tiny_checkpoint.parent / "data" / "test.tsv").read_text(encoding="utf-8").splitlines()
    sources = translator.tokenize([line.split("\t")[0] for line in lines])
    pad = translator.manifest.special_ids.pad
    return [pad_batch([sources[i] for i in batch], pad) for batch in length_sorted_batches(sources, 8)]


def ours(engines, src, options):
    return search(engines[0].step_model, src, engines[0].manifest.special_ids.pad, options)


def operator(engines, src, options):
    return search_in_graph(engines[1], src, engines[0].manifest.special_ids.pad, options)


@pytest.mark.parametrize("limits", LIMITS)
def test_greedy_is_identical(engines, batches, limits):
    options = engines[0].search_options(**LIMITS[limits])
    at_limit = 0
    for src in batches:
        mine, op = ours(engines, src, options), operator(engines, src, options)
        caps = options.output_limits(source_lengths(src, engines[0].manifest.special_ids.pad))
        for a, b, cap in zip(mine, op, caps):
            assert b.hypotheses[0].tokens == a.hypotheses[0].tokens
            assert b.hypotheses[0].score == pytest.approx(a.hypotheses[0].score, abs=TOLERANCE)
            at_limit += len(a.hypotheses[0].tokens) == cap
    assert at_limit > (20 if limits == "tight" else -1)  # the per-sentence limits were exercised


@pytest.mark.parametrize("limits", LIMITS)
def test_beam_agrees_up_to_the_forced_eos_score(engines, batches, limits):
    beam = 4
    options = engines[0].search_options(beam_size=beam, n_best=beam, **LIMITS[limits])
    everything = dataclasses.replace(options, n_best=2 * beam)  # ours keeps every finished hypothesis (< 2·beam)
    same_best = forced = sentences = 0
    for src in batches:
        mine, op = ours(engines, src, everything), operator(engines, src, options)
        caps = options.output_limits(source_lengths(src, engines[0].manifest.special_ids.pad))
        for a, b, cap in zip(mine, op, caps):
            sentences += 1
            assert len(b.hypotheses) == beam
            finished = {tuple(h.tokens): h.score for h in a.hypotheses}
            for h in b.hypotheses:
                assert tuple(h.tokens) in finished  # one of our finished hypotheses
                if len(h.tokens) == cap - 1:  # ended by the forced EOS at the limit
                    forced += 1
                    assert h.score >= finished[tuple(h.tokens)] - TOLERANCE
                else:
                    assert h.score == pytest.approx(finished[tuple(h.tokens)], abs=TOLERANCE)
            same_best += b.hypotheses[0].tokens == a.hypotheses[0].tokens
    if limits == "default":  # every hypothesis ended by EOS: the same search
        assert forced == 0 and same_best == sentences
    else:  # all at the limit here; the forced EOS's score reorders about half of the best hypotheses
        assert forced > 0
