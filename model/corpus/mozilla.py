"""Firefox's localisation: Fluent (.ftl) messages and .properties strings of the English build (omni.ja) against
the German language pack (firefox-esr-l10n-de's .xpi), aligned by file path and message id or key.

Fluent files are parsed with Mozilla's `fluent.syntax`. A pattern becomes text: variables as `{name}` on both
sides (so the placeholder filter compares them), terms (`{ -brand-short-name }`) replaced by their value in the
same language; messages with selectors (plural/gender variants) or references to other messages are skipped.
Attributes (`.label`, `.tooltiptext`, …) pair by message id and attribute name.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from fluent.syntax import FluentParser, ast

from model.corpus.text import markup_to_text


class Unsupported(Exception):
    pass


def _pattern_text(pattern: ast.Pattern, terms: dict[str, str]) -> str:
    parts = []
    for element in pattern.elements:
        if isinstance(element, ast.TextElement):
            parts.append(element.value)
            continue
        expression = element.expression
        if isinstance(expression, ast.VariableReference):
            parts.append("{" + expression.id.name + "}")
        elif isinstance(expression, ast.TermReference) and expression.id.name in terms and expression.attribute is None:
            parts.append(terms[expression.id.name])
        elif isinstance(expression, ast.StringLiteral):
            parts.append(expression.parse()["value"])
        else:  # selectors, message references, functions
            raise Unsupported
    return "".join(parts)


def fluent_terms(sources: list[str]) -> dict[str, str]:
    """Simple terms (`-brand-short-name = Firefox`) of the given .ftl texts."""
    terms: dict[str, str] = {}
    for source in sources:
        for entry in FluentParser(with_spans=False).parse(source).body:
            if isinstance(entry, ast.Term):
                try:
                    terms[entry.id.name] = _pattern_text(entry.value, terms)
                except Unsupported:
                    pass
    return terms


def fluent_messages(source: str, terms: dict[str, str]) -> dict[str, str]:
    """{message id or id.attribute: text} of one .ftl file."""
    messages = {}
    for entry in FluentParser(with_spans=False).parse(source).body:
        if not isinstance(entry, ast.Message):
            continue
        parts = ([(entry.id.name, entry.value)] if entry.value else []) + [
            (f"{entry.id.name}.{a.id.name}", a.value) for a in entry.attributes]
        for key, pattern in parts:
            try:
                messages[key] = _pattern_text(pattern, terms)
            except Unsupported:
                continue
    return messages


def properties(source: str) -> dict[str, str]:
    """key = value pairs of a Java-style .properties file (comments, continuation lines, \\uXXXX escapes)."""
    entries, lines = {}, iter(source.splitlines())
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        while stripped.endswith("\\") and not stripped.endswith("\\\\"):
            stripped = stripped[:-1] + next(lines, "").lstrip()
        match = re.match(r"([^=:\s]+)\s*[=:]?\s*(.*)", stripped)
        if match:
            value = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), match.group(2))
            entries[match.group(1)] = re.sub(r"\\(.)", lambda m: {"n": " ", "t": " "}.get(m.group(1), m.group(1)), value)
    return entries


def _read(archive: zipfile.ZipFile, name: str) -> str:
    return archive.read(name).decode("utf-8", errors="replace")


def firefox_pairs(omni_files: list[Path], langpack: Path) -> Iterator[tuple[str, str]]:
    """Pairs of every .ftl/.properties file of the English omni.ja archives that the German pack also has.
    Paths map en-US → de (`localization/en-US/x.ftl` → `localization/de/x.ftl`, `chrome/en-US/locale/…` →
    `chrome/de/locale/…`)."""
    german_zip = zipfile.ZipFile(langpack)
    german_names = set(german_zip.namelist())
    english_files: list[tuple[zipfile.ZipFile, str]] = []
    for omni in sorted(omni_files):
        archive = zipfile.ZipFile(omni)
        english_files += [(archive, n) for n in sorted(archive.namelist()) if "en-US" in n
                          and n.endswith((".ftl", ".properties"))]
    en_terms = fluent_terms([_read(a, n) for a, n in english_files if n.endswith(".ftl")])
    de_terms = fluent_terms([_read(german_zip, n) for n in sorted(german_names) if n.endswith(".ftl")])
    for archive, name in english_files:
        german_name = name.replace("en-US", "de")
        if german_name not in german_names:
            continue
        if name.endswith(".ftl"):
            english = fluent_messages(_read(archive, name), en_terms)
            german = fluent_messages(_read(german_zip, german_name), de_terms)
        else:
            english, german = properties(_read(archive, name)), properties(_read(german_zip, german_name))
        for key, en in english.items():
            de = german.get(key)
            if de and ";" not in en:  # "#1 tab;#1 tabs": semicolon-separated plural forms
                yield markup_to_text(en), markup_to_text(de)
