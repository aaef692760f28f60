"""The OpenAPI schema, completed with what only the running configuration knows: the input limits of
the request bodies (TRANSLATOR_MAX_TEXT_CHARS, ..._MAX_TEXTS_PER_REQUEST, beam and length caps), and,
when API keys are configured, which operations need one and how to send it. A client generator or a
fuzzer (schemathesis) then knows what the server accepts; limits the schema cannot say (a served
language pair, a text's token count, a text of only whitespace) stay 400 errors naming the problem."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.config import Settings

SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer KEY`"},
    "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
TEXT_FIELDS = ("text", "q")  # a string, or a list of strings
GATED = "x-gated"
KEY_GATED = {GATED: True}  # `openapi_extra` of the routes behind service.api.security's gate


def field_limits(settings: Settings) -> dict[str, dict[str, int]]:
    """Request field → the JSON-schema bounds of its integer form."""
    return {"beam_size": {"maximum": settings.max_beam_size}, "alternatives": {"maximum": settings.max_alternatives},
            "max_length": {"maximum": settings.max_output_tokens}}


def branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return schema.get("anyOf", [schema])


def bound_text(schema: dict[str, Any], settings: Settings, empty_items: bool = False) -> None:
    text = {"minLength": 1, "maxLength": settings.max_text_chars}
    for branch in branches(schema):
        if branch.get("type") == "string":
            branch.update(text)
        elif branch.get("type") == "array":
            branch.update(minItems=1, maxItems=settings.max_texts_per_request)
            branch.setdefault("items", {"type": "string"}).update(text, **({"minLength": 0} if empty_items else {}))


def bound_body(schema: dict[str, Any], settings: Settings) -> None:
    limits = field_limits(settings)
    for name, field in schema.get("properties", {}).items():
        if name in TEXT_FIELDS:
            bound_text(field, settings, empty_items=name == "q")  # LibreTranslate answers an empty item with an empty one
        for branch in branches(field):
            if name in limits and branch.get("type") == "integer":
                branch.update(limits[name])


def request_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Each request body schema once (a `$ref` resolved to its component)."""
    found: dict[int, dict[str, Any]] = {}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                body = content["schema"]
                if "$ref" in body:
                    body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
                found[id(body)] = body
    return list(found.values())


def document(app: FastAPI, settings: Settings, keys_required: bool) -> None:
    """Wrap `app.openapi` so that the generated schema carries the limits and, with keys, the security
    of the operations marked KEY_GATED (the marker itself never reaches the schema)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI's schema, cached on the app: completed once, in place
            for body in request_schemas(schema):
                bound_body(body, settings)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    if operation.pop(GATED, False) and keys_required:
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            if keys_required:
                schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
