"""Write MODEL_CARD.md (and a learning-curve plot) for a trained model directory.

    python -m model.model_card checkpoints/en-de --data data/en-de

Scores the best checkpoint on the test split with greedy and beam-4 search (sacreBLEU BLEU and chrF),
reads the learning curve from train_log.jsonl, and describes architecture, data and hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from model.checkpoint import load_config  # noqa: E402
from model.evaluate import evaluate  # noqa: E402
from model.data import source_column  # noqa: E402

LANGUAGE_NAMES = {"en": "English", "de": "German"}


def read_log(directory: Path) -> list[dict]:
    path = directory / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_learning_curve(log: list[dict], path: Path) -> None:
    steps = [r["step"] for r in log]
    fig, (loss_ax, bleu_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_ax.plot(steps, [r["train_loss"] for r in log], label="train (label-smoothed)")
    loss_ax.plot(steps, [r["valid_loss"] for r in log], label="validation")
    loss_ax.set(xlabel="step", ylabel="cross-entropy", title="loss")
    loss_ax.legend()
    bleu_ax.plot(steps, [r["bleu"] for r in log], label="BLEU")
    bleu_ax.plot(steps, [r["chrf"] for r in log], label="chrF")
    bleu_ax.set(xlabel="step", title="validation (greedy)")
    bleu_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_card(directory: Path, data: Path, scores: list[dict]) -> Path:
    config = load_config(directory)
    model, train = config["model"], config["train"]
    log = read_log(directory)
    if log:
        plot_learning_curve(log, directory / "learning_curve.png")
    src, tgt = config["src_lang"], config["tgt_lang"]
    best = max(log, key=lambda r: r["bleu"]) if log else {}
    last = log[-1] if log else {}
    lines = [
        f"# Model card: {LANGUAGE_NAMES.get(src, src)} → {LANGUAGE_NAMES.get(tgt, tgt)} ({src}-{tgt})",
        "",
        "## Architecture",
        f"Encoder-decoder Transformer written out in `model/transformer.py`: {model['n_encoder_layers']} encoder and "
        f"{model['n_decoder_layers']} decoder layers, d_model {model['d_model']}, {model['n_heads']} heads, "
        f"feed-forward {model['d_ff']} ({model['activation']}), pre-norm residual blocks, sinusoidal positions, "
        f"one embedding matrix tied between encoder input, decoder input and output layer, joint SentencePiece "
        f"unigram vocabulary of {model['vocab_size']} pieces (`spm.model`). **{config['parameters']:,} parameters.**",
        "",
        "## Data",
        f"`{data}` built by `model/data.py` (see its `DATA_CARD.md` for packages, versions, filters and licences). "
        "Splits are fixed by a hash of the English sentence; the checkpoint was chosen on the validation split.",
        "",
        "## Training",
        f"Label smoothing {train['label_smoothing']}, AdamW (peak lr {train['lr']}, {train['warmup_steps']} warm-up steps, "
        f"inverse-square-root decay, weight decay {train['weight_decay']}), {train['batch_tokens']} padded tokens per batch, "
        f"dropout {model['dropout']}, gradient clipping {train['clip_norm']}, bf16 autocast ({train['bf16']}).",
        f"Hardware: {cpu_name()}, {os.cpu_count()} cores, no GPU.",
    ]
    if train.get("cooldown_steps"):
        lines.append(f"The last run planned its end at step {train['max_steps']:,}: over its final {train['cooldown_steps']:,} "
                     "steps the learning rate decayed linearly to zero.")
    averaging = directory / "averaging.json"
    if averaging.exists():
        report = json.loads(averaging.read_text())
        lines.append(f"Checkpoint averaging (`model/average.py`) of {', '.join(report['snapshots'])}: validation BLEU "
                     f"{report['average']['bleu']:.2f} against {report['best_before']['bleu']:.2f} for the best single "
                     f"checkpoint; kept: {report['kept']}.")
    if last:
        lines.append(
            f"Trained {last['step']:,} steps ({last['epoch']} full epochs, {last['tokens_seen'] / 1e6:.1f}M target tokens) "
            f"in {last['train_hours']:.2f} hours; best validation BLEU {best['bleu']:.2f} at step {best['step']:,}."
        )
        lines += ["", "![learning curve](learning_curve.png)"]
    lines += ["", "## Test split scores (sacreBLEU defaults)", "", "| search | sentences | BLEU | chrF | seconds (PyTorch, CPU) |", "|---|---|---|---|---|"]
    lines += [f"| {s['search']} | {s['sentences']} | {s['bleu']:.2f} | {s['chrf']:.2f} | {s['seconds']} |" for s in scores]
    lines += ["", "Reproduce: `python -m model.evaluate " + str(directory) + " --split test --beam 4`.", "", "## Examples (test split, beam 4)", ""]
    for example in scores[-1]["examples"][:3] if scores else []:
        lines += [f"- source: {example['source']}", f"  - reference: {example['reference']}", f"  - model: {example['hypothesis']}"]
    path = directory / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score a trained model on the test split and write its model card.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path, help="data directory (default: the one it was trained on)")
    parser.add_argument("--limit", type=int, help="score only the first N test pairs")
    args = parser.parse_args(argv)
    config = load_config(args.model_dir)
    data = args.data or Path(config["train"]["data"])
    src_column = source_column(data, config["src_lang"], config["tgt_lang"])
    scores = [evaluate(args.model_dir, data / "test.tsv", src_column, beam, 1.0, args.limit) for beam in (1, 4)]
    (args.model_dir / "test_scores.json").write_text(json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
    print(write_card(args.model_dir, data, scores))


if __name__ == "__main__":
    main()
