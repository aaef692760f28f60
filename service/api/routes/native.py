"""The native API: `POST /v1/translate` and `POST /v1/encode`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import ServiceState, StateDep, unless_disconnected
from service.api.errors import STATUS, ErrorDetail, NativeRoute, as_api_error, error_responses
from service.api.openapi import KEY_GATED
from service.api.security import api_key_gate
from service.api.translation import Translated, Work, encode_texts, translate_texts, translation_work, translations_as_completed

router = APIRouter(prefix="/v1", tags=["native"], route_class=NativeRoute, dependencies=[Depends(api_key_gate)])
ERRORS = error_responses(ErrorDetail, 400, 401, 403, 413, 422, 429, 500, 503)
# JSON values must have the declared types (no "true" for a number, no 1 for a boolean): what the schema says.
STRICT_JSON = ConfigDict(extra="forbid", strict=True)


class TranslateRequest(BaseModel):
    model_config = STRICT_JSON | ConfigDict(json_schema_extra={"examples": [
        {"text": ["Open the file.", "Click OK."], "source": "en", "target": "de", "beam_size": 4, "alternatives": 1}]})

    text: str | list[str] = Field(description=(
        "One text or a list; a list is answered in its order. A text is cut into sentences, each translated on its own, "
        "and put back together with its whitespace and line breaks."))
    source: str = Field(description="Source language code, e.g. `en`.", examples=["en"])
    target: str = Field(description="Target language code, e.g. `de`.", examples=["de"])
    beam_size: int | None = Field(None, ge=1, description="Beam size (1 = greedy); default from TRANSLATOR_DEFAULT_BEAM_SIZE.")
    alternatives: int = Field(0, ge=0, description="Extra translations per text, the beam's runners-up.")
    max_length: int | None = Field(None, ge=1, description="Most tokens to generate per text.")
    stream: bool = Field(False, description=(
        "Answer as server-sent events (`text/event-stream`): a `translation` event per text as soon as it is translated "
        "(its `index` in the request and the fields of a translation), in any order, then one `done` event; an error "
        "after the stream started is an `error` event (`detail`, `status`), not a broken connection."))


class TranslationItem(BaseModel):
    text: str = Field(description="The best translation.")
    alternatives: list[str] = Field(description="Runner-up translations, best first (empty unless asked for).")
    score: float | None = Field(description=(
        "Length-normalised log-probability of the best translation (over several sentences: weighted by their lengths); "
        "null when the text came back unchanged."))
    source_tokens: int = Field(description="Source tokens the model read (including end of sentence), over all the text's sentences.")
    target_tokens: int = Field(description="Tokens generated for the best translation, over all the text's sentences.")
    sentences: int = Field(description=(
        "Sentences the model translated (0: the text came back unchanged: no letters in it, or already in the target language)."))


class TranslateResponse(BaseModel):
    model: str = Field(description="The model package that translated, e.g. `en-de`.")
    translations: list[TranslationItem] = Field(description="One per input text, in input order.")


class EncodeRequest(BaseModel):
    model_config = STRICT_JSON | ConfigDict(json_schema_extra={"examples": [
        {"text": ["Open the file.", "Close the window."], "source": "en", "tokens": False}]})

    text: str | list[str] = Field(description="One text or a list.")
    source: str = Field(description="Language of the texts; the encoder of a model reading it is used.", examples=["en"])
    tokens: bool = Field(False, description="Also return each token's encoder state.")


class EncodedItem(BaseModel):
    embedding: list[float] = Field(description="Mean of the encoder states over the text's tokens, L2-normalised.")
    token_ids: list[int] = Field(description="The text's token ids (SentencePiece, ending with end of sentence).")
    token_states: list[list[float]] | None = Field(None, description="Encoder state per token, when `tokens` is true.")


class EncodeResponse(BaseModel):
    model: str
    dimension: int = Field(description="Length of each embedding.")
    items: list[EncodedItem] = Field(description="One per input text, in input order.")


def as_list(text: str | list[str]) -> list[str]:
    return [text] if isinstance(text, str) else text


class StreamedTranslation(TranslationItem):
    index: int = Field(description="Position of the text in the request.")


def item(translated: Translated) -> TranslationItem:
    return TranslationItem(text=translated.text, alternatives=translated.alternatives, score=translated.score,
                           source_tokens=translated.source_tokens, target_tokens=translated.target_tokens,
                           sentences=translated.sentences)


# One server-sent event: its name and its data (JSON text).
STREAM_RESPONSE = {200: {"content": {"text/event-stream": {"schema": {
    "type": "object", "required": ["event", "data"], "description": "With `stream: true`: one server-sent event.",
    "properties": {
        "event": {"enum": ["translation", "done", "error"]},
        "data": {"type": "string", "description": (
            "translation: a translation of the response's `translations` with its `index`; done: "
            "`{\"model\", \"texts\"}`; error: `{\"detail\", \"status\"}`.")},
    }}}}}}


@router.post("/translate", response_model=TranslateResponse, responses={**ERRORS, **STREAM_RESPONSE},
             openapi_extra=KEY_GATED, summary="Translate texts")
async def translate(body: TranslateRequest, request: Request, state: StateDep) -> TranslateResponse | StreamingResponse:
    how = {"beam_size": body.beam_size, "alternatives": body.alternatives, "max_length": body.max_length}
    if body.stream:
        return stream_translations(state, translation_work(state, as_list(body.text), body.source, body.target, **how))
    translator, results = await unless_disconnected(request, translate_texts(
        state, as_list(body.text), body.source, body.target, **how))
    return TranslateResponse(model=translator.name, translations=[item(r) for r in results])


def event(name: str, data: BaseModel | dict) -> str:
    payload = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data, separators=(",", ":"))
    return f"event: {name}\ndata: {payload}\n\n"


def stream_translations(state: ServiceState, work: Work) -> StreamingResponse:
    """Server-sent events, one per text as it is translated. The sentences are queued before the response starts,
    so an overloaded server still answers 429/503 with Retry-After; a client that goes away ends the generator,
    and closing the submission takes its sentences out of the queue and the running batch."""
    submission = state.batcher.submit(work.translator.name, work.sentences.ids, work.options) if work.sentences.ids else None

    async def events() -> AsyncIterator[str]:
        try:
            async for index, translated in translations_as_completed(state, work, submission):
                yield event("translation", StreamedTranslation(index=index, **item(translated).model_dump()))
            yield event("done", {"model": work.translator.name, "texts": len(work.texts)})
        except (asyncio.CancelledError, GeneratorExit):  # the client went away mid-stream (the status was sent: 200)
            state.metrics.reject("disconnected")
            raise
        except Exception as raised:  # noqa: BLE001 - mid-stream errors become an event, rendered as the JSON API would
            error = as_api_error(raised, state.settings.max_body_bytes)
            status, _, reason = STATUS[error.kind]
            if reason is not None:  # counted as the JSON API's route class counts a rejection
                state.metrics.reject(reason)
            yield event("error", {"detail": error.message, "status": status})
        finally:
            if submission is not None:
                submission.close()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/encode", response_model=EncodeResponse, responses=ERRORS, response_model_exclude_none=True,
             openapi_extra=KEY_GATED, summary="Sentence embeddings from the encoder")
async def encode(body: EncodeRequest, request: Request, state: StateDep) -> EncodeResponse:
    translator, results = await unless_disconnected(request, encode_texts(state, as_list(body.text), body.source))
    items = [EncodedItem(embedding=r.embedding.vector.tolist(), token_ids=r.token_ids,
                         token_states=r.embedding.token_states.tolist() if body.tokens else None) for r in results]
    return EncodeResponse(model=translator.name, dimension=len(items[0].embedding), items=items)
