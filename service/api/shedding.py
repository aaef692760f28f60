"""Load shedding: when the batcher would refuse any request (queue full, or every model's backlog
over the admission limit), a translation request is answered 503 (429 on the LibreTranslate route)
with Retry-After before its body is read, parsed, validated or tokenised and before any route code
runs. Under several times the capacity most requests are refusals; refusing the full way costs a few
milliseconds of the event loop each, on the cores inference needs, and refusals then queue behind
each other for seconds. Here one costs the check and a canned response.

Shedding comes before the API-key gate on purpose: an overloaded server refuses everyone alike, and
checking keys first would spend the work shedding saves. CORS headers are still added (CORS is the
outer middleware) and the request is still timed by route.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import STATUS, LibreTranslateRoute, NativeRoute, ShapedErrorRoute

ROUTE_TEMPLATE = "translator.route_template"  # scope key: the route label of a request no route handled
# The routes whose work goes through the batcher, and the flavour their errors are written in.
SHED_ROUTES: dict[str, type[ShapedErrorRoute]] = {
    "/v1/translate": NativeRoute,
    "/v1/encode": NativeRoute,
    "/translate": LibreTranslateRoute,
}


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
        status = STATUS["overloaded"][route_class.flavour]
        state.metrics.reject(STATUS["overloaded"][2])
        scope[ROUTE_TEMPLATE] = scope["path"]  # no route ran to name it; these paths have no parameters
        body = json.dumps(route_class.body(f"too many requests waiting ({reason}); retry later")).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(state.settings.retry_after_s).encode())]})
        await send({"type": "http.response.body", "body": body})
