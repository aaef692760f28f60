"""German-only text for back-translation: Debian's `fortunes-de` (quotes, jokes, sayings, chat logs; GPL-2+).

A fortune file holds entries separated by lines of `%`. An entry's lines are wrapped prose, sometimes a dialogue
("<nick> text" chat lines) and usually an attribution ("\t\t-- Douglas Adams (…)"): the attribution is dropped,
chat nicknames are stripped, the lines are joined and the entry is split into sentences by engine.segmentation,
as every other source of the recipe is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.segmentation import split_sentences
from model.data import letters

FORTUNES_PACKAGE = "fortunes-de"
FORTUNE_DIR = "usr/share/games/fortunes/de"
# Pictures, and lists of punning names ("Wie man sein Kind nicht nennen sollte: Ali Mente"): not sentences.
SKIPPED_FILES = ("asciiart", "namen", "vornamen")
ATTRIBUTION = re.compile(r"^\s*--\s")
CHAT_NICK = re.compile(r"^\s*<[^<>\s]{1,30}>\s*")
MIN_WORDS, MAX_WORDS = 3, 40


def fortune_files(root: Path) -> list[Path]:
    """The package's fortune files (the `.u8` copies and the `.dat` indexes left out)."""
    directory = root / FORTUNE_DIR
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.suffix and p.name not in SKIPPED_FILES)


def fortune_entries(path: Path) -> Iterator[str]:
    """Each entry of a fortune file as text, without its attribution or chat nicknames: wrapped lines joined into
    one, each chat line (one speaker's turn) a line of its own."""
    turns: list[str] = []
    for line in [*path.read_text(encoding="utf-8", errors="replace").splitlines(), "%"]:
        if line.strip() == "%":
            text = "\n".join(" ".join(turn.split()) for turn in turns if turn.strip())
            if text:
                yield text
            turns = []
        elif not ATTRIBUTION.match(line):
            nick = CHAT_NICK.match(line)
            if nick or not turns:
                turns.append(line[nick.end():] if nick else line)
            else:  # a wrapped line continues the turn (or the prose) before it
                turns[-1] += " " + line


def is_prose(sentence: str) -> bool:
    """MIN_WORDS–MAX_WORDS words, mostly letters, starting with a letter, digit or quote: not a formula, a URL or
    a line of symbols."""
    return (MIN_WORDS <= len(sentence.split()) <= MAX_WORDS and letters(sentence) >= 0.7 * len(sentence.replace(" ", ""))
            and (sentence[0].isalnum() or sentence[0] in "\"'„“»") and "http" not in sentence and "@" not in sentence)


def german_sentences(files: Iterable[Path]) -> Iterator[str]:
    """The prose sentences of these fortune files, each once, in file order."""
    seen: set[str] = set()
    for path in files:
        for entry in fortune_entries(path):
            for sentence in split_sentences(entry, "de"):
                if sentence not in seen and is_prose(sentence):
                    seen.add(sentence)
                    yield sentence
