"""Translating and encoding texts for any route: input checks, model choice, tokenization, the batcher,
detokenization. Raises ApiError with a message that names the offending text and the limit."""

from __future__ import annotations

from dataclasses import dataclass

from service.api.deps import ServiceState
from service.api.errors import ApiError
from service.batcher import Embedding
from engine.translator import Translator


@dataclass
class Translated:
    text: str
    alternatives: list[str]
    score: float | None  # normalised log-probability of the best hypothesis
    source_tokens: int  # including EOS
    target_tokens: int  # best hypothesis, without EOS


@dataclass
class Encoded:
    embedding: Embedding
    token_ids: list[int]


def check_texts(texts: list[str], state: ServiceState, field: str = "text") -> None:
    settings = state.settings
    if not texts:
        raise ApiError("invalid", f"{field} is an empty list; send at least one text")
    if len(texts) > settings.max_texts_per_request:
        raise ApiError("invalid", f"{field} has {len(texts)} texts; at most {settings.max_texts_per_request} per request")
    for i, text in enumerate(texts):
        where = f"{field}[{i}]" if len(texts) > 1 else field
        if not text.strip():
            raise ApiError("invalid", f"{where} is empty")
        if len(text) > settings.max_text_chars:
            raise ApiError("invalid", f"{where} has {len(text)} characters; the limit is {settings.max_text_chars}")
        try:  # JSON may spell a lone UTF-16 surrogate ("\ud800"): a string no UTF-8 tokenizer can take
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ApiError("invalid", f"{where} is not valid Unicode: a lone surrogate "
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
            where = f"{field}[{i}]" if len(texts) > 1 else field
            raise ApiError("invalid", f"{where} is {len(row) - 1} tokens long; model {translator.name} takes at most "
                                      f"{translator.max_source_tokens - 1} (split it into sentences)")
    return ids


def search_limits(state: ServiceState, beam_size: int | None, alternatives: int, max_length: int | None) -> tuple[int, int, int]:
    """→ (beam size, n-best, max output tokens) within the configured limits."""
    s = state.settings
    if alternatives > s.max_alternatives:
        raise ApiError("invalid", f"alternatives is {alternatives}; at most {s.max_alternatives}")
    beam = beam_size or s.default_beam_size
    if beam > s.max_beam_size:
        raise ApiError("invalid", f"beam_size is {beam}; at most {s.max_beam_size}")
    if max_length is not None and max_length > s.max_output_tokens:
        raise ApiError("invalid", f"max_length is {max_length}; at most {s.max_output_tokens}")
    # Alternatives are the beam's runners-up: the beam must hold them.
    return max(beam, alternatives + 1), alternatives + 1, max_length or s.max_output_tokens


async def translate_texts(state: ServiceState, texts: list[str], source: str, target: str, *,
                          beam_size: int | None = None, alternatives: int = 0, max_length: int | None = None,
                          field: str = "text") -> tuple[Translator, list[Translated]]:
    """Texts → translations in input order. The texts' sentences join batches with other requests'."""
    check_texts(texts, state, field)
    translator = model_for(state, source, target)
    beam, n_best, limit = search_limits(state, beam_size, alternatives, max_length)
    sources = tokenize_checked(translator, texts, field)
    options = translator.search_options(beam_size=beam, n_best=n_best, max_length=limit,
                                        max_length_ratio=state.settings.max_length_ratio)
    results = await state.batcher.translate(translator.name, sources, options)
    hypotheses = [h.tokens for r in results for h in r.hypotheses]
    texts_out = iter(translator.detokenize(hypotheses))
    translated = []
    for ids, result in zip(sources, results):
        outputs = [next(texts_out) for _ in result.hypotheses]
        best = result.hypotheses[0] if result.hypotheses else None
        translated.append(Translated(
            text=outputs[0] if outputs else "", alternatives=outputs[1:], score=best.score if best else None,
            source_tokens=len(ids), target_tokens=len(best.tokens) if best else 0,
        ))
    return translator, translated


async def encode_texts(state: ServiceState, texts: list[str], source: str) -> tuple[Translator, list[Encoded]]:
    check_texts(texts, state)
    translator = encoder_for(state, source)
    sources = tokenize_checked(translator, texts, "text")
    embeddings = await state.batcher.encode(translator.name, sources)
    return translator, [Encoded(e, ids) for e, ids in zip(embeddings, sources)]
