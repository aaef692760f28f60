"""What every route needs: the service's state (models, batcher, metrics, settings, language
identification, the translated-file store, the suggestions) through one dependency, `StateDep`, and a
way to stop waiting when the client goes away."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Awaitable, TypeVar

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from service.api.security import Gate, KeyRing
from service.batcher import Batcher
from service.config import Settings
from service.langid import LanguageDetector
from service.metrics import Metrics
from engine.translator import Translator

if TYPE_CHECKING:
    from service.api.files import FileStore
    from service.api.suggestions import SuggestionStore

T = TypeVar("T")


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    translators: dict[str, Translator] = field(default_factory=dict)  # by name, "en-de"
    owns_translators: bool = False  # nothing outside this app uses them (it may release their sessions)
    batcher: Batcher | None = None
    detector: LanguageDetector | None = None  # among the languages translated from (/detect, source "auto")
    identifier: LanguageDetector | None = None  # among every served language (is a text already in the target?)
    gate: Gate = field(default_factory=lambda: Gate(KeyRing(()), None))  # API keys and rate limits (none by default)
    ready: bool = False  # models loaded, warmed up, language identification loaded
    files: "FileStore | None" = None  # translated files waiting for download (TRANSLATOR_FILES_TRANSLATION)
    suggestions: "SuggestionStore | None" = None  # TRANSLATOR_SUGGESTIONS

    def model_for(self, source: str, target: str) -> Translator | None:
        return self.translators.get(f"{source}-{target}")

    def pairs(self) -> list[str]:
        return sorted(self.translators)

    @property
    def source_languages(self) -> list[str]:
        return sorted({t.source_language for t in self.translators.values()})

    @property
    def languages(self) -> list[str]:
        """Every served language, source or target."""
        return sorted({code for t in self.translators.values() for code in (t.source_language, t.target_language)})


async def get_state(request: Request) -> ServiceState:  # async: FastAPI runs a plain def in a worker thread
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client closes the connection. The body has been read by then, so the
    server's next `receive` message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, but cancel it (its sentences leave the batch queue) if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientDisconnect()
    finally:
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
