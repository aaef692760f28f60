"""Import a model trained elsewhere into a model package, and check it against its reference implementation.

    translator import marian DIR --out models/en-de --precision int8 [--src-lang en --tgt-lang de]
        [--parity-data data/en-de/test.tsv] [--parity-sentences 200] [--beam-sentences 50]

DIR is a Hugging Face MarianMTModel directory (an OPUS-MT model): config.json, model.safetensors or
pytorch_model.bin, source.spm, target.spm, vocab.json (tokenizer_config.json if there is one). The package is
built beside --out and moved there only once its parity against transformers' MarianMTModel passed; a failed
import leaves its parity.json in the staging directory and --out unchanged. transformers is needed here (the
`import` extra), never for serving.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from export.importers.marian import UnsupportedCheckpoint, build_marian_package
from export.importers.marian_parity import ParityError, check_marian_parity, load_reference


def read_parity_sample(tsv: Path, source: str, target: str, limit: int) -> tuple[list[str], list[str]]:
    """Sentence pairs: a data TSV of ours (columns.json beside it names the columns) or any source<TAB>target TSV."""
    from model.data import source_column
    from model.tokenizer import read_tsv_pairs

    pairs = read_tsv_pairs(tsv)[:limit]
    if not pairs:
        raise SystemExit(f"translator import marian: {tsv}: no sentence pairs for the parity check")
    column = source_column(tsv.parent, source, target) if (tsv.parent / "columns.json").is_file() else 0
    return [p[column] for p in pairs], [p[1 - column] for p in pairs]


def marian(args: argparse.Namespace) -> int:
    out: Path = args.out
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = None
        try:
            if args.precision != "fp32":  # int8 is quantized from these, and their log-probs checked
                fp32 = Path(scratch) / "fp32"
                build_marian_package(args.directory, fp32, "fp32", args.src_lang, args.tgt_lang, args.max_source_tokens)
            _, manifest = build_marian_package(args.directory, staging, args.precision, args.src_lang, args.tgt_lang,
                                               args.max_source_tokens, args.per_channel, args.reduce_range, fp32_dir=fp32)
        except UnsupportedCheckpoint as error:
            print(f"translator import marian: {error}", file=sys.stderr)
            return 2
        data = args.parity_data or Path("data") / manifest.name / "test.tsv"
        if not data.is_file():
            print(f"translator import marian: no parity data at {data}: pass --parity-data with sentence pairs "
                  f"({manifest.source_language}<TAB>{manifest.target_language}, or a data TSV with its columns.json)",
                  file=sys.stderr)
            return 2
        texts, references = read_parity_sample(data, manifest.source_language, manifest.target_language,
                                               args.parity_sentences)
        model = load_reference(args.directory, args.threads)
        try:
            report = check_marian_parity(model, staging, texts, references, beam_sentences=args.beam_sentences,
                                         threads=args.threads, fp32_graphs=fp32)
        except ParityError as error:
            print(f"{error}\nthe failed package is left in {staging}; {out} is unchanged", file=sys.stderr)
            return 1
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="translator import", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    m = kinds.add_parser("marian", help="an OPUS-MT (Marian) model in Hugging Face's layout")
    m.add_argument("directory", type=Path, help="config.json, model.safetensors or pytorch_model.bin, source.spm, "
                                                "target.spm, vocab.json")
    m.add_argument("--out", type=Path, required=True, help="package directory to write, e.g. models/en-de")
    m.add_argument("--precision", choices=["int8", "fp32", "fp16"], default="int8")
    m.add_argument("--src-lang", help="source language code (default: tokenizer_config.json or the directory name)")
    m.add_argument("--tgt-lang", help="target language code (default: tokenizer_config.json or the directory name)")
    m.add_argument("--parity-data", type=Path, help="TSV of sentence pairs (default: data/<src>-<tgt>/test.tsv)")
    m.add_argument("--parity-sentences", type=int, default=200)
    m.add_argument("--beam-sentences", type=int, default=50, help="sentences whose beam-4 output must match too")
    m.add_argument("--max-source-tokens", type=int, default=256, help="longest source the service accepts (with EOS)")
    m.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="int8: one scale per output channel (the default, as for export)")
    m.add_argument("--reduce-range", action="store_true", help="int8: 7-bit weights")
    m.add_argument("--threads", type=int, default=1, help="threads for the parity run")
    m.set_defaults(handler=marian)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("root").setLevel(logging.WARNING)  # onnxruntime.quantization logs each tensor on the root logger
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
