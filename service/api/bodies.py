"""Request bodies before any route logic: size limits, the JSON-only check of the native routes, and
how a LibreTranslate route reads its parameters, exactly as LibreTranslate (v1.9, Flask) does:

- a JSON body (`application/json` or `+json`) is the only source of parameters; it must be an object
  (else 400 "Invalid JSON format"), and the query string is not read;
- otherwise the query string merged with an URL-encoded or multipart form (Flask's `request.values`:
  the query string first, then the form; the first value of a repeated field), so an empty body with
  every parameter in the query string (deep-translator, TranslateYou, Nextcloud's /detect) works, and a
  body of any other type is ignored rather than refused;
- URL-encoded bodies may carry raw UTF-8 (browsers and some clients do not percent-encode it), as
  Werkzeug accepts; bytes that are not UTF-8 at all are a 400 naming the problem (Werkzeug would put
  U+FFFD in their place).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.datastructures import UploadFile

from service.api.errors import ApiError, BodyTooLarge
from service.config import Settings

FILE_ROUTES = ("/translate_file",)  # bodies up to TRANSLATOR_MAX_FILE_BYTES instead of TRANSLATOR_MAX_BODY_BYTES


def body_limit(settings: Settings, path: str) -> int:
    return max(settings.max_file_bytes, settings.max_body_bytes) if path in FILE_ROUTES else settings.max_body_bytes


def mimetype(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(content_type: str) -> bool:
    """Flask's `request.is_json`."""
    return content_type == "application/json" or (content_type.startswith("application/") and content_type.endswith("+json"))


async def check_body(request: Request, json_only: bool) -> None:
    """Before parsing: refuse a body whose declared size is over the limit without reading it; insist
    on JSON where only JSON is understood; JSON must be UTF-8 (RFC 8259): say so instead of a bare
    parse error. Reading the body here is free: it is cached for the endpoint."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit(request.app.state.service.settings, request.url.path):
        raise BodyTooLarge()
    content_type = request.headers.get("content-type", "")
    if not is_json(mimetype(request)):  # the media type, not a substring: a multipart boundary may spell "json"
        if json_only:
            raise ApiError("invalid", f"the body must be JSON (Content-Type: application/json), not {content_type or 'untyped'}")
        return
    body = await request.body()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError("invalid", f"the request body is not valid UTF-8 (byte 0x{body[error.start]:02x} at position {error.start})") from None


@dataclass
class Fields:
    """A LibreTranslate request's parameters: JSON values as they came, or strings (query and form)."""

    values: dict[str, Any]
    is_json: bool
    files: dict[str, UploadFile] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def text(self, name: str) -> str | None:
        """A parameter that must be a string (a language code, a format); missing or empty: None."""
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ApiError("invalid", f"Invalid request: {name} parameter must be a string")
        return value

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise ApiError("invalid", f"Invalid request: missing {name} parameter")
        return value

    def language(self, name: str) -> str:
        """A language code, lower-cased as LibreTranslate does (`EN` is `en`)."""
        return self.required(name).strip().lower()

    def api_key(self) -> str | None:
        value = self.values.get("api_key")
        if value is None or value == "":
            return None
        return value if isinstance(value, str) else json.dumps(value)  # a number is a (wrong) key, not a crash


def first_values(pairs: list[tuple[str, Any]], into: dict[str, Any]) -> None:
    for key, value in pairs:
        into.setdefault(key, value)


async def read_fields(request: Request) -> Fields:
    """Parsed once per request and kept: the key check reads `api_key` before the endpoint runs."""
    if not hasattr(request.state, "fields"):
        request.state.fields = await parse_fields(request)
    return request.state.fields


async def parse_fields(request: Request) -> Fields:
    content_type = mimetype(request)
    body = await request.body() if request.method == "POST" else b""  # the size limit applies while reading
    if is_json(content_type) and body.strip():
        try:
            values = json.loads(body)
        except json.JSONDecodeError as error:
            raise ApiError("invalid", f"invalid JSON at character {error.pos}: {error.msg}",
                           libretranslate=f"Failed to decode JSON object: {error.msg} (character {error.pos})") from None
        if not isinstance(values, dict):
            raise ApiError("invalid", "Invalid JSON format")
        return Fields(values, True)
    values: dict[str, Any] = {}
    files: dict[str, UploadFile] = {}
    first_values(list(request.query_params.multi_items()), values)
    if content_type == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
            first_values(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict"), values)
        except UnicodeDecodeError:
            raise ApiError("invalid", "Invalid request: the form body is not valid URL-encoded UTF-8") from None
    elif content_type == "multipart/form-data":
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, str):
                values.setdefault(key, value)
            else:
                files.setdefault(key, value)
    return Fields(values, False, files)
