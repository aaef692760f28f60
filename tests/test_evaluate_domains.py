"""Per-domain test splits: model.evaluate --domain and the model card's per-domain table, on the tiny model."""

import json
from dataclasses import asdict
from pathlib import Path

from model.checkpoint import data_dir, load_config
from model.evaluate import domain_files, main as evaluate_main
from model.model_card import main as card_main
from model.train import TrainConfig
from tests.tiny_model import copied_checkpoint, generated_pairs, write_tsv


def checkpoint_with_domains(tiny_checkpoint, tmp_path):
    checkpoint, data = copied_checkpoint(tiny_checkpoint, tmp_path)
    write_tsv(data / "test.dialogue.tsv", generated_pairs(12, seed=7))
    write_tsv(data / "test.manuals.tsv", generated_pairs(9, seed=8))
    config = json.loads((checkpoint / "config.json").read_text())
    config["train"] = asdict(TrainConfig(data=str(data), out=str(checkpoint), init_from="checkpoints/en-de",
                                         grow="d_ff=2048"))
    config["parameters"] = 1234
    config["train_files"] = {"original": {"pairs": 400, "weight": 1.0, "examples": 400},
                             "dialogue": {"pairs": 50, "weight": 2.0, "examples": 100}}
    config["valid_files"] = {"original": 30, "dialogue": 20}
    (checkpoint / "config.json").write_text(json.dumps(config))
    return checkpoint, data


def test_evaluate_reports_one_domain_or_all(tiny_checkpoint, tmp_path, capsys):
    checkpoint, data = checkpoint_with_domains(tiny_checkpoint, tmp_path)
    assert list(domain_files(data, "test")) == ["original", "dialogue", "manuals"]
    evaluate_main([str(checkpoint), "--data", str(data), "--split", "test", "--domain", "dialogue",
                   "--json", str(tmp_path / "one.json")])
    one = json.loads((tmp_path / "one.json").read_text())
    assert [r["domain"] for r in one] == ["dialogue"] and one[0]["sentences"] == 12
    evaluate_main([str(checkpoint), "--data", str(data), "--split", "test", "--domain", "all", "--beam", "2",
                   "--json", str(tmp_path / "all.json")])
    every = json.loads((tmp_path / "all.json").read_text())
    assert [(r["domain"], r["sentences"]) for r in every] == [("original", 40), ("dialogue", 12), ("manuals", 9)]
    assert all(r["search"].startswith("beam 2") for r in every)


def test_model_card_has_a_per_domain_table_and_the_data_mix(tiny_checkpoint, tmp_path):
    checkpoint, data = checkpoint_with_domains(tiny_checkpoint, tmp_path)
    (checkpoint / "LINEAGE.md").write_text("Those weights came from\na first run of 4,500 steps.\n")
    card_main([str(checkpoint), "--data", str(data), "--limit", "5"])
    text = (checkpoint / "MODEL_CARD.md").read_text()
    assert "## Test split scores per domain" in text
    assert "it started computing exactly what they compute. Those weights came from a first run of 4,500 steps." in text
    rows = [line for line in text.splitlines() if line.startswith(("| original |", "| dialogue |", "| manuals |"))]
    assert len(rows) == 3 and all(len(row.split("|")) == 8 for row in rows)
    assert "| train.dialogue.tsv | 50 | 2 | 100 | 20.0% |" in text
    assert "dialogue (20 pairs)" in text and "checkpoints/en-de" in text
    assert "grown into this larger model (d_ff=2048" in text
    scores = json.loads((checkpoint / "test_scores_domains.json").read_text())
    assert set(scores) == {"original", "dialogue", "manuals"}
    assert [s["search"] for s in scores["dialogue"]] == ["greedy", "beam 4, length penalty 1.0"]


def test_held_out_data_falls_back_to_the_repository_splits(tiny_checkpoint, tmp_path):
    """A shipped checkpoint names the directory it trained on, which a fresh clone does not have: its evaluation,
    model card, export parity and benchmark then read the committed splits in data/<src>-<tgt>."""
    checkpoint, data = checkpoint_with_domains(tiny_checkpoint, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    assert data_dir(config) == data
    config["train"]["data"] = str(tmp_path / "rebuilt-elsewhere")
    assert data_dir(config) == Path("data/en-de")
    config |= {"src_lang": "de", "tgt_lang": "en"}  # de→en reads the en-de splits through their columns.json
    assert data_dir(config) == Path("data/en-de")
    for pair in ("en-de", "de-en"):
        assert (data_dir(load_config(Path("checkpoints") / pair)) / "test.tsv").is_file()
