"""The translation web page at `/` (service/web/: plain HTML, CSS and JavaScript shipped in the
package, no build step, nothing fetched from elsewhere). Only the files listed here are served."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from service.api.deps import StateDep
from service.api.errors import ApiError, LibreTranslateRoute

WEB = Path(__file__).resolve().parent.parent.parent / "web"
FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
router = APIRouter(route_class=LibreTranslateRoute, include_in_schema=False)


@router.get("/")
async def page(state: StateDep) -> Response:
    if not state.settings.web_page:
        raise ApiError("not_found", "Not Found")
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers={
        **HEADERS, "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:"})


@router.get("/web/{name}")
async def asset(name: str, state: StateDep) -> Response:
    if not state.settings.web_page or name not in FILES:
        raise ApiError("not_found", "Not Found")
    return FileResponse(WEB / name, media_type=FILES[name], headers=HEADERS)
