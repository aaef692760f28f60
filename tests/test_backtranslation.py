"""Back-translation (model/backtranslate.py) end to end on a fortunes-de package built from a fixture in the real
format: German sentences read from fortune files, translated by the shipped de→en package through ONNX Runtime,
filtered, and kept out of training where the corpus already holds them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from model.backtranslate import CARD_FILE, HELD_OR_TRAINED, OUT_FILE, main
from model.corpus.fortune import fortune_entries, fortune_files, german_sentences

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "corpus" / "fortunes"
DE_EN = ROOT / "models" / "de-en"
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fortunes-de

Files: *
Copyright: 1999-2012 Andreas Tille <tille@debian.org>
License: GPL-2+
"""


def test_fortune_entries_lose_their_attributions_and_keep_chat_turns_apart():
    files = fortune_files(FIXTURE)
    assert [p.name for p in files] == ["infodrom", "zitate"]  # `.u8` copies and name lists are not read
    entries = list(fortune_entries(files[0]))
    assert entries[1] == "AOL-CDs sind doch cool\nKann man sich die Wand mit tapezieren"  # two turns, nicks gone
    assert not any("--" in entry or "#Artis" in entry for entry in entries)
    sentences = list(german_sentences(files))
    assert "Im Manöver ist eine Brücke gesperrt." in sentences and "Der letzte Soldat hat ein Schild auf dem Rücken." in sentences
    assert "AOL-CDs sind doch cool" in sentences and "Linux ohne Perl is wie Arnold ohne Wumme!" in sentences
    assert len(sentences) == len(set(sentences)) and not any(s.startswith(":)") for s in sentences)


def fortunes_deb(directory: Path) -> None:
    """A real .deb of the fixture tree, as `apt-get download fortunes-de` leaves it in the recipe's cache."""
    tree = directory / "tree"
    shutil.copytree(FIXTURE, tree)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text("Package: fortunes-de\nVersion: 0.35-1\nArchitecture: all\n"
                                             "Maintainer: Test <test@example.org>\nDescription: fixture\n")
    (tree / "usr/share/doc/fortunes-de").mkdir(parents=True)
    (tree / "usr/share/doc/fortunes-de/copyright").write_text(COPYRIGHT)
    (directory / "debs").mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(directory / "debs" / "fortunes-de_0.35-1_all.deb")],
                   check=True, capture_output=True)


@pytest.mark.skipif(not (DE_EN / "package.json").is_file(), reason="the shipped de-en package is needed")
def test_backtranslation_writes_english_german_pairs_and_keeps_corpus_sentences_out(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "en-de"
    fortunes_deb(cache)
    out.mkdir()
    held_out = "Mit einer Quitscheente ist man nie allein."
    (out / "valid.dialogue.tsv").write_text(f"You are never alone with a rubber duck.\t{held_out}\n")
    main(["--package", str(DE_EN), "--out", str(out), "--cache", str(cache), "--beam", "2"])
    pairs = [line.split("\t") for line in (out / OUT_FILE).read_text().splitlines()]
    german = [de for _, de in pairs]
    assert held_out not in german and "Der letzte Soldat hat ein Schild auf dem Rücken." in german
    assert all(len(pair) == 2 and pair[0] and pair[0] != pair[1] for pair in pairs)
    english = dict((de, en) for en, de in pairs)
    assert "soldier" in english["Der letzte Soldat hat ein Schild auf dem Rücken."].lower()
    text = (out / CARD_FILE).read_text()
    assert "fortunes-de` 0.35-1 (licence: GPL-2+)" in text and f"removed, {HELD_OR_TRAINED}: 1" in text
    assert f"pairs kept: {len(pairs)}" in text
