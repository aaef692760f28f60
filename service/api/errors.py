"""Error types and how the two API flavours render them: native routes with `{"detail": ...}`,
LibreTranslate routes with `{"error": ...}`, LibreTranslate's status codes and wording (429 "Slowdown: …",
not 503, when overloaded; 403 "Invalid API key").

Each router's route class runs the body checks (service.api.bodies), then the endpoint, and catches
everything they raise (validation, body size, batcher backpressure, bugs) to render it in its flavour,
so a client never sees a traceback and every message names the problem. Rejections are counted once, here.
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

from service.batcher import DeadlineExceeded, InferenceFailed, QueueFull, ShuttingDown

log = logging.getLogger(__name__)

Kind = Literal["invalid", "validation", "not_found", "too_large", "unauthorized", "forbidden", "rate_limited", "overloaded",
               "deadline", "unavailable", "disconnected", "internal"]
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; nobody reads the answer

# kind → (native status, LibreTranslate status, rejection reason or None)
STATUS: dict[str, tuple[int, int, str | None]] = {
    "invalid": (400, 400, "invalid_request"),
    "validation": (422, 400, "invalid_request"),
    "not_found": (404, 404, None),
    "too_large": (413, 413, "body_too_large"),
    "unauthorized": (401, 403, "unauthorized"),  # LibreTranslate 1.9 answers a required, missing key with 400
    "forbidden": (403, 403, "forbidden"),
    "rate_limited": (429, 429, "rate_limited"),
    "overloaded": (503, 429, "queue_full"),
    "deadline": (503, 429, "deadline"),
    "unavailable": (503, 503, "shutting_down"),
    "disconnected": (CLIENT_CLOSED_REQUEST, CLIENT_CLOSED_REQUEST, "disconnected"),
    "internal": (500, 500, None),
}
RETRY_LATER = {"rate_limited", "overloaded", "deadline", "unavailable"}
SLOWDOWN = "Slowdown: "  # LibreTranslate's prefix of every 429 message


@dataclass
class ApiError(Exception):
    kind: Kind
    message: str
    retry_after: int | None = None  # seconds; None: the configured TRANSLATOR_RETRY_AFTER_S
    libretranslate: str | None = None  # LibreTranslate's own wording, where it differs from ours

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
    """Runs the body checks and the endpoint, and renders any error in the router's flavour."""

    flavour: ClassVar[int] = 0  # index into STATUS: 0 native, 1 LibreTranslate
    json_only: ClassVar[bool] = True  # LibreTranslate routes take forms and query strings too

    @classmethod
    def body(cls, message: str) -> dict[str, Any]:
        return {"detail": message}

    @classmethod
    def message(cls, error: ApiError) -> str:
        return error.message

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            from service.api.bodies import body_limit, check_body  # bodies raise these errors: imported late

            try:
                await check_body(request, self.json_only)
                return await handler(request)
            except Exception as raised:  # noqa: BLE001 - rendered below; unexpected ones are logged there
                service = request.app.state.service
                error = as_api_error(raised, body_limit(service.settings, request.url.path))
                return self.render(service, error)

        return handle

    @classmethod
    def render(cls, service: Any, error: ApiError) -> JSONResponse:
        status, reason = STATUS[error.kind][cls.flavour], STATUS[error.kind][2]
        if reason:
            service.metrics.reject(reason)
        headers = {}
        if error.kind in RETRY_LATER:
            headers["Retry-After"] = str(service.settings.retry_after_s if error.retry_after is None else error.retry_after)
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(cls.body(cls.message(error)), status_code=status, headers=headers)


class NativeRoute(ShapedErrorRoute):
    flavour = 0


class LibreTranslateRoute(ShapedErrorRoute):
    flavour = 1
    json_only = False

    @classmethod
    def body(cls, message: str) -> dict[str, Any]:
        return {"error": message}

    @classmethod
    def message(cls, error: ApiError) -> str:
        text = error.libretranslate or error.message
        if STATUS[error.kind][1] == 429 and not text.startswith(SLOWDOWN):
            text = SLOWDOWN + text
        return text


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")


RETRY_AFTER_HEADER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def error_responses(model: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can answer (429 and 503 with Retry-After)."""
    return {status: {"model": model, **({"headers": RETRY_AFTER_HEADER} if status in (429, 503) else {})}
            for status in statuses}
