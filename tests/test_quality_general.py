"""Ordinary language through the served en→de and de→en packages (issue 15's first sentences of a new user).

Each sentence must come back with the words a correct German translation cannot do without; a paragraph
of three sentences must come back whole (every sentence's key words, none dropped). Sentences the
shipped model still gets wrong are marked `xfail(strict=True)`: the gap stays visible, and the mark must
go once a better model passes them.
"""

from __future__ import annotations

import httpx
import pytest

from tests.service_support import models_dir, needs_shipped_model, serving, translators  # noqa: F401 - fixtures

pytestmark = needs_shipped_model
KNOWN_WRONG = "the shipped en-de model (fifteenth general-language run, 12M parameters) mistranslates this"
KNOWN_WRONG_DE_EN = "the shipped de-en model (seventh general-language run, 12M parameters) mistranslates this"

# sentence → alternatives for each word its translation needs (any one alternative, case-insensitive)
SENTENCES = {
    "I would like to book a table for two people tonight.": [("Tisch",), ("zwei",), ("heute Abend", "heute Nacht")],
    "The quick brown fox jumps over the lazy dog.": [("Fuchs",), ("Hund",), ("braun",), ("faul", "träg")],
    "My brother works as a doctor in a hospital.": [("Bruder",), ("arbeitet",), ("Arzt",), ("Krankenhaus", "Klinik")],
}
GERMAN_SENTENCES = {  # the same sentences the other way
    "Ich möchte heute Abend einen Tisch für zwei Personen reservieren.": [("table",), ("two",), ("tonight", "this evening")],
    "Der schnelle braune Fuchs springt über den faulen Hund.": [("fox",), ("dog",), ("brown",), ("lazy",)],
    "Mein Bruder arbeitet als Arzt in einem Krankenhaus.": [("brother",), ("works",), ("doctor", "physician"), ("hospital",)],
}
PARAGRAPH = {  # three sentences about LibreOffice, in the words of a package description; a word of each
    # sentence that any translation keeps (the paragraph lost its second half when sent whole)
    "LibreOffice is a full-featured office suite that is free to use.": [("LibreOffice",), ("Office", "Büro")],
    "It includes a word processor, a spreadsheet and a presentation program.": [
        ("Tabellenkalkulation", "Tabellendokument"), ("Präsentation",)],  # Tabellendokument: LibreOffice's own word
    "Documents are saved in the OpenDocument format by default.": [("Dokument",), ("OpenDocument",), ("gespeichert",)],
}


@pytest.fixture(scope="module")
def server(models_dir, translators):  # noqa: F811
    with serving(models_dir, translators) as running:
        yield running


def translate(server, text: str, source: str = "en", target: str = "de") -> dict:
    response = httpx.post(server.url + "/v1/translate", timeout=120,
                          json={"text": text, "source": source, "target": target, "beam_size": 4})
    assert response.status_code == 200, response.text
    return response.json()["translations"][0]


def missing(translation: str, needed: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [words for words in needed if not any(w.lower() in translation.lower() for w in words)]


def known_wrong(*sentences: str, reason: str = KNOWN_WRONG) -> dict:
    return {s: pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=reason)) for s in sentences}


@pytest.mark.parametrize("sentence", list(({s: s for s in SENTENCES} | known_wrong(
    # served at beam 4: "Ich würde gerne einen Tisch für zwei Personen heute." (no evening, no booking; the
    # fourteenth run's "... heute nachdenken.")
    "I would like to book a table for two people tonight.",
    # "Die schnelle braune Nebel springt über den finsteren Hund." (no fox, no laziness; the fourteenth run's "Der
    # schnelle Braunefx springt über den verdammten Hund.")
    "The quick brown fox jumps over the lazy dog.",
    # "My brother works as a doctor in a hospital." passes since the sixth run: the fifth had "funktioniert"
    # (a machine works).
)).values()))
def test_an_ordinary_sentence_keeps_its_meaning(server, sentence):
    translation = translate(server, sentence)["text"]
    assert not missing(translation, SENTENCES[sentence]), translation


@pytest.mark.parametrize("sentence", list(({s: s for s in GERMAN_SENTENCES} | known_wrong(
    # "I want to reserv a table for two people." (no evening)
    "Ich möchte heute Abend einen Tisch für zwei Personen reservieren.",
    # "The fast brown feather jumps over the fierce dog." (no fox, no laziness)
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    # "Mein Bruder arbeitet als Arzt in einem Krankenhaus." passes since the fourth run: the third run's model
    # dropped the hospital at beam 4 ("My brother works as a doctor.").
    reason=KNOWN_WRONG_DE_EN)).values()))
def test_an_ordinary_german_sentence_keeps_its_meaning(server, sentence):
    translation = translate(server, sentence, source="de", target="en")["text"]
    assert not missing(translation, GERMAN_SENTENCES[sentence]), translation


def test_a_paragraph_comes_back_whole(server):
    text = " ".join(PARAGRAPH)
    translation = translate(server, text)
    assert translation["sentences"] == len(PARAGRAPH)  # segmented: each sentence went to the model alone
    assert not missing(translation["text"], [words for needed in PARAGRAPH.values() for words in needed]), translation["text"]
