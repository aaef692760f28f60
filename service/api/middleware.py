"""Every ASGI middleware of the app, outermost first as `install` adds them:

- RequestMetricsMiddleware: request duration (until the answer's last bytes go out) by route template (never the raw
  path) and status.
- CORS (Starlette's), only for the configured origins.
- LoadSheddingMiddleware: with the batcher saturated (queue full, or every model's backlog over the
  admission limit), a translation request is answered 503 (429 "Slowdown: …" on the LibreTranslate
  routes) with Retry-After before its body is read, parsed, validated or tokenised and before any
  route code runs. Under several times the capacity most requests are refusals; refusing the full way
  costs a few milliseconds of the event loop each, on the cores inference needs, and refusals then
  queue behind each other for seconds. Here one costs the check and a canned response. Shedding comes
  before the API-key gate on purpose: an overloaded server refuses everyone alike, and checking keys
  first would spend the work shedding saves.
- BodyLimitMiddleware: counts request body bytes as they arrive and stops reading past the limit
  (TRANSLATOR_MAX_BODY_BYTES; TRANSLATOR_MAX_FILE_BYTES for uploads), whatever Content-Length claimed
  or when there is none: the endpoint's body read raises BodyTooLarge (413).
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.bodies import body_limit
from service.api.errors import ApiError, BodyTooLarge, LibreTranslateRoute, NativeRoute, ShapedErrorRoute
from service.config import Settings
from service.metrics import Metrics

ROUTE_TEMPLATE = "translator.route_template"  # scope key: the route label of a request no route handled
# The routes whose work goes through the batcher, and the flavour their errors are written in.
SHED_ROUTES: dict[str, type[ShapedErrorRoute]] = {
    "/v1/translate": NativeRoute,
    "/v1/encode": NativeRoute,
    "/translate": LibreTranslateRoute,
    "/translate_file": LibreTranslateRoute,
}


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # stays 500 if the app raises before answering
        answered: float | None = None

        async def send_and_note_answer(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # The request ends as its last bytes go to the connection. Read the clock before the write:
                # the socket write releases the GIL, and getting it back from the inference thread can take
                # longer than the client takes to read the answer. What the app does after (dependency
                # cleanup, background tasks) is not the request's latency either.
                answered = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_answer)
        finally:
            route = scope.get("route")
            template = route.path if isinstance(route, BaseRoute) and hasattr(route, "path") else scope.get(ROUTE_TEMPLATE, "unmatched")
            ended = answered if answered is not None else time.perf_counter()
            self.metrics.request_duration.labels(route=template, status=str(status)).observe(ended - started)


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route_class = SHED_ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route_class is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.service
        reason = state.batcher.refusal() if state.batcher is not None else None
        if reason is None:
            await self.app(scope, receive, send)
            return
        scope[ROUTE_TEMPLATE] = scope["path"]  # no route ran to name it; these paths have no parameters
        # Rendered (and the rejection counted) as the route itself would render a QueueFull.
        response = route_class.render(state, ApiError("overloaded", f"too many requests waiting ({reason}); retry later"))
        await response(scope, receive, send)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, received = body_limit(self.settings, scope.get("path", "")), 0

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, receive_capped, send)


def install(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Add the middleware; the last added is the outermost."""
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(LoadSheddingMiddleware)  # outside the body limit: a refusal reads no body
    if settings.cors_origins:  # browsers may call the API from the configured origins only
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"], expose_headers=["Retry-After"], max_age=600)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: times everything
