"""Where decoding time goes: ONNX Runtime's profiler over a package translating real test sentences.

    python -m bench.profile_step --package models/en-de --beam 4 --batch 32 --limit 256

Translates the first `--limit` test sentences in length-sorted batches with the package's own engine
(one intra-op thread by default), with ONNX Runtime's profiler on, and splits the wall time into
the decoder's and the encoder's kernels by operator type, ORT's own overhead around each graph's kernels, and the
Python of the search between steps. Profiling adds a little time per node: compare shares.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

from engine.search import StageTimes, length_sorted_batches
from engine.sessions import RuntimeOptions
from engine.translator import Translator


def kernel_times(profile_file: str) -> tuple[collections.Counter, collections.Counter, float]:
    """→ microseconds per operator type, calls per operator type, and the microseconds of whole runs."""
    micros, calls, runs = collections.Counter(), collections.Counter(), 0.0
    for event in json.loads(Path(profile_file).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            micros[event["args"]["op_name"]] += event["dur"]
            calls[event["args"]["op_name"]] += 1
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            runs += event["dur"]
    return micros, calls, runs


def profile(package: Path, sources: list[list[int]], beam: int, batch: int, threads: int, prefix: str,
            attention_kernels: bool = True) -> dict:
    """attention_kernels: the engine's own (the attention rows are then theirs, under ONNX Runtime's operator names)."""
    translator = Translator(package, RuntimeOptions(intra_op_threads=threads, profile_prefix=prefix,
                                                    attention_kernels=attention_kernels))
    options = translator.search_options(beam)
    times = StageTimes()
    started = time.perf_counter()
    steps = 0
    for indices in length_sorted_batches(sources, batch):
        translator.translate_ids([sources[i] for i in indices], options, times)
        steps += times.steps
    wall = (time.perf_counter() - started) * 1e6
    decoder, decoder_calls, decoder_runs = kernel_times(translator.decoder_session.end_profiling())
    encoder, encoder_calls, encoder_runs = kernel_times(translator.encoder_session.end_profiling())
    rows = []
    for graph, micros_by_op, calls_by_op, runs in (("decoder", decoder, decoder_calls, decoder_runs),
                                                   ("encoder", encoder, encoder_calls, encoder_runs)):
        rows += [{"part": f"{graph} {op}", "share": micros / wall, "us_per_step": micros / steps, "calls": calls_by_op[op]}
                 for op, micros in micros_by_op.most_common()]
        kernels = sum(micros_by_op.values())
        rows.append({"part": f"{graph}: ORT around kernels", "share": (runs - kernels) / wall,
                     "us_per_step": (runs - kernels) / steps})
    rows += [
        {"part": "Python: search and buffers", "share": (wall - decoder_runs - encoder_runs) / wall,
         "us_per_step": (wall - decoder_runs - encoder_runs) / steps},
    ]
    return {"package": str(package), "precision": translator.precision, "beam": beam, "batch": batch,
            "sentences": len(sources), "steps": steps, "threads": threads,
            "attention_kernels": "engine" if attention_kernels else "onnxruntime", "wall_seconds": round(wall / 1e6, 3),
            "parts": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]}


def main(argv: list[str] | None = None) -> None:
    from bench.engines import package_test_set, table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=Path("models/en-de"))
    parser.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"))
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--attention-kernels", choices=["engine", "onnxruntime"], default="engine",
                        help="whose CPU attention kernels run (engine/sessions.py)")
    parser.add_argument("--out", type=Path, help="write the profile as JSON")
    args = parser.parse_args(argv)
    sources, _ = package_test_set(args.data, args.package, args.limit)
    result = profile(args.package, sources, args.beam, args.batch, args.threads, str(Path("/tmp") / "translator-profile"),
                     args.attention_kernels == "engine")
    print(f"{result['sentences']} sentences, beam {args.beam}, batch {args.batch}, {result['steps']} decoder steps, "
          f"{result['wall_seconds']} s, {args.attention_kernels}'s attention kernels")
    print(table([{**row, "share": f"{100 * row['share']:.1f} %", "us_per_step": f"{row['us_per_step']:.0f}"}
                 for row in result["parts"]], ["part", "share", "us_per_step", "calls"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
