"""Our Python search loop against ONNX Runtime's BeamSearch operator (generation.onnx), back to back.

    python -m export --checkpoint checkpoints/en-de --out build/generation/en-de-fp32 --precision fp32
    python -m bench.contrib_search --package build/generation/en-de-fp32 --limit 128 --threads 1 \
        --out results/contrib_search_fp32.json

The package gets a generation.onnx (export/generation.py) if it has none. For every batch of every
setting (greedy and beam 4 × batch 1 and 32, length-sorted batches) both engines translate the same
ids one after the other, in alternating order, in this process: contention from other work on the
machine hits both alike, so the ratios mean more than the absolute numbers. Also reported: identical
outputs (best hypothesis tokens), the largest score difference among them, the share of our loop's
time spent inside session.run (the rest is Python search bookkeeping; the operator also saves the
per-call overhead and the cache copies in and out of each run), and the decoder rows each engine
computes (the operator keeps finished sentences in the batch until the last one ends; its count is
estimated from the best hypotheses' lengths, a lower bound for beam search, which runs until a
sentence has `beam` finished hypotheses).

`search_in_graph` is generation.onnx behind the interface of `engine.search.search`. It lives here,
not in service/: measured, the operator loses where the service runs (the batcher forms multi-sentence
batches under load), so the service keeps its own loop (README "Benchmark").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from export.generation import GENERATION_FILE, write_generation
from engine.search import Hypothesis, SearchOptions, SearchResult, source_lengths


def generation_feeds(src_ids: np.ndarray, pad_id: int, options: SearchOptions) -> dict[str, np.ndarray]:
    """generation.onnx's inputs for one padded batch: the per-sentence output limits become `eos_step`
    (export/generation.py), so that the operator ends each sentence where our search does."""
    limits = options.output_limits(source_lengths(src_ids, pad_id))
    beam = options.beam_size > 1
    # Ours: beam search allows only EOS once limit - 1 tokens are out; greedy stops after the limit-th token.
    eos_step = limits - 1 if beam else limits
    scalar = lambda value, dtype=np.int32: np.array([value], dtype=dtype)  # noqa: E731
    return {
        "input_ids": src_ids.astype(np.int32),
        "max_length": scalar(int(eos_step.max()) + 2),  # start token + tokens + EOS: never the binding limit
        "min_length": scalar(0),
        "num_beams": scalar(max(options.beam_size, 1)),
        "num_return_sequences": scalar(options.n_best if beam else 1),
        "length_penalty": scalar(options.length_penalty if beam else 0.0, np.float32),  # greedy: the plain sum
        "eos_step": eos_step.astype(np.int32),
    }


def hypotheses_from(sequences: np.ndarray, scores: np.ndarray, pad_id: int, eos_id: int) -> list[SearchResult]:
    """sequences [B, n, length] (start token first, then the tokens, then padding; the operator writes
    no EOS, but an EOS would end a hypothesis too) → our results. A pad token the model itself chose
    would end a hypothesis early here, where ours would keep it (training never asks for padding)."""
    results = []
    for rows, row_scores in zip(sequences, scores):
        hypotheses = []
        for row, score in zip(rows[:, 1:], row_scores):
            end = np.flatnonzero((row == pad_id) | (row == eos_id))
            hypotheses.append(Hypothesis(row[: end[0] if len(end) else len(row)].tolist(), float(score)))
        results.append(SearchResult(hypotheses))
    return results


def search_in_graph(session, src_ids: np.ndarray, pad_id: int, options: SearchOptions) -> list[SearchResult]:
    """`engine.search.search(step_model, src_ids, pad_id, options)`, run by generation.onnx's BeamSearch
    operator in one session.run. Scores are normalised as ours (beam: log-prob sum / length **
    length_penalty; greedy: the plain sum). Differences, checked by tests/test_generation.py: a beam
    hypothesis forced to end at its limit scores higher by -log P(EOS) / length ** length_penalty (the
    operator's log_softmax turns the EOS-only row into 0), which can reorder the n best; with int8
    dynamic quantization, finished sentences that stay in the batch change the activations' scale and
    so, slightly, the numbers."""
    sequences, scores = session.run(["sequences", "sequences_scores"], generation_feeds(src_ids, pad_id, options))
    return hypotheses_from(sequences, scores, pad_id, options.eos_id)


class TimedSession:
    """An InferenceSession whose run() time is added up (to split our loop into ORT time and the rest)."""

    def __init__(self, session):
        self.session, self.seconds, self.rows = session, 0.0, 0

    def run(self, outputs, feeds, run_options=None):
        started = time.perf_counter()
        result = self.session.run(outputs, feeds, run_options)
        self.seconds += time.perf_counter() - started
        self.rows += len(next(iter(feeds.values())))
        return result


def load(package: Path, threads: int):
    from engine.translator import Translator
    from engine.sessions import RuntimeOptions, create_session

    if not (package / GENERATION_FILE).exists():
        write_generation(package)
    options = RuntimeOptions(intra_op_threads=threads)
    translator = Translator(package, options)
    translator.warmup()
    session, _ = create_session(package / GENERATION_FILE, options)
    return translator, session


def run_setting(translator, session, sources: list[list[int]], beam: int, batch_size: int) -> dict:
    from engine.search import length_sorted_batches, pad_batch, search

    ids = translator.manifest.special_ids
    options = translator.search_options(beam_size=beam)
    step_model = translator.step_model
    decoder = step_model.decoder = TimedSession(step_model.decoder)
    encoder = step_model.encoder = TimedSession(step_model.encoder)
    ours_s = op_s = 0.0
    same, worst_score, ours_tokens, op_tokens, op_rows = 0, 0.0, 0, 0, 0
    try:
        for n, batch in enumerate(length_sorted_batches(sources, batch_size)):
            src = pad_batch([sources[i] for i in batch], ids.pad)
            timings = {}
            for engine in (("ours", "op") if n % 2 == 0 else ("op", "ours")):
                started = time.perf_counter()
                if engine == "ours":
                    ours = search(step_model, src, ids.pad, options)
                else:
                    op = search_in_graph(session, src, ids.pad, options)
                timings[engine] = time.perf_counter() - started
            ours_s, op_s = ours_s + timings["ours"], op_s + timings["op"]
            for a, b in zip(ours, op):
                same += a.hypotheses[0].tokens == b.hypotheses[0].tokens
                if a.hypotheses[0].tokens == b.hypotheses[0].tokens:
                    worst_score = max(worst_score, abs(a.hypotheses[0].score - b.hypotheses[0].score))
            ours_tokens += sum(len(r.hypotheses[0].tokens) + 1 for r in ours)  # + EOS: one decoder step each
            op_tokens += sum(len(r.hypotheses[0].tokens) + 1 for r in op)
            # all rows run until the batch's longest output; from the best hypotheses: a lower bound for beams
            op_rows += len(batch) * beam * max(len(r.hypotheses[0].tokens) + 1 for r in op)
    finally:
        step_model.decoder, step_model.encoder = decoder.session, encoder.session
    return {
        "search": "greedy" if beam == 1 else f"beam{beam}", "batch_size": batch_size,
        "ours_tokens_per_s": round(ours_tokens / ours_s, 1), "op_tokens_per_s": round(op_tokens / op_s, 1),
        "op/ours": round((op_tokens / op_s) / (ours_tokens / ours_s), 2),
        "identical": f"{same}/{len(sources)}", "max_score_diff": f"{worst_score:.1e}",
        "ours_in_ort": f"{(decoder.seconds + encoder.seconds) / ours_s:.0%}",
        "decoder_rows_op/ours": round(op_rows / decoder.rows, 2),
    }


def main(argv: list[str] | None = None) -> None:
    from bench.engines import load_test_set, table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=Path("build/generation/en-de-fp32"))
    parser.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"))
    parser.add_argument("--limit", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--beam-sizes", default="1,4")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    translator, session = load(args.package, args.threads)
    manifest = translator.manifest
    sources, _ = load_test_set(args.data, manifest.source_language, manifest.target_language,
                               args.package / manifest.tokenizer, args.limit)
    rows = []
    for beam in (int(b) for b in args.beam_sizes.split(",")):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            print(f"beam {beam}, batch {batch_size} ...", file=sys.stderr, flush=True)
            rows.append(run_setting(translator, session, sources, beam, batch_size))
    print(f"{len(sources)} sentences of {args.data}, {manifest.precision} package {args.package}, "
          f"{args.threads} thread(s)")
    print(table(rows, list(rows[0])))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"package": str(args.package), "sentences": len(sources), "threads": args.threads, "rows": rows}
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
