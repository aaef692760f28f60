"""Checkpoint averaging: the mean of the last few validation snapshots of a run.

    python -m model.average checkpoints/en-de --last 4

The average of weights a few hundred steps apart usually validates better than any one of them (it
smooths the noise of the last updates). It is scored with the same validation as training (greedy
BLEU on the first `eval_sentences` pairs of each valid split, averaged) and replaces model.safetensors only when
it beats the best weights so far; the test split is never looked at.

    python -m model.average checkpoints/en-de --last 3 --with-run /work/runs/en-de-b

averages the newest snapshots of other runs too: runs that started from the same weights (same model
config and tokenizer) and differ in seed or data mix often average to better weights than either alone.
The result is kept in the first directory only when it validates better than that directory's best.
`--out DIR` writes the mean instead as a checkpoint directory of its own (weights, config, tokenizer, learning
curve, averaging.json), whatever the greedy check says, for a choice made on a fuller measure (e.g. `python -m
model.evaluate DIR --split valid --domain all --beam 4`); the run's own files are left alone.

    python -m model.average /work/runs/en-de-b --last 3 --start-share 0.5 --out DIR

puts the weights the run started from (its `--init-from` checkpoint, grown as the run grew it when it ran with
`--grow`) into the mean with that share of the whole (here: half the start, half the mean of the snapshots): a
short continuation run moves little from its start, and the midpoint of the two can validate better than either.
`--half` stores the mean in float16.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.package import sha256_of
from model.checkpoint import INIT_SHA256, load_config, load_model, save_weights, weights_counters
from model.data import source_column
from model.evaluate import domain_files
from model.grow import grown_weights, parse_growth
from model.train import TrainConfig, bf16_autocast, load_split, validate
from model.transformer import TransformerConfig


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """→ the element-wise mean (in fp32) of the weight files at `paths`."""
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        for name, tensor in load_file(str(path)).items():
            total[name] = total.get(name, 0) + tensor.float()
    return {name: (tensor / len(paths)).contiguous() for name, tensor in total.items()}


def newest_snapshots(directory: Path, last: int) -> list[Path]:
    return sorted((directory / "snapshots").glob("step-*.safetensors"))[-last:]


def model_config(directory: Path) -> TransformerConfig:
    return TransformerConfig.from_dict(load_config(directory)["model"])


def check_same_model(directory: Path, other: Path, grow: str = "") -> None:
    """Refuse to average runs whose weights do not mean the same thing (architecture or tokenizer differ);
    `grow`: `other` is the checkpoint the run grew from (its architecture grown by `grow` must be the run's)."""
    mine, theirs = model_config(directory).architecture(), parse_growth(grow, model_config(other)).architecture()
    # spm.vocab (pieces and scores), not spm.model: the model file also records where it was trained.
    if mine != theirs or (directory / "spm.vocab").read_bytes() != (other / "spm.vocab").read_bytes():
        raise SystemExit(f"{other}: another model config or tokenizer than {directory}; "
                         "its snapshots cannot be averaged in")


def average_run(directory: Path, last: int, threads: int = 0, other_runs: tuple[Path, ...] = (),
                out: Path | None = None, start_share: float = 0.0, half: bool = False) -> dict:
    """Average the newest `last` snapshots under `directory/snapshots` (and under each of `other_runs`; with
    `start_share`, the run's starting weights too, as that share of the mean; with `half`, rounded to float16 as
    they are then stored), validate the average and the best weights alike, and keep the average if it is better
    (with `out`: write it to `out` either way). → a report of both scores."""
    if not 0 <= start_share < 1:
        raise SystemExit(f"--start-share {start_share}: a share of the mean, from 0 (none) up to but not 1")
    if threads:
        torch.set_num_threads(threads)
    own = newest_snapshots(directory, last)
    snapshots, labels = list(own), [p.name for p in own]  # another run's as "<its directory>/<file name>"
    for other in other_runs:
        check_same_model(directory, other)
        theirs = newest_snapshots(other, last)
        snapshots += theirs
        labels += [f"{other.name}/{p.name}" for p in theirs]
    if len(snapshots) < 2:
        raise SystemExit(f"{directory}: {len(snapshots)} snapshot(s) under snapshots/; averaging needs at least 2")
    model, tokenizer, config = load_model(directory)  # the best weights, checked against config.json
    train_config = TrainConfig(**{**config["train"], "out": str(directory)})
    data = Path(train_config.data)
    src_column = source_column(data, config["src_lang"], config["tgt_lang"])
    valid = {name: load_split(path, tokenizer, src_column, train_config.max_len)
             for name, path in domain_files(data, "valid").items()}
    autocast = bf16_autocast(train_config, torch.device("cpu"))

    best_scores = validate(model, valid, tokenizer, train_config, autocast)
    averaged = average_weights(snapshots)
    if start_share:
        averaged, label = with_start_weights(directory, config, averaged, start_share)
        labels.append(label)
    if half:  # stored in float16: what is validated is what is stored
        averaged = {name: tensor.half().contiguous() for name, tensor in averaged.items()}
    model.load_state_dict(averaged, strict=False)  # same keys as the snapshots' source, the run's own model
    averaged_scores = validate(model, valid, tokenizer, train_config, autocast)
    better = averaged_scores["bleu"] > best_scores["bleu"]
    if out is None:
        out, write, kept = directory, better, "average" if better else "best weights (the average validated lower)"
    else:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "spm.model", "spm.vocab", "train_log.jsonl"):
            if (directory / name).exists():
                shutil.copy(directory / name, out / name)
        write, kept = True, ("average, written as a checkpoint directory of its own (--out); "
                             "the run's best weights left alone")
    if write:
        counters = {**(weights_counters((own or snapshots)[-1]) or {}), "best_bleu": averaged_scores["bleu"]}
        save_weights(out / "model.safetensors", averaged, counters)
    report = {"snapshots": labels, "best_before": best_scores, "average": averaged_scores, "kept": kept}
    (out / "averaging.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def with_start_weights(directory: Path, config: dict, averaged: dict[str, torch.Tensor],
                       share: float) -> tuple[dict[str, torch.Tensor], str]:
    """→ share × the run's `--init-from` weights + (1 − share) × `averaged`, and a label naming them. A run that
    grew its checkpoint (`--grow`) started from the grown weights: grown again here the same way, with its seed."""
    start, grow = Path(config["train"].get("init_from") or ""), config["train"].get("grow") or ""
    if not (start / "model.safetensors").is_file():
        raise SystemExit(f"{directory}: the run did not start from a checkpoint (--init-from) that is still there")
    check_same_model(directory, start, grow)
    recorded = config.get(INIT_SHA256)
    if recorded is None:
        print(f"{directory}: the run did not record which weights it started from (a run from before that was "
              f"recorded): {start}/model.safetensors is taken to be them")
    elif sha256_of(start / "model.safetensors") != recorded:
        raise SystemExit(f"{start}/model.safetensors is not the weights {directory} started from (their sha256 is "
                         f"recorded in its config.json): the start's share would mix in other weights")
    weights = load_file(str(start / "model.safetensors"))
    if grow:
        weights = grown_weights(weights, model_config(start), model_config(directory), config["train"]["seed"])
    if weights.keys() != averaged.keys():
        raise SystemExit(f"{start}: its weights name other tensors than the run's snapshots")
    mixed = {name: (share * weights[name].float() + (1 - share) * tensor).contiguous()
             for name, tensor in averaged.items()}
    return mixed, f"{start}/model.safetensors (share {share})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--last", type=int, default=4, help="how many of the newest snapshots to average")
    parser.add_argument("--with-run", type=Path, action="append", default=[], dest="other_runs",
                        help="another run from the same starting weights whose newest snapshots join the mean "
                             "(repeatable)")
    parser.add_argument("--out", type=Path, help="write the mean to this new checkpoint directory instead")
    parser.add_argument("--start-share", type=float, default=0.0,
                        help="the run's starting (--init-from) weights join the mean as this share of it, e.g. 0.5")
    parser.add_argument("--half", action="store_true",
                        help="store the mean in float16: half the file (a grown model's fp32 weights pass 50 MiB), "
                             "validated as stored; the packages are exported from it as from any checkpoint")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    report = average_run(args.model_dir, args.last, args.threads, tuple(args.other_runs), args.out, args.start_share,
                         args.half)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
