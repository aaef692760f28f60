"""Cleaning, deduplication and per-domain splits of the general-language sources (model/corpus/general.py), the
reserved sources, and the shipped splits (the original test split byte-identical, no held-out sentence in any
training file)."""

import hashlib
from pathlib import Path

import pytest

from model.corpus.general import (
    ATTRIBUTE_FILTER, CREDITS_FILTER, LANGID_FILTER, MAX_VALID, NEAR_DUPLICATE_EARLIER, NUMBERS_FILTER,
    TEMPLATE_FILTER, GeneralCorpus, dedupe_key, general_rejection, is_general_test_grade,
)
from model.corpus.sources import (
    DIALOGUE, HELD_OUT_DOMAINS, LEXICON, MANUALS, RESERVED_PACKAGES, SOURCES, UI, Source, _files,
)
from model.corpus_sources import Package
from model.data import DING, HELP, MIN_WORDS, TEST_BUCKETS, Corpus, bucket

DATA = Path(__file__).resolve().parent.parent / "data" / "en-de"
# The original splits as shipped before the general-language sources were added (data/en-de/DATA_CARD.md).
ORIGINAL_SHA256 = {
    "test.tsv": "05713e837b80c7c81cce66cdbc7b83b55d5932a980c86d7248f668890fe45305",
    "valid.tsv": "c084027fffee6213c715dcf8ff5b38301708caaba01ba60a5a91db7b389aa1c6",
}


def test_the_recipe_never_reads_the_reserved_sources(tmp_path):
    packages = {name for source in SOURCES for name in source.packages}  # what model.data fetches
    assert not set(RESERVED_PACKAGES) & set(packages)
    assert "wesnoth-1.16-utbs" not in packages and not any("utbs" in name for name in packages)
    assert not any(name.startswith("Translation-") or "Translation-" in name for name in packages)
    # The same campaign's catalog is skipped even if another package shipped it, and so are apt's indexes.
    locale = tmp_path / "usr/share/games/wesnoth/1.16/locale/de/LC_MESSAGES"
    locale.mkdir(parents=True)
    for name in ("wesnoth-httt.mo", "wesnoth-utbs.mo", "Translation-de.mo"):
        (locale / name).write_bytes(b"")
    found = _files({"x": Package("x", "1", tmp_path)}, "usr/share/games/wesnoth/1.16/locale/de/LC_MESSAGES/*.mo")
    assert [p.name for p in found] == ["wesnoth-httt.mo"]


@pytest.mark.parametrize("name", sorted(ORIGINAL_SHA256))
def test_the_original_held_out_splits_are_byte_identical(name):
    assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == ORIGINAL_SHA256[name]


@pytest.mark.parametrize(
    ("en", "de", "reason"),
    [
        ("Ah, $second_unit.name|, it is good to see you.", "Ah, es ist gut, dich zu sehen.",
         "placeholders differ between sides"),
        ("Showing $1 results for the query.", "Zeige Ergebnisse für die Suchanfrage.", "placeholders differ between sides"),
        ("Contact us at help@example.org today.", "Kontakt: help@example.org heute.", CREDITS_FILTER),
        ("German translation by the team", "Übersetzt von Max Mustermann und Team", CREDITS_FILTER),
        ("See {{PLURAL:$1|the help page}} for details.", "Siehe {{PLURAL:$1|die Hilfeseite}} für Details.",
         TEMPLATE_FILTER),
        ("Three damage types: text='blade, pierce'.", "Drei Schadensarten: text='Klinge, Stich'.", ATTRIBUTE_FILTER),
        ("Wait for 10 seconds and try again.", "Warten Sie 20 Sekunden und versuchen Sie es erneut.", NUMBERS_FILTER),
        ("Open the file and read it carefully.", "Open the file and read it, carefully please.", LANGID_FILTER),
        ("Ah, $second_unit.name|, it is good to see you.", "Ah, $second_unit.name|, schön, dich zu sehen.", None),
        ("The price is 3.5 euros per kilogram.", "Der Preis beträgt 3,5 Euro pro Kilogramm.", None),
    ],
)
def test_general_filters(en, de, reason):
    assert general_rejection(en, de) == reason


def test_test_grade_means_one_real_sentence_a_side():
    assert is_general_test_grade("I would like to book a table.", "Ich möchte einen Tisch reservieren.")
    assert not is_general_test_grade("is a filesystem in memory.", "ist ein Dateisystem im Speicher.")  # lower case
    assert not is_general_test_grade("Hello, $name|, welcome back.", "Hallo, $name|, willkommen zurück.")
    assert not is_general_test_grade("Go now. Run!", "Geh jetzt und lauf!")


def source(name, domain):
    return Source(name, domain, (), lambda packages: [], "test")


def test_a_dictionary_source_keeps_single_words_that_every_other_source_drops():
    corpus = GeneralCorpus(Corpus())
    words = [("fox", "Fuchs"), ("lazy", "faul"), ("tonight", "heute Abend"), ("Hotel", "Hotel")]
    corpus.add(source("labels", UI), words)
    corpus.add(Source("words", LEXICON, (), lambda packages: [], "test", min_words=1), words)
    assert corpus.removed["labels"] == {"identical sides": 1, f"fewer than {MIN_WORDS} words": 3}
    assert corpus.removed["words"] == {"identical sides": 1}
    corpus.split()
    assert sorted(corpus.splits) == ["train.lexicon"]  # a lexicon is never held out
    assert [p[:2] for p in corpus.splits["train.lexicon"]] == words[:3]


def test_dedupe_against_the_original_corpus_and_per_domain_splits_without_leakage():
    base = Corpus()
    base.add(HELP, [("Select the cells you want to copy.", "Wählen Sie die Zellen aus, die Sie kopieren möchten.")])
    base.add(DING, [("to count sheep slowly", "langsam Schafe zählen")])
    base.split({HELP})
    corpus = GeneralCorpus(base)
    numbers = [n for n in range(10_000) if bucket(f"The knight number {n} rode into the dark forest.") in TEST_BUCKETS]
    lines = [(f"The knight number {n} rode into the dark forest.", f"Der Ritter Nummer {n} ritt in den dunklen Wald.")
             for n in numbers[:40]]
    # Digits are ignored by the dedupe key: these 40 lines are one sentence, so only the first is kept.
    corpus.add(source("saga", DIALOGUE), lines)
    assert corpus.removed["saga"][NEAR_DUPLICATE_EARLIER] == 39
    distinct = [(f"The {w} rode into the dark forest at night.", f"Der {g} ritt nachts in den dunklen Wald.")
                for w, g in (("knight", "Ritter"), ("queen", "Königin"), ("wizard", "Zauberer"), ("dwarf", "Zwerg"),
                             ("elf", "Elf"), ("troll", "Troll"), ("orc", "Ork"), ("king", "König"))]
    corpus.add(source("saga2", DIALOGUE), distinct + [("Select the cells you want to copy!", "Zellen wählen!")])
    assert corpus.removed["saga2"][NEAR_DUPLICATE_EARLIER] == 1  # the original corpus wins
    corpus.add(source("wiki", UI), [("Search the whole wiki now.", "Das ganze Wiki jetzt durchsuchen.")])
    corpus.split()
    held_out = {name: pairs for name, pairs in corpus.splits.items() if not name.startswith("train.")}
    assert all(name.split(".")[1] in HELD_OUT_DOMAINS for name in held_out)  # ui trains only
    assert "train.ui" in corpus.splits
    held_keys = {dedupe_key(side) for pairs in held_out.values() for en, de, _ in pairs for side in (en, de)}
    train_keys = {dedupe_key(side) for name, pairs in corpus.splits.items() if name.startswith("train.")
                  for en, de, _ in pairs for side in (en, de)}
    assert not held_keys & train_keys
    assert sum(len(p) for p in corpus.splits.values()) == len(corpus.pairs)


def test_held_out_splits_are_capped_and_the_rest_trains(monkeypatch):
    monkeypatch.setattr("model.corpus.general.MAX_VALID", 3)
    corpus = GeneralCorpus(Corpus())
    words = ["apple", "river", "castle", "dragon", "forest", "winter", "garden", "silver", "hammer", "candle",
             "mirror", "anchor", "lantern", "meadow", "harbor", "thunder", "feather", "marble", "ribbon", "canyon"]
    german = ["Apfel", "Fluss", "Burg", "Drache", "Wald", "Winter", "Garten", "Silber", "Hammer", "Kerze", "Spiegel",
              "Anker", "Laterne", "Wiese", "Hafen", "Donner", "Feder", "Marmor", "Band", "Schlucht"]
    pairs = [(f"The {a} and the {b} are here today.", f"Der {x} und der {y} sind heute hier.")
             for a, x in zip(words, german) for b, y in zip(words, german) if a != b]
    corpus.add(source("manpages", MANUALS), pairs)
    corpus.split()
    assert len(corpus.splits.get("valid.manuals", [])) <= 3 < MAX_VALID
    assert sum(len(p) for p in corpus.splits.values()) == len(corpus.pairs)


def test_shipped_domain_splits_are_disjoint_from_every_training_file():
    held = sorted(DATA.glob("valid.*.tsv")) + sorted(DATA.glob("test.*.tsv"))
    assert {p.name.split(".")[1] for p in held} == set(HELD_OUT_DOMAINS)
    for path in held:
        count = len(path.read_text(encoding="utf-8").splitlines())
        assert 250 <= count <= (500 if path.name.startswith("valid.") else 2000), path.name
    trains = [DATA / "train.tsv"] + sorted(DATA.glob("train.*.tsv"))
    if len(trains) == 1:
        pytest.skip("the train.<domain>.tsv files are not built (python -m model.data debian --out data/en-de)")
    train_keys = {dedupe_key(side) for path in trains for line in path.read_text(encoding="utf-8").splitlines()
                  for side in line.split("\t")}
    for path in held + [DATA / "test.tsv"]:
        for line in path.read_text(encoding="utf-8").splitlines():
            en, de = line.split("\t")
            if path.name != "test.tsv":  # the original split's own rule is the exact/alnum one (test_data.py)
                assert dedupe_key(en) not in train_keys and dedupe_key(de) not in train_keys, (path.name, en)


def test_a_game_that_splits_dialogue_lines_gives_only_its_whole_sentences():
    from model.corpus.sources import _whole_sentences

    entries = [("They're planning to attack during the parade.", "Sie planen während der Parade anzugreifen."),
               ('"I told you he had the makings of a hero!"',
                '„Ich hab euch gesagt, dass er das Zeug zum Helden hat!“'),
               ("how some of them can handle the stress of not eating", "mich wie einige von ihnen es aushalten"),
               ("Be rude to Nadine", "Sei unhöflich zu Nadine")]
    assert list(_whole_sentences(lambda packages: entries)({})) == entries[:2]
