"""Lua locale tables, as Hedgewars ships its missions' and campaigns' text (Data/Locale/de.lua):

    locale = {
    ["English text"] = "Deutscher Text", -- Mission_name
    ...
    }

One entry per line, keys and values double-quoted Lua strings with backslash escapes; `|` is the game's line
break (it falls mid-sentence, so it becomes a space). Untranslated entries (empty or equal to the key) are left
for the corpus filters to drop, like every other source's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

_STRING = r'"((?:[^"\\]|\\.)*)"'
_ENTRY = re.compile(r"^\s*\[" + _STRING + r"\]\s*=\s*" + _STRING + r"\s*,?\s*(?:--.*)?$")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "'": "'", "\\": "\\"}


def _unescape(text: str) -> str:
    text = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)
    return " ".join(text.replace("|", " ").split())


def lua_locale_pairs(path: Path) -> Iterator[tuple[str, str]]:
    """(English, German) of every `["key"] = "value"` line; commented-out lines (`--`) never match."""
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ENTRY.match(line)
        if match:
            yield _unescape(match.group(1)), _unescape(match.group(2))
