"""Parity of an imported Marian package against transformers' own MarianMTModel on the same checkpoint.

  fp32        log-probabilities within `tolerance` of transformers' (teacher-forced along its greedy outputs),
              and greedy and beam outputs identical to `MarianMTModel.generate` on every sample sentence
              (beam: the first `beam_sentences`)
  int8, fp16  corpus BLEU on the sample within `max_bleu_drop` of transformers' (the criterion of our own
              packages), with the greedy agreement reported

`generate` is set up to search exactly as engine/search.py does, sentence by sentence:
- the output limit: max_new_tokens = SearchOptions.output_limits (⌈1.5 · source length with EOS⌉ + 10);
  sentences are generated in groups of one source length, so no group has padding and each its own limit;
- greedy: argmax until EOS or the limit (no forced EOS: ours writes the last token at the limit);
- beam: num_beams = W, length_penalty as ours (score / generated length with EOS), early_stopping=True (a
  sentence ends once W hypotheses have finished, as ours does). At the limit ours lets every beam only end,
  scoring EOS with its real log-probability; transformers' forced_eos_token_id would score it 0, so
  `EosAtLimit` masks every other token and keeps EOS's log-probability;
- the padding token is never predicted, and the log-softmax is over the other tokens (transformers 4.x masked
  its logit before the log-softmax; `bad_words_ids` in newer versions masks it after, leaving its probability
  mass in the beam scores): `ForbidToken` masks it and renormalises.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import sacrebleu

from engine.package import read_manifest, write_manifest
from engine.search import SearchOptions, pad_batch
from engine.sessions import RuntimeOptions
from engine.translator import Translator

REPORT = "parity.json"


class ParityError(AssertionError):
    pass


def load_reference(directory: Path | str, threads: int = 1):
    """transformers' MarianMTModel on the checkpoint, float32, eval mode."""
    import torch
    from transformers import MarianMTModel

    torch.set_num_threads(max(threads, 1))
    return MarianMTModel.from_pretrained(str(directory), dtype=torch.float32).eval()


def logits_processors(pad_id: int, eos_id: int | None = None, max_length: int | None = None):
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class ForbidToken(LogitsProcessor):
        """The token never wins, and the others' log-softmax is taken without it."""

        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, pad_id] = -float("inf")
            return torch.log_softmax(scores, dim=-1)

    class EosAtLimit(LogitsProcessor):
        """When generating the last token, only EOS remains, with its log-probability."""

        def __call__(self, input_ids, scores):
            if input_ids.shape[-1] == max_length - 1:
                eos = scores[:, eos_id].clone()
                scores = torch.full_like(scores, -float("inf"))
                scores[:, eos_id] = eos
            return scores

    processors = [ForbidToken()]
    if max_length is not None:
        processors.append(EosAtLimit())
    return LogitsProcessorList(processors)


def generation_config(options: SearchOptions, limit: int, pad_id: int):
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=limit, num_beams=options.beam_size, length_penalty=options.length_penalty,
        early_stopping=True if options.beam_size > 1 else False, do_sample=False, num_return_sequences=1, decoder_start_token_id=options.bos_id, eos_token_id=options.eos_id,
        pad_token_id=pad_id, forced_eos_token_id=None, bad_words_ids=None, use_cache=True)


def reference_ids(model, sources: list[list[int]], options: SearchOptions, pad_id: int, batch_size: int = 32
                  ) -> list[list[int]]:
    """transformers' generate → each sentence's output ids (without the start token and EOS), searched as ours."""
    import torch

    limits = options.output_limits(np.array([len(s) for s in sources]))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, source in enumerate(sources):
        groups[len(source)].append(i)  # one source length: no padding, one output limit
    outputs: list[list[int]] = [[] for _ in sources]
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            limit = int(limits[chunk[0]])
            beam = options.beam_size > 1
            processors = logits_processors(pad_id, options.eos_id, 1 + limit if beam else None)
            model.generation_config = generation_config(options, limit, pad_id)  # no defaults of the checkpoint's
            with torch.no_grad():
                generated = model.generate(
                    input_ids=torch.tensor([sources[i] for i in chunk]), attention_mask=torch.ones(len(chunk), len(sources[chunk[0]]), dtype=torch.long),
                    generation_config=generation_config(options, limit, pad_id), logits_processor=processors)
            for i, row in zip(chunk, generated[:, 1:].tolist()):
                outputs[i] = row[: row.index(options.eos_id)] if options.eos_id in row else row
    return outputs


def teacher_forced_max_diff(model, translator: Translator, sources: list[list[int]], outputs: list[list[int]],
                            options: SearchOptions, batch_size: int = 16, k: int = 8) -> float:
    """Max |log p_package − log p_transformers| over the package's k best tokens (and EOS) at every step of decoding
    `outputs` (transformers' greedy ones), whole padded batches; pad's logit masked before transformers'
    log-softmax, as the package's bias does."""
    import torch

    pad = translator.manifest.special_ids.pad
    step_model, worst = translator.step_model, 0.0
    for start in range(0, len(sources), batch_size):
        chunk = list(range(start, min(start + batch_size, len(sources))))
        batch = pad_batch([sources[i] for i in chunk], pad)
        steps = max(len(outputs[i]) for i in chunk) + 1
        forced = np.full((len(chunk), steps), options.eos_id, dtype=np.int64)  # start + output + EOS…
        forced[:, 0] = options.bos_id
        for row, i in enumerate(chunk):
            forced[row, 1 : 1 + len(outputs[i])] = outputs[i]
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(batch), attention_mask=torch.from_numpy(batch != pad).long(),
                           decoder_input_ids=torch.from_numpy(forced)).logits  # [B, steps, V]
            logits[:, :, pad] = -float("inf")
            expected = torch.log_softmax(logits, dim=-1).numpy()
        state = step_model.start(batch, 1, steps)
        for t in range(steps):
            got = step_model.step(state, forced[:, t], k)
            worst = max(worst, float(np.abs(np.take_along_axis(expected[:, t], got.ids, axis=1) - got.log_probs).max()),
                        float(np.abs(expected[:, t, options.eos_id] - got.eos_log_probs).max()))
    return worst


def token_bleu(hypotheses: list[list[int]], references: list[list[int]]) -> float:
    def joined(rows: list[list[int]]) -> list[str]:
        return [" ".join(map(str, row)) for row in rows]

    return round(sacrebleu.corpus_bleu(joined(hypotheses), [joined(references)], tokenize="none").score, 2)


def package_ids(translator: Translator, sources: list[list[int]], options: SearchOptions) -> list[list[int]]:
    return [r.hypotheses[0].tokens for r in translator.translate_in_batches(sources, options)]


def check_marian_parity(model, package: Path | str, texts: list[str], references: list[str] | None = None,
                        beam_size: int = 4, beam_sentences: int = 50, tolerance: float = 1e-3,
                        max_bleu_drop: float = 0.5, threads: int = 1, fp32_graphs: Path | str | None = None,
                        extra: dict | None = None) -> dict:
    """Compare the package with transformers' `model` on `texts` → the report (also written to parity.json and
    summarised in package.json). `fp32_graphs`: for an int8/fp16 package, an fp32 package of the same checkpoint
    whose log-probabilities are checked too. Raises ParityError after writing the report when it fails."""
    import transformers

    package = Path(package)
    translator = Translator(package, RuntimeOptions(intra_op_threads=threads), require_parity=False)
    pad = translator.manifest.special_ids.pad
    sources = [ids[: translator.max_source_tokens] for ids in translator.tokenize(texts)]
    greedy, beam = translator.search_options(), translator.search_options(beam_size=beam_size)

    started = time.perf_counter()
    expected = reference_ids(model, sources, greedy, pad)
    expected_beam = reference_ids(model, sources[:beam_sentences], beam, pad)
    reference_seconds = time.perf_counter() - started
    started = time.perf_counter()
    got = package_ids(translator, sources, greedy)
    got_beam = package_ids(translator, sources[:beam_sentences], beam)
    package_seconds = time.perf_counter() - started

    checked = translator if translator.precision == "fp32" or fp32_graphs is None else \
        Translator(fp32_graphs, RuntimeOptions(intra_op_threads=threads), require_parity=False)
    same, same_beam = sum(a == b for a, b in zip(expected, got)), sum(a == b for a, b in zip(expected_beam, got_beam))
    ended = sum(len(e) < int(limit) for e, limit in zip(expected, greedy.output_limits(np.array([len(s) for s in sources]))))
    report = {
        "package": translator.name,
        "precision": translator.precision,
        "provider": translator.provider,
        "reference": f"transformers {transformers.__version__} MarianMTModel.generate",
        "sample": {"sentences": len(sources), "beam_sentences": len(expected_beam), "beam_size": beam_size,
                   "greedy_ended_before_limit": ended},
        **(extra or {}),
        "log_probs_max_abs_diff": teacher_forced_max_diff(model, checked, sources[:64], expected[:64], greedy),
        "log_probs_checked_on": checked.precision,
        "greedy_identical": same,
        "greedy_agreement": same / len(sources),
        "beam_identical": same_beam,
        "beam_agreement": same_beam / max(len(expected_beam), 1),
        "seconds": {"transformers": round(reference_seconds, 2), "package": round(package_seconds, 2)},
        "criteria": {"log_probs_tolerance": tolerance, "max_bleu_drop": max_bleu_drop},
    }
    if references is not None:
        report["bleu_reference"] = round(sacrebleu.corpus_bleu(translator.detokenize(expected), [references]).score, 2)
        report["bleu_package"] = round(sacrebleu.corpus_bleu(translator.detokenize(got), [references]).score, 2)
        report["bleu_drop"] = round(report["bleu_reference"] - report["bleu_package"], 2)
    # How close the package's outputs are to transformers' own (100: identical), whatever the references: BLEU over
    # token ids, so that it means something for models whose text does not (random test models).
    report["token_bleu_against_transformers"] = token_bleu(got, expected)
    failures = []
    if checked.precision == "fp32" and report["log_probs_max_abs_diff"] > tolerance:
        failures.append(f"log-probs differ by {report['log_probs_max_abs_diff']:.2e} > {tolerance:.0e}")
    if translator.precision == "fp32":
        if same != len(sources):
            failures.append(f"greedy outputs differ on {len(sources) - same} of {len(sources)} sentences")
        if same_beam != len(expected_beam):
            failures.append(f"beam-{beam_size} outputs differ on {len(expected_beam) - same_beam} of {len(expected_beam)} sentences")
    elif references is None:
        failures.append("an int8/fp16 package needs reference translations for its BLEU criterion")
    elif report["bleu_drop"] > max_bleu_drop:
        failures.append(f"BLEU {report['bleu_package']:.2f} is {report['bleu_drop']:.2f} below transformers' "
                        f"{report['bleu_reference']:.2f}")
    report["passed"], report["failures"] = not failures, failures
    (package / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    record_parity(package, report)
    if failures:
        raise ParityError(f"{package}: parity failed: {'; '.join(failures)}")
    return report


def record_parity(package: Path, report: dict) -> None:
    """parity.json joins the package's files, its summary the manifest (the service refuses a package without
    a passed parity), and the transformers version the manifest's versions."""
    manifest = read_manifest(package)
    keys = ("passed", "provider", "reference", "greedy_agreement", "beam_agreement", "log_probs_max_abs_diff", "bleu_reference",
            "bleu_package", "token_bleu_against_transformers")
    summary = {"report": REPORT, **{k: report[k] for k in keys if k in report}}
    versions = {**manifest.versions, "transformers": report["reference"].split()[1]}
    write_manifest(package, manifest.model_copy(update={"files": {**manifest.files, REPORT: ""}, "parity": summary,
                                                        "versions": versions}))
