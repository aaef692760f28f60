"""Choose a checkpoint's beam-search length penalty on its validation splits, and record the choice.

    python -m model.choose_decoding checkpoints/en-de --data data/en-de --penalties 0.6,1.0,1.3,1.6,2.0 \\
        --json results/length_penalty_en-de.json

Every penalty decodes every validation split (`valid.tsv` and each `valid.<domain>.tsv`) at `--beam`; the
penalty with the best BLEU averaged over the domains is written to the checkpoint's config.json as
`"decoding": {"length_penalty": ...}`. `python -m export` copies it into the package, whose searches use it
unless told otherwise, and `model.evaluate` and `model.model_card` default to it. Test splits are never read.
The (penalty, domain) decodes are spread over `--workers` processes of one thread each.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from model.checkpoint import DECODING, data_dir, load_config
from model.data import source_column
from model.evaluate import domain_files, evaluate


def evaluate_one(directory: Path, tsv: Path, src_column: int, beam_size: int, length_penalty: float) -> dict:
    torch.set_num_threads(1)  # one process per core does more than threads inside one
    return evaluate(directory, tsv, src_column, beam_size, length_penalty, None)


def sweep(directory: Path, data: Path, penalties: list[float], beam_size: int, workers: int) -> list[dict]:
    """→ one row per penalty: its mean BLEU over the validation domains and each domain's BLEU and chrF."""
    config = load_config(directory)
    files = domain_files(data, "valid")
    if not files:
        raise SystemExit(f"{data} has no validation splits (valid.tsv, valid.<domain>.tsv)")
    src_column = source_column(data, config["src_lang"], config["tgt_lang"])
    tasks = [(penalty, domain) for penalty in penalties for domain in files]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(evaluate_one, directory, files[domain], src_column, beam_size, penalty)
                   for penalty, domain in tasks]
        scores = [future.result() for future in futures]
    rows = []
    for penalty in penalties:
        domains = {domain: {"bleu": s["bleu"], "chrf": s["chrf"], "repeated_words": s["repeated_words"]}
                   for (p, domain), s in zip(tasks, scores) if p == penalty}
        mean = sum(d["bleu"] for d in domains.values()) / len(domains)
        rows.append({"length_penalty": penalty, "mean_bleu": round(mean, 2),
                     "repeated_words": sum(d["repeated_words"] for d in domains.values()), "domains": domains})
    return rows


def record_choice(directory: Path, rows: list[dict], beam_size: int, data: Path) -> dict:
    """The best row's penalty → config.json's "decoding" (ties go to the penalty listed first)."""
    best = max(rows, key=lambda row: row["mean_bleu"])
    choice = {"length_penalty": best["length_penalty"],
              "chosen_on": f"mean BLEU of the validation splits of {data}, beam {beam_size}",
              "candidates": {str(row["length_penalty"]): row["mean_bleu"] for row in rows}}
    config = load_config(directory)
    config[DECODING] = choice
    (Path(directory) / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return choice


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="directory with config.json, model.safetensors, spm.model")
    parser.add_argument("--data", type=Path, help="data directory with the validation splits "
                        "(default: the one it trained on, else the repository's data/ splits)")
    parser.add_argument("--penalties", default="0.6,1.0,1.3,1.6,2.0", help="comma-separated length penalties to try")
    parser.add_argument("--beam", type=int, default=4, help="the beam size the choice is made for (the service's default)")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes, one thread each")
    parser.add_argument("--json", type=Path, help="also write every penalty's scores here")
    parser.add_argument("--dry-run", action="store_true", help="report, but leave config.json as it is")
    args = parser.parse_args(argv)
    try:
        penalties = [float(p) for p in args.penalties.split(",") if p.strip()]
    except ValueError:
        parser.error(f"--penalties {args.penalties!r}: comma-separated numbers expected")
    if not penalties or any(not 0.0 <= p <= 4.0 for p in penalties):
        parser.error("--penalties: one or more numbers from 0 to 4")
    if args.beam < 2:
        parser.error("--beam: the length penalty only acts in beam search (2 or more)")
    data = args.data or data_dir(load_config(args.model_dir))
    rows = sweep(args.model_dir, data, penalties, args.beam, args.workers)
    domains = list(rows[0]["domains"])
    print("| length penalty | mean BLEU | " + " | ".join(domains) + " | outputs repeating a word thrice |")
    print("|---" * (len(domains) + 3) + "|")
    for row in rows:
        print(f"| {row['length_penalty']} | {row['mean_bleu']:.2f} | "
              + " | ".join(f"{row['domains'][d]['bleu']:.2f}" for d in domains) + f" | {row['repeated_words']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if not args.dry_run:
        choice = record_choice(args.model_dir, rows, args.beam, data)
        print(f"recorded in {args.model_dir / 'config.json'}: length penalty {choice['length_penalty']}")


if __name__ == "__main__":
    main()
