"""Training mechanics on a tiny generated corpus: loss goes down, checkpoints resume exactly."""

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import load_model
from model.tokenizer import Tokenizer, train_tokenizer
from model.train import TrainConfig, collate, load_split, sequence_loss, train
from model.transformer import Transformer, TransformerConfig

WORDS = {"the": "die", "file": "Datei", "open": "öffnen", "save": "speichern", "menu": "Menü", "table": "Tabelle",
         "cell": "Zelle", "new": "neu", "window": "Fenster", "insert": "einfügen", "format": "Format", "street": "Straße"}


def write_corpus(directory: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 600), ("valid", 30), ("test", 30)):
        with open(directory / f"{split}.tsv", "w", encoding="utf-8") as f:
            for _ in range(count):
                words = [rng.choice(list(WORDS)) for _ in range(rng.randint(2, 7))]
                f.write(" ".join(words) + "\t" + " ".join(WORDS[w] for w in words) + "\n")
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def tiny_config(corpus: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(data=str(corpus), out=str(out), vocab_size=50, d_model=32, n_heads=2, n_encoder_layers=1,
                  n_decoder_layers=1, d_ff=64, batch_tokens=600, warmup_steps=10, eval_every=1000, eval_sentences=10,
                  threads=1, bf16="off")
    return TrainConfig(**{**values, **overrides})


def test_tokenizer_round_trip(tmp_path, corpus):
    tokenizer = Tokenizer(train_tokenizer(corpus / "train.tsv", tmp_path / "spm", vocab_size=50))
    texts = ["öffnen die Datei", "save the new table", "Straße Fenster"]
    assert tokenizer.decode(tokenizer.encode(texts)) == texts


def test_one_optimiser_step_lowers_the_loss(tmp_path, corpus):
    torch.manual_seed(0)
    tokenizer = Tokenizer(train_tokenizer(corpus / "train.tsv", tmp_path / "spm", vocab_size=50))
    examples = load_split(corpus / "train.tsv", tokenizer, 0, 64)[:16]
    model = Transformer(TransformerConfig(vocab_size=50, d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = collate(examples, list(range(16)))
    before, _ = sequence_loss(model, batch, 0.1)
    before.backward()
    optimizer.step()
    after, _ = sequence_loss(model, batch, 0.1)
    assert after.item() < before.item()


def test_interrupted_run_resumes_bit_identically(tmp_path, corpus):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(tiny_config(corpus, straight, max_steps=12))
    train(tiny_config(corpus, interrupted, max_steps=5))
    assert json.loads((interrupted / "resume" / "state.json").read_text())["step"] == 5
    train(tiny_config(corpus, interrupted, max_steps=12))
    a = load_file(str(straight / "resume" / "weights.safetensors"))
    b = load_file(str(interrupted / "resume" / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_weights_reload_bit_identically(tmp_path, corpus):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=3))
    model, tokenizer, config = load_model(out)
    saved = load_file(str(out / "model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert model.decoder.embedding.weight is model.embedding.weight
    assert config["src_lang"] == "en" and tokenizer.vocab_size == 50
