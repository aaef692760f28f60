"""LibreTranslate-compatible routes, so its clients (libretranslatepy, deep-translator, Mastodon,
Nextcloud, Discourse, Dialect, browser extensions, mobile apps) work unchanged: `POST /translate`,
`GET /languages`, `POST /detect`, `GET /frontend/settings`, `GET /spec`. (`/translate_file`,
`/download_file` and `/suggest` are in their own modules.)

Parameters are read as LibreTranslate reads them (service.api.bodies): a JSON body, or the query string
merged with an URL-encoded or multipart form; errors are `{"error": "..."}` in LibreTranslate's words
and codes (400, 403, 429 "Slowdown: …" when overloaded, 500).
"""

from __future__ import annotations

import asyncio
import copy
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.bodies import Fields, read_fields
from service.api.deps import ServiceState, StateDep, unless_disconnected
from service.api.errors import ApiError, LibreTranslateError, LibreTranslateRoute, error_responses
from service.api.files import SUPPORTED_EXTENSIONS
from service.api.html import has_letters, split_html
from service.api.html_markup import translate_documents
from service.api.openapi import KEY_GATED
from service.api.security import presented_key
from service.api.translation import Translated, already_in, check_unicode, translate_with

router = APIRouter(tags=["libretranslate"], route_class=LibreTranslateRoute)
ERRORS = error_responses(LibreTranslateError, 400, 403, 413, 429, 500, 503)
LIBRETRANSLATE_VERSION = "1.9.6"  # the version whose API this follows

LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "fi": "Finnish", "fr": "French", "hu": "Hungarian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "nb": "Norwegian Bokmål", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
    "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


class TranslateForm(BaseModel):
    """The fields of `POST /translate` (a JSON object, or query string and form fields)."""

    model_config = ConfigDict(extra="allow")  # clients send extras (e.g. LibreTranslate's `frontend` fields)

    q: str | list[str] = Field(description="Text, or a list of texts, to translate (list items may be empty).")
    source: str = Field(description="Source language code (any case), or `auto` to detect it.", examples=["en"])
    target: str = Field(description="Target language code (any case).", examples=["de"])
    format: str | None = Field("text", description="`text` (default, also when empty) or `html`: translate the prose, keep the markup.")
    alternatives: int | str | None = Field(0, description="Number of alternative translations to return (a number, or a string of one).")
    api_key: str | None = Field(None, description="API key, when the server requires one.")


class DetectForm(BaseModel):
    model_config = ConfigDict(extra="allow")

    q: str = Field(description="Text whose language to detect.")
    api_key: str | None = None


class DetectedLanguage(BaseModel):
    confidence: float = Field(description="0–100.")
    language: str


class TranslateAnswer(BaseModel):
    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None
    detectedLanguage: DetectedLanguage | list[DetectedLanguage] | None = None


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]


class FrontendLanguage(BaseModel):
    code: str
    name: str


class FrontendLanguages(BaseModel):
    source: FrontendLanguage
    target: FrontendLanguage


class FrontendSettings(BaseModel):
    charLimit: int = Field(description="Most characters per text (-1: none).")
    frontendTimeout: int = Field(description="Milliseconds the web page waits after a keystroke before translating.")
    apiKeys: bool = Field(description="The server has API keys.")
    keyRequired: bool = Field(description="A request without a key is refused.")
    suggestions: bool = Field(description="`POST /suggest` is enabled.")
    filesTranslation: bool = Field(description="`POST /translate_file` is enabled.")
    supportedFilesFormat: list[str] = Field(description="File name extensions `/translate_file` takes.")
    language: FrontendLanguages
    alternativesLimit: int = Field(description="Most alternatives a request may ask for (TRANSLATOR_MAX_ALTERNATIVES; this "
                                               "server's addition: LibreTranslate's page always asks for 3).")


def form_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a route that parses JSON or forms itself."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        kind: {"schema": schema} for kind in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")}}}


async def libretranslate_gate(request: Request) -> None:
    """Dependency of the LibreTranslate translation routes: the key in the headers or, as LibreTranslate
    sends it, the `api_key` field."""
    key = presented_key(request)
    if key is None:
        key = (await read_fields(request)).api_key()
    request.app.state.service.gate.admit(request, key)


GATE = [Depends(libretranslate_gate)]


# --- reading the fields ---------------------------------------------------------------------------------
def texts_of(fields: Fields) -> tuple[list[str], bool]:
    """`q` → (texts, whether it was a list)."""
    q = fields.get("q")
    if q is None or q == "" or q == []:
        raise ApiError("invalid", "Invalid request: missing q parameter")
    if isinstance(q, str):
        texts, batch = [q], False
    elif isinstance(q, list) and all(isinstance(item, str) for item in q):
        texts, batch = list(q), True
    else:
        raise ApiError("invalid", "Invalid request: q parameter must be a string or a list of strings")
    if not fields.is_json:  # a form's line ends are CRLF (RFC 2046): LibreTranslate counts and translates LF
        texts = [text.replace("\r\n", "\n") for text in texts]
    return texts, batch


def check_limits(state: ServiceState, texts: list[str], batch: bool) -> None:
    settings = state.settings
    if batch and len(texts) > settings.max_texts_per_request:
        raise ApiError("invalid", f"Invalid request: request ({len(texts)}) exceeds text limit ({settings.max_texts_per_request})")
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise ApiError("invalid", f"Invalid request: request ({len(text)}) exceeds text limit ({settings.max_text_chars})")
        check_unicode(text, f"q[{i}]" if batch else "q")


def alternatives_of(fields: Fields) -> int:
    value = fields.get("alternatives")
    if value is None or value == "":
        return 0
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        return max(0, int(value))
    except (ValueError, OverflowError):
        raise ApiError("invalid", "Invalid request: alternatives parameter is not a number") from None


def format_of(fields: Fields) -> str:
    text_format = fields.text("format") or "text"
    if text_format not in ("text", "html"):
        raise ApiError("invalid", f"{text_format} format is not supported")
    return text_format


def check_language(state: ServiceState, code: str) -> None:
    if code not in state.languages:
        raise ApiError("invalid", f"{code} is not supported")


# --- translating ---------------------------------------------------------------------------------------
def sources_to(state: ServiceState, target: str) -> list[str]:
    """The languages with a model to `target`: the candidates of source detection."""
    return sorted(t.source_language for t in state.translators.values() if t.target_language == target)


def detect(state: ServiceState, text: str, candidates: list[str]) -> DetectedLanguage:
    """The most likely of `candidates` (languages with a model to the requested target)."""
    if not state.detector:
        raise ApiError("unavailable", "language detection is still loading; retry shortly")
    if not has_letters(text):  # LibreTranslate: nothing to detect in emoji, numbers or nothing
        return DetectedLanguage(language=candidates[0], confidence=0.0)
    scores = {g.language: g.confidence for g in state.detector.rank(text)}
    best = max(candidates, key=lambda code: scores.get(code, 0.0))
    return DetectedLanguage(language=best, confidence=scores.get(best, 100.0 if len(candidates) == 1 else 0.0))


def plain_text(markup: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", markup))


async def translate_one_language(state: ServiceState, texts: list[str], source: str, target: str, text_format: str,
                                 alternatives: int, keep_target_language: bool) -> list[Translated]:
    """keep_target_language: return a text the identifier is sure is in `target` unchanged (False when
    source detection already asked it, so langid runs once a text)."""
    if source == target:  # LibreTranslate's identity translation
        return [Translated.unchanged(text) for text in texts]
    translator = state.model_for(source, target)
    if translator is None:
        raise ApiError("invalid", f"{language_name(target)} ({target}) is not available as a target language from "
                                  f"{language_name(source)} ({source})")
    if text_format == "text":
        return await translate_with(state, translator, texts, alternatives=alternatives, field="q",
                                    keep_target_language=keep_target_language)
    answers: list[Translated] = [Translated.unchanged(text) for text in texts]
    todo = [i for i, text in enumerate(texts) if not (keep_target_language and already_in(state, plain_text(text), target))]
    documents = [split_html(texts[i], source) for i in todo]

    async def translate(sentences: list[str]) -> list[str]:
        return [t.text for t in await translate_with(state, translator, sentences, field="q (html)", keep_target_language=False)]

    outcome = await translate_documents(documents, translate, state.settings.html_strategy)
    for i, markup in zip(todo, outcome.html):
        answers[i] = Translated(markup, [], None, 0, 0, 1)
    return answers


async def translate_by_language(state: ServiceState, texts: list[str], sources: list[str], target: str, text_format: str,
                                alternatives: int, keep_target_language: bool) -> list[Translated]:
    """Texts of several (detected) source languages → translations in input order, one batcher call per language."""
    by_language: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        by_language.setdefault(source, []).append(i)
    groups = await asyncio.gather(*(translate_one_language(state, [texts[i] for i in indices], source, target, text_format, alternatives,
                                                           keep_target_language)
                                    for source, indices in by_language.items()))
    results: list[Translated] = [None] * len(texts)  # type: ignore[list-item]
    for indices, group in zip(by_language.values(), groups):
        for i, result in zip(indices, group):
            results[i] = result
    return results


def unique_alternatives(alternatives: list[str], best: str) -> list[str]:
    """LibreTranslate's filter_unique: no repeats, not the translation itself, not empty."""
    seen, kept = {best, ""}, []
    for alternative in alternatives:
        if alternative not in seen:
            seen.add(alternative)
            kept.append(alternative)
    return kept


@router.post("/translate", response_model=TranslateAnswer, response_model_exclude_none=True, responses=ERRORS,
             openapi_extra=form_body(TranslateForm) | KEY_GATED, dependencies=GATE, summary="Translate (LibreTranslate-compatible)")
async def translate(request: Request, state: StateDep) -> TranslateAnswer:
    fields = await read_fields(request)
    texts, batch = texts_of(fields)
    source, target = fields.language("source"), fields.language("target")
    alternatives = alternatives_of(fields)
    check_limits(state, texts, batch)
    if source != "auto":
        check_language(state, source)
    check_language(state, target)
    text_format = format_of(fields)
    detected = None
    if source == "auto":
        candidates = sources_to(state, target) or [target]
        detected = [DetectedLanguage(language=target, confidence=100.0) if already_in(state, plain_text(text), target)
                    else detect(state, text, candidates) for text in texts]
    sources = [d.language for d in detected] if detected else [source] * len(texts)
    # A detected text was already checked for being in the target language (it is then "detected" as it).
    results = await unless_disconnected(request, translate_by_language(state, texts, sources, target, text_format, alternatives,
                                                                       keep_target_language=detected is None))
    answer = TranslateAnswer(translatedText=[r.text for r in results] if batch else results[0].text)
    if alternatives:
        kept = [unique_alternatives(r.alternatives, r.text) for r in results]
        answer.alternatives = kept if batch else kept[0]
    if detected:
        answer.detectedLanguage = detected if batch else detected[0]
    return answer


@router.get("/languages", response_model=list[Language], summary="Languages and their targets (LibreTranslate-compatible)")
async def languages(state: StateDep) -> list[Language]:
    targets: dict[str, list[str]] = {}
    for translator in state.translators.values():
        targets.setdefault(translator.source_language, []).append(translator.target_language)
    return [Language(code=code, name=language_name(code), targets=sorted(targets.get(code, []))) for code in state.languages]


@router.post("/detect", response_model=list[DetectedLanguage], responses=ERRORS, openapi_extra=form_body(DetectForm) | KEY_GATED,
             dependencies=GATE, summary="Detect the language of a text (LibreTranslate-compatible)")
async def detect_language(request: Request, state: StateDep) -> list[DetectedLanguage]:
    fields = await read_fields(request)
    q = fields.get("q")
    if q is None or q == "" or q == []:
        raise ApiError("invalid", "Invalid request: missing q parameter")
    text = q if isinstance(q, str) else " ".join(q) if isinstance(q, list) and all(isinstance(i, str) for i in q) else None
    if text is None:
        raise ApiError("invalid", "Invalid request: q parameter must be a string or a list of strings")
    if len(text) > state.settings.max_text_chars:
        raise ApiError("invalid", f"Invalid request: request ({len(text)}) exceeds text limit ({state.settings.max_text_chars})")
    check_unicode(text, "q")
    if not state.detector:
        raise ApiError("unavailable", "language detection is still loading; retry shortly")
    return [DetectedLanguage(language=g.language, confidence=g.confidence) for g in state.detector.rank(text)]


def frontend_languages(state: ServiceState) -> FrontendLanguages:
    settings = state.settings
    source = settings.frontend_language_source.lower()
    if source != "auto" and source not in state.source_languages:
        source = state.source_languages[0] if state.source_languages else "auto"
    targets = sorted({t.target_language for t in state.translators.values()})
    target = settings.frontend_language_target.lower()
    if target not in targets:
        target = next((code for code in targets if code != source), targets[0] if targets else target)
    return FrontendLanguages(source=FrontendLanguage(code=source, name="Auto Detect" if source == "auto" else language_name(source)),
                             target=FrontendLanguage(code=target, name=language_name(target)))


@router.get("/frontend/settings", response_model=FrontendSettings, summary="Settings for a web page (LibreTranslate-compatible)")
async def frontend_settings(state: StateDep) -> FrontendSettings:
    settings = state.settings
    return FrontendSettings(
        charLimit=settings.max_text_chars, frontendTimeout=settings.frontend_timeout_ms, apiKeys=state.gate.keys.required,
        keyRequired=state.gate.key_required, suggestions=settings.suggestions, filesTranslation=settings.files_translation,
        supportedFilesFormat=list(SUPPORTED_EXTENSIONS) if settings.files_translation else [], language=frontend_languages(state),
        alternativesLimit=settings.max_alternatives)


LIBRETRANSLATE_PATHS = ("/translate", "/languages", "/detect", "/frontend/settings", "/translate_file", "/download_file/{name}",
                        "/suggest", "/health")


@router.get("/spec", include_in_schema=False)
async def spec(request: Request) -> JSONResponse:
    """LibreTranslate's API document (clients such as Dialect check `info.title`); the service's own
    OpenAPI document stays at /openapi.json."""
    own = request.app.openapi()
    document = copy.deepcopy({
        "openapi": own["openapi"],
        "info": {"title": "LibreTranslate", "version": LIBRETRANSLATE_VERSION,
                 "description": "LibreTranslate-compatible API of the translator service (translator "
                                f"{own['info']['version']}); the native API is documented at /openapi.json.",
                 "license": {"name": "MIT"}},
        "paths": {path: operations for path, operations in own["paths"].items() if path in LIBRETRANSLATE_PATHS},
        "components": own.get("components", {}),
    })
    return JSONResponse(document)
