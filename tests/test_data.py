"""The corpus recipe on small fixtures in the real file formats (help HTML, Ding lines, a .mo catalog)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from model.corpus_sources import (
    ding_pairs, ding_word_pairs, fetch_package, gettext_pairs, help_pairs, package_licence, split_sentences,
    strip_accelerators,
)
from model.data import (
    DING, GETTEXT, HELP, TEST_BUCKETS, VALID_BUCKETS, Corpus, bucket, is_test_grade, main, normalise, rejection,
    source_column,
)

HELP_EN = """<html><body>
<h1 id="hd_id3150" dir="auto">Inserting Tables</h1>
<p id="par_id3151" class="paragraph">Choose <span class="switchinline"><span hidden="true" class="MAC">LibreOffice - Preferences</span><span hidden="true" id="default_1">Tools - Options</span></span> to open the dialog. Then click OK.</p>
<p id="par_id3152" class="paragraph">Click the <img src="x.svg" alt="Icon"> icon<br>in the toolbar &amp; wait .</p>
<p id="par_id3153">Only in English.</p></span>
<p id="par_id3154">Use e.g. this one. Then the next!</p>
<h3 class="bug">Help content debug info:</h3>
</body></html>"""
HELP_DE = """<html><body>
<h1 id="hd_id3150" dir="auto">Tabellen einfügen</h1>
<p id="par_id3151" class="paragraph">Wählen Sie <span class="switchinline"><span hidden="true" class="MAC">LibreOffice - Einstellungen</span><span hidden="true" id="default_1">Extras - Optionen</span></span>, um den Dialog zu öffnen. Klicken Sie dann auf OK.</p>
<p id="par_id3152" class="paragraph">Klicken Sie auf das Symbol <img src="x.svg" alt="Symbol"> in der Symbolleiste&nbsp;und warten Sie.</p>
<p id="par_id3154">Verwenden Sie z. B. diesen. Dann den nächsten!</p>
</body></html>"""


def test_help_pages_align_by_paragraph_id_and_keep_the_default_platform_text(tmp_path):
    for lang, page in (("en-US", HELP_EN), ("de", HELP_DE)):
        (tmp_path / lang / "text" / "swriter").mkdir(parents=True)
        (tmp_path / lang / "text" / "swriter" / "table.html").write_text(page, encoding="utf-8")
    pairs = [(normalise(en), normalise(de)) for en, de in help_pairs(tmp_path / "en-US", tmp_path / "de")]
    assert pairs == [
        ("Inserting Tables", "Tabellen einfügen"),
        ("Choose Tools - Options to open the dialog.", "Wählen Sie Extras - Optionen, um den Dialog zu öffnen."),
        ("Then click OK.", "Klicken Sie dann auf OK."),
        ("Click the icon in the toolbar & wait.", "Klicken Sie auf das Symbol in der Symbolleiste und warten Sie."),
        ("Use e.g. this one.", "Verwenden Sie z. B. diesen."),
        ("Then the next!", "Dann den nächsten!"),
    ]


def test_sentences_do_not_split_after_abbreviations_or_single_letters():
    assert split_sentences("Use e.g. this one. Then the next!") == ["Use e.g. this one.", "Then the next!"]
    assert split_sentences("Wählen Sie z. B. Format. Dann OK.") == ["Wählen Sie z. B. Format.", "Dann OK."]
    assert split_sentences("Version 7.4 is here. it stays.") == ["Version 7.4 is here. it stays."]


def test_ding_sub_entries_align_and_notes_and_shorthand_are_cleaned(tmp_path):
    dictionary = tmp_path / "de-en"
    dictionary.write_text(
        "# comment line\n"
        "Haus {n} [arch.] | Häuser {pl} :: house | houses\n"
        "ein Haus bauen; ein Gebäude errichten | er baut ein Haus :: to build a house; to erect a building | he builds a house\n"
        "jdm. etw. geben {v} :: to give sb. sth.\n"
        "ein akuter Herzinfarkt /AMI/ :: an acute myocardial infarction /AMI/\n"
        "Eugeniker {m} ~ Eugenetik :: eugenicist ~ eugenics\n"
        "eins | zwei :: one\n",
        encoding="utf-8",
    )
    assert list(ding_pairs(dictionary)) == [
        ("to build a house", "ein Haus bauen"),
        ("he builds a house", "er baut ein Haus"),
        ("to give somebody something", "jemandem etwas geben"),
        ("an acute myocardial infarction", "ein akuter Herzinfarkt"),
    ]
    # The word entries (the lexicon domain of model.corpus.sources), one to one: "house" and "Haus" share three
    # pieces, "house" and "Gebäude" one, so "Gebäude" goes; the strongest pair first.
    dictionary.write_text(dictionary.read_text() + "Gebäude {n} :: house\nHauses :: house's\n", encoding="utf-8")
    assert list(ding_word_pairs(dictionary)) == [("house", "Haus"), ("house's", "Hauses"), ("houses", "Häuser")]


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_a_cached_deb_is_unpacked_not_downloaded_and_its_version_and_licence_recorded(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: fake-l10n\nVersion: 1:2.3-4\nArchitecture: all\nMaintainer: x <x@example.org>\nDescription: x\n")
    (tree / "usr/share/doc/fake-l10n").mkdir(parents=True)
    (tree / "usr/share/doc/fake-l10n/copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2020 x\nLicense: GPL-2+\n\nFiles: po/*\nLicense: LGPL-2.1+\n")
    (tmp_path / "cache/debs").mkdir(parents=True)
    deb = tmp_path / "cache/debs/fake-l10n_2.3-4_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True, capture_output=True)
    monkeypatch.setattr("model.corpus_sources.subprocess.run", _dpkg_only(subprocess.run))  # no apt-get
    package = fetch_package("fake-l10n", tmp_path / "cache")
    assert package.version == "1:2.3-4"
    assert (package.root / "usr/share/doc/fake-l10n/copyright").exists()
    assert package_licence(package) == "GPL-2+"


def _dpkg_only(run):
    def guarded(args, **kwargs):
        assert args[0] == "dpkg-deb", f"unexpected command {args}"
        return run(args, **kwargs)
    return guarded


def test_accelerators_go_but_identifiers_copied_by_the_translator_stay():
    assert strip_accelerators("_Open max_depth", "Ö_ffnen max_depth") == "Open max_depth"
    assert strip_accelerators("~Save &File", "~Speichern") == "Save File"
    assert strip_accelerators("Tom &amp; Jerry in ~/.config", "") == "Tom &amp; Jerry in ~/.config"


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt (Debian package gettext) is not installed")
def test_gettext_catalog_gives_msgid_msgstr_pairs_without_accelerators(tmp_path):
    (tmp_path / "app.po").write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        'msgid "~Open File"\nmsgstr "Datei ö~ffnen"\n\n'
        'msgctxt "menu"\nmsgid "_Save as"\nmsgstr "_Speichern unter"\n\n'
        'msgid "Restart %PRODUCTNAME now"\nmsgstr "%PRODUCTNAME jetzt neu starten"\n\n'
        'msgid "one file"\nmsgid_plural "%d files"\nmsgstr[0] "eine Datei"\nmsgstr[1] "%d Dateien"\n',
        encoding="utf-8",
    )
    subprocess.run(["msgfmt", "-o", str(tmp_path / "app.mo"), str(tmp_path / "app.po")], check=True)
    assert sorted(gettext_pairs([tmp_path / "app.mo"])) == [
        ("Open File", "Datei öffnen"), ("Restart LibreOffice now", "LibreOffice jetzt neu starten"),
        ("Save as", "Speichern unter"),
    ]


@pytest.mark.parametrize(
    ("en", "de", "reason"),
    [
        ("", "leer", "empty side"),
        ("Calc Writer", "calc writer", "identical sides"),
        ("Insert a table of contents here", "Ja", "length ratio over 3.0"),
        ("%s: %d", "%d: %s", "only numbers, punctuation or placeholders"),
        ("Click <b>OK</b> now", "Klicken Sie auf <b>OK</b>", "markup left in the text"),
        ("Copied %d files", "%s Dateien kopiert", "placeholders differ between sides"),
        ("Cancel", "Abbrechen", "fewer than 2 words"),
        ("-v, --verbose explain what is being done", "-v, --verbose erklären, was getan wird",
         "command-line help (options, usage, console tables)"),
        ("| clear . . . . clear the playlist", "| clear . . . . Wiedergabeliste löschen",
         "command-line help (options, usage, console tables)"),
        ("he/she has/had led", "er/sie hat/hatte geführt", "verb conjugation table"),
        ("Copied %d files", "%d Dateien kopiert", None),
    ],
)
def test_filters(en, de, reason):
    assert rejection(en, de) == reason


def test_normalise_collapses_whitespace_tabs_and_composes_unicode():
    assert normalise("  Gro\u0308\u00dfe\u00a0 Datei \t\n") == "Größe Datei"


def test_test_grade_means_one_real_sentence_a_side():
    assert is_test_grade("Select the cells you want.", "Wählen Sie die gewünschten Zellen aus.")
    assert not is_test_grade("Inserting Tables Quickly Now", "Tabellen schnell einfügen")  # a heading
    assert not is_test_grade("=SUM(A1;A2) returns 3.", "=SUMME(A1;A2) ergibt 3.")  # a formula, few letters
    assert not is_test_grade("Open it. Then close it.", "Öffnen und schließen Sie es.")  # two sentences vs one


def sentences_in(buckets: range, count: int, template: str) -> list[str]:
    found = (template.format(i) for i in range(100_000))
    return [s for s in found if bucket(s) in buckets][:count]


def test_splits_are_deterministic_disjoint_and_test_holds_only_help_sentences():
    test_en = sentences_in(TEST_BUCKETS, 30, "Select cell number {} in the sheet.")
    corpus = Corpus()
    corpus.add(HELP, [(en, f"Wählen Sie Zelle {i} in der Tabelle aus, bitte.") for i, en in enumerate(test_en)])
    gettext_in_test_buckets = sentences_in(TEST_BUCKETS, 5, "Insert row {} in the register")
    corpus.add(GETTEXT, [(en, f"Zeile {i} im Register einfügen") for i, en in enumerate(gettext_in_test_buckets)])
    near_duplicate = test_en[0].lower().rstrip(".")  # differs from a test sentence only in case and punctuation
    corpus.add(DING, [(f"to count to {i} slowly", f"langsam bis {i} zählen") for i in range(400)]
               + [(near_duplicate, "Zelle in der Tabelle wählen")])
    corpus.split({HELP})
    splits = {name: [p[:2] for p in pairs] for name, pairs in corpus.splits.items()}
    assert len(splits["test"]) == 30 and all(p[2] == HELP for p in corpus.splits["test"])
    assert set(gettext_in_test_buckets) <= {en for en, _ in splits["train"]}  # not test material: it trains
    assert corpus.removed[DING]["near-duplicate of a test pair"] == 1
    assert all(bucket(en) in VALID_BUCKETS for en, _ in splits["valid"]) and splits["valid"]
    seen = [en for pairs in splits.values() for en, _ in pairs]
    assert len(seen) == len(set(seen))
    again = Corpus()
    for source in (HELP, GETTEXT, DING):
        again.add(source, [(en, de) for en, de, s in corpus.pairs if s == source])
    again.split({HELP})
    assert {name: [p[:2] for p in pairs] for name, pairs in again.splits.items()} == splits


def test_user_tsv_is_prepared_like_ours_and_rebuilds_identically(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    lines = [f"This is sentence number {i}.\tDas ist Satz Nummer {i}." for i in range(600)]
    tsv.write_text("\n".join(lines + lines[:5] + ["no tab on this line", "Hello\tHello"]) + "\n", encoding="utf-8")
    argv = ["user", "--tsv", str(tsv), "--src-lang", "en", "--tgt-lang", "de"]
    main(argv + ["--out", str(tmp_path / "a")])
    main(argv + ["--out", str(tmp_path / "b")])
    for name in ("train.tsv", "valid.tsv", "test.tsv", "DATA_CARD.md"):
        rebuilt = (tmp_path / "b" / name).read_text(encoding="utf-8").replace(str(tmp_path / "b"), str(tmp_path / "a"))
        assert (tmp_path / "a" / name).read_text(encoding="utf-8") == rebuilt
    sizes = {name: len((tmp_path / "a" / f"{name}.tsv").read_text().splitlines()) for name in ("train", "valid", "test")}
    assert sum(sizes.values()) == 600 and min(sizes.values()) > 0
    card = (tmp_path / "a" / "DATA_CARD.md").read_text()
    assert "| user | 607 | 600 |" in card and "duplicate (either side seen before)" in card
    assert source_column(tmp_path / "a", "de", "en") == 1


def test_user_aligned_files_keep_the_language_order(tmp_path):
    (tmp_path / "corpus.de").write_text("".join(f"Das ist Satz Nummer {i}.\n" for i in range(50)), encoding="utf-8")
    (tmp_path / "corpus.en").write_text("".join(f"This is sentence number {i}.\n" for i in range(50)), encoding="utf-8")
    main(["user", "--src", str(tmp_path / "corpus.de"), "--tgt", str(tmp_path / "corpus.en"),
          "--src-lang", "de", "--tgt-lang", "en", "--out", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "columns.json").read_text()) == {"columns": ["de", "en"]}
    first = (tmp_path / "out" / "train.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("Das ist Satz")


def test_shipped_corpus_test_split_is_disjoint_from_training():
    data = Path(__file__).resolve().parent.parent / "data" / "en-de"
    if not (data / "test.tsv").exists():
        pytest.skip("data/en-de has not been built")
    train_en, train_de = set(), set()
    for line in (data / "train.tsv").read_text(encoding="utf-8").splitlines():
        en, de = line.split("\t")
        train_en.add(en)
        train_de.add(de)
    test = [line.split("\t") for line in (data / "test.tsv").read_text(encoding="utf-8").splitlines()]
    assert len(test) >= 2000
    assert not any(en in train_en or de in train_de for en, de in test)
