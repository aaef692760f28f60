"""Sentence segmentation shared by the data recipe and the service (torch-free, no model code).

Built on `sentencex` (Wikimedia's rule-based segmenter, compiled in Rust, ~300 languages with per-language
abbreviation lists). It was chosen over `pysbd` on measurements made on this machine (docs in
tests/test_segmentation.py and the data card): both handle "e.g.", "z. B.", "Dr.", "3.5" and "..." alike on
English and German, but sentencex needs ~1 µs per sentence against pysbd's ~270 µs, and pysbd split inside
"such as *, ?, _" and ".dll" where sentencex did not.

Two rules are ours, on top of the library's:
- a line break always ends a sentence (paragraphs and lists keep their shape), and
- nothing is lost: `segment` returns (sentence, whitespace that followed it) pieces whose concatenation is the
  input exactly, so a caller can translate the sentences and put the text back together around them.
"""

from __future__ import annotations

import logging

import sentencex

__all__ = ["segment", "split_sentences"]

log = logging.getLogger(__name__)
# sentencex 1.0.32 slices by byte offset after a one-letter word and panics when the whitespace there is more than
# one byte ("Hello Z\u00a0. World."). Lines reach it with every non-ASCII space as an ASCII one: the same number
# of characters, so the spans found hold for the original line.
ASCII_SPACES = {code: " " for code in range(0x80, 0x3001) if chr(code).isspace()}


def _language(language: str) -> str:
    """"de-DE", "de_AT", "DE" → "de" (sentencex keys its rules by the base code)."""
    return language.replace("_", "-").split("-")[0].lower() or "en"


def _sentence_spans(line: str, language: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of one line, whitespace around it excluded."""
    spaced = line.translate(ASCII_SPACES)
    try:
        pieces = list(sentencex.segment(language, spaced))
    except BaseException as error:  # a panic inside the library arrives as pyo3's PanicException, a BaseException
        if type(error).__name__ != "PanicException":
            raise
        log.warning("sentence segmentation failed on a line of %d characters; kept it whole", len(line))
        pieces = [spaced]
    if "".join(pieces) != spaced:  # the library must only cut, never edit; if it ever did, keep the line whole
        pieces = [spaced]
    spans, offset = [], 0
    for piece in pieces:
        stripped = piece.strip()
        if stripped:
            start = offset + (len(piece) - len(piece.lstrip()))
            spans.append((start, start + len(stripped)))
        offset += len(piece)
    return spans


def segment(text: str, language: str) -> list[tuple[str, str]]:
    """Split `text` into (sentence, whitespace that followed it) pieces.

    `"".join(s + w for s, w in segment(text, lang)) == text` always holds. A line break ends a sentence; blank
    lines and indentation go into the whitespace of the sentence before them. Whitespace before the first
    sentence comes back as a piece with an empty sentence; an empty or all-whitespace text gives at most that.
    """
    code = _language(language)
    spans: list[tuple[int, int]] = []
    position = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            spans += [(position + start, position + end) for start, end in _sentence_spans(line, code)]
        position += len(line)
    if not spans:
        return [("", text)] if text else []
    pieces = [("", text[: spans[0][0]])] if spans[0][0] > 0 else []
    for (start, end), following in zip(spans, spans[1:] + [(len(text), len(text))]):
        pieces.append((text[start:end], text[end : following[0]]))
    return pieces


def split_sentences(text: str, language: str) -> list[str]:
    """The sentences of `text`, without the whitespace between them (see `segment`)."""
    return [sentence for sentence, _ in segment(text, language) if sentence]
