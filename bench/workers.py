"""One engine, measured in its own process: `python -m bench.workers ENGINE CONFIG_JSON` prints one JSON line.

Each engine translates the same token ids and returns token ids, so outputs, BLEU and token counts are
comparable; a separate process per engine keeps one engine's memory (and torch's import) out of the
others' peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from engine.process_memory import proc_status_bytes

Translate = Callable[[list[list[int]], int], list[list[int]]]  # (sources with EOS, beam size) → best outputs


def output_limits(sources: list[list[int]], max_length: int = 512) -> np.ndarray:
    """Our search's default output limits (SearchOptions: 1.5 × source + 10, capped)."""
    from engine.search import SearchOptions

    return SearchOptions(bos_id=2, eos_id=3, max_length=max_length).output_limits(np.array([len(s) for s in sources]))


def pytorch_engine(config: dict) -> Translate:
    import torch

    from model.checkpoint import load_model
    from model.search import TorchStepModel
    from engine.search import SearchOptions, pad_batch, search

    torch.set_num_threads(config["threads"])
    model, _, _ = load_model(config["checkpoint"])
    model = model.to(config.get("device", "cpu"))
    step_model, c = TorchStepModel(model), model.config

    def translate(sources: list[list[int]], beam_size: int) -> list[list[int]]:
        options = SearchOptions(bos_id=c.bos_id, eos_id=c.eos_id, beam_size=beam_size,
                                length_penalty=config["length_penalty"])
        return [r.hypotheses[0].tokens for r in search(step_model, pad_batch(sources, c.pad_id), c.pad_id, options)]

    return translate


def ort_engine(config: dict, package: str) -> Translate:
    from engine.translator import Translator
    from engine.sessions import CPU, CUDA, RuntimeOptions

    on_gpu = config.get("device") == "cuda"  # the CUDA provider required: a fallback to the CPU is an error
    translator = Translator(package, RuntimeOptions(providers=(CUDA if on_gpu else CPU,), strict_providers=on_gpu,
                                                    intra_op_threads=config["threads"],
                                                    attention_kernels=config.get("attention_kernels", True)))
    translator.warmup()

    def translate(sources: list[list[int]], beam_size: int) -> list[list[int]]:
        return [r.hypotheses[0].tokens for r in translator.translate_ids(
            sources, translator.search_options(beam_size, length_penalty=config["length_penalty"]))]

    return translate


def ct2_engine(config: dict, model_dir: str, compute_type: str) -> Translate:
    import ctranslate2
    import sentencepiece as spm

    translator = ctranslate2.Translator(model_dir, device=config.get("device", "cpu"), compute_type=compute_type,
                                        intra_threads=config["threads"], inter_threads=1)
    processor = spm.SentencePieceProcessor(model_file=config["spm"])
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]

    def translate(sources: list[list[int]], beam_size: int) -> list[list[int]]:
        # CTranslate2 has one output limit per call: the batch's largest, which for one sentence is ours.
        results = translator.translate_batch(
            [[pieces[i] for i in s] for s in sources], beam_size=beam_size, length_penalty=config["length_penalty"],
            max_decoding_length=int(output_limits(sources).max()), max_input_length=0,
        )
        return [[processor.piece_to_id(p) for p in r.hypotheses[0]] for r in results]

    return translate


def make_engine(name: str, config: dict) -> Translate:
    if name == "pytorch":
        return pytorch_engine(config)
    if name in ("ort-fp32", "ort-int8", "ort-fp16"):
        return ort_engine(config, config["packages"][name.split("-")[1]])
    if name in ("ct2-float32", "ct2-int8", "ct2-float16"):
        quantization = name.split("-")[1]
        return ct2_engine(config, config["ct2_models"][quantization], quantization)
    raise ValueError(f"unknown engine {name}")


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 2)


def run_setting(translate: Translate, sources: list[list[int]], beam_size: int, batch_size: int,
                repeats: int = 1) -> tuple[dict, list]:
    """Translate every source in batches of similar length, `repeats` passes → the fastest pass's timings and the
    outputs in input order. (This machine's speed drifts by tens of percent from minute to minute: the best of a
    few passes is what an engine can do, for every engine alike.)"""
    from engine.search import length_sorted_batches

    batches = length_sorted_batches(sources, batch_size)
    translate([sources[i] for i in batches[len(batches) // 2]], beam_size)  # warm-up, untimed
    outputs: list[list[int]] = [[] for _ in sources]
    passes = []
    for _ in range(repeats):
        latencies = []
        for batch in batches:
            started = time.perf_counter()
            results = translate([sources[i] for i in batch], beam_size)
            latencies.append(time.perf_counter() - started)
            for i, tokens in zip(batch, results):
                outputs[i] = tokens
        passes.append(latencies)
    latencies = min(passes, key=sum)
    target_tokens = sum(len(o) + 1 for o in outputs)  # + EOS: every output token was a decoder step
    seconds = sum(latencies)
    return {
        "search": "greedy" if beam_size == 1 else f"beam{beam_size}", "batch_size": batch_size,
        "sentences": len(sources), "target_tokens": target_tokens, "seconds": round(seconds, 3),
        "tokens_per_second": round(target_tokens / seconds, 1),
        "latency_p50_ms": percentile_ms(latencies, 50), "latency_p95_ms": percentile_ms(latencies, 95),
    }, outputs


def sources_of_length(sources: list[list[int]], length: int, eos_id: int) -> list[int]:
    """A source of exactly `length` tokens (EOS included), made of test sentences one after the other."""
    tokens = [t for s in sources for t in s[:-1]]
    while len(tokens) < length:
        tokens += tokens
    return tokens[: length - 1] + [eos_id]


def latency_by_length(translate: Translate, sources: list[list[int]], lengths: list[int], repeats: int = 3) -> list[dict]:
    rows = []
    for length in lengths:
        source = sources_of_length(sources, length, eos_id=3)
        times, output = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            output = translate([source], 1)[0]
            times.append(time.perf_counter() - started)
        rows.append({"source_tokens": length, "output_tokens": len(output), "latency_ms": percentile_ms(times, 50)})
    return rows


def measure(name: str, config: dict) -> dict:
    import sacrebleu
    import sentencepiece as spm

    started = time.perf_counter()
    translate = make_engine(name, config)
    load_seconds = time.perf_counter() - started
    processor = spm.SentencePieceProcessor(model_file=config["spm"])
    sources, references = config["sources"], config["references"]
    result = {"engine": name, "threads": config["threads"], "device": config.get("device", "cpu"),
              "load_seconds": round(load_seconds, 2), "settings": []}
    for beam_size, batch_size in config["settings"]:
        row, outputs = run_setting(translate, sources, beam_size, batch_size, config.get("repeats", 1))
        row["bleu"] = round(sacrebleu.corpus_bleu(processor.decode(outputs), [references]).score, 2)
        if beam_size == 1 and batch_size == 1:
            result["greedy_outputs"] = outputs  # compared across engines by the parent
        result["settings"].append(row)
    result["latency_by_length"] = latency_by_length(translate, sources, config["lengths"])
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec; getrusage's ru_maxrss would
    include the parent's peak, which Linux carries across fork and exec."""
    peak = proc_status_bytes("self", "VmHWM")
    if peak is not None:
        return round(peak / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    engine, config_path = sys.argv[1], Path(sys.argv[2])
    print(json.dumps(measure(engine, json.loads(config_path.read_text()))))
