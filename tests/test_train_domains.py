"""Training on several domains: every train*.tsv with weights, validation per valid*.tsv, --init-from, --grow."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from model.tokenizer import Tokenizer, train_tokenizer
from model.evaluate import domain_files
from model.average import with_start_weights
from model.grow import parse_growth
from model.train import load_training_files, parse_weights, train
from model.transformer import Transformer, TransformerConfig
from tests.test_train import tiny_config, write_corpus


@pytest.fixture(scope="module")
def domains_corpus(tmp_path_factory):
    directory = write_corpus(tmp_path_factory.mktemp("domains"))
    lines = (directory / "train.tsv").read_text(encoding="utf-8").splitlines()
    (directory / "train.dialogue.tsv").write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")
    (directory / "train.manuals.tsv").write_text("\n".join(lines[100:140]) + "\n", encoding="utf-8")
    valid = (directory / "valid.tsv").read_text(encoding="utf-8").splitlines()
    (directory / "valid.dialogue.tsv").write_text("\n".join(valid[:12]) + "\n", encoding="utf-8")
    return directory


def test_domain_files_name_the_original_files_and_each_domain(domains_corpus):
    assert list(domain_files(domains_corpus, "train")) == ["original", "dialogue", "manuals"]
    assert list(domain_files(domains_corpus, "valid")) == ["original", "dialogue"]
    assert parse_weights("dialogue=3, manuals=0.5") == {"dialogue": 3.0, "manuals": 0.5}


def test_training_files_are_repeated_by_their_weights(domains_corpus, tmp_path):
    tokenizer = Tokenizer(train_tokenizer(domains_corpus / "train.tsv", tmp_path / "spm", vocab_size=50))
    examples, report = load_training_files(domains_corpus, tokenizer, 0, 64, {"dialogue": 2.5, "original": 0}, seed=1)
    assert report["original"] == {"pairs": 0, "weight": 0.0, "examples": 0}
    assert report["dialogue"]["examples"] == 2 * report["dialogue"]["pairs"] + (report["dialogue"]["examples"] % report["dialogue"]["pairs"])
    assert 2 * 100 + 30 <= report["dialogue"]["examples"] <= 2 * 100 + 70  # a fixed random half once more
    assert report["manuals"] == {"pairs": 40, "weight": 1.0, "examples": 40}
    assert len(examples) == report["dialogue"]["examples"] + 40
    again, _ = load_training_files(domains_corpus, tokenizer, 0, 64, {"dialogue": 2.5, "original": 0}, seed=1)
    assert again == examples  # deterministic, so an interrupted run resumes on the same data
    with pytest.raises(ValueError, match="games"):
        load_training_files(domains_corpus, tokenizer, 0, 64, {"games": 2}, seed=1)


def test_back_translated_pairs_train_only_the_direction_into_their_real_side(domains_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(domains_corpus, corpus)
    lines = (corpus / "train.tsv").read_text(encoding="utf-8").splitlines()
    (corpus / "train.backtranslated.tsv").write_text("\n".join(lines[:30]) + "\n", encoding="utf-8")
    tokenizer = Tokenizer(train_tokenizer(corpus / "train.tsv", tmp_path / "spm", vocab_size=50))
    _, into_german = load_training_files(corpus, tokenizer, 0, 64, {"backtranslated": 2}, seed=1)
    assert into_german["backtranslated"] == {"pairs": 30, "weight": 2.0, "examples": 60}
    _, into_english = load_training_files(corpus, tokenizer, 1, 64, {}, seed=1)  # column 1 (German) as source
    assert into_english["backtranslated"] == {"pairs": 0, "weight": 0.0, "examples": 0}
    with pytest.raises(ValueError, match="machine-made English"):
        load_training_files(corpus, tokenizer, 1, 64, {"backtranslated": 1}, seed=1)


def test_validation_scores_each_domain_and_selects_on_their_mean(domains_corpus, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(domains_corpus, out, max_steps=2, eval_every=2, train_weights="dialogue=2"))
    record = json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])
    assert set(record["domains"]) == {"original", "dialogue"}
    assert record["domains"]["dialogue"]["sentences"] == 10  # eval_sentences of the tiny config
    assert record["bleu"] == pytest.approx(sum(d["bleu"] for d in record["domains"].values()) / 2)
    config = json.loads((out / "config.json").read_text())
    assert config["train_files"]["dialogue"] == {"pairs": 100, "weight": 2.0, "examples": 200}
    assert config["valid_files"] == {"original": 30, "dialogue": 12}


def test_init_from_starts_a_new_run_from_a_checkpoints_weights_config_and_tokenizer(domains_corpus, tmp_path):
    first = tmp_path / "first"
    train(tiny_config(domains_corpus, first, max_steps=3, eval_every=3, d_model=48))
    shutil.rmtree(first / "snapshots")
    second = tmp_path / "second"
    # d_model 32 on the command line: the checkpoint's own config wins, but the run's own dropout applies (a
    # training setting); lr 0 leaves the weights as initialised.
    train(tiny_config(domains_corpus, second, max_steps=1, eval_every=1000, lr=0.0, init_from=str(first), dropout=0.3))
    assert (second / "spm.model").read_bytes() == (first / "spm.model").read_bytes()
    config = json.loads((second / "config.json").read_text())
    assert config["model"]["d_model"] == 48 and config["train"]["init_from"] == str(first)
    assert json.loads((first / "config.json").read_text())["model"]["dropout"] == 0.1
    assert config["model"]["dropout"] == 0.3
    state = json.loads((second / "resume" / "state.json").read_text())
    assert state["step"] == 1 and state["warm_start_step"] is None  # a new run: step 0 + 1, not the source's step
    start, now = load_file(str(first / "model.safetensors")), load_file(str(second / "resume" / "weights.safetensors"))
    assert all(torch.equal(start[k], now[k]) for k in start)
    # Run again with the same command: the run continues from its own state, not from --init-from.
    train(tiny_config(domains_corpus, second, max_steps=2, eval_every=1000, lr=0.0, init_from=str(first)))
    assert json.loads((second / "resume" / "state.json").read_text())["step"] == 2


def test_grown_model_computes_what_the_checkpoint_computes_and_then_trains(domains_corpus, tmp_path):
    first = tmp_path / "first"
    train(tiny_config(domains_corpus, first, max_steps=3, eval_every=3, d_model=48))
    second = tmp_path / "grown"
    train(tiny_config(domains_corpus, second, max_steps=1, eval_every=1000, lr=0.0, init_from=str(first),
                      grow="d_ff=96,n_encoder_layers=3,n_decoder_layers=3"))
    source_config = json.loads((first / "config.json").read_text())["model"]
    config = json.loads((second / "config.json").read_text())["model"]
    assert (config["d_ff"], config["n_encoder_layers"], config["n_decoder_layers"]) == (96, 3, 3)
    assert (source_config["d_ff"], source_config["n_encoder_layers"], source_config["n_decoder_layers"]) != (96, 3, 3)
    small, large = (Transformer(TransformerConfig.from_dict(c)).eval() for c in (source_config, config))
    small.load_state_dict(load_file(str(first / "model.safetensors")), strict=False)
    large.load_state_dict(load_file(str(second / "resume" / "weights.safetensors")), strict=False)
    src, tgt = torch.randint(4, 50, (3, 7)), torch.randint(4, 50, (3, 5))
    with torch.no_grad():
        torch.testing.assert_close(large(src, tgt), small(src, tgt))
    # model.average --start-share grows the start the same way (same seed): the run's own step 0 (lr 0 here).
    step_zero = load_file(str(second / "resume" / "weights.safetensors"))
    zeros = {name: torch.zeros_like(tensor) for name, tensor in step_zero.items()}
    mixed, _ = with_start_weights(second, json.loads((second / "config.json").read_text()), zeros, 0.5)
    assert all(torch.equal(mixed[name], 0.5 * step_zero[name]) for name in step_zero)
    # The zero matrices are not a fixed point: one step with a learning rate moves the new units' outputs.
    third = tmp_path / "trained"
    train(tiny_config(domains_corpus, third, max_steps=1, eval_every=1000, lr=0.01, warmup_steps=1,
                      init_from=str(first), grow="d_ff=96"))
    weights = load_file(str(third / "resume" / "weights.safetensors"))
    assert weights["decoder.layers.0.ffn.down.weight"][:, source_config["d_ff"]:].abs().sum() > 0
    with pytest.raises(ValueError, match="smaller"):
        parse_growth("d_ff=8", TransformerConfig.from_dict(source_config))
    with pytest.raises(ValueError, match="only"):
        parse_growth("d_model=64", TransformerConfig.from_dict(source_config))
    with pytest.raises(ValueError, match="needs --init-from"):
        train(tiny_config(domains_corpus, tmp_path / "alone", max_steps=1, grow="d_ff=96"))
