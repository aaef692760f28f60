"""`POST /suggest` (LibreTranslate-compatible): a user proposes a better translation; stored durably
(service.api.suggestions) when TRANSLATOR_SUGGESTIONS is on, else 403 as LibreTranslate answers."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from service.api.bodies import read_fields
from service.api.deps import StateDep
from service.api.errors import ApiError, LibreTranslateError, LibreTranslateRoute, error_responses
from service.api.openapi import KEY_GATED
from service.api.routes.libretranslate import GATE, check_language, form_body
from service.api.security import presented_key
from service.api.translation import check_unicode

router = APIRouter(tags=["libretranslate"], route_class=LibreTranslateRoute)
DISABLED = "Suggestions are disabled on this server."


class SuggestForm(BaseModel):
    model_config = ConfigDict(extra="allow")

    q: str = Field(description="The original text.")
    s: str = Field(description="The suggested translation.")
    source: str = Field(description="Language of `q`.")
    target: str = Field(description="Language of `s`.")
    api_key: str | None = None


class Suggested(BaseModel):
    success: bool


@router.post("/suggest", response_model=Suggested, dependencies=GATE, openapi_extra=form_body(SuggestForm) | KEY_GATED,
             responses=error_responses(LibreTranslateError, 400, 403, 413, 429, 500),
             summary="Suggest a better translation (LibreTranslate-compatible)")
async def suggest(request: Request, state: StateDep) -> Suggested:
    if not state.settings.suggestions or state.suggestions is None:
        raise ApiError("forbidden", DISABLED)
    fields = await read_fields(request)
    q, s = fields.required("q"), fields.required("s")
    source, target = fields.language("source"), fields.language("target")
    for code in (source, target):
        check_language(state, code)
    limit = state.settings.max_text_chars
    for name, text in (("q", q), ("s", s)):
        check_unicode(text, name)
        if len(text) > limit:
            raise ApiError("invalid", f"Invalid request: request ({len(text)}) exceeds text limit ({limit})")
    key = presented_key(request) or fields.api_key()
    await asyncio.to_thread(state.suggestions.add, q, s, source, target, key)
    return Suggested(success=True)
