"""A small random model with a real tokenizer, saved as a trained checkpoint would be: what export tests run on."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from model.checkpoint import model_weights
from model.tokenizer import EOS_ID, PAD_ID, Tokenizer, read_tsv_pairs, train_tokenizer
from model.train import collate
from model.transformer import Transformer, TransformerConfig

WORDS = {  # a toy lexicon: sentences are word-by-word translations, enough for a tokenizer and BLEU
    "the": "die", "house": "Haus", "cat": "Katze", "sees": "sieht", "small": "kleine", "green": "grüne",
    "window": "Fenster", "opens": "öffnet", "file": "Datei", "menu": "Menü", "click": "klicken", "on": "auf",
    "button": "Schaltfläche", "and": "und", "choose": "wählen", "text": "Text", "new": "neue", "table": "Tabelle",
}


def generated_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    english = list(WORDS)
    pairs = []
    for _ in range(count):
        words = [rng.choice(english) for _ in range(rng.randint(2, 12))]
        pairs.append((" ".join(words).capitalize() + ".", " ".join(WORDS[w] for w in words).capitalize() + "."))
    return pairs


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{en}\t{de}\n" for en, de in pairs), encoding="utf-8")
    return path


def briefly_trained(model: Transformer, tokenizer: Tokenizer, train_tsv: Path, steps: int = 80) -> Transformer:
    """A few hundred milliseconds of training: a random Transformer copies its input token forever and
    never ends a sentence, which would leave early stopping, beams and BLEU untested."""
    pairs = read_tsv_pairs(train_tsv)
    sources, targets = tokenizer.encode([p[0] for p in pairs]), tokenizer.encode([p[1] for p in pairs])
    examples = [(s + [EOS_ID], t, "") for s, t in zip(sources, targets)]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = random.Random(0)
    model.train()
    for _ in range(steps):
        src, tgt_in, labels = collate(examples, generator.sample(range(len(examples)), 32))
        loss = F.cross_entropy(model(src, tgt_in).flatten(0, 1), labels.flatten(), ignore_index=PAD_ID)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def make_checkpoint(directory: Path, seed: int = 0, n_heads: int = 4) -> Path:
    """→ a checkpoint directory (config.json, model.safetensors, spm.model) and data/{train,test}.tsv beside it.
    d_model is 32: n_heads=1 gives the smallest head size ONNX Runtime's CUDA attention kernel takes."""
    data = directory / "data"
    data.mkdir(parents=True)
    write_tsv(data / "train.tsv", generated_pairs(400, seed))
    write_tsv(data / "test.tsv", generated_pairs(40, seed + 1))
    checkpoint = directory / "checkpoint"
    train_tokenizer(data / "train.tsv", checkpoint / "spm", vocab_size=96)
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=96, d_model=32, n_heads=n_heads, n_encoder_layers=2, n_decoder_layers=2,
                               d_ff=64, dropout=0.0, max_positions=128)
    model = briefly_trained(Transformer(config), Tokenizer(checkpoint / "spm.model"), data / "train.tsv")
    save_file(model_weights(model), str(checkpoint / "model.safetensors"))
    (checkpoint / "config.json").write_text(json.dumps(
        {"model": config.to_dict(), "src_lang": "en", "tgt_lang": "de", "train": {"data": str(data)}}, indent=2))
    return checkpoint


def copied_checkpoint(checkpoint: Path, directory: Path) -> tuple[Path, Path]:
    """A writable copy of a tiny checkpoint and of its data directory → (checkpoint, data), under `directory`."""
    copy, data = directory / "checkpoint", directory / "data"
    shutil.copytree(checkpoint, copy)
    shutil.copytree(checkpoint.parent / "data", data)
    return copy, data


def checked_packages(checkpoint: Path, directory_for: Callable[[str], Path], precisions: tuple[str, ...],
                     fp32_dir: Path | None = None) -> dict[str, Path]:
    """Packages of a tiny checkpoint, one per precision in `directory_for(precision)`, each parity-checked against
    PyTorch on the checkpoint's test split (fp32: identical greedy outputs and log-probabilities; int8 and fp16:
    BLEU within 0.5). `fp32_dir`: fp32 graphs exported before, reused."""
    from export.package import build_package
    from export.parity import check_parity

    packages = {}
    for precision in precisions:
        out = directory_for(precision)
        model, _, _ = build_package(checkpoint, out, precision, max_source_tokens=64, fp32_dir=fp32_dir)
        check_parity(model, out, checkpoint.parent / "data" / "test.tsv", sample_size=40)
        packages[precision] = out
    return packages
