"""Side-by-side benchmark on the same weights, machine and sentences (`make bench`):

  pytorch       the reference model, eager, through engine.search's search
  ort-fp32      our ONNX Runtime engine, fp32 package
  ort-int8      our ONNX Runtime engine, int8 package (the one we ship)
  ct2-float32   CTranslate2 on our weights (bench/ct2_convert.py), float32
  ct2-int8      the same, int8
  ort-fp16      our engine, fp16 package (with --device cuda: ONNX Runtime's CUDA provider, required)
  ct2-float16   CTranslate2, float16 (with --device cuda)

Greedy and beam 4, batch 1 and batch 32 (length-sorted batches, the same for every engine): target
tokens/s, p50/p95 latency per batch, BLEU, peak RSS (each engine in its own process), agreement of
greedy outputs with PyTorch, latency against source length; ratios ours/CTranslate2 and ours/PyTorch.

    python -m bench.engines --limit 64 --threads 2
    python -m bench.engines --limit 512 --threads 1 --repeats 1 --rounds 3 --engines ort-int8,ct2-int8 --cpus 0
        (ours, CTranslate2, ours, ... : each setting's fastest of three rounds, spread over the same minutes)
    python -m bench.engines --device cuda --engines pytorch,ort-fp16,ct2-float16 --batch-sizes 1,32,128  (a GPU)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("pytorch", "ort-fp32", "ort-int8", "ct2-float32", "ct2-int8")
RATIOS = (("ort-int8", "ct2-int8"), ("ort-int8", "pytorch"), ("ort-fp32", "ct2-float32"), ("ort-fp32", "pytorch"),
          ("ort-fp16", "ct2-float16"), ("ort-fp16", "pytorch"))


def prepare_ct2(checkpoint: Path, cache: Path, quantization: str) -> Path:
    """Convert once per checkpoint: the converted directory remembers which weights it came from."""
    from engine.package import sha256_of

    out = cache / f"{checkpoint.name}-{quantization}"
    stamp = out / "source_sha256.txt"
    weights_sha = sha256_of(checkpoint / "model.safetensors")
    if not stamp.exists() or stamp.read_text().strip() != weights_sha:
        from bench.ct2_convert import convert

        convert(checkpoint, out, quantization)
        stamp.write_text(weights_sha + "\n")
    return out


def load_test_set(data: Path, src_lang: str, tgt_lang: str, spm_path: Path, limit: int | None) -> tuple[list, list]:
    import sentencepiece as spm

    from model.data import source_column
    from model.tokenizer import EOS_ID, read_tsv_pairs

    pairs = read_tsv_pairs(data)[:limit]
    column = source_column(data.parent, src_lang, tgt_lang)
    processor = spm.SentencePieceProcessor(model_file=str(spm_path))
    sources = [ids + [EOS_ID] for ids in processor.encode([p[column] for p in pairs], out_type=int)]
    return sources, [p[1 - column] for p in pairs]


def package_test_set(data: Path, package: Path, limit: int | None) -> tuple[list, list]:
    """load_test_set in a model package's languages, tokenized by its own tokenizer."""
    from engine.package import read_manifest

    manifest = read_manifest(package)
    return load_test_set(data, manifest.source_language, manifest.target_language, package / manifest.tokenizer, limit)


def prepare_package(checkpoint: Path, package: Path, precision: str, device: str) -> None:
    """Export a package the benchmark needs and does not find: the fp32 and fp16 packages are build outputs (under
    build/), not shipped, so a fresh clone has none. The export checks parity, as every export does."""
    if (package / "package.json").is_file():
        return
    print(f"{package} not found: exporting it from {checkpoint} ({precision})", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(checkpoint), "--out", str(package),
                           "--precision", precision, "--device", device])
    if done.returncode:
        sys.exit(f"could not export {package} (above); the benchmark needs it for ort-{precision}")


def check_packages_match(checkpoint: Path, packages: list[Path]) -> None:
    """A package exported from another checkpoint would be benchmarked against the wrong weights: refuse."""
    digest = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    for package in packages:
        exported_from = json.loads((package / "package.json").read_text())["source_checkpoint"]["model_safetensors_sha256"]
        if exported_from != digest:
            sys.exit(f"{package} was exported from another checkpoint than {checkpoint}: re-export it "
                     f"(python -m export --checkpoint {checkpoint} --out {package} --precision ...)")


def machine(device: str) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if device != "cuda":
        return cpu
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return f"{gpu or 'an NVIDIA GPU'} (host: {cpu})"


def run_worker(engine: str, config_path: Path, threads: int, cpus: str | None = None) -> dict:
    root = str(Path(__file__).resolve().parent.parent)  # the repository first, then whatever the caller's path had
    python_path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": python_path}
    started = time.perf_counter()
    pin = ["taskset", "-c", cpus] if cpus else []
    done = subprocess.run(pin + [sys.executable, "-m", "bench.workers", engine, str(config_path)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def best_of_rounds(rounds: list[dict]) -> dict:
    """One engine's results from several rounds (each a process of its own) → the first round's, with each setting's
    fastest round and the highest peak RSS: what the engine can do, sampled at several times of a drifting machine."""
    merged = {**rounds[0], "rounds": len(rounds), "wall_seconds": round(sum(r["wall_seconds"] for r in rounds), 1),
              "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds)}
    merged["settings"] = [max(rows, key=lambda row: row["tokens_per_second"])
                          for rows in zip(*(r["settings"] for r in rounds))]
    return merged


def ratios(results: dict[str, dict]) -> list[dict]:
    rows = []
    for ours, theirs in RATIOS:
        if ours not in results or theirs not in results:
            continue
        for a, b in zip(results[ours]["settings"], results[theirs]["settings"]):
            rows.append({"ratio": f"{ours}/{theirs}", "search": a["search"], "batch_size": a["batch_size"],
                         "tokens_per_second": round(a["tokens_per_second"] / b["tokens_per_second"], 2)})
    return rows


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def rounds_text(rounds: int) -> str:
    return f" in each of {rounds} rounds (engines in turn, the fastest round counts)" if rounds > 1 else ""


def report(summary: dict) -> str:
    results = summary["engines"]
    main_rows = [{"engine": name, **setting, "peak_rss_mb": r["peak_rss_mb"], "greedy_same_as_pytorch": r.get("greedy_agreement", "")}
                 for name, r in results.items() for setting in r["settings"]]
    length_rows = []
    for name, r in results.items():
        length_rows.append({"engine": name, **{f"{row['source_tokens']} tok": f"{row['latency_ms']} ms ({row['output_tokens']})"
                                               for row in r["latency_by_length"]}})
    length_columns = ["engine", *(k for k in length_rows[0] if k != "engine")] if length_rows else []
    return "\n\n".join([
        f"{summary['sentences']} sentences of {summary['data']}, {summary['threads']} threads"
        f"{', on CPU ' + summary['cpus'] if summary.get('cpus') else ''}, best of "
        f"{summary.get('repeats', 1)} passes{rounds_text(summary.get('rounds', 1))}, beam length penalty "
        f"{summary.get('length_penalty', 1.0)}, {summary['machine']}",
        table(main_rows, ["engine", "search", "batch_size", "tokens_per_second", "latency_p50_ms", "latency_p95_ms",
                          "bleu", "peak_rss_mb", "greedy_same_as_pytorch"]),
        "ratios of target tokens/s\n" + table(summary["ratios"], ["ratio", "search", "batch_size", "tokens_per_second"]),
        "greedy latency, batch 1, by source length (output tokens)\n" + table(length_rows, length_columns),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/en-de"))
    parser.add_argument("--int8-package", type=Path, default=Path("models/en-de"))
    parser.add_argument("--fp32-package", type=Path, default=Path("build/packages/en-de-fp32"))
    parser.add_argument("--fp16-package", type=Path, default=Path("build/packages/en-de-fp16"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where PyTorch, ours and CTranslate2 run")
    parser.add_argument("--data", type=Path, help="TSV of pairs (default: the checkpoint's test split)")
    parser.add_argument("--limit", type=int, help="only the first N test sentences")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--cpus", help="taskset CPU list every engine runs on, e.g. 0: the same CPU for each (the vCPUs of "
                                       "a virtual machine need not be equally fast: on one here, CPU 1 ran half as fast)")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--beam-sizes", default="1,4")
    parser.add_argument("--lengths", default="8,16,32,64,128,256", help="source lengths for the latency curve")
    parser.add_argument("--repeats", type=int, default=1, help="passes per setting; the fastest counts (a drifting machine)")
    parser.add_argument("--rounds", type=int, default=1, help="run the engines in turn this many times, each time in a "
                        "fresh process, and keep each setting's fastest round: engines compared over the same minutes "
                        "instead of one after the other (a drifting machine)")
    parser.add_argument("--length-penalty", type=float, help="beam search, every engine (default: the checkpoint's, "
                        "recorded by model.choose_decoding and served by its package)")
    parser.add_argument("--attention-kernels", choices=["engine", "onnxruntime"], default="engine",
                        help="whose CPU attention kernels our engine runs (engine/sessions.py)")
    parser.add_argument("--ct2-cache", type=Path, default=Path("build/ct2"))
    parser.add_argument("--out", type=Path, default=Path("results/bench_engines.json"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats take 1 or more")

    from model.checkpoint import chosen_length_penalty, data_dir

    config = json.loads((args.checkpoint / "config.json").read_text())
    data = args.data or data_dir(config) / "test.tsv"
    sources, references = load_test_set(data, config["src_lang"], config["tgt_lang"], args.checkpoint / "spm.model", args.limit)
    engines = [e for e in args.engines.split(",") if e]
    packages = {"fp32": args.fp32_package, "int8": args.int8_package, "fp16": args.fp16_package}
    needed = {precision: package for precision, package in packages.items() if f"ort-{precision}" in engines}
    for precision, package in needed.items():
        prepare_package(args.checkpoint, package, precision, args.device)
    check_packages_match(args.checkpoint, list(needed.values()))
    length_penalty = args.length_penalty
    if length_penalty is None:
        length_penalty = chosen_length_penalty(config)
    worker_config = {
        "checkpoint": str(args.checkpoint), "spm": str(args.checkpoint / "spm.model"), "threads": args.threads,
        "device": args.device, "packages": {precision: str(package) for precision, package in packages.items()},
        "ct2_models": {q: str(prepare_ct2(args.checkpoint, args.ct2_cache, q))
                       for q in ("float32", "int8", "float16") if f"ct2-{q}" in engines},
        "settings": [(int(beam), int(batch)) for beam in args.beam_sizes.split(",") for batch in args.batch_sizes.split(",")],
        "lengths": [int(n) for n in args.lengths.split(",")], "repeats": args.repeats, "length_penalty": length_penalty,
        "sources": sources, "references": references, "attention_kernels": args.attention_kernels == "engine",
    }
    with tempfile.TemporaryDirectory() as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_text(json.dumps(worker_config))
        rounds: dict[str, list[dict]] = {engine: [] for engine in engines}
        for number in range(1, args.rounds + 1):
            for engine in engines:
                print(f"running {engine} (round {number} of {args.rounds}) ...", file=sys.stderr, flush=True)
                rounds[engine].append(run_worker(engine, config_path, args.threads, args.cpus))
        results = {engine: best_of_rounds(runs) for engine, runs in rounds.items()}
    if "pytorch" in results:
        reference = results["pytorch"]["greedy_outputs"]
        for r in results.values():
            same = sum(a == b for a, b in zip(r["greedy_outputs"], reference))
            r["greedy_agreement"] = f"{same}/{len(reference)}"
    for r in results.values():
        r.pop("greedy_outputs", None)
    summary = {
        "data": str(data), "sentences": len(sources), "threads": args.threads, "repeats": args.repeats, "rounds": args.rounds,
        "length_penalty": length_penalty,
        "cpus": args.cpus, "device": args.device, "attention_kernels": args.attention_kernels, "machine": machine(args.device),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "engines": results, "ratios": ratios(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    text = report(summary)
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {args.out} and {args.out.with_suffix('.txt')}")


if __name__ == "__main__":
    main()
