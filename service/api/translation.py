"""Translating and encoding texts for any route: input checks, model choice, sentence segmentation,
tokenization, the batcher, detokenization. Raises ApiError with a message that names the offending
text and the limit.

A text is cut into sentences (engine.segmentation: a line break always ends one) and each sentence is
translated on its own: the sentences of every text of a request go to the batcher together, where they
share batches with other requests' sentences, and the translation is put back together with the
original whitespace, so line breaks and paragraphs survive and a text of any length up to
TRANSLATOR_MAX_TEXT_CHARS is translated whole. The model's token limit applies per sentence; a
sentence over it is cut at clause boundaries (`,` `;` `:` and dashes followed by a space), and only a
clause still over it is a 400. Pieces without a letter (numbers, punctuation, emoji, whitespace) are
kept as they are, and a text that the language identifier is sure is already in the target language
comes back unchanged.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from engine.search import SearchOptions, SearchResult
from engine.segmentation import segment
from engine.translator import Translator
from service.api.deps import ServiceState
from service.api.errors import ApiError
from service.api.html import has_letters
from service.batcher import Embedding, Submission

CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+(?=[–—-]\s)")  # where a sentence over the token limit may be cut
# Skipping a text as "already in the target language" only when the identifier is sure: measured on the
# 6,926 held-out sentences of data/en-de (test + valid), no English sentence passes these bounds as German
# nor a German one as English, and 93-97% of texts really in the target language do.
SAME_LANGUAGE_MIN_LETTERS = 20
SAME_LANGUAGE_MIN_WORDS = 3
SAME_LANGUAGE_CONFIDENCE = 99.0
SAME_LANGUAGE_SAMPLE = 1000  # characters read by the identifier


class TooManySentences(ApiError):
    """A request's texts have more sentences than one request may send to the batcher."""


@dataclass
class Translated:
    text: str
    alternatives: list[str]
    score: float | None  # normalised log-probability of the best hypothesis (token-weighted over sentences)
    source_tokens: int  # including EOS, summed over the text's sentences
    target_tokens: int  # best hypotheses, without EOS
    sentences: int = 0  # sentences (or clauses) the model translated; 0: the text came back unchanged

    @classmethod
    def unchanged(cls, text: str) -> "Translated":
        return cls(text, [], None, 0, 0, 0)


@dataclass
class Encoded:
    embedding: Embedding
    token_ids: list[int]


def where(field: str, index: int, count: int) -> str:
    return f"{field}[{index}]" if count > 1 else field


def check_texts(texts: list[str], state: ServiceState, field: str = "text", allow_empty: bool = False) -> None:
    settings = state.settings
    if not texts:
        raise ApiError("invalid", f"{field} is an empty list; send at least one text")
    if len(texts) > settings.max_texts_per_request:
        raise ApiError("invalid", f"{field} has {len(texts)} texts; at most {settings.max_texts_per_request} per request")
    for i, text in enumerate(texts):
        if not allow_empty and not text.strip():
            raise ApiError("invalid", f"{where(field, i, len(texts))} is empty")
        if len(text) > settings.max_text_chars:
            raise ApiError("invalid", f"{where(field, i, len(texts))} has {len(text)} characters; the limit is {settings.max_text_chars}")
        check_unicode(text, where(field, i, len(texts)))


def check_unicode(text: str, name: str) -> None:
    try:  # JSON may spell a lone UTF-16 surrogate ("\ud800"): a string no UTF-8 tokenizer can take
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ApiError("invalid", f"{name} is not valid Unicode: a lone surrogate "
                                  f"(U+{ord(text[error.start]):04X}) at character {error.start}") from None


def model_for(state: ServiceState, source: str, target: str) -> Translator:
    translator = state.model_for(source, target)
    if translator is None:
        raise ApiError("invalid", f"no model translates {source!r} to {target!r}; served pairs: {', '.join(state.pairs())}")
    return translator


def encoder_for(state: ServiceState, source: str) -> Translator:
    for name in state.pairs():
        if state.translators[name].source_language == source:
            return state.translators[name]
    raise ApiError("invalid", f"no model reads {source!r}; served source languages: {', '.join(state.source_languages)}")


def tokenize_checked(translator: Translator, texts: list[str], field: str) -> list[list[int]]:
    ids = translator.tokenize(texts)
    for i, row in enumerate(ids):
        if len(row) > translator.max_source_tokens:
            raise ApiError("invalid", f"{where(field, i, len(texts))} is {len(row) - 1} tokens long; model {translator.name} takes at most "
                                      f"{translator.max_source_tokens - 1} (split it into sentences)")
    return ids


def search_limits(state: ServiceState, beam_size: int | None, alternatives: int, max_length: int | None) -> tuple[int, int, int]:
    """→ (beam size, n-best, max output tokens) within the configured limits."""
    s = state.settings
    if alternatives > s.max_alternatives:
        raise ApiError("invalid", f"alternatives is {alternatives}; at most {s.max_alternatives}",
                       libretranslate=f"Invalid request: alternatives parameter must be <= {s.max_alternatives}")
    beam = beam_size or s.default_beam_size
    if beam > s.max_beam_size:
        raise ApiError("invalid", f"beam_size is {beam}; at most {s.max_beam_size}")
    if max_length is not None and max_length > s.max_output_tokens:
        raise ApiError("invalid", f"max_length is {max_length}; at most {s.max_output_tokens}")
    # Alternatives are the beam's runners-up: the beam must hold them.
    return max(beam, alternatives + 1), alternatives + 1, max_length or s.max_output_tokens


def already_in(state: ServiceState, text: str, language: str) -> bool:
    """The language identifier is sure that `text` is in `language` (see the SAME_LANGUAGE_* bounds)."""
    identifier = state.identifier
    if identifier is None or language not in identifier.languages or len(identifier.languages) < 2:
        return False
    if sum(c.isalpha() for c in text) < SAME_LANGUAGE_MIN_LETTERS or len(text.split()) < SAME_LANGUAGE_MIN_WORDS:
        return False
    best = identifier.detect(text[:SAME_LANGUAGE_SAMPLE])  # ~60 µs a sentence on the event loop; 1,000 characters suffice
    return best is not None and best.language == language and best.confidence >= SAME_LANGUAGE_CONFIDENCE


class Sentences:
    """The sentences of a request, as token ids and as text, in order (a repeated sentence is sent again: the queue
    counts what a request asks for). The text puts back what the vocabulary lacks (Translator.detokenize)."""

    def __init__(self, translator: Translator):
        self.translator = translator
        self.ids: list[list[int]] = []
        self.texts: list[str] = []

    def add(self, ids: list[int], text: str) -> int:
        self.ids.append(ids)
        self.texts.append(text)
        return len(self.ids) - 1

    def fit(self, sentence: str, name: str) -> list[tuple[list[int], str, str]]:
        """One sentence → (token ids, text, whitespace after it) of pieces of at most the model's source tokens:
        the sentence itself, or its clauses packed greedily; a clause over the limit is a 400."""
        limit = self.translator.max_source_tokens
        (ids,) = self.translator.tokenize([sentence])
        if len(ids) <= limit:
            return [(ids, sentence, "")]
        clauses, position = [], 0
        for cut in CLAUSE_END.finditer(sentence):
            clauses.append((sentence[position:cut.start()], cut.group()))
            position = cut.end()
        clauses.append((sentence[position:], ""))
        pieces: list[tuple[str, str]] = []
        for clause, gap in clauses:
            if pieces:
                joined = pieces[-1][0] + pieces[-1][1] + clause
                if len(self.translator.tokenize([joined])[0]) <= limit:
                    pieces[-1] = (joined, gap)
                    continue
            length = len(self.translator.tokenize([clause])[0])
            if length > limit:
                raise ApiError("invalid", f"{name} has a sentence {len(ids) - 1} tokens long; model {self.translator.name} takes at most "
                                          f"{limit - 1} per sentence, and it has no clause boundary to cut it at within that")
            pieces.append((clause, gap))
        return [(self.translator.tokenize([piece])[0], piece, gap) for piece, gap in pieces]


Plan = list[str | int]  # verbatim text, or the index of a sentence to translate


def plan(text: str, sentences: Sentences, name: str) -> Plan:
    pieces: Plan = []
    for sentence, space in segment(text, sentences.translator.source_language):
        if has_letters(sentence):
            for ids, piece, gap in sentences.fit(sentence, name):
                pieces.extend((sentences.add(ids, piece), gap))
        else:
            pieces.append(sentence)
        pieces.append(space)
    return [piece for piece in pieces if piece != ""]


@dataclass
class Work:
    """A request's texts, planned: the sentences to translate, and how to put each text back together."""

    translator: Translator
    texts: list[str]
    plans: list[Plan | None]  # None: the text comes back unchanged
    sentences: Sentences
    options: SearchOptions
    n_best: int

    def owners(self) -> dict[int, int]:
        """Sentence index → the index of its text."""
        return {piece: i for i, pieces in enumerate(self.plans) for piece in pieces or () if isinstance(piece, int)}

    def assemble(self, i: int, results: Mapping[int, SearchResult] | Sequence[SearchResult]) -> Translated:
        """Text i from its sentences' results (which must all be there)."""
        pieces = self.plans[i]
        if pieces is None:
            return Translated.unchanged(self.texts[i])
        used = [piece for piece in pieces if isinstance(piece, int)]
        outputs = iter(self.translator.detokenize([h.tokens for j in used for h in results[j].hypotheses],
                                                  [self.sentences.texts[j] for j in used for _ in results[j].hypotheses]))
        hypotheses = {j: [next(outputs) for _ in results[j].hypotheses] or [""] for j in used}

        def render(rank: int) -> str:
            return "".join(piece if isinstance(piece, str) else hypotheses[piece][min(rank, len(hypotheses[piece]) - 1)]
                           for piece in pieces)

        best = [results[j].hypotheses[0] for j in used if results[j].hypotheses]
        tokens = sum(len(h.tokens) for h in best)
        score = (sum(h.score * max(len(h.tokens), 1) for h in best) / sum(max(len(h.tokens), 1) for h in best)) if best else None
        return Translated(text=render(0), alternatives=[render(rank) for rank in range(1, self.n_best)], score=score,
                          source_tokens=sum(len(self.sentences.ids[j]) for j in used), target_tokens=tokens, sentences=len(used))


def sentence_limit(state: ServiceState) -> int:
    """Most sentences one request may queue: the setting, and never more than the whole queue holds."""
    return min(state.settings.max_sentences_per_request, state.settings.queue_limit)


def planned(state: ServiceState, translator: Translator, texts: list[str], *, beam_size: int | None = None,
            alternatives: int = 0, max_length: int | None = None, field: str = "text",
            keep_target_language: bool = True) -> Work:
    """Texts (already checked against the request limits) → the work of translating them; input errors raise."""
    beam, n_best, limit = search_limits(state, beam_size, alternatives, max_length)
    sentences = Sentences(translator)
    plans: list[Plan | None] = []
    for i, text in enumerate(texts):
        skip = not has_letters(text) or (keep_target_language and already_in(state, text, translator.target_language))
        plans.append(None if skip else plan(text, sentences, where(field, i, len(texts))))
    most = sentence_limit(state)
    if len(sentences.ids) > most:
        raise TooManySentences("invalid", f"{field} has {len(sentences.ids)} sentences; at most {most} per request",
                       libretranslate=f"Invalid request: request ({len(sentences.ids)} sentences) exceeds sentence limit ({most})")
    options = translator.search_options(beam_size=beam, n_best=n_best, max_length=limit,
                                        max_length_ratio=state.settings.max_length_ratio)
    return Work(translator, texts, plans, sentences, options, n_best)


async def translate_with(state: ServiceState, translator: Translator, texts: list[str], *, beam_size: int | None = None,
                         alternatives: int = 0, max_length: int | None = None, field: str = "text",
                         keep_target_language: bool = True) -> list[Translated]:
    """Texts → translations in input order (texts already checked against the request limits)."""
    work = planned(state, translator, texts, beam_size=beam_size, alternatives=alternatives, max_length=max_length,
                   field=field, keep_target_language=keep_target_language)
    results = await state.batcher.translate(translator.name, work.sentences.ids, work.options) if work.sentences.ids else []
    return [work.assemble(i, results) for i in range(len(texts))]


async def translations_as_completed(state: ServiceState, work: Work, submission: Submission | None
                                    ) -> AsyncIterator[tuple[int, Translated]]:
    """(index, translation) of each text as soon as its last sentence is translated; texts that come back
    unchanged first. The caller closes the submission."""
    for i, pieces in enumerate(work.plans):
        if pieces is None:
            yield i, Translated.unchanged(work.texts[i])
    if submission is None:
        return
    owners, results = work.owners(), {}
    waiting = Counter(owners.values())
    async for index, result in submission.as_completed():
        results[index] = result
        text = owners[index]
        waiting[text] -= 1
        if not waiting[text]:
            yield text, work.assemble(text, results)


async def translate_texts(state: ServiceState, texts: list[str], source: str, target: str, *,
                          beam_size: int | None = None, alternatives: int = 0, max_length: int | None = None,
                          field: str = "text") -> tuple[Translator, list[Translated]]:
    """The native API's translation: texts checked (none empty), then translate_with."""
    check_texts(texts, state, field)
    translator = model_for(state, source, target)
    return translator, await translate_with(state, translator, texts, beam_size=beam_size, alternatives=alternatives,
                                            max_length=max_length, field=field)


def translation_work(state: ServiceState, texts: list[str], source: str, target: str, *, beam_size: int | None = None,
                     alternatives: int = 0, max_length: int | None = None, field: str = "text") -> Work:
    """The native API's streamed translation, planned: texts checked (none empty); input errors raise here."""
    check_texts(texts, state, field)
    return planned(state, model_for(state, source, target), texts, beam_size=beam_size, alternatives=alternatives,
                   max_length=max_length, field=field)


async def encode_texts(state: ServiceState, texts: list[str], source: str) -> tuple[Translator, list[Encoded]]:
    check_texts(texts, state)
    translator = encoder_for(state, source)
    sources = tokenize_checked(translator, texts, "text")
    embeddings = await state.batcher.encode(translator.name, sources)
    return translator, [Encoded(e, ids) for e, ids in zip(embeddings, sources)]
