"""BLEU and chrF (sacreBLEU) of a trained model on a data split or any TSV, greedy or beam search.

    python -m model.evaluate checkpoints/en-de --split test --beam 4                  # test.tsv (LibreOffice help)
    python -m model.evaluate checkpoints/en-de --split test --domain dialogue        # test.dialogue.tsv
    python -m model.evaluate checkpoints/en-de --split test --domain all --beam 4    # every test*.tsv, one report
    python -m model.evaluate checkpoints/en-de --tsv my_pairs.tsv --src-column 0

Domains are the files of the data directory: <split>.tsv is "original", <split>.<domain>.tsv is <domain>.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import sacrebleu
import torch

from model.checkpoint import chosen_length_penalty, data_dir, load_model
from model.search import translate_ids
from model.data import source_column
from model.tokenizer import BOS_ID, EOS_ID, read_tsv_pairs
from engine.search import SearchOptions


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
    }


def repeats_a_word(text: str, times: int = 3) -> bool:
    """A word `times` times in a row: how a search that rewards length degenerates ("ein Buch Buch Buch")."""
    words = text.split()
    return any(len(set(words[i:i + times])) == 1 for i in range(len(words) - times + 1))


def evaluate(directory: Path, tsv: Path, src_column: int, beam_size: int, length_penalty: float | None,
             limit: int | None) -> dict:
    """`length_penalty` None: the one chosen for the checkpoint (model.choose_decoding), else 1.0."""
    model, tokenizer, config = load_model(directory)
    if length_penalty is None:
        length_penalty = chosen_length_penalty(config)
    pairs = read_tsv_pairs(tsv)[:limit]
    sources = [ids + [EOS_ID] for ids in tokenizer.encode([p[src_column] for p in pairs])]
    references = [p[1 - src_column] for p in pairs]
    options = SearchOptions(bos_id=BOS_ID, eos_id=EOS_ID, beam_size=beam_size, length_penalty=length_penalty)
    started = time.perf_counter()
    results = translate_ids(model, sources, options, batch_size=32)
    seconds = time.perf_counter() - started
    hypotheses = tokenizer.decode([r.hypotheses[0].tokens for r in results])
    return {
        "model": str(directory),
        "data": str(tsv),
        "sentences": len(pairs),
        "search": "greedy" if beam_size == 1 else f"beam {beam_size}, length penalty {length_penalty}",
        **{k: round(v, 2) for k, v in corpus_scores(hypotheses, references).items()},
        "repeated_words": sum(map(repeats_a_word, hypotheses)),  # outputs with a word three times in a row
        "seconds": round(seconds, 1),
        "examples": [{"source": p[src_column], "reference": r, "hypothesis": h} for p, r, h in list(zip(pairs, references, hypotheses))[:5]],
    }


ORIGINAL = "original"  # <split>.tsv: the LibreOffice help / gettext / Ding corpus


def domain_files(data: Path, split: str) -> dict[str, Path]:
    """{domain: path} of <split>.tsv ("original") and every <split>.<domain>.tsv of a data directory."""
    files = {ORIGINAL: data / f"{split}.tsv"} if (data / f"{split}.tsv").exists() else {}
    files.update({p.name[len(split) + 1:-len(".tsv")]: p for p in sorted(data.glob(f"{split}.*.tsv"))})
    return files


def evaluate_domains(directory: Path, data: Path, split: str, domains: list[str] | None, src_column: int,
                     beam_size: int, length_penalty: float | None, limit: int | None) -> list[dict]:
    """One `evaluate` result per domain (all when `domains` is None), each with its "domain" name."""
    files = domain_files(data, split)
    chosen = list(files) if domains is None else domains
    missing = [d for d in chosen if d not in files]
    if missing:
        raise SystemExit(f"{data} has no {split} split for {missing}; it has {sorted(files)}")
    return [{"domain": name, **evaluate(directory, files[name], src_column, beam_size, length_penalty, limit)}
            for name in chosen]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score a trained model with sacreBLEU BLEU and chrF.")
    parser.add_argument("model_dir", type=Path, help="directory with config.json, model.safetensors, spm.model")
    parser.add_argument("--split", default="test", help="split name under --data (ignored with --tsv)")
    parser.add_argument("--domain", help="a domain's split (<split>.<domain>.tsv; 'original' is <split>.tsv), "
                        "several comma-separated, or 'all'")
    parser.add_argument("--data", type=Path,
                        help="data directory (default: the one it trained on, else the repository's data/ splits)")
    parser.add_argument("--tsv", type=Path, help="any TSV of source<TAB>target (see --src-column)")
    parser.add_argument("--src-column", type=int, help="0 or 1; default: the model's source language's column by the "
                        "columns.json beside the TSV, else English first")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--length-penalty", type=float,
                        help="beam search (default: the one recorded by model.choose_decoding, else 1.0)")
    parser.add_argument("--limit", type=int, help="only the first N pairs")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = json.loads((args.model_dir / "config.json").read_text())
    if args.tsv:
        tsv = args.tsv  # columns as the columns.json beside it names them, else en<TAB>de (model.data's order)
        src_column = source_column(tsv.parent, config["src_lang"], config["tgt_lang"]) if args.src_column is None else args.src_column
        result = evaluate(args.model_dir, tsv, src_column, args.beam, args.length_penalty, args.limit)
    else:
        data = args.data or data_dir(config)
        src_column = source_column(data, config["src_lang"], config["tgt_lang"])
        if args.domain:
            domains = None if args.domain == "all" else [d.strip() for d in args.domain.split(",")]
            result = evaluate_domains(args.model_dir, data, args.split, domains, src_column, args.beam,
                                      args.length_penalty, args.limit)
        else:
            result = evaluate(args.model_dir, data / f"{args.split}.tsv", src_column, args.beam, args.length_penalty,
                              args.limit)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
