"""`format: "html"`: translate the text between tags, keep the markup as it was.

Each text node with letters in it is translated on its own (tags, comments, doctype, character
references and the contents of <script>/<style> pass through unchanged, and a node's leading and
trailing whitespace is kept). Inline markup therefore splits a sentence: `Click <b>OK</b> now`
is translated as three pieces, which keeps every tag in place at the cost of some fluency.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from html.parser import HTMLParser

RAW_TEXT_TAGS = {"script", "style"}  # the parser hands their content over unparsed: pass it through as is
KEEP_TAGS = {"code", "pre", "kbd", "samp", "var"}  # parsed, but not prose: keep untranslated


@dataclass
class HtmlDocument:
    """The document cut into verbatim pieces and translatable texts: pieces[i] is markup, or None
    where the next translatable text goes."""

    pieces: list[str | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    margins: list[tuple[str, str]] = field(default_factory=list)  # whitespace around each text

    def render(self, translations: list[str]) -> str:
        out, texts = [], iter(zip(translations, self.margins))
        for piece in self.pieces:
            if piece is None:
                translation, (before, after) = next(texts)
                out.append(before + html.escape(translation, quote=False) + after)
            else:
                out.append(piece)
        return "".join(out)


class _Splitter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.document = HtmlDocument()
        self.depth = {tag: 0 for tag in RAW_TEXT_TAGS | KEEP_TAGS}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.document.pieces.append(self.get_starttag_text() or f"<{tag}>")
        if tag in self.depth:
            self.depth[tag] += 1

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.document.pieces.append(self.get_starttag_text() or f"<{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        self.document.pieces.append(f"</{tag}>")
        if self.depth.get(tag):
            self.depth[tag] -= 1

    def handle_data(self, data: str) -> None:
        stripped = data.strip()
        if any(self.depth[tag] for tag in RAW_TEXT_TAGS):
            self.document.pieces.append(data)
            return
        if any(self.depth[tag] for tag in KEEP_TAGS) or not any(c.isalpha() for c in stripped):
            self.document.pieces.append(html.escape(data, quote=False))  # code, numbers, punctuation
            return
        start = data.index(stripped[0])
        self.document.pieces.append(None)
        self.document.texts.append(stripped)
        self.document.margins.append((data[:start], data[start + len(stripped):]))

    def handle_comment(self, data: str) -> None:
        self.document.pieces.append(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self.document.pieces.append(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self.document.pieces.append(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:
        self.document.pieces.append(f"<![{data}]>")


def split_html(markup: str) -> HtmlDocument:
    splitter = _Splitter()
    splitter.feed(markup)
    splitter.close()
    return splitter.document
