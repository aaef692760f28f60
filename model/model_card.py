"""Write MODEL_CARD.md (and a learning-curve plot) for a trained model directory.

    python -m model.model_card checkpoints/en-de --data data/en-de

Scores the best checkpoint on the test split with greedy and beam-4 search (sacreBLEU BLEU and chrF), and on
each domain's test split (test.<domain>.tsv) the same way, reads the learning curve from train_log.jsonl, and
describes architecture, data (the mix of training files and their weights) and hardware. Writes
test_scores.json (test.tsv) and test_scores_domains.json (every domain, test.tsv as "original").
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

from model.checkpoint import DECODING, data_dir, load_config  # noqa: E402
from model.evaluate import domain_files, evaluate, evaluate_domains  # noqa: E402
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
    domains = list(log[-1].get("domains", {})) if log else []
    bleu_ax.plot(steps, [r["bleu"] for r in log], label="BLEU" + (" (mean of the domains)" if domains else ""),
                 linewidth=2)
    if not domains:
        bleu_ax.plot(steps, [r["chrf"] for r in log], label="chrF")
    for name in domains:  # runs validated per domain: one BLEU line each
        points = [(r["step"], r["domains"][name]["bleu"]) for r in log if name in r.get("domains", {})]
        bleu_ax.plot(*zip(*points), label=f"BLEU {name}", linewidth=1)
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


def read_text_if_exists(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def data_mix(config: dict, lineage: str = "") -> list[str]:
    """The training files, their weights and the validation files of the last run (config.json), as a table;
    `lineage`: the checkpoint's LINEAGE.md, a hand-written account of the runs before (their weights live
    outside the repository, so no file here can tell it)."""
    files = config.get("train_files")
    if not files:
        return []
    total = sum(f["examples"] for f in files.values()) or 1
    lines = ["", "Data mix of the last run (every train*.tsv of the data directory, repeated by its weight):", "",
             "| training file | pairs | weight | examples per epoch | share |", "|---|---|---|---|---|"]
    for name, f in files.items():
        file_name = "train.tsv" if name == "original" else f"train.{name}.tsv"
        lines.append(f"| {file_name} | {f['pairs']:,} | {f['weight']:g} | {f['examples']:,} | "
                     f"{100 * f['examples'] / total:.1f}% |")
    valid = config.get("valid_files") or {}
    if valid:
        lines += ["", "Checkpoints were chosen on the mean greedy BLEU over the validation files "
                  + ", ".join(f"{name} ({count:,} pairs)" for name, count in valid.items())
                  + f", the first {config['train'].get('eval_sentences', 200)} of each."]
    if config["train"].get("init_from"):
        lines += ["", f"The run started from the weights of `{config['train']['init_from']}` (fresh AdamW, step 0)."]
        if config["train"].get("grow"):
            lines[-1] += (f" Those weights were grown into this larger model ({config['train']['grow']}; `model/grow.py`): "
                          "it started computing exactly what they compute.")
    if lineage.strip():  # after the sentence on the starting weights, which it goes on from
        if config["train"].get("init_from"):
            lines[-1] += " " + " ".join(lineage.split())
        else:
            lines += ["", " ".join(lineage.split())]
    return lines


def domain_table(domain_scores: dict[str, list[dict]]) -> list[str]:
    if not domain_scores:
        return []
    lines = ["", "## Test split scores per domain (sacreBLEU defaults)", "",
             "`original` is test.tsv (LibreOffice help, the figures above); the others are test.<domain>.tsv.", "",
             "| domain | sentences | greedy BLEU | greedy chrF | beam 4 BLEU | beam 4 chrF |", "|---|---|---|---|---|---|"]
    for domain, (greedy, beam) in domain_scores.items():
        lines.append(f"| {domain} | {greedy['sentences']:,} | {greedy['bleu']:.2f} | {greedy['chrf']:.2f} | "
                     f"{beam['bleu']:.2f} | {beam['chrf']:.2f} |")
    return lines + ["", "Reproduce one domain: `python -m model.evaluate CHECKPOINT --split test --domain NAME --beam 4`."]


def write_card(directory: Path, data: Path, scores: list[dict], domain_scores: dict[str, list[dict]] | None = None
               ) -> Path:
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
        "Splits are fixed by a hash of the English sentence; the checkpoint was chosen on the validation split(s).",
        *data_mix(config, read_text_if_exists(directory / "LINEAGE.md")),
        "",
        "## Training",
        f"Label smoothing {train['label_smoothing']}, AdamW (peak lr {train['lr']}, {train['warmup_steps']} warm-up steps, "
        f"inverse-square-root decay, weight decay {train['weight_decay']}), {train['batch_tokens']} padded tokens per batch, "
        f"dropout {model['dropout']}, gradient clipping {train['clip_norm']}, bf16 autocast ({train['bf16']}).",
        f"This card was scored on {cpu_name()}, {os.cpu_count()} cores, no GPU (the test timings below); training ran on "
        "CPUs of the same 2-core kind.",
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
    if config.get(DECODING):
        choice = config[DECODING]
        tried = ", ".join(f"{penalty} → {bleu:.2f}" for penalty, bleu in choice.get("candidates", {}).items())
        lines += ["", f"Beam search divides a hypothesis's log-probability by its length to the power "
                  f"{choice['length_penalty']} (the length penalty), chosen by `python -m model.choose_decoding` on "
                  f"the {choice.get('chosen_on', 'validation splits')} ({tried}); the package searches with it."]
    lines += ["", "## Test split scores (sacreBLEU defaults)", "", "| search | sentences | BLEU | chrF | seconds (PyTorch, CPU) |", "|---|---|---|---|---|"]
    lines += [f"| {s['search']} | {s['sentences']} | {s['bleu']:.2f} | {s['chrf']:.2f} | {s['seconds']} |" for s in scores]
    lines += ["", "Reproduce: `python -m model.evaluate " + str(directory) + " --split test --beam 4`."]
    lines += domain_table(domain_scores or {})
    lines += ["", "## Examples (test split, beam 4)", ""]
    for example in scores[-1]["examples"][:3] if scores else []:
        lines += [f"- source: {example['source']}", f"  - reference: {example['reference']}", f"  - model: {example['hypothesis']}"]
    path = directory / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score a trained model on the test split and write its model card.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path,
                        help="data directory (default: the one it trained on, else the repository's data/ splits)")
    parser.add_argument("--limit", type=int, help="score only the first N test pairs (of each domain)")
    parser.add_argument("--no-domains", action="store_true", help="only test.tsv, not the test.<domain>.tsv files")
    args = parser.parse_args(argv)
    config = load_config(args.model_dir)
    data = args.data or data_dir(config)
    src_column = source_column(data, config["src_lang"], config["tgt_lang"])
    scores = [evaluate(args.model_dir, data / "test.tsv", src_column, beam, None, args.limit) for beam in (1, 4)]
    (args.model_dir / "test_scores.json").write_text(json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
    domain_scores = {"original": scores}
    domains = [name for name in domain_files(data, "test") if name != "original"]
    if domains and not args.no_domains:
        per_beam = [evaluate_domains(args.model_dir, data, "test", domains, src_column, beam, None, args.limit)
                    for beam in (1, 4)]
        domain_scores.update({greedy["domain"]: [greedy, beam] for greedy, beam in zip(*per_beam)})
        (args.model_dir / "test_scores_domains.json").write_text(
            json.dumps(domain_scores, indent=2, ensure_ascii=False) + "\n")
    print(write_card(args.model_dir, data, scores, domain_scores if len(domain_scores) > 1 else None))


if __name__ == "__main__":
    main()
