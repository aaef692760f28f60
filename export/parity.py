"""Parity of an exported package against the PyTorch model it came from.

  fp32        log-probabilities within `tolerance` of PyTorch (teacher-forced along PyTorch's greedy
              output, whole batches, every step) and identical greedy outputs on every sample sentence
  int8, fp16  corpus BLEU on the sample within `max_bleu_drop` of PyTorch's (= fp32's, by the above)

The report is written to <package>/parity.json; a failed check raises ParityError after writing it,
so a broken export never goes unnoticed and leaves its evidence behind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import sacrebleu
import torch

from export.package import record_parity
from model.data import source_column
from model.search import TorchStepModel, translate_ids
from model.tokenizer import read_tsv_pairs
from model.transformer import Transformer
from engine.search import SearchOptions, pad_batch, search, unexplained_id_differences
from engine.translator import Translator
from engine.sessions import CUDA, RuntimeOptions

REPORT = "parity.json"


class ParityError(AssertionError):
    pass


def read_sample(tsv: Path, source_language: str, target_language: str, limit: int) -> tuple[list[str], list[str]]:
    """First `limit` pairs of a data TSV (its columns.json says which column is which) → sources, references."""
    pairs = read_tsv_pairs(tsv)[:limit]
    if not pairs:
        raise ParityError(f"{tsv}: no sentence pairs for the parity check")
    src = source_column(Path(tsv).parent, source_language, target_language)
    return [p[src] for p in pairs], [p[1 - src] for p in pairs]


def teacher_forced_comparison(model: Transformer, translator: Translator, sources: list[list[int]],
                              options: SearchOptions, tolerance: float, batch_size: int = 16, k: int = 8) -> dict:
    """Decoding PyTorch's greedy outputs in both engines, whole batches (padded sources, rows that already ended keep
    being fed EOS) → the max |log p_ORT − log p_PyTorch| over the k best tokens of every step, and how many of those
    candidates name another token than PyTorch's where no near-tie (within `tolerance`) explains it."""
    torch_model, onnx_model = TorchStepModel(model), translator.step_model
    worst, unexplained = 0.0, 0
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        batch = pad_batch(chunk, model.config.pad_id)
        outputs = [r.hypotheses[0].tokens for r in search(torch_model, batch, model.config.pad_id, options)]
        steps = max(len(o) for o in outputs) + 1
        forced = np.full((len(chunk), steps), options.eos_id, dtype=np.int64)  # [B, steps]: BOS + output + EOS…
        forced[:, 0] = options.bos_id
        for i, tokens in enumerate(outputs):
            forced[i, 1 : 1 + len(tokens)] = tokens
        torch_state, onnx_state = torch_model.start(batch, 1, steps), onnx_model.start(batch, 1, steps)
        for t in range(steps):
            expected = torch_model.step(torch_state, forced[:, t], k)
            got = onnx_model.step(onnx_state, forced[:, t], k)
            worst = max(worst, float(np.abs(expected.log_probs - got.log_probs).max()),
                        float(np.abs(expected.eos_log_probs - got.eos_log_probs).max()))
            unexplained += unexplained_id_differences(expected, got, tolerance)
    return {"log_probs_max_abs_diff": worst, "top_ids_unexplained_differences": unexplained}


def check_parity(model: Transformer, package: Path, sample_tsv: Path, sample_size: int = 200,
                 tolerance: float = 1e-3, max_bleu_drop: float = 0.5, threads: int = 1, extra: dict | None = None,
                 device: str = "cpu") -> dict:
    """Compare the package with the PyTorch model → the report (also written to parity.json). device "cuda":
    PyTorch on the GPU and the package on ONNX Runtime's CUDA provider, required (no fallback to the CPU)."""
    torch.set_num_threads(max(threads, 1))
    runtime = (RuntimeOptions(providers=(CUDA,), strict_providers=True) if device == "cuda"
               else RuntimeOptions(intra_op_threads=threads))
    translator = Translator(package, runtime, require_parity=False)
    texts, references = read_sample(sample_tsv, translator.source_language, translator.target_language, sample_size)
    sources = [ids[: translator.max_source_tokens] for ids in translator.tokenize(texts)]
    options = translator.search_options()
    model = model.eval().to(device)

    started = time.perf_counter()
    reference_ids = [r.hypotheses[0].tokens for r in translate_ids(model, sources, options, batch_size=32)]
    torch_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # The batches model.search.translate_ids makes: the same length-sorted 32.
    exported_ids = [r.hypotheses[0].tokens for r in translator.translate_in_batches(sources, options, batch_size=32)]
    onnx_seconds = time.perf_counter() - started

    same = sum(a == b for a, b in zip(reference_ids, exported_ids))
    torch_bleu = sacrebleu.corpus_bleu(translator.detokenize(reference_ids), [references]).score
    onnx_bleu = sacrebleu.corpus_bleu(translator.detokenize(exported_ids), [references]).score
    report = {
        "package": translator.name,
        "precision": translator.precision,
        "provider": translator.provider,
        **({"gpu": torch.cuda.get_device_name()} if device == "cuda" else {}),
        "sample": {"data": str(sample_tsv), "sentences": len(sources)},
        **(extra or {}),
        **teacher_forced_comparison(model, translator, sources[:64], options, tolerance),
        "greedy_identical": same,
        "greedy_agreement": same / len(sources),
        "bleu_pytorch": round(torch_bleu, 2),
        "bleu_package": round(onnx_bleu, 2),
        "bleu_drop": round(torch_bleu - onnx_bleu, 2),
        "seconds": {"pytorch": round(torch_seconds, 2), "package": round(onnx_seconds, 2)},
        "criteria": {"log_probs_tolerance": tolerance, "max_bleu_drop": max_bleu_drop},
    }
    failures = []
    if translator.precision == "fp32":
        if report["log_probs_max_abs_diff"] > tolerance:
            failures.append(f"log-probs differ by {report['log_probs_max_abs_diff']:.2e} > {tolerance:.0e}")
        if report["top_ids_unexplained_differences"]:  # the right values under the wrong tokens (a vocabulary mix-up)
            failures.append(f"{report['top_ids_unexplained_differences']} top candidates name other tokens than PyTorch's")
        if same != len(sources):
            failures.append(f"greedy outputs differ on {len(sources) - same} of {len(sources)} sentences")
    elif torch_bleu - onnx_bleu > max_bleu_drop:
        failures.append(f"BLEU {onnx_bleu:.2f} is {torch_bleu - onnx_bleu:.2f} below fp32's {torch_bleu:.2f}")
    report["passed"], report["failures"] = not failures, failures
    (Path(package) / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    record_parity(Path(package), REPORT, report)
    if failures:
        raise ParityError(f"{package}: parity failed: {'; '.join(failures)}")
    return report
