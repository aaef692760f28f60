"""Readers for the parallel text inside Debian packages: LibreOffice help, the Ding dictionary, gettext catalogs.

Each reader yields raw (English, German) pairs; normalising, filtering and splitting happen in `model.data`.
"""

from __future__ import annotations

import gettext
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

# The gettext packages the recipe reads: a fixed list, so that the corpus is reproducible.
GETTEXT_PACKAGES = (
    "libreoffice-l10n-de", "coreutils", "tar", "grep", "sed", "findutils", "diffutils", "dpkg", "apt", "bash",
    "gettext", "wget", "util-linux-locales", "gnupg-l10n", "e2fsprogs", "nano", "man-db", "evince", "gedit",
    "nautilus-data", "gnome-control-center-data", "thunar", "xfce4-panel", "vlc-l10n", "gnumeric-common",
    "gnucash-common",
)
HELP_PACKAGES = ("libreoffice-help-en-us", "libreoffice-help-de")
DING_PACKAGE = "trans-de-en"
LICENCES = {"libreoffice-help-en-us": "MPL-2.0", "libreoffice-help-de": "MPL-2.0", "libreoffice-l10n-de": "MPL-2.0",
            "trans-de-en": "GPL-2+"}


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    root: Path  # where the .deb was unpacked


def fetch_package(name: str, cache: Path) -> Package:
    """`apt-get download` (no install) into cache/debs, unpack into cache/unpacked/<name>; both reused when present."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", name], cwd=debs, check=True, capture_output=True)
        found = sorted(debs.glob(f"{name}_*.deb"))
    deb = found[-1]
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True).stdout.strip()
    root = cache / "unpacked" / name
    if not (root / ".done").exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        (root / ".done").write_text(version)
    return Package(name, version, root)


def package_licence(package: Package) -> str:
    if package.name in LICENCES:
        return LICENCES[package.name]
    copyright_file = next(iter(sorted(package.root.glob("usr/share/doc/*/copyright"))), None)
    if copyright_file is None:
        return "see the package's copyright file"
    licences = sorted(set(re.findall(r"^License:\s*(\S+)", copyright_file.read_text(errors="replace"), re.M)))
    return ", ".join(licences[:4]) or "see the package's copyright file"


class HelpParagraphs(HTMLParser):
    """Collects the text of every element whose id is a help paragraph id (par_id…, hd_id…).

    Platform-specific variants (`<span hidden class="MAC">`) are dropped and the default variant kept, so
    that both languages yield the text a Linux user sees.
    """

    PARAGRAPH_ID = re.compile(r"^(par|hd)_id")
    VOID = {"br", "img", "meta", "link", "input", "hr", "area", "base", "col", "embed", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: dict[str, str] = {}
        self.stack: list[tuple[str, str | None, bool]] = []  # (tag, paragraph id, hides its text)
        self.buffers: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        attributes = dict(attrs)
        element_id = attributes.get("id") or ""
        paragraph = element_id if self.PARAGRAPH_ID.match(element_id) else None
        hides = "hidden" in attributes and bool(attributes.get("class"))  # a MAC/WIN variant
        if paragraph:
            self.buffers[paragraph] = []
        self.stack.append((tag, paragraph, hides))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:  # tolerate unclosed inner tags
            open_tag, paragraph, _ = self.stack.pop()
            if paragraph:
                self.paragraphs[paragraph] = "".join(self.buffers.pop(paragraph))
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if any(hides for _, _, hides in self.stack):
            return
        for _, paragraph, _ in self.stack:
            if paragraph:
                self.buffers[paragraph].append(data)


def read_help_page(path: Path) -> dict[str, str]:
    parser = HelpParagraphs()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser.paragraphs


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÄÖÜ0-9])")


def split_sentences(text: str) -> list[str]:
    """A deliberately simple splitter: end punctuation, whitespace, then a capital or digit."""
    return [s for s in SENTENCE_END.split(text) if s]


def help_pairs(en_root: Path, de_root: Path) -> Iterator[tuple[str, str]]:
    """Align paragraphs by (page path, paragraph id); split into sentences where both sides agree on the count."""
    for en_page in sorted(en_root.rglob("*.html")):
        de_page = de_root / en_page.relative_to(en_root)
        if not de_page.exists():
            continue
        english, german = read_help_page(en_page), read_help_page(de_page)
        for paragraph_id, en_text in english.items():
            de_text = german.get(paragraph_id)
            if de_text is None:
                continue
            en_text, de_text = " ".join(en_text.split()), " ".join(de_text.split())
            en_sentences, de_sentences = split_sentences(en_text), split_sentences(de_text)
            if len(en_sentences) == len(de_sentences) > 1:
                yield from zip(en_sentences, de_sentences)
            else:
                yield en_text, de_text


DING_NOTES = re.compile(r"\{[^}]*\}|\[[^\]]*\]|\([^)]*\)|<[^>]*>")


def ding_pairs(path: Path, min_words: int = 3) -> Iterator[tuple[str, str]]:
    """Lines `de | de2 :: en | en2`: sub-entries align one to one; notes stripped, first `;` alternative kept."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("#") or "::" not in line:
                continue
            german_side, english_side = line.rstrip("\n").split("::", 1)
            german_parts, english_parts = german_side.split("|"), english_side.split("|")
            if len(german_parts) != len(english_parts):
                continue
            for de, en in zip(german_parts, english_parts):
                de = " ".join(DING_NOTES.sub(" ", de.split(";")[0]).split())
                en = " ".join(DING_NOTES.sub(" ", en.split(";")[0]).split())
                if len(en.split()) >= min_words and len(de.split()) >= min_words:
                    yield en, de


ACCELERATOR = re.compile(r"~|_(?=\w)|&(?=\w)")


def gettext_pairs(mo_files: list[Path]) -> Iterator[tuple[str, str]]:
    """msgid (English) → msgstr (German) of compiled catalogs; plural forms and the header skipped."""
    for path in sorted(mo_files):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
        except (OSError, UnicodeDecodeError, ValueError):  # a corrupt catalog is skipped, not fatal
            continue
        for key, value in catalog.items():
            if not isinstance(key, str) or not key or not isinstance(value, str):
                continue  # header or plural tuple
            english = key.split("\x04", 1)[-1]  # drop the msgctxt prefix
            yield ACCELERATOR.sub("", english), ACCELERATOR.sub("", value)


def gettext_catalogs(package: Package) -> list[Path]:
    patterns = ("usr/share/locale/de/LC_MESSAGES/*.mo", "usr/lib/libreoffice/program/resource/de/LC_MESSAGES/*.mo")
    return sorted(p for pattern in patterns for p in package.root.glob(pattern))
