"""`POST /translate_file` and `GET /download_file/<name>` (LibreTranslate-compatible): a file in, the
URL of its translation out (service.api.files does the formats and keeps the translations)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from engine.segmentation import segment
from engine.translator import Translator
from service.api.bodies import read_fields
from service.api.deps import ServiceState, StateDep, unless_disconnected
from service.api.errors import ApiError, BodyTooLarge, LibreTranslateError, LibreTranslateRoute, error_responses
from service.api.files import SUPPORTED_EXTENSIONS, Translate, download_name, extension_of, translate_file
from service.api.openapi import KEY_GATED
from service.api.routes.libretranslate import GATE, check_language, detect, sources_to
from service.api.translation import TooManySentences, already_in, sentence_limit, translate_with

router = APIRouter(tags=["libretranslate"], route_class=LibreTranslateRoute)
GROUP_CHARS = 3000  # texts of a file go to the batcher in groups of about this many characters, one group at a time
DISABLED = "Files translation are disabled on this server."  # sic: LibreTranslate's words


class TranslatedFile(BaseModel):
    translatedFileUrl: str = Field(description="Where to download the translation (GET; kept for a limited time).")


UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "source", "target"], "properties": {
        "file": {"type": "string", "format": "binary", "description": f"The file: {', '.join(SUPPORTED_EXTENSIONS)}."},
        "source": {"type": "string", "description": "Source language code, or `auto`."},
        "target": {"type": "string", "description": "Target language code."},
        "api_key": {"type": "string"}}}}}}}


def file_translator(state: ServiceState, source: str, target: str) -> Translate:
    """A translate function for a whole file's texts: in groups (each a batcher request, so other clients'
    requests are served in between), and, for source `auto`, the language detected from the first texts."""
    chosen: list[str] = []  # the source language, once known

    async def translate(texts: list[str]) -> list[str]:
        if not chosen:
            language = source
            if source == "auto":  # a file already in the target language comes back as it is, as /translate does
                sample = " ".join(texts)[:5000]
                language = target if already_in(state, sample, target) else detect(
                    state, sample, sources_to(state, target) or [target]).language
            chosen.append(language)
        if chosen[0] == target:
            return list(texts)
        translator = state.model_for(chosen[0], target)
        if translator is None:
            raise ApiError("invalid", f"{target} is not available as a target language from {chosen[0]}")
        out: list[str] = [""] * len(texts)
        groups, current, size = [], [], 0
        for i, text in enumerate(texts):
            if current and (size + len(text) > GROUP_CHARS or len(current) >= state.settings.max_texts_per_request):
                groups.append(current)
                current, size = [], 0
            current.append(i)
            size += len(text)
        groups.append(current)
        while groups:
            group = groups.pop(0)
            try:
                results = await translate_with(state, translator, [texts[i] for i in group], field="file", keep_target_language=False)
            except TooManySentences:
                if len(group) == 1:  # one text (a line, a paragraph) of more sentences than a request may have
                    out[group[0]] = await translate_in_parts(texts[group[0]], translator)
                    continue
                half = len(group) // 2
                groups[:0] = [group[:half], group[half:]]
                continue
            for i, result in zip(group, results):
                out[i] = result.text
        return out

    async def translate_in_parts(text: str, translator: Translator) -> str:
        """One text in consecutive parts of at most half a request's sentences, joined back as it was spaced."""
        pieces = segment(text, translator.source_language)
        most = max(1, sentence_limit(state) // 2)  # half: a long sentence may still be cut into clauses
        parts = ["".join(sentence + space for sentence, space in pieces[i:i + most]) for i in range(0, len(pieces), most)]
        translated = []
        for part in parts:
            (result,) = await translate_with(state, translator, [part], field="file", keep_target_language=False)
            translated.append(result.text)
        return "".join(translated)

    return translate


@router.post("/translate_file", response_model=TranslatedFile, dependencies=GATE, openapi_extra=UPLOAD | KEY_GATED,
             responses=error_responses(LibreTranslateError, 400, 403, 413, 429, 500, 503),
             summary="Translate a file (LibreTranslate-compatible): .txt, .html, .docx, .odt")
async def translate_file_route(request: Request, state: StateDep) -> TranslatedFile:
    if not state.settings.files_translation or state.files is None:
        raise ApiError("forbidden", DISABLED)
    fields = await read_fields(request)
    upload = fields.files.get("file")
    if upload is None:
        raise ApiError("invalid", "Invalid request: missing file parameter")
    source, target = fields.language("source"), fields.language("target")
    filename = upload.filename or ""
    if not filename:
        raise ApiError("invalid", "Invalid request: empty file")
    if extension_of(filename) not in SUPPORTED_EXTENSIONS:
        raise ApiError("invalid", "Invalid request: file format not supported")
    if source != "auto":
        check_language(state, source)
    check_language(state, target)
    data = await upload.read()
    if len(data) > state.settings.max_file_bytes:  # the body's limit also admits TRANSLATOR_MAX_BODY_BYTES, if larger
        raise BodyTooLarge()
    translate = file_translator(state, source, target)
    if source == "auto":  # sentence rules of the likeliest source; translate detects the language itself from the text
        source = next(iter(sources_to(state, target)), target)
    translated = await unless_disconnected(request, translate_file(data, filename, translate, state.settings, source))
    name = await asyncio.to_thread(state.files.save, translated, filename)  # disk work off the event loop
    return TranslatedFile(translatedFileUrl=str(request.url_for("download_file", name=name)))


@router.get("/download_file/{name}", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "The translated file."},
    **error_responses(LibreTranslateError, 400, 404)}, summary="Download a translated file (LibreTranslate-compatible)")
async def download_file(name: str, state: StateDep) -> Response:
    if not state.settings.files_translation or state.files is None:
        raise ApiError("invalid", DISABLED)
    # Read whole here, not streamed by FileResponse: a file that expires after a check but before the
    # response opens it would fail after the 200 was sent. Stored files are bounded by TRANSLATOR_FILES_MAX_TOTAL_BYTES.
    data = await asyncio.to_thread(state.files.read, name)
    if data is None:
        raise ApiError("not_found", "File not found (unknown, or expired)")
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{download_name(name)}"'})
