"""The corpus recipe on small fixtures in the real file formats (help HTML, Ding lines, a .mo catalog)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from model.corpus_sources import ding_pairs, gettext_pairs, help_pairs, split_sentences
from model.data import CorpusBuilder, bucket, build_user, main, normalise, rejection, source_column, split_of

HELP_EN = """<html><body>
<h1 id="hd_id3150" dir="auto">Inserting Tables</h1>
<p id="par_id3151" class="paragraph">Choose <span class="switchinline"><span hidden="true" class="MAC">LibreOffice - Preferences</span><span hidden="true" id="default_1">Tools - Options</span></span> to open the dialog. Then click OK.</p>
<p id="par_id3152" class="paragraph">Select the cells.</p>
<p id="par_id3153">Only in English.</p>
<h3 class="bug">Help content debug info:</h3>
</body></html>"""
HELP_DE = """<html><body>
<h1 id="hd_id3150" dir="auto">Tabellen einfügen</h1>
<p id="par_id3151" class="paragraph">Wählen Sie <span class="switchinline"><span hidden="true" class="MAC">LibreOffice - Einstellungen</span><span hidden="true" id="default_1">Extras - Optionen</span></span>, um den Dialog zu öffnen. Klicken Sie dann auf OK.</p>
<p id="par_id3152" class="paragraph">Wählen Sie die Zellen aus.</p>
</body></html>"""


def test_help_pages_align_by_paragraph_id_and_keep_the_default_platform_text(tmp_path):
    for lang, page in (("en-US", HELP_EN), ("de", HELP_DE)):
        (tmp_path / lang / "text" / "swriter").mkdir(parents=True)
        (tmp_path / lang / "text" / "swriter" / "table.html").write_text(page, encoding="utf-8")
    pairs = list(help_pairs(tmp_path / "en-US", tmp_path / "de"))
    assert pairs == [
        ("Inserting Tables", "Tabellen einfügen"),
        ("Choose Tools - Options to open the dialog.", "Wählen Sie Extras - Optionen, um den Dialog zu öffnen."),
        ("Then click OK.", "Klicken Sie dann auf OK."),
        ("Select the cells.", "Wählen Sie die Zellen aus."),
    ]


def test_sentences_split_only_before_a_capital():
    assert split_sentences("Use e.g. this one. Then the next!") == ["Use e.g. this one.", "Then the next!"]


def test_ding_sub_entries_align_and_notes_are_stripped(tmp_path):
    dictionary = tmp_path / "de-en"
    dictionary.write_text(
        "# comment line\n"
        "Haus {n} [arch.] | Häuser {pl} :: house | houses\n"
        "ein Haus bauen; ein Gebäude errichten | er baut ein Haus :: to build a house; to erect a building | he builds a house\n"
        "eins | zwei :: one\n",
        encoding="utf-8",
    )
    assert list(ding_pairs(dictionary)) == [("to build a house", "ein Haus bauen"), ("he builds a house", "er baut ein Haus")]


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt (Debian package gettext) is not installed")
def test_gettext_catalog_gives_msgid_msgstr_pairs_without_accelerators(tmp_path):
    (tmp_path / "app.po").write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        'msgid "~Open File"\nmsgstr "Datei ö~ffnen"\n\n'
        'msgctxt "menu"\nmsgid "_Save as"\nmsgstr "_Speichern unter"\n\n'
        'msgid "one file"\nmsgid_plural "%d files"\nmsgstr[0] "eine Datei"\nmsgstr[1] "%d Dateien"\n',
        encoding="utf-8",
    )
    subprocess.run(["msgfmt", "-o", str(tmp_path / "app.mo"), str(tmp_path / "app.po")], check=True)
    assert sorted(gettext_pairs([tmp_path / "app.mo"])) == [("Open File", "Datei öffnen"), ("Save as", "Speichern unter")]


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ("", "leer", "empty side"),
        ("Calc", "calc", "identical sides"),
        ("Insert a table of contents here", "Ja", "length ratio over 3.0"),
        ("%s: %d", "%d: %s", "only numbers, punctuation or placeholders"),
        ("Click <b>OK</b> now", "Klicken Sie auf <b>OK</b>", "markup left in the text"),
        ("Copied %d files", "%s Dateien kopiert", "placeholders differ between sides"),
        ("Copied %d files", "%d Dateien kopiert", None),
    ],
)
def test_filters(first, second, reason):
    assert rejection(first, second) == reason


def test_normalise_collapses_whitespace_and_composes_unicode():
    assert normalise("  Gro\u0308\u00dfe\u00a0 Datei \n") == "Größe Datei"


def test_split_is_a_function_of_the_sentence_and_test_holds_only_help_text():
    assert bucket("Select the cells.") == bucket("Select the cells.")
    sentences = [f"Sentence number {i}." for i in range(3000)]
    help_splits = {split_of(s, "libreoffice-help") for s in sentences}
    assert help_splits == {"train", "valid", "test"}
    assert "test" not in {split_of(s, "ding") for s in sentences}


def test_duplicates_on_either_side_are_dropped():
    builder = CorpusBuilder()
    builder.add("libreoffice-help", [("Open the file.", "Öffnen Sie die Datei.")])
    builder.add("ding", [("Open the file.", "Datei öffnen"), ("Open a file.", "Öffnen Sie die Datei."), ("to open a door", "eine Tür öffnen")])
    kept = [pair for split in builder.splits.values() for pair in split]
    assert sorted(kept) == [("Open the file.", "Öffnen Sie die Datei."), ("to open a door", "eine Tür öffnen")]
    assert builder.rejected["ding"]["duplicate (either side seen before)"] == 2


def test_user_data_is_prepared_like_ours_and_rebuilds_identically(tmp_path):
    source = tmp_path / "corpus.de"
    target = tmp_path / "corpus.en"
    source.write_text("".join(f"Das ist Satz Nummer {i}.\n" for i in range(400)), encoding="utf-8")
    target.write_text("".join(f"This is sentence number {i}.\n" for i in range(400)), encoding="utf-8")
    argv = ["user", "--src", str(source), "--tgt", str(target), "--src-lang", "de", "--tgt-lang", "en"]
    main(argv + ["--out", str(tmp_path / "a")])
    main(argv + ["--out", str(tmp_path / "b")])
    for name in ("train.tsv", "valid.tsv", "test.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    sizes = {name: len((tmp_path / "a" / f"{name}.tsv").read_text().splitlines()) for name in ("train", "valid", "test")}
    assert sum(sizes.values()) == 400 and min(sizes.values()) > 0
    assert json.loads((tmp_path / "a" / "columns.json").read_text()) == {"columns": ["de", "en"]}
    assert source_column(tmp_path / "a", "en", "de") == 1
    assert "user" in (tmp_path / "a" / "DATA_CARD.md").read_text()


def test_shipped_corpus_test_split_is_disjoint_from_training():
    data = Path(__file__).resolve().parent.parent / "data" / "en-de"
    if not (data / "test.tsv").exists():
        pytest.skip("data/en-de has not been built")
    train_first, train_second = set(), set()
    for line in (data / "train.tsv").read_text(encoding="utf-8").splitlines():
        first, second = line.split("\t")
        train_first.add(first)
        train_second.add(second)
    test = [line.split("\t") for line in (data / "test.tsv").read_text(encoding="utf-8").splitlines()]
    assert len(test) >= 2000
    assert not any(first in train_first or second in train_second for first, second in test)
