"""The app factory: `create_app(settings)` → a FastAPI app that, while it starts, loads every model
package (refusing to start on a broken one), starts the batcher, then warms up in the background
(`/ready` answers 503 until done), and on shutdown drains the batch queue."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.api import middleware, openapi
from service.api.deps import ServiceState
from service.api.files import FilesUnavailable, FileStore
from service.api.routes import files, health, libretranslate, native, suggest, web
from service.api.security import Gate, KeysFileError
from service.api.suggestions import SuggestionStore, SuggestionsUnavailable
from service.batcher import Batcher, BatchPolicy
from service.lanes import ModelCopy
from service.config import Settings
from service.langid import detector_for
from service.metrics import Metrics
from service.worker_process import WorkerProcess
from engine.package import PackageError
from engine.translator import Translator
from engine.sessions import ProviderUnavailable

log = logging.getLogger(__name__)
PAIR_DIRECTORY = re.compile(r"^([a-z]{2,3})-([a-z]{2,3})$")
# What refuses a start with a message instead of serving half-broken: a bad package, a provider that
# strict mode requires but cannot run, an unreadable keys file, a suggestions database that cannot be opened,
# a files directory that cannot be made.
STARTUP_REFUSALS = (PackageError, ProviderUnavailable, KeysFileError, SuggestionsUnavailable, FilesUnavailable)


def load_translators(settings: Settings) -> dict[str, Translator]:
    """Every package under the models directory, by name; raises PackageError on the first broken one."""
    directory = settings.models_dir
    # Pair-named directories (models/de-en) and any other with a package.json; hidden ones (an export's
    # staging directory) are not served.
    packages = sorted(path for path in directory.iterdir() if path.is_dir() and not path.name.startswith(".")
                      and (PAIR_DIRECTORY.match(path.name) or (path / "package.json").is_file())) if directory.is_dir() else []
    if not packages:
        raise PackageError(f"{directory}: no model packages (sub-directories with a package.json)")
    for package in packages:  # models/de-en without its package.json is a package gone missing, not a stray folder
        if not (package / "package.json").is_file():
            raise PackageError(f"{package}: no package.json; the package is missing or incomplete")
    translators: dict[str, Translator] = {}
    for package in packages:
        pair = PAIR_DIRECTORY.match(package.name)  # models/en-de must hold an en→de model
        translator = Translator(package, settings.runtime_options(), expect_pair=pair.groups() if pair else None)
        if translator.name in translators:
            raise PackageError(f"{package}: a second package for {translator.name} (first: {translators[translator.name].directory})")
        translators[translator.name] = translator
    return translators


async def start_workers(translators: dict[str, Translator], settings: Settings) -> dict[str, list[ModelCopy]]:
    """What runs each model's batches: settings.workers() worker processes, or the model and copies of it (threads)."""
    count = settings.workers()

    def workers_of(translator: Translator) -> list[ModelCopy]:
        if settings.worker_processes():
            return [WorkerProcess(translator, settings.worker_awake_ms / 1000) for _ in range(count)]
        return [translator, *(translator.copy() for _ in range(count - 1))]

    started = await asyncio.gather(*(asyncio.to_thread(workers_of, t) for t in translators.values()))
    return dict(zip(translators, started))


def batch_policy(settings: Settings) -> BatchPolicy:
    return BatchPolicy(
        scheduler=settings.scheduler, cache_budget=settings.cache_token_budget,
        token_budget=settings.batch_token_budget, max_sentences=settings.max_batch_sentences,
        max_wait_s=settings.max_wait_ms / 1000, length_buckets=tuple(settings.length_buckets),
        queue_limit=settings.queue_limit, deadline_s=settings.request_deadline_s)


async def prepare(state: ServiceState) -> None:
    """Warm-up and loading the language identifier, side by side; then ready."""
    detector = asyncio.create_task(asyncio.to_thread(detector_for, tuple(state.source_languages)))
    identifier = asyncio.create_task(asyncio.to_thread(detector_for, tuple(state.languages)))
    try:
        if state.settings.warmup:
            started = time.perf_counter()
            await state.batcher.warmup(batch_size=min(state.settings.max_batch_sentences, 8))
            log.info("warm-up done in %.2f s", time.perf_counter() - started)
        state.detector = await detector
        state.identifier = await identifier
        if state.detector.unknown:
            log.warning("language detection cannot recognise %s", ", ".join(state.detector.unknown))
    except Exception:  # noqa: BLE001 - stay alive but unready: /ready keeps the load balancer away
        log.exception("warm-up failed: the service stays unready")
        return
    finally:
        detector.cancel()
        identifier.cancel()
    # What exists now (models, app, schemas, ~70k objects) lives as long as the process: move it out of
    # the collector's reach, or every full collection walks it, a 25-35 ms stall of the event loop
    # on busy cores (refusals under overload queue behind it).
    gc.collect()
    gc.freeze()
    state.ready = True
    log.info("ready: %s", ", ".join(f"{t.name} on {t.provider}" for t in state.translators.values()))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    if not state.translators:
        state.translators = await asyncio.to_thread(load_translators, state.settings)
        state.owns_translators = True
    for translator in state.translators.values():
        state.metrics.add_model(translator.name, translator.provider, translator.precision)
    workers = await start_workers(state.translators, state.settings)
    if state.owns_translators and state.settings.worker_processes():
        # The worker processes translate; the server's copies only tokenize from here on. Translators that another
        # app in this process may run (tests, the tuner) keep their sessions.
        for translator in state.translators.values():
            translator.release_sessions()
    state.batcher = Batcher(state.translators, batch_policy(state.settings), state.metrics, workers)
    state.batcher.start()
    preparing = asyncio.create_task(prepare(state))
    try:
        yield
    finally:
        state.ready = False
        preparing.cancel()
        await asyncio.gather(preparing, return_exceptions=True)
        await state.batcher.drain(state.settings.shutdown_timeout_s)
        if state.suggestions is not None:  # uvicorn runs shutdown once open requests have ended
            state.suggestions.close()
        log.info("drained")


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def create_app(settings: Settings | None = None, translators: dict[str, Translator] | None = None,
               owns_translators: bool = False) -> FastAPI:
    """`translators`: already loaded models to serve instead of loading `settings.models_dir`; shared by several apps
    of one process (the tests, the tuner) unless `owns_translators` (the command line: loaded for this app alone)."""
    settings = settings or Settings()
    metrics = Metrics()
    metrics.cuda_requested.set(1 if tuple(settings.providers[:1]) == ("CUDAExecutionProvider",) else 0)
    app = FastAPI(
        title="translator", version="0.1.0", lifespan=lifespan,
        description="Self-hosted machine translation: native API (`/v1`), LibreTranslate-compatible routes, "
                    "health, readiness and Prometheus metrics.",
        exception_handlers={Exception: internal_error},
    )
    gate = Gate.from_settings(settings)  # reads the keys file: raises KeysFileError before anything listens
    app.state.service = ServiceState(
        settings=settings, metrics=metrics, translators=dict(translators or {}), owns_translators=owns_translators, gate=gate,
        files=FileStore.from_settings(settings) if settings.files_translation else None,
        suggestions=SuggestionStore(settings.suggestions_db) if settings.suggestions else None)
    middleware.install(app, settings, metrics)
    for module in (native, libretranslate, files, suggest, health, web):
        app.include_router(module.router)
    openapi.document(app, settings, keys_required=gate.keys.required)
    return app
