"""LibreTranslate-compatible routes, so its clients (libretranslatepy, deep-translator, browser
extensions, mobile apps) work unchanged: `POST /translate`, `GET /languages`, `POST /detect`.

Bodies are JSON or form-encoded (both URL-encoded and multipart), as LibreTranslate accepts; errors
are `{"error": "..."}` with LibreTranslate's codes (400, 403, 429 when overloaded, 500).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.api.deps import ServiceState, StateDep, unless_disconnected
from service.api.errors import ApiError, LibreTranslateError, LibreTranslateRoute, error_responses
from service.api.html import split_html
from service.api.openapi import KEY_GATED
from service.api.security import presented_key
from service.api.translation import Translated, check_texts, translate_texts

router = APIRouter(tags=["libretranslate"], route_class=LibreTranslateRoute)
ERRORS = error_responses(LibreTranslateError, 400, 403, 413, 429, 500, 503)

LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "fi": "Finnish", "fr": "French", "hu": "Hungarian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "nb": "Norwegian Bokmål", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
    "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese",
}


class TranslateForm(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send extras (e.g. LibreTranslate's `frontend` fields)

    q: str | list[str] = Field(description="Text, or a list of texts, to translate.")
    source: str = Field(description="Source language code, or `auto` to detect it.", examples=["en"])
    target: str = Field(description="Target language code.", examples=["de"])
    format: Literal["text", "html"] = Field("text", description="`html`: translate the text between tags, keep the tags.")
    alternatives: int = Field(0, ge=0, description="Number of alternative translations to return.")
    api_key: str | None = Field(None, description="API key, when the server requires one.")


class DetectForm(BaseModel):
    model_config = ConfigDict(extra="ignore")

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


def form_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a route that parses JSON or forms itself."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        kind: {"schema": schema} for kind in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")}}}


async def read_fields(request: Request) -> tuple[dict[str, Any], bool]:
    """The body as a dict, whatever LibreTranslate encoding the client used (repeated form fields become
    lists), and whether it was JSON. Parsed once per request: the gate reads `api_key` from it first."""
    if not hasattr(request.state, "fields"):
        request.state.fields = await parse_body(request)
    return request.state.fields


async def parse_body(request: Request) -> tuple[dict[str, Any], bool]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()  # the size limit applies while reading
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            fields = json.loads(body)
        except json.JSONDecodeError as error:
            raise ApiError("invalid", f"invalid JSON at character {error.pos}: {error.msg}") from None
        if not isinstance(fields, dict):
            raise ApiError("invalid", "the JSON body must be an object")
        return fields, True
    if content_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise ApiError("invalid", "the form body is not valid URL-encoded UTF-8") from None
    elif content_type == "multipart/form-data":
        pairs = [(key, value) for key, value in (await request.form()).multi_items() if isinstance(value, str)]
    else:
        raise ApiError("invalid", f"unsupported content type {content_type or '(none)'!r}; send JSON or a form")
    fields: dict[str, Any] = {}
    for key, value in pairs:
        fields[key] = [*fields[key], value] if isinstance(fields.get(key), list) else (
            [fields[key], value] if key in fields else value)
    return fields, False


def parse(model: type[BaseModel], body: tuple[dict[str, Any], bool]) -> Any:
    """JSON values must have their declared types; form values are all strings, converted as LibreTranslate does."""
    fields, is_json = body
    try:
        return model.model_validate(fields, strict=is_json)
    except ValidationError as error:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()]
        missing = [str(e["loc"][0]) for e in error.errors() if e["type"] == "missing"]
        if missing:  # LibreTranslate's wording for the commonest mistake
            raise ApiError("invalid", f"Invalid request: missing {', '.join(missing)} parameter") from None
        raise ApiError("invalid", "Invalid request: " + "; ".join(problems)) from None


async def libretranslate_gate(request: Request) -> None:
    """Dependency of /translate and /detect: the key in the headers or, as LibreTranslate sends it, the body's `api_key`."""
    key = presented_key(request)
    if key is None:
        body_key = (await read_fields(request))[0].get("api_key")
        key = body_key if isinstance(body_key, str) and body_key else None
    request.app.state.service.gate.admit(request, key)


def detect(state: ServiceState, text: str, candidates: list[str]) -> DetectedLanguage:
    """The most likely of `candidates` (languages with a model to the requested target)."""
    if not state.detector:
        raise ApiError("unavailable", "language detection is still loading; retry shortly")
    scores = {g.language: g.confidence for g in state.detector.rank(text)}
    best = max(candidates, key=lambda code: scores.get(code, 0.0))
    return DetectedLanguage(language=best, confidence=scores.get(best, 100.0 if len(candidates) == 1 else 0.0))


async def translate_one_language(state: ServiceState, texts: list[str], source: str, form: TranslateForm) -> list[Translated]:
    if form.format == "text":
        return (await translate_texts(state, texts, source, form.target, alternatives=form.alternatives, field="q"))[1]
    documents = [split_html(text) for text in texts]  # html: translate the text nodes of every document at once
    nodes = [node for document in documents for node in document.texts]
    translated = (await translate_texts(state, nodes, source, form.target, field="q (html text nodes)"))[1] if nodes else []
    answers, position = [], 0
    for text, document in zip(texts, documents):
        pieces = [t.text for t in translated[position: position + len(document.texts)]]
        position += len(document.texts)
        answers.append(Translated(document.render(pieces), [], None, 0, 0))  # no alternatives for html
    return answers


async def translate_by_language(state: ServiceState, texts: list[str], sources: list[str],
                                form: TranslateForm) -> list[Translated]:
    """Texts of several (detected) source languages → translations in input order, one model call per language."""
    by_language: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        by_language.setdefault(source, []).append(i)
    groups = await asyncio.gather(*(translate_one_language(state, [texts[i] for i in indices], source, form)
                                    for source, indices in by_language.items()))
    results: list[Translated] = [None] * len(texts)  # type: ignore[list-item]
    for indices, group in zip(by_language.values(), groups):
        for i, result in zip(indices, group):
            results[i] = result
    return results


@router.post("/translate", response_model=TranslateAnswer, response_model_exclude_none=True, responses=ERRORS,
             openapi_extra=form_body(TranslateForm) | KEY_GATED, dependencies=[Depends(libretranslate_gate)],
             summary="Translate (LibreTranslate-compatible)")
async def translate(request: Request, state: StateDep) -> TranslateAnswer:
    form = parse(TranslateForm, await read_fields(request))
    texts = [form.q] if isinstance(form.q, str) else form.q
    check_texts(texts, state, "q")
    detected = None
    if form.source == "auto":
        candidates = sorted(t.source_language for t in state.translators.values() if t.target_language == form.target)
        if not candidates:
            raise ApiError("invalid", f"no model translates into {form.target!r}; served pairs: {', '.join(state.pairs())}")
        detected = [detect(state, text, candidates) for text in texts]
    results = await unless_disconnected(request, translate_by_language(
        state, texts, [d.language for d in detected] if detected else [form.source] * len(texts), form))
    single = isinstance(form.q, str)
    answer = TranslateAnswer(translatedText=results[0].text if single else [r.text for r in results])
    if form.alternatives:
        answer.alternatives = results[0].alternatives if single else [r.alternatives for r in results]
    if detected:
        answer.detectedLanguage = detected[0] if single else detected
    return answer


@router.get("/languages", response_model=list[Language], summary="Languages and their targets (LibreTranslate-compatible)")
async def languages(state: StateDep) -> list[Language]:
    targets: dict[str, list[str]] = {}
    for translator in state.translators.values():
        targets.setdefault(translator.source_language, []).append(translator.target_language)
    codes = sorted(set(targets) | {t.target_language for t in state.translators.values()})
    return [Language(code=code, name=LANGUAGE_NAMES.get(code, code), targets=sorted(targets.get(code, []))) for code in codes]


@router.post("/detect", response_model=list[DetectedLanguage], responses=ERRORS,
             openapi_extra=form_body(DetectForm) | KEY_GATED,
             dependencies=[Depends(libretranslate_gate)], summary="Detect the language of a text (LibreTranslate-compatible)")
async def detect_language(request: Request, state: StateDep) -> list[DetectedLanguage]:
    form = parse(DetectForm, await read_fields(request))
    check_texts([form.q], state, "q")
    if not state.detector:
        raise ApiError("unavailable", "language detection is still loading; retry shortly")
    return [DetectedLanguage(language=g.language, confidence=g.confidence) for g in state.detector.rank(form.q)]
