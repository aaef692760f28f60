"""Helpers shared by the readers: markup to text, and paragraph pairs to sentence pairs."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator

from lxml import etree
from lxml import html as lxml_html

from engine.segmentation import split_sentences

TAG = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>")


def markup_to_text(text: str) -> str:
    """Pango/HTML inline markup (`<b>`, `<span color=…>`, `<i>`) removed and entities unescaped, by lxml's HTML
    parser; text without a tag only has its entities unescaped."""
    if not TAG.search(text):
        return html.unescape(text)
    try:
        fragment = lxml_html.fragment_fromstring(text, create_parent="div")
    except (etree.ParserError, ValueError):
        return html.unescape(TAG.sub("", text))
    return fragment.text_content()


def sentence_pairs(en: str, de: str) -> list[tuple[str, str]]:
    """A paragraph pair split into sentence pairs when both sides have the same number (>1) of sentences
    (engine.segmentation); otherwise the paragraph pair itself."""
    en_sentences, de_sentences = split_sentences(en, "en"), split_sentences(de, "de")
    if len(en_sentences) == len(de_sentences) > 1:
        return list(zip(en_sentences, de_sentences))
    return [(en, de)]


def split_paragraphs(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    for en, de in pairs:
        yield from sentence_pairs(" ".join(en.split()), " ".join(de.split()))


def consistent(pairs: list[tuple[str, str]], min_chars: int = 20, share: float = 0.8) -> bool:
    """Whether blocks aligned by position look like translations of each other: of the pairs whose sides both
    have `min_chars`+ characters, at least `share` have a German/English length ratio within 0.5–2.5 (a German
    file with one paragraph more or less shifts every pair after it and fails this)."""
    long = [(en, de) for en, de in pairs if len(en) >= min_chars and len(de) >= min_chars]
    plausible = sum(0.5 <= len(de) / len(en) <= 2.5 for en, de in long)
    return len(long) < 3 or plausible >= share * len(long)
