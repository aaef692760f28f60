"""`format: "html"`: which text is translated and how the markup survives."""

from service.api.html import split_html

DOCUMENT = ('<!DOCTYPE html><p class="a" title="Keep me">Open the <b>file</b> &amp; save.</p>\n'
            '<script>if (a < b) { x("<p>"); }</script><style>p { color: red }</style>'
            '<pre>ls -l &lt;dir&gt;</pre><br/> 42 <!-- a comment --><p>  Close it.  </p>')


def test_only_prose_text_nodes_are_translated():
    document = split_html(DOCUMENT)
    assert document.texts == ["Open the", "file", "& save.", "Close it."]


def test_markup_survives_and_translations_are_escaped():
    document = split_html(DOCUMENT)
    rendered = document.render(["Öffnen Sie die", "Datei", "& <speichern>.", "Schließen."])
    assert rendered == ('<!DOCTYPE html><p class="a" title="Keep me">Öffnen Sie die <b>Datei</b> &amp; &lt;speichern&gt;.</p>\n'
                        '<script>if (a < b) { x("<p>"); }</script><style>p { color: red }</style>'
                        '<pre>ls -l &lt;dir&gt;</pre><br/> 42 <!-- a comment --><p>  Schließen.  </p>')


def test_identity_translation_gives_back_the_document():
    document = split_html(DOCUMENT)
    assert document.render(document.texts) == DOCUMENT
