"""Compiled gettext catalogs (.mo) of the general-language sources: their pairs, cleaned as each source needs
(the catalogs are read by model.corpus_sources.mo_entries, as the original corpus reads its own)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from model.corpus.text import markup_to_text
from model.corpus_sources import mo_entries, strip_accelerators


def mo_pairs(paths: Iterable[Path], markup: bool = False, accelerators: bool = False) -> Iterator[tuple[str, str]]:
    """Pairs of the given catalogs in path order. `markup`: strip Pango/HTML tags on both sides;
    `accelerators`: remove `_`/`~`/`&` accelerator markers (kept where the token is copied verbatim)."""
    for path in sorted(paths):
        for english, german in mo_entries(path):
            if accelerators:
                english, german = strip_accelerators(english, german), strip_accelerators(german, english)
            if markup:
                english, german = markup_to_text(english), markup_to_text(german)
            yield english, german
