"""Language identification for `source: "auto"` and `/detect`, by py3langid (langid.py's naive Bayes
model over byte n-grams, 97 languages, works offline), restricted to the languages we can translate
from: a guess we have no model for helps nobody."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from py3langid.langid import MODEL_FILE, LanguageIdentifier


@dataclass(frozen=True)
class Guess:
    language: str
    confidence: float  # 0–100, LibreTranslate's scale


class LanguageDetector:
    def __init__(self, languages: list[str]):
        """Loads the model (about a second: it is decompressed) and keeps only `languages` that it knows."""
        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        known = set(self.identifier.labels)
        self.languages = sorted(code for code in languages if code in known)
        self.unknown = sorted(set(languages) - known)  # served languages langid cannot recognise
        if self.languages:
            self.identifier.set_languages(self.languages)

    def rank(self, text: str) -> list[Guess]:
        """Every candidate language, most likely first."""
        if not self.languages:
            return []
        if len(self.languages) == 1:  # nothing to choose between; the model's prior would say 100 anyway
            return [Guess(self.languages[0], 100.0)]
        return [Guess(code, round(100.0 * p, 2)) for code, p in self.identifier.rank(text)]

    def detect(self, text: str) -> Guess | None:
        ranked = self.rank(text)
        return ranked[0] if ranked else None


@lru_cache(maxsize=4)
def detector_for(languages: tuple[str, ...]) -> LanguageDetector:
    """One detector per language set and process: apps in one process (tests, the tuner) share it."""
    return LanguageDetector(list(languages))
