"""`format: "html"`: the HTML document as text to translate and markup to keep.

The document is read into a stream of text and tags, with every piece's source kept byte for byte, and
cut into *runs*: stretches of text and inline markup (a, b, i, em, strong, span, code, …) between block
tags (p, li, h1, td, br, …), comments and untranslatable parts. A run is one text for the sentence
segmenter, so inline markup never cuts a sentence in two: `Click <b>OK</b> to close.` is one sentence,
with its inline elements and void elements kept as offsets into its text. How that markup is carried
into the translation is service.api.html_markup.

Kept untranslated and byte for byte: elements with `translate="no"` or class `notranslate` (Mastodon
wraps custom emoji in `<span translate="no">`), `<code>`, `<kbd>`, `<samp>`, `<var>`, `<pre>`,
`<script>`, `<style>`, comments, the doctype, attributes, character references of untranslated text,
and whitespace between sentences. Attribute values (`title`, `alt`) are not translated.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Literal

from engine.segmentation import segment

INLINE = {"a", "abbr", "b", "bdi", "bdo", "big", "cite", "dfn", "em", "font", "i", "ins", "del", "label", "mark", "q",
          "s", "small", "span", "strike", "strong", "sub", "sup", "time", "tt", "u"}
VOID_INLINE = {"img", "wbr", "input"}  # inline and empty: carried as an atom
KEEP = {"code", "kbd", "samp", "var"}  # inline, kept untranslated (an atom)
RAW = {"script", "style", "textarea"}  # the parser hands script/style content over unparsed; a textarea is user input
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
OPAQUE_BLOCKS = {"pre", "script", "style", "svg", "math", "template"}
INCOMPLETE_REFERENCE = re.compile(r"&#?[0-9A-Za-z]*")  # what HTMLParser leaves unparsed at the end of its input


def untranslatable(tag: str, attrs: list[tuple[str, str | None]]) -> bool:
    values = dict(attrs)
    return (values.get("translate") or "").strip().lower() == "no" or "notranslate" in (values.get("class") or "").split()


# --- the document as pieces -------------------------------------------------------------------------------
@dataclass
class Text:
    chunks: list[tuple[str, str]]  # (source, decoded): plain characters, or one character reference

    @property
    def decoded(self) -> str:
        return "".join(decoded for _, decoded in self.chunks)

    def split(self, offsets: list[int]) -> list[tuple[int, int, str]]:
        """Cut at decoded offsets → (start, end, source) spans covering the text."""
        spans, start, position, source = [], 0, 0, []
        cuts = sorted(set(o for o in offsets if 0 < o < len(self.decoded)))
        for raw, decoded in self.chunks:
            if raw == decoded:
                for char in raw:
                    if cuts and position == cuts[0]:
                        spans.append((start, position, "".join(source)))
                        start, source = position, []
                        cuts.pop(0)
                    source.append(char)
                    position += 1
            else:  # a character reference: never cut inside one
                if cuts and position >= cuts[0]:
                    spans.append((start, position, "".join(source)))
                    start, source = position, []
                    while cuts and cuts[0] <= position:
                        cuts.pop(0)
                source.append(raw)
                position += len(decoded)
        spans.append((start, position, "".join(source)))
        return [span for span in spans if span[1] > span[0] or span[2]]


@dataclass
class Tag:
    source: str
    name: str
    kind: Literal["open", "close", "atom"]  # atom: a void or untranslatable inline element, whole
    text: str = ""  # an atom's text (what it says, not translated)


@dataclass
class Other:
    source: str  # block tags, comments, untranslatable blocks: a break between runs, kept as it is


Piece = Text | Tag | Other


class _Reader(HTMLParser):
    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=False)
        # The parser names a character reference but not how it was written ("&T" and "&T;" both arrive as "T"):
        # its source is read from the markup at the parser's position (line, column).
        self.markup = markup
        self.line_starts = [0] + [match.end() for match in re.finditer("\n", markup)]
        self.pieces: list[Piece] = []
        self.hidden: list[str] = []  # open untranslatable elements: their source is gathered into one piece
        self.hidden_source: list[str] = []
        self.hidden_text: list[str] = []
        self.hidden_inline = False

    # Everything inside an untranslatable element is kept as one piece.
    def _hide(self, source: str, text: str = "") -> bool:
        if not self.hidden:
            return False
        self.hidden_source.append(source)
        self.hidden_text.append(text)
        return True

    def _text(self, source: str, decoded: str) -> None:
        if self._hide(source, decoded):
            return
        if self.pieces and isinstance(self.pieces[-1], Text):
            self.pieces[-1].chunks.append((source, decoded))
        else:
            self.pieces.append(Text([(source, decoded)]))

    def handle_starttag(self, tag: str, attrs: list) -> None:
        source = self.get_starttag_text() or f"<{tag}>"
        if self.hidden:
            self.hidden_source.append(source)
            if tag not in VOID:
                self.hidden.append(tag)
            return
        inline = tag in INLINE or tag in KEEP or tag in VOID_INLINE
        if (untranslatable(tag, attrs) or tag in KEEP or tag in OPAQUE_BLOCKS or tag in RAW) and tag not in VOID:
            self.hidden, self.hidden_source, self.hidden_text, self.hidden_inline = [tag], [source], [], inline
            return
        if tag in VOID_INLINE:
            self.pieces.append(Tag(source, tag, "atom"))
        elif tag in INLINE:
            self.pieces.append(Tag(source, tag, "open"))
        else:
            self.pieces.append(Other(source))

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        source = self.get_starttag_text() or f"<{tag}/>"
        if self._hide(source):
            return
        self.pieces.append(Tag(source, tag, "atom") if tag in INLINE | VOID_INLINE | KEEP else Other(source))

    def handle_endtag(self, tag: str) -> None:
        source = f"</{tag}>"
        if self.hidden:
            self.hidden_source.append(source)
            if tag in self.hidden:  # close it and anything left open inside it
                del self.hidden[len(self.hidden) - 1 - self.hidden[::-1].index(tag):]
            if not self.hidden:
                whole = "".join(self.hidden_source)
                self.pieces.append(Tag(whole, tag, "atom", "".join(self.hidden_text)) if self.hidden_inline else Other(whole))
            return
        self.pieces.append(Tag(source, tag, "close") if tag in INLINE else Other(source))

    def handle_data(self, data: str) -> None:
        self._text(data, data)

    def handle_entityref(self, name: str) -> None:
        self._reference(f"&{name}")

    def handle_charref(self, name: str) -> None:
        self._reference(f"&#{name}")

    def _reference(self, written: str) -> None:
        """A character reference as written, with its ";" if it had one; decoded as a browser would ("&copy" is ©,
        "&T" in "AT&T" stays itself)."""
        line, column = self.getpos()
        start = self.line_starts[line - 1] + column
        source = written + ";" if self.markup.startswith(written + ";", start) else written
        self._text(source, html.unescape(source))

    def _other(self, source: str) -> None:
        if not self._hide(source):
            self.pieces.append(Other(source))

    def handle_comment(self, data: str) -> None:
        self._other(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self._other(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self._other(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:
        self._other(f"<![{data}]]>" if data.startswith("CDATA[") else f"<![{data}]>")

    def finish(self) -> list[Piece]:
        if INCOMPLETE_REFERENCE.fullmatch(self.rawdata):  # "… AT&T" at the very end: the parser would drop the "&"
            self._text(self.rawdata, self.rawdata)
            self.rawdata = ""
        self.close()
        if self.hidden:  # an untranslatable element never closed: keep what followed it as it was
            self.pieces.append(Other("".join(self.hidden_source)))
        return self.pieces


def read(markup: str) -> list[Piece]:
    reader = _Reader(markup)
    reader.feed(markup)
    return reader.finish()


# --- runs, sentences and their markup ----------------------------------------------------------------------
@dataclass
class Element:
    open: int  # index of the open tag in the run's pieces
    close: int
    start: int = 0  # decoded offsets of its content in the run's text
    end: int = 0


@dataclass
class Sentence:
    """One sentence of a run: its text, and its inline markup as offsets into that text."""

    text: str
    elements: list[tuple[int, int, str, str]] = field(default_factory=list)  # (start, end, open source, close source)
    atoms: list[tuple[int, str, str]] = field(default_factory=list)  # (offset, source, text)

    @property
    def plain(self) -> bool:
        return not self.elements and not self.atoms

    def pieces(self) -> list[tuple[str, str | None]]:
        """The fallback: (markup before, text) pieces, cut at every tag; text None after the last tag."""
        events: list[tuple[int, int, str]] = []  # (offset, order, source): closes before atoms before opens
        for start, end, open_source, close_source in self.elements:
            events += [(start, 2, open_source), (end, 0, close_source)]
        events += [(offset, 1, source) for offset, source, _ in self.atoms]
        events.sort(key=lambda e: (e[0], e[1]))
        pieces, position, markup = [], 0, []
        for offset, _, source in events:
            if offset > position:
                pieces.append(("".join(markup), self.text[position:offset]))
                markup, position = [], offset
            markup.append(source)
        pieces.append(("".join(markup), self.text[position:] if position < len(self.text) else None))
        return pieces


@dataclass
class Part:
    """What the document is rebuilt from: source kept as it was, or the translation of a sentence."""

    source: str | None = None
    sentence: Sentence | None = None


def has_letters(text: str) -> bool:
    """Worth sending to the model: numbers, punctuation, emoji and whitespace are kept as they are."""
    return any(c.isalpha() for c in text)


def pair(run: list[Piece], fixed: set[int]) -> list[Element]:
    stack: list[int] = []
    elements = []
    for i, piece in enumerate(run):
        if not isinstance(piece, Tag) or i in fixed or piece.kind == "atom":
            continue
        if piece.kind == "open":
            stack.append(i)
        elif stack and run[stack[-1]].name == piece.name:
            elements.append(Element(stack.pop(), i))
        else:
            fixed.add(i)
    fixed.update(stack)
    return elements


def split_run(run: list[Piece], language: str) -> list[Part]:
    """A run → parts: its sentences (with their inner markup) and the source around them."""
    fixed: set[int] = set()
    while True:
        elements = pair(run, fixed)
        groups, current = [], []  # sub-runs: piece indices between fixed tags
        for i in range(len(run)):
            if i in fixed:
                groups.append(current)
                groups.append([i])
                current = []
            else:
                current.append(i)
        groups.append(current)
        group_of = {i: g for g, members in enumerate(groups) for i in members}
        crossing = {i for e in elements if group_of[e.open] != group_of[e.close] for i in (e.open, e.close)}
        layouts = []
        for members in groups:
            if len(members) == 1 and members[0] in fixed:
                layouts.append(None)
                continue
            layout = lay_out(run, members, [e for e in elements if e.open in members and e.close in members], language)
            crossing |= layout[1]
            layouts.append(layout[0])
        if not crossing:
            break
        fixed |= crossing
    parts: list[Part] = []
    for members, layout in zip(groups, layouts):
        parts += [Part(source=run[members[0]].source)] if layout is None else layout
    return parts


def lay_out(run: list[Piece], members: list[int], elements: list[Element], language: str) -> tuple[list[Part], set[int]]:
    """One sub-run → (parts, tags of elements that cross a sentence boundary). Offsets are into the
    sub-run's text, the decoded text of its Text pieces."""
    offsets, text = {}, []
    position = 0
    for i in members:
        offsets[i] = position
        if isinstance(run[i], Text):
            text.append(run[i].decoded)
            position += len(run[i].decoded)
    plain = "".join(text)
    for element in elements:
        element.start, element.end = offsets[element.open], offsets[element.close]
    spans, position = [], 0  # sentences with letters: (start, end)
    for sentence, space in segment(plain, language):
        if has_letters(sentence):
            spans.append((position, position + len(sentence)))
        position += len(sentence) + len(space)
    crossing, owner = set(), {}  # piece index → sentence number (tags inside a sentence)
    for element in elements:
        content = plain[element.start:element.end]
        start = element.start + len(content) - len(content.lstrip())  # the content, whitespace trimmed
        end = element.end - (len(content) - len(content.rstrip()))
        inside = [k for k, (s, e) in enumerate(spans) if s <= start and end <= e and start < end]
        touched = [k for k, (s, e) in enumerate(spans) if start < e and s < end]
        if len(touched) > 1:
            crossing |= {element.open, element.close}
        elif inside and spans[inside[0]] != (start, end):
            owner[element.open] = owner[element.close] = inside[0]
    for i in members:
        piece = run[i]
        if isinstance(piece, Tag) and piece.kind == "atom":
            k = next((k for k, (s, e) in enumerate(spans) if s < offsets[i] < e), None)
            if k is not None:
                owner[i] = k
    if crossing:
        return [], crossing
    sentences = [Sentence(plain[s:e]) for s, e in spans]
    for element in elements:
        if element.open in owner:
            k = owner[element.open]
            s = spans[k][0]
            sentences[k].elements.append((max(element.start, s) - s, min(element.end, spans[k][1]) - s,
                                          run[element.open].source, run[element.close].source))
    for sentence in sentences:
        sentence.elements.sort(key=lambda e: (e[0], -e[1]))
    for i, k in owner.items():
        piece = run[i]
        if isinstance(piece, Tag) and piece.kind == "atom":
            sentences[k].atoms.append((offsets[i] - spans[k][0], piece.source, piece.text))
    parts: list[Part] = []
    emitted: set[int] = set()

    def sentence_at(offset: int) -> int | None:
        return next((k for k, (s, e) in enumerate(spans) if s <= offset < e), None)

    for i in members:
        piece = run[i]
        if i in owner:
            k = owner[i]
            if k not in emitted:
                emitted.add(k)
                parts.append(Part(sentence=sentences[k]))
            continue
        if isinstance(piece, Text):
            cuts = [c - offsets[i] for s, e in spans for c in (s, e)]
            for start, end, source in piece.split(cuts):
                k = sentence_at(offsets[i] + start) if end > start else None
                if k is None:
                    parts.append(Part(source=source))
                elif k not in emitted:
                    emitted.add(k)
                    parts.append(Part(sentence=sentences[k]))
        else:
            parts.append(Part(source=piece.source))
    return parts, set()


@dataclass
class HtmlDocument:
    parts: list[Part]

    @property
    def sentences(self) -> list[Sentence]:
        return [part.sentence for part in self.parts if part.sentence is not None]


def split_html(markup: str, language: str = "en") -> HtmlDocument:
    pieces = read(markup)
    parts: list[Part] = []
    run: list[Piece] = []
    for piece in pieces + [Other("")]:
        if isinstance(piece, Other):
            if run:
                parts += split_run(run, language)
                run = []
            if piece.source:
                parts.append(Part(source=piece.source))
        else:
            run.append(piece)
    return HtmlDocument(parts)
