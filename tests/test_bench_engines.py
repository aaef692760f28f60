"""`bench.engines` on the tiny model: it exports a package it needs and does not find (a fresh clone has no fp32
package under build/), and writes the JSON layout the engine issue's acceptance reads."""

from __future__ import annotations

import json

from bench.engines import main


def test_exports_a_missing_package_and_writes_tokens_per_second_per_setting(tiny_checkpoint, tmp_path):
    package, out = tmp_path / "packages" / "fp32", tmp_path / "bench.json"
    main(["--checkpoint", str(tiny_checkpoint), "--fp32-package", str(package), "--engines", "ort-fp32",
          "--limit", "6", "--threads", "1", "--batch-sizes", "1,4", "--beam-sizes", "1,2", "--lengths", "8",
          "--out", str(out)])
    manifest = json.loads((package / "package.json").read_text())
    assert manifest["precision"] == "fp32" and (package / "parity.json").is_file()  # exported, parity checked
    engine = json.loads(out.read_text())["engines"]["ort-fp32"]
    assert sorted((s["search"], s["batch_size"]) for s in engine["settings"]) == [
        ("beam2", 1), ("beam2", 4), ("greedy", 1), ("greedy", 4)]
    assert all(s["tokens_per_second"] > 0 for s in engine["settings"])
    bleu = {(s["search"], s["batch_size"]): s["bleu"] for s in engine["settings"]}
    # fp32 outputs do not depend on the batch (the engine's parity tests): the same BLEU alone and in batches of 4
    assert bleu[("greedy", 1)] == bleu[("greedy", 4)] and bleu[("beam2", 1)] == bleu[("beam2", 4)]
    assert engine["peak_rss_mb"] > 0
