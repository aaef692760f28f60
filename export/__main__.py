"""Export a trained checkpoint to a model package, and check it against PyTorch.

    python -m export --checkpoint checkpoints/en-de --out models/en-de --precision int8
    python -m export --checkpoint checkpoints/en-de --out build/packages/en-de-fp32 --precision fp32 \\
        --parity-data data/en-de/test.tsv --parity-sentences 200
    python -m export --checkpoint checkpoints/en-de --out build/packages/en-de-fp16 --precision fp16 --device cuda

Exits non-zero, leaving parity.json in the package, when parity fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from export.package import build_package
from export.parity import ParityError, check_parity
from model.checkpoint import data_dir, load_config


def default_parity_data(checkpoint: Path) -> Path:
    return data_dir(load_config(checkpoint)) / "test.tsv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="config.json + model.safetensors + spm.model")
    parser.add_argument("--out", type=Path, required=True, help="package directory to write")
    parser.add_argument("--precision", choices=["fp32", "int8", "fp16"], default="int8")
    parser.add_argument("--parity-data", type=Path, help="TSV of real sentence pairs (default: the checkpoint's test split)")
    parser.add_argument("--parity-sentences", type=int, default=200)
    parser.add_argument("--max-source-tokens", type=int, default=256, help="longest source the service accepts (with EOS)")
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                        help="int8: one scale per output channel (the default: it matches PyTorch and CTranslate2's "
                             "BLEU on the shipped en-de at 4-10%% more CPU time than one per matrix; README, Benchmark)")
    parser.add_argument("--reduce-range", action="store_true", help="int8: 7-bit weights (avoids u8s8 saturation on AVX2 without VNNI)")
    parser.add_argument("--row-scales", action="store_true",
                        help="int8: quantize activations with a scale per row instead of one per batch, so that no "
                             "sentence's output depends on its batch (12-22%% more CPU time at batch 32, a third at "
                             "batch 1; README, Export)")
    parser.add_argument("--threads", type=int, default=1, help="threads for the parity run")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="parity run on: cuda = PyTorch on the GPU against ONNX Runtime's CUDA provider (fp16 packages)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("root").setLevel(logging.WARNING)  # onnxruntime.quantization logs each tensor on the root logger

    parity_data = args.parity_data or default_parity_data(args.checkpoint)
    if not parity_data.is_file():
        parser.error(f"no parity data at {parity_data}: pass --parity-data with real sentence pairs")
    # Build beside the target and move it in place only once parity passed: a failed export never
    # replaces a working package, and leaves its evidence (parity.json) in the staging directory.
    staging = args.out.parent / f".{args.out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    model, _, facts = build_package(args.checkpoint, staging, args.precision, args.max_source_tokens,
                                    args.per_channel, args.reduce_range, args.row_scales)
    try:
        report = check_parity(model, staging, parity_data, args.parity_sentences, threads=args.threads, extra=facts,
                              device=args.device)
    except ParityError as error:
        print(f"{error}\nthe failed package is left in {staging}; {args.out} is unchanged", file=sys.stderr)
        return 1
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
