"""`format: "html"`: which text is translated, how inline markup rides along, what is never touched
(unit tests with stand-in translators; tests/test_libretranslate.py sends real HTML through the model)."""

import asyncio

import pytest

from service.api.html import split_html
from service.api.html_markup import from_placeholders, locate, translate_documents, with_placeholders

DOCUMENT = ('<!DOCTYPE html><p class="a" title="Keep me">Open the <b>file</b> &amp; save.</p>\n'
            '<script>if (a < b) { x("<p>"); }</script><style>p { color: red }</style>'
            '<pre>ls -l &lt;dir&gt;</pre><br/> 42 <!-- a comment --><p>  Close it.  </p>')


def run(documents, translate, strategy="align"):
    return asyncio.run(translate_documents([split_html(d, "en") for d in documents], translate, strategy))


async def identity(texts):
    return list(texts)


async def upper(texts):
    return [t.upper() for t in texts]


def test_inline_markup_does_not_cut_a_sentence():
    sentences = split_html(DOCUMENT, "en").sentences
    assert [s.text for s in sentences] == ["Open the file & save.", "Close it."]
    assert sentences[0].elements == [(9, 13, "<b>", "</b>")]
    assert with_placeholders(sentences[0]) == "Open the [1]file[/1] & save."


@pytest.mark.parametrize("strategy", ["align", "placeholders"])
def test_identity_translation_gives_back_the_document(strategy):
    assert run([DOCUMENT], identity, strategy).html == [DOCUMENT]


@pytest.mark.parametrize("strategy", ["align", "placeholders"])
def test_markup_survives_and_translations_are_escaped(strategy):
    async def german(texts):
        table = {"Open the file & save.": "Öffnen Sie die Datei & <speichern>.", "file": "Datei",
                 "Open the [1]file[/1] & save.": "Öffnen Sie die [1]Datei[/1] & <speichern>.", "Close it.": "Schließen."}
        return [table.get(t, t) for t in texts]

    (out,) = run([DOCUMENT], german, strategy).html
    assert out == ('<!DOCTYPE html><p class="a" title="Keep me">Öffnen Sie die <b>Datei</b> &amp; &lt;speichern&gt;.</p>\n'
                   '<script>if (a < b) { x("<p>"); }</script><style>p { color: red }</style>'
                   '<pre>ls -l &lt;dir&gt;</pre><br/> 42 <!-- a comment --><p>  Schließen.  </p>')


def test_untranslatable_elements_are_kept_byte_for_byte():
    document = ('<p>Great post <span translate="no">:blobcat:</span> thanks.</p>'
                '<div class="notranslate"><p>Keep <b>this</b> &amp; that.</p></div><p>Run <code>ls -l</code> now.</p>')
    (out,) = run([document], upper).html
    assert '<span translate="no">:blobcat:</span>' in out and "GREAT POST" in out and "THANKS." in out
    assert '<div class="notranslate"><p>Keep <b>this</b> &amp; that.</p></div>' in out
    assert "<code>ls -l</code>" in out and "RUN" in out and "NOW." in out


def test_an_element_across_sentences_is_kept_and_its_sentences_are_cut_at_its_tags():
    document = "<p>And <b>a bold start. And end</b> here.</p>"
    texts = [s.text for s in split_html(document, "en").sentences]
    assert texts == ["And", "a bold start.", "And end", "here."]
    assert run([document], upper).html == ["<p>AND <b>A BOLD START. AND END</b> HERE.</p>"]


def test_an_element_wrapping_sentences_stays_outside_them():
    document = '<p><span class="avis">Shows commands. Inserts a <a href="y">new table</a>.</span></p>'
    sentences = split_html(document, "en").sentences
    assert [s.text for s in sentences] == ["Shows commands.", "Inserts a new table."]
    assert run([document], upper).html == ['<p><span class="avis">SHOWS COMMANDS. INSERTS A <a href="y">NEW TABLE</a>.</span></p>']


def test_alignment_finds_the_elements_translation_and_falls_back_when_it_cannot():
    async def german(texts):
        table = {"Click OK to close the window.": "Klicken Sie auf OK, um das Fenster zu schließen.", "OK": "OK",
                 "the window": "das Fenster", "Click": "Klicken", "to close": "zu schließen", ".": ".",
                 "Click the blue button.": "Klicken Sie auf die Schaltfläche.", "blue": "blau", "button.": "Schaltfläche."}
        return [table.get(t, t.upper()) for t in texts]

    outcome = run(['<p>Click <b>OK</b> to close <i>the window</i>.</p><p>Click the <b>blue</b> button.</p>'], german)
    assert outcome.html[0].startswith("<p>Klicken Sie auf <b>OK</b>, um <i>das Fenster</i> zu schließen.</p>")
    assert outcome.html[0].endswith("<p>CLICK THE <b>blau</b> Schaltfläche.</p>")  # its pieces: "Click the", "blue", "button."
    assert (outcome.sentences, outcome.carried) == (2, 1)  # "blau" is nowhere in the sentence: piece by piece


def test_placeholders_must_all_come_back_once_and_nested():
    sentence = split_html("<p>Open <a href='x'>the <b>big</b> file</a> now.</p>", "en").sentences[0]
    assert with_placeholders(sentence) == "Open [1]the [2]big[/2] file[/1] now."
    assert from_placeholders(sentence, "Öffnen Sie [1]die [2]große[/2] Datei[/1] jetzt.") == \
        "Öffnen Sie <a href='x'>die <b>große</b> Datei</a> jetzt."
    assert from_placeholders(sentence, "Öffnen Sie [1]die große Datei[/1] jetzt.") is None  # one lost
    assert from_placeholders(sentence, "[2]Öffnen[1] Sie die große[/2] Datei[/1].") is None  # crossed


def test_locate_is_case_insensitive_at_word_boundaries_and_fuzzy_as_a_last_resort():
    assert locate("Klicken Sie auf OK.", ["ok"], (0, 19)) == (16, 18)
    assert locate("Bookmark the bookmarks", ["bookmark"], (0, 22)) == (0, 8)
    assert locate("Öffnen Sie die Dateien.", ["Datei"], (0, 23)) == (15, 22)  # fuzzy: "Dateien"
    assert locate("Öffnen Sie das Fenster.", ["Tabelle"], (0, 23)) is None


@pytest.mark.parametrize("document, texts, translated", [
    ("AT&T is a company.", ["AT&T is a company."], "AT&amp;T IS A COMPANY."),  # a bare "&": no ";" added
    ("Ask AT&T", ["Ask AT&T"], "ASK AT&amp;T"),  # at the very end: the "&" is not lost
    ("<p>Tom&Jerry &amp; &#169;&copy</p>", ["Tom&Jerry & ©©"], "<p>TOM&amp;JERRY &amp; ©©</p>"),
])
def test_ampersands_are_read_as_a_browser_reads_them(document, texts, translated):
    assert [s.text for s in split_html(document, "en").sentences] == texts
    assert run([document], upper).html == [translated]


def test_a_cdata_section_is_kept_whole():
    document = "<svg><![CDATA[a < b]]></svg><p>Hi.</p>"
    assert run([document], upper).html == ["<svg><![CDATA[a < b]]></svg><p>HI.</p>"]
