"""`format: "html"`: carrying a sentence's inline markup (service.api.html) into its translation, by one
of two strategies:

- `align` (the default, chosen by measurement, see README "HTML"): the sentence is translated without
  its markup (the model never saw tags in training), each inline element's text is translated on its
  own, and the element is put around the place in the translation where that text's translation (or
  the text itself: names, UI labels, numbers) occurs; void and untranslatable inline elements are put
  at the same relative position, at a word boundary.
- `placeholders`: the inline elements are replaced by numbered markers (`[1]…[/1]`) that the model
  is expected to copy, and the markers in the output become the tags again.

When a strategy cannot place every element (a translation the text's translation does not occur in, a
marker lost or doubled), that sentence falls back to translating the text between its tags piece by
piece with every tag kept in place: never a lost or broken tag.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

from service.api.html import HtmlDocument, Sentence, has_letters

Strategy = Literal["align", "placeholders"]
Translate = Callable[[list[str]], Awaitable[list[str]]]  # texts → translations, in order
MARKER = re.compile(r"\[(/?)(\d+)\]")


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def collapse(text: str) -> str:
    """What the model reads: HTML's whitespace is one space however it is written."""
    return re.sub(r"\s+", " ", text).strip()


def with_placeholders(sentence: Sentence) -> str:
    events = []
    for n, (start, end, _, _) in enumerate(sentence.elements, 1):
        events += [(start, 2, f"[{n}]"), (end, 0, f"[/{n}]")]
    events += [(offset, 1, f"[{n}]") for n, (offset, _, _) in enumerate(sentence.atoms, len(sentence.elements) + 1)]
    out, position = [], 0
    for offset, _, marker in sorted(events, key=lambda e: (e[0], e[1])):
        out.append(sentence.text[position:offset])
        out.append(marker)
        position = offset
    out.append(sentence.text[position:])
    return "".join(out)


def from_placeholders(sentence: Sentence, translation: str) -> str | None:
    """The translation with its markers turned back into the tags; None unless every marker came back
    exactly once and the elements nest as they did."""
    count = len(sentence.elements)
    expected = {f"[{n}]" for n in range(1, count + len(sentence.atoms) + 1)} | {f"[/{n}]" for n in range(1, count + 1)}
    found = [m.group() for m in MARKER.finditer(translation)]
    if sorted(found) != sorted(expected):
        return None
    out, position, stack = [], 0, []
    for match in MARKER.finditer(translation):
        out.append(escape(translation[position:match.start()]))
        position = match.end()
        n = int(match.group(2))
        if n > count:  # an atom
            out.append(sentence.atoms[n - count - 1][1])
        elif match.group(1):
            if not stack or stack.pop() != n:
                return None
            out.append(sentence.elements[n - 1][3])
        else:
            stack.append(n)
            out.append(sentence.elements[n - 1][2])
    out.append(escape(translation[position:]))
    return "".join(out)


WORD = re.compile(r"\w+", re.UNICODE)


def trigrams(text: str) -> set[str]:
    text = f"  {text.casefold()} "
    return {text[i:i + 3] for i in range(len(text) - 2)}


def locate(translation: str, wanted: list[str], within: tuple[int, int]) -> tuple[int, int] | None:
    """Where in `translation[within]` one of `wanted` occurs (first exact, case-insensitive, at word
    boundaries), else the span of words most like the first of them (character trigrams, Dice ≥ 0.5)."""
    low, high = within
    folded = translation.casefold()
    for text in wanted:
        text = text.strip()
        if not text:
            continue
        for match in re.finditer(re.escape(text.casefold()), folded[low:high]):
            start, end = low + match.start(), low + match.end()
            before_ok = start == 0 or not (translation[start - 1].isalnum() and text[0].isalnum())
            after_ok = end == len(translation) or not (translation[end].isalnum() and text[-1].isalnum())
            if before_ok and after_ok:
                return start, end
    target = next((t.strip() for t in wanted if t.strip()), "")
    if not target:
        return None
    words = [m for m in WORD.finditer(translation) if m.start() >= low and m.end() <= high]
    best, best_score, grams = None, 0.0, trigrams(target)
    size = len(WORD.findall(target)) or 1
    for i in range(len(words)):
        for j in range(i, min(len(words), i + size + 2)):
            start, end = words[i].start(), words[j].end()
            other = trigrams(translation[start:end])
            score = 2 * len(grams & other) / (len(grams) + len(other))
            if score > best_score:
                best, best_score = (start, end), score
    return best if best_score >= 0.5 else None


def aligned(sentence: Sentence, translation: str, spans: dict[str, str]) -> str | None:
    """The translation of the plain sentence with each inline element put around the place where its
    text's translation occurs; None when an element cannot be placed or two would overlap."""
    placed: list[tuple[int, int, int]] = []  # (start, end, element number)
    order = sorted(range(len(sentence.elements)), key=lambda n: (sentence.elements[n][0], -sentence.elements[n][1]))
    for n in order:
        start, end, _, _ = sentence.elements[n]
        source = sentence.text[start:end]
        # inside the element that contains this one in the source, if any
        parent = next((p for p in reversed(placed) if sentence.elements[p[2]][0] <= start and end <= sentence.elements[p[2]][1]), None)
        within = (parent[0], parent[1]) if parent else (0, len(translation))
        if not has_letters(source) and not source.strip():
            return None
        where = locate(translation, [spans.get(collapse(source), ""), collapse(source)], within)
        if where is None:
            return None
        for other in placed:  # siblings must not overlap; a parent must contain
            if other is parent:
                continue
            if where[0] < other[1] and other[0] < where[1] and not (other[0] <= where[0] and where[1] <= other[1]):
                return None
        placed.append((where[0], where[1], n))
    events = []  # (offset, order, source)
    for start, end, n in placed:
        events += [(start, 2, -(end - start), sentence.elements[n][2]), (end, 0, end - start, sentence.elements[n][3])]
    for offset, source, _ in sentence.atoms:  # at the same relative place, after a word
        before = offset > 0 and sentence.text[offset - 1].isspace()
        after = offset < len(sentence.text) and sentence.text[offset].isspace()
        wanted = round(offset / max(len(sentence.text), 1) * len(translation)) if offset else 0
        ends = [0] + [m.end() for m in re.finditer(r"\S+", translation)]
        at = min(ends, key=lambda b: abs(b - wanted))
        events.append((at, 1, 0, (" " if before and at else "") + source + (" " if after and not at else "")))
    out, position = [], 0
    for offset, _, _, source in sorted(events, key=lambda e: (e[0], e[1], e[2])):
        out.append(escape(translation[position:offset]))
        out.append(source)
        position = offset
    out.append(escape(translation[position:]))
    return "".join(out)


@dataclass
class Outcome:
    html: list[str]  # the translated documents
    sentences: int = 0  # sentences with inline markup
    carried: int = 0  # … whose markup the strategy carried (the rest fell back to piece by piece)


async def translate_documents(documents: list[HtmlDocument], translate: Translate, strategy: Strategy = "align") -> Outcome:
    """Translate the sentences of every document (one call for all, then one for the markup's needs)."""
    sentences = [s for document in documents for s in document.sentences]
    marked = [s for s in sentences if not s.plain]
    first = [collapse(with_placeholders(s) if strategy == "placeholders" and not s.plain else s.text) for s in sentences]
    if strategy == "align":  # the elements' own texts, and every fallback piece, in the same call
        extra = sorted({collapse(s.text[a:b]) for s in marked for a, b, _, _ in s.elements if s.text[a:b].strip()}
                       | {collapse(text) for s in marked for _, text in s.pieces() if text and has_letters(text)})
    else:
        extra = []
    answers = await translate(first + extra) if first + extra else []
    translation = dict(zip(sentences_ids := [id(s) for s in sentences], answers[:len(sentences)]))
    spans = dict(zip(extra, answers[len(sentences):]))
    rendered: dict[int, str] = {}
    failed = []
    for s in sentences:
        if s.plain:
            rendered[id(s)] = escape(translation[id(s)])
            continue
        result = (from_placeholders(s, translation[id(s)]) if strategy == "placeholders"
                  else aligned(s, translation[id(s)], spans))
        if result is None:
            failed.append(s)
        else:
            rendered[id(s)] = result
    if failed:
        needed = sorted({collapse(text) for s in failed for _, text in s.pieces() if text and has_letters(text)} - set(spans))
        if needed:
            spans.update(zip(needed, await translate(needed)))
        for s in failed:
            out = []
            for markup, text in s.pieces():
                out.append(markup)
                if text:
                    stripped = text.strip()
                    translated = spans.get(collapse(text), stripped) if has_letters(text) else stripped
                    out.append(escape(text[: len(text) - len(text.lstrip())] + translated + text[len(text.rstrip()):]))
            rendered[id(s)] = "".join(out)
    del sentences_ids
    out_documents = ["".join(part.source if part.sentence is None else rendered[id(part.sentence)] for part in document.parts)
                     for document in documents]
    return Outcome(out_documents, len(marked), len(marked) - len(failed))
