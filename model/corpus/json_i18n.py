"""MediaWiki-style JSON message catalogs: `en.json` and `de.json` side by side, aligned by message key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from model.corpus.text import markup_to_text


def read_messages(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str) and not k.startswith("@")}  # "@metadata": authors


def json_pairs(directories: list[Path]) -> Iterator[tuple[str, str]]:
    """For each directory holding en.json and de.json: the messages whose key both have, in English key order.
    Wikitext/HTML inline markup (`<strong>`, `''`) is removed on both sides; `$1`-style parameters stay and
    must match (model.data's placeholder filter)."""
    for directory in sorted(directories):
        english, german = read_messages(directory / "en.json"), read_messages(directory / "de.json")
        for key, en in english.items():
            de = german.get(key)
            if de:
                yield markup_to_text(en).replace("'''", "").replace("''", ""), markup_to_text(de).replace(
                    "'''", "").replace("''", "")
