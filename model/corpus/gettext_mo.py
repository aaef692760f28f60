"""Compiled gettext catalogs (.mo): msgid → msgstr, read with the standard library's `gettext`."""

from __future__ import annotations

import gettext
from collections.abc import Iterable, Iterator
from pathlib import Path

from model.corpus.text import markup_to_text
from model.corpus_sources import strip_accelerators


def mo_entries(path: Path) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of one catalog, msgctxt dropped; the header, plural entries and empty translations
    skipped. A corrupt catalog yields nothing."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
    except (OSError, UnicodeDecodeError, ValueError):
        return
    for key, value in catalog.items():  # .mo order (sorted by msgid): deterministic
        if isinstance(key, str) and key and isinstance(value, str) and value:
            yield key.split("\x04", 1)[-1], value


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
