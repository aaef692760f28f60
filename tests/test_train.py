"""Training mechanics on a tiny generated corpus: loss goes down, checkpoints resume exactly."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.average import average_run, average_weights
from model.checkpoint import load_model, weights_counters
from model.tokenizer import Tokenizer, train_tokenizer
from model.train import TrainConfig, collate, learning_rate, load_split, sequence_loss, train, warm_start
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


def test_cooldown_decays_the_learning_rate_to_zero_at_max_steps(tmp_path, corpus):
    config = tiny_config(corpus, tmp_path, max_steps=100, warmup_steps=10, cooldown_steps=20)
    plain = tiny_config(corpus, tmp_path, max_steps=100, warmup_steps=10)
    assert learning_rate(50, config) == learning_rate(50, plain)  # untouched before the cooldown
    assert learning_rate(90, config) == pytest.approx(learning_rate(90, plain) * 0.5)
    assert learning_rate(100, config) == 0.0
    # After a warm start the rate ramps up from (nearly) zero again.
    assert learning_rate(51, plain, warm_start_step=50) == pytest.approx(learning_rate(51, plain) / plain.rewarm_steps)


def test_a_run_continues_from_the_best_weights_when_the_resume_state_is_gone(tmp_path, corpus):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=4, eval_every=2))
    best = weights_counters(out / "model.safetensors")
    assert best is not None and best["step"] in (2, 4)
    best_weights = load_file(str(out / "model.safetensors"))
    shutil.rmtree(out / "resume")  # as in a fresh clone that holds only the committed best weights
    model = Transformer(TransformerConfig.from_dict(json.loads((out / "config.json").read_text())["model"]))
    assert warm_start(out, model, None, best) == best
    assert all(torch.equal(model.state_dict()[k], best_weights[k]) for k in best_weights)
    train(tiny_config(corpus, out, max_steps=best["step"] + 3, eval_every=1000))
    state = json.loads((out / "resume" / "state.json").read_text())
    assert state["step"] == best["step"] + 3 and state["warm_start_step"] == best["step"]
    assert state["tokens_seen"] > best["tokens_seen"]


def test_averaging_the_snapshots_keeps_the_mean_only_when_it_validates_better(tmp_path, corpus):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=6, eval_every=2, keep_snapshots=2))
    snapshots = sorted((out / "snapshots").glob("step-*.safetensors"))
    assert [p.name for p in snapshots] == ["step-0000004.safetensors", "step-0000006.safetensors"]
    a, b = (load_file(str(p)) for p in snapshots)
    mean = average_weights(snapshots)
    assert all(torch.allclose(mean[k], (a[k] + b[k]) / 2) for k in a)
    before = load_file(str(out / "model.safetensors"))
    report = average_run(out, last=2, threads=1)
    after = load_file(str(out / "model.safetensors"))
    if report["average"]["bleu"] > report["best_before"]["bleu"]:
        assert all(torch.equal(after[k], mean[k]) for k in mean)
        assert weights_counters(out / "model.safetensors")["best_bleu"] == report["average"]["bleu"]
    else:
        assert all(torch.equal(after[k], before[k]) for k in before)
    assert json.loads((out / "averaging.json").read_text())["snapshots"] == [p.name for p in snapshots]


def test_averaging_can_take_the_snapshots_of_another_run_from_the_same_start(tmp_path, corpus):
    first, second, other_size = tmp_path / "first", tmp_path / "second", tmp_path / "other-size"
    train(tiny_config(corpus, first, max_steps=4, eval_every=2, keep_snapshots=2))
    train(tiny_config(corpus, second, max_steps=4, eval_every=2, keep_snapshots=2, lr=2e-3))
    train(tiny_config(corpus, other_size, max_steps=2, eval_every=2, d_ff=32))
    mine = sorted((first / "snapshots").glob("step-*.safetensors"))[-1:]
    theirs = sorted((second / "snapshots").glob("step-*.safetensors"))[-1:]
    mean = average_weights(mine + theirs)
    best_before = load_file(str(first / "model.safetensors"))
    # --out: the mean becomes a checkpoint of its own, whatever the greedy check says; the run is left alone.
    written = average_run(first, last=1, threads=1, other_runs=(second,), out=tmp_path / "mean")
    model, _, _ = load_model(tmp_path / "mean")
    assert all(torch.equal(model.state_dict()[k], mean[k]) for k in mean)
    assert all(torch.equal(load_file(str(first / "model.safetensors"))[k], best_before[k]) for k in best_before)
    assert json.loads((tmp_path / "mean" / "averaging.json").read_text())["average"] == written["average"]
    report = average_run(first, last=1, threads=1, other_runs=(second,))
    assert report["snapshots"] == [mine[0].name, f"second/{theirs[0].name}"]
    kept = load_file(str(first / "model.safetensors"))
    assert all(torch.equal(kept[k], mean[k]) for k in mean) == (report["average"]["bleu"] > report["best_before"]["bleu"])
    with pytest.raises(SystemExit, match="another model config"):
        average_run(first, last=1, threads=1, other_runs=(other_size,))


def test_averaging_can_give_the_runs_starting_weights_a_share_of_the_mean(tmp_path, corpus):
    start, run = tmp_path / "start", tmp_path / "run"
    train(tiny_config(corpus, start, max_steps=4, eval_every=2))
    # A continuation with another dropout: the same model all the same (dropout is a training setting).
    train(tiny_config(corpus, run, max_steps=4, eval_every=2, keep_snapshots=2, init_from=str(start), dropout=0.2))
    snapshots = sorted((run / "snapshots").glob("step-*.safetensors"))
    started = load_file(str(start / "model.safetensors"))
    mean = average_weights(snapshots)
    report = average_run(run, last=2, threads=1, out=tmp_path / "mixed", start_share=0.25)
    mixed = load_file(str(tmp_path / "mixed" / "model.safetensors"))
    assert all(torch.allclose(mixed[k], 0.25 * started[k] + 0.75 * mean[k]) for k in mean)
    assert report["snapshots"] == [p.name for p in snapshots] + [f"{start}/model.safetensors (share 0.25)"]
    # --half: stored in float16 (half the file), and what was validated is what load_model gives back.
    report = average_run(run, last=2, threads=1, out=tmp_path / "half", start_share=0.25, half=True)
    stored = load_file(str(tmp_path / "half" / "model.safetensors"))
    assert all(stored[k].dtype == torch.float16 and torch.equal(stored[k], mixed[k].half()) for k in mean)
    model = load_model(tmp_path / "half")[0]
    assert all(torch.equal(model.state_dict()[k], mixed[k].half().float()) for k in mean)
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "mixed" / "model.safetensors").stat().st_size
    with pytest.raises(SystemExit, match="up to but not 1"):
        average_run(run, last=2, threads=1, out=tmp_path / "bad", start_share=1.5)
    with pytest.raises(SystemExit, match="did not start from a checkpoint"):
        average_run(start, last=2, threads=1, out=tmp_path / "none", start_share=0.5)
    # new weights installed at the start's path (as a shipped checkpoint directory is updated): not mixed in silently
    shutil.copy(tmp_path / "mixed" / "model.safetensors", start / "model.safetensors")
    with pytest.raises(SystemExit, match="is not the weights .* started from"):
        average_run(run, last=2, threads=1, out=tmp_path / "stale", start_share=0.25)


def test_resuming_keeps_the_search_settings_chosen_for_the_weights(tmp_path, corpus):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=3))
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "decoding": {"length_penalty": 1.6}}))
    train(tiny_config(corpus, out, max_steps=4))
    assert json.loads((out / "config.json").read_text())["decoding"] == {"length_penalty": 1.6}
