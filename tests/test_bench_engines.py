"""`bench.engines` on the tiny model: it exports a package it needs and does not find (a fresh clone has no fp32
package under build/), and writes the JSON layout the engine issue's acceptance reads."""

from __future__ import annotations

import json

import pytest

from bench.engines import best_of_rounds, main


def test_exports_a_missing_package_and_writes_tokens_per_second_per_setting(tiny_checkpoint, tmp_path):
    package, out = tmp_path / "packages" / "fp32", tmp_path / "bench.json"
    main(["--checkpoint", str(tiny_checkpoint), "--fp32-package", str(package), "--engines", "ort-fp32",
          "--limit", "6", "--threads", "1", "--batch-sizes", "1,4", "--beam-sizes", "1,2", "--lengths", "8",
          "--rounds", "2", "--out", str(out)])
    manifest = json.loads((package / "package.json").read_text())
    assert manifest["precision"] == "fp32" and (package / "parity.json").is_file()  # exported, parity checked
    engine = json.loads(out.read_text())["engines"]["ort-fp32"]
    assert sorted((s["search"], s["batch_size"]) for s in engine["settings"]) == [
        ("beam2", 1), ("beam2", 4), ("greedy", 1), ("greedy", 4)]
    assert all(s["tokens_per_second"] > 0 for s in engine["settings"])
    bleu = {(s["search"], s["batch_size"]): s["bleu"] for s in engine["settings"]}
    # fp32 outputs do not depend on the batch (the engine's parity tests): the same BLEU alone and in batches of 4
    assert bleu[("greedy", 1)] == bleu[("greedy", 4)] and bleu[("beam2", 1)] == bleu[("beam2", 4)]
    assert engine["peak_rss_mb"] > 0 and engine["rounds"] == 2


def test_rounds_keep_each_settings_fastest_round_and_the_highest_peak():
    def round_of(greedy: float, beam: float, rss: float) -> dict:
        return {"engine": "ort-int8", "wall_seconds": 10.0, "peak_rss_mb": rss, "settings": [
            {"search": "greedy", "batch_size": 32, "tokens_per_second": greedy},
            {"search": "beam4", "batch_size": 32, "tokens_per_second": beam}]}

    merged = best_of_rounds([round_of(100.0, 60.0, 200.0), round_of(120.0, 50.0, 210.0), round_of(90.0, 55.0, 190.0)])
    assert [s["tokens_per_second"] for s in merged["settings"]] == [120.0, 60.0]  # each setting from its fastest round
    assert merged["peak_rss_mb"] == 210.0 and merged["rounds"] == 3 and merged["wall_seconds"] == 30.0


@pytest.mark.parametrize("flag", ["--rounds", "--repeats"])
def test_zero_rounds_or_repeats_is_refused_before_anything_runs(flag, tmp_path):
    with pytest.raises(SystemExit) as refused:
        main([flag, "0", "--out", str(tmp_path / "bench.json")])
    assert refused.value.code == 2 and not (tmp_path / "bench.json").exists()
