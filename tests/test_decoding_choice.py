"""The beam search's length penalty: chosen on the validation splits (model.choose_decoding), recorded in the
checkpoint, carried by the export into the package, and searched with by the engine; on the tiny model."""

import json
from pathlib import Path

import pytest

from engine.package import PackageError, PackageManifest, read_manifest
from engine.sessions import RuntimeOptions
from engine.translator import Translator
from export.package import build_package
from export.parity import check_parity
from model.choose_decoding import main as choose_main
from model.evaluate import evaluate, repeats_a_word
from tests.tiny_model import copied_checkpoint, generated_pairs, write_tsv

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def checkpoint_with_valid_splits(tiny_checkpoint, tmp_path):
    checkpoint, data = copied_checkpoint(tiny_checkpoint, tmp_path)
    write_tsv(data / "valid.tsv", generated_pairs(16, seed=21))
    write_tsv(data / "valid.dialogue.tsv", generated_pairs(10, seed=22))
    write_tsv(data / "test.dialogue.tsv", generated_pairs(10, seed=23))
    return checkpoint, data


def test_the_best_mean_over_validation_domains_is_recorded_exported_and_searched_with(
        checkpoint_with_valid_splits, tiny_fp32_graphs, tmp_path):
    checkpoint, data = checkpoint_with_valid_splits
    choose_main([str(checkpoint), "--data", str(data), "--penalties", "0.2,3.0", "--beam", "3", "--workers", "1",
                 "--json", str(tmp_path / "sweep.json")])
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert [row["length_penalty"] for row in rows] == [0.2, 3.0]
    assert all(list(row["domains"]) == ["original", "dialogue"] for row in rows)  # valid splits only, never test
    for row in rows:
        assert row["mean_bleu"] == pytest.approx(sum(d["bleu"] for d in row["domains"].values()) / 2, abs=0.01)
        assert row["repeated_words"] == sum(d["repeated_words"] for d in row["domains"].values())
    alone = evaluate(checkpoint, data / "valid.dialogue.tsv", 0, 3, 3.0, None)
    assert rows[1]["domains"]["dialogue"]["bleu"] == alone["bleu"]
    best = max(rows, key=lambda row: row["mean_bleu"])["length_penalty"]

    decoding = json.loads((checkpoint / "config.json").read_text())["decoding"]
    assert decoding["length_penalty"] == best
    assert decoding["candidates"] == {"0.2": rows[0]["mean_bleu"], "3.0": rows[1]["mean_bleu"]}
    assert evaluate(checkpoint, data / "valid.tsv", 0, 3, None, 4)["search"] == f"beam 3, length penalty {best}"

    package = tmp_path / "package"
    model, manifest, _ = build_package(checkpoint, package, "fp32", max_source_tokens=64, fp32_dir=tiny_fp32_graphs)
    assert manifest.decoding.length_penalty == best
    check_parity(model, package, data / "test.tsv", sample_size=8)
    translator = Translator(package, RuntimeOptions(intra_op_threads=1))
    assert translator.search_options(beam_size=3).length_penalty == best
    assert translator.search_options(beam_size=3, length_penalty=0.5).length_penalty == 0.5  # a caller's own wins
    sources = translator.tokenize([source for source, _ in generated_pairs(12, seed=24)])
    served = translator.translate_ids(sources, translator.search_options(beam_size=3, n_best=3))
    other = 3.0 if best == 0.2 else 0.2
    unchosen = translator.translate_ids(sources, translator.search_options(beam_size=3, n_best=3, length_penalty=other))
    chosen = translator.translate_ids(sources, translator.search_options(beam_size=3, n_best=3, length_penalty=best))
    assert [[h.score for h in r.hypotheses] for r in served] == [[h.score for h in r.hypotheses] for r in chosen]
    assert [[h.score for h in r.hypotheses] for r in served] != [[h.score for h in r.hypotheses] for r in unchosen]


def test_a_package_without_a_decoding_section_searches_with_the_default_and_a_wild_one_is_refused(tmp_path):
    shipped = json.loads((ROOT / "models" / "en-de" / "package.json").read_text())
    values = {key: value for key, value in shipped.items() if key != "decoding"}
    assert PackageManifest.model_validate(values).decoding.length_penalty == 1.0
    package = tmp_path / "package"
    package.mkdir()
    (package / "package.json").write_text(json.dumps({**values, "decoding": {"length_penalty": 9.0}}))
    with pytest.raises(PackageError, match="length_penalty"):
        read_manifest(package)


def test_bad_penalties_are_refused_before_anything_is_decoded(checkpoint_with_valid_splits):
    checkpoint, data = checkpoint_with_valid_splits
    before = (checkpoint / "config.json").read_text()
    for bad in ("1.0,fast", "", "5"):
        with pytest.raises(SystemExit):
            choose_main([str(checkpoint), "--data", str(data), "--penalties", bad])
    with pytest.raises(SystemExit):
        choose_main([str(checkpoint), "--data", str(data), "--beam", "1"])
    assert (checkpoint / "config.json").read_text() == before


def test_a_word_three_times_in_a_row_is_counted_as_a_degenerate_output():
    assert repeats_a_word("Ich möchte heute ein Buch Buch Buch machen.")
    assert not repeats_a_word("Buch Buch, Buch.") and not repeats_a_word("ein Buch Buch") and not repeats_a_word("")
