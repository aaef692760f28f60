"""Errors as the two API flavours answer them: native routes with `{"detail": ...}`, LibreTranslate
routes with `{"error": ...}` and LibreTranslate's status codes (429, not 503, when overloaded).

Each router's route class catches everything its endpoints raise (validation, body size, batcher
backpressure, bugs) and renders it in its flavour, so a client never sees a traceback and every
message names the problem. Rejections are counted once, here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException  # what request.form() raises
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batcher import DeadlineExceeded, InferenceFailed, QueueFull, ShuttingDown

log = logging.getLogger(__name__)

Kind = Literal["invalid", "validation", "too_large", "unauthorized", "forbidden", "rate_limited", "overloaded", "deadline",
               "unavailable", "disconnected", "internal"]
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; nobody reads the answer

# kind → (native status, LibreTranslate status, rejection reason or None)
STATUS: dict[str, tuple[int, int, str | None]] = {
    "invalid": (400, 400, "invalid_request"),
    "validation": (422, 400, "invalid_request"),
    "too_large": (413, 413, "body_too_large"),
    "unauthorized": (401, 403, "unauthorized"),
    "forbidden": (403, 403, "forbidden"),
    "rate_limited": (429, 429, "rate_limited"),
    "overloaded": (503, 429, "queue_full"),
    "deadline": (503, 429, "deadline"),
    "unavailable": (503, 503, "shutting_down"),
    "disconnected": (CLIENT_CLOSED_REQUEST, CLIENT_CLOSED_REQUEST, "disconnected"),
    "internal": (500, 500, None),
}
RETRY_LATER = {"rate_limited", "overloaded", "deadline", "unavailable"}


@dataclass
class ApiError(Exception):
    kind: Kind
    message: str
    retry_after: int | None = None  # seconds; None: the configured TRANSLATOR_RETRY_AFTER_S

    def __str__(self) -> str:
        return self.message


class ErrorDetail(BaseModel):
    """Native error body."""

    detail: str


class LibreTranslateError(BaseModel):
    """LibreTranslate error body."""

    error: str


def describe_validation(error: RequestValidationError) -> ApiError:
    """Pydantic's error list → one sentence naming each field and problem (the input is not echoed)."""
    problems = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            where = item["loc"][-1] if item.get("loc") else "?"
            return ApiError("invalid", f"invalid JSON at character {where}: {item.get('ctx', {}).get('error', item['msg'])}")
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        problems.append(f"{location}: {item['msg']}")
    return ApiError("validation", "; ".join(problems) or "invalid request")


def as_api_error(error: BaseException, body_limit: int) -> ApiError:
    """Whatever an endpoint raised → the ApiError to answer with."""
    match error:
        case ApiError():
            return error
        case RequestValidationError():
            return describe_validation(error)
        case StarletteHTTPException(status_code=413):
            return ApiError("too_large", f"the request body is larger than {body_limit} bytes")
        case StarletteHTTPException(status_code=403):
            return ApiError("forbidden", str(error.detail))
        case StarletteHTTPException() if 400 <= error.status_code < 500:
            return ApiError("invalid", str(error.detail))
        case QueueFull():
            return ApiError("overloaded", f"too many requests waiting ({error}); retry later")
        case DeadlineExceeded():
            return ApiError("deadline", f"the server is too busy: {error}; retry later")
        case ShuttingDown():
            return ApiError("unavailable", str(error))
        case ClientDisconnect():
            return ApiError("disconnected", "the client disconnected")
        case InferenceFailed():
            return ApiError("internal", "translation failed; the error was logged")
    log.error("unexpected error", exc_info=error)
    return ApiError("internal", "internal server error")


class ShapedErrorRoute(APIRoute):
    """Runs the endpoint and renders any error in the router's flavour."""

    flavour: ClassVar[int] = 0  # index into STATUS: 0 native, 1 LibreTranslate
    json_only: ClassVar[bool] = True  # LibreTranslate routes take forms too

    @staticmethod
    def body(message: str) -> dict[str, Any]:
        return {"detail": message}

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                await check_body(request, self.json_only)
                return await handler(request)
            except Exception as raised:  # noqa: BLE001 - rendered below; unexpected ones are logged there
                service = request.app.state.service
                error = as_api_error(raised, service.settings.max_body_bytes)
                status, reason = STATUS[error.kind][self.flavour], STATUS[error.kind][2]
                if reason:
                    service.metrics.reject(reason)
                headers = {}
                if error.kind in RETRY_LATER:
                    headers["Retry-After"] = str(service.settings.retry_after_s if error.retry_after is None else error.retry_after)
                if status == 401:
                    headers["WWW-Authenticate"] = "Bearer"
                return JSONResponse(self.body(error.message), status_code=status, headers=headers)

        return handle


class NativeRoute(ShapedErrorRoute):
    flavour = 0


class LibreTranslateRoute(ShapedErrorRoute):
    flavour = 1
    json_only = False

    @staticmethod
    def body(message: str) -> dict[str, Any]:
        return {"error": message}


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")


class BodyLimitMiddleware:
    """Counts request body bytes as they arrive and stops reading past the limit, whatever
    Content-Length claimed (or when there is none): the endpoint's body read raises BodyTooLarge."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, receive_capped, send)


async def check_body(request: Request, json_only: bool) -> None:
    """Before parsing: refuse a body whose declared size is over the limit without reading it; insist
    on JSON where only JSON is understood; JSON must be UTF-8 (RFC 8259): say so instead of a bare
    parse error. Reading the body here is free: it is cached for the endpoint."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    limit = request.app.state.service.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        if json_only:
            raise ApiError("invalid", f"the body must be JSON (Content-Type: application/json), not {content_type or 'untyped'}")
        return
    body = await request.body()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError("invalid", f"the request body is not valid UTF-8 (byte 0x{body[error.start]:02x} at position {error.start})") from None


RETRY_AFTER_HEADER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def error_responses(model: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can answer (429 and 503 with Retry-After)."""
    return {status: {"model": model, **({"headers": RETRY_AFTER_HEADER} if status in (429, 503) else {})}
            for status in statuses}
