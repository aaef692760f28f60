"""Liveness, readiness and metrics: `GET /health`, `GET /ready`, `GET /metrics`."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.api.deps import StateDep
from service.api.errors import NativeRoute

router = APIRouter(tags=["operations"], route_class=NativeRoute)


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelStatus(BaseModel):
    name: str = Field(description="Language pair, e.g. `en-de`.")
    source_language: str
    target_language: str
    provider: str = Field(description="The ONNX Runtime execution provider that actually runs the model.")
    precision: str


class Readiness(BaseModel):
    status: Literal["ready", "starting"]
    models: list[ModelStatus]


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health()


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}},
            summary="Readiness: models loaded and warmed up (503 until then)")
async def ready(state: StateDep) -> Response:
    status = "ready" if state.ready else "starting"
    body = Readiness(status=status, models=[
        ModelStatus(name=t.name, source_language=t.source_language, target_language=t.target_language,
                    provider=t.provider, precision=t.precision)
        for t in state.translators.values()])
    return JSONResponse(body.model_dump(), status_code=200 if status == "ready" else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text exposition format)",
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.exposition(), media_type=state.metrics.content_type)
