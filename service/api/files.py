"""File translation (`POST /translate_file`): plain text, HTML, Word (.docx) and OpenDocument (.odt)
files, and the bounded store their translations wait in until downloaded (`GET /download_file/<name>`).

Formatting is kept as far as the formats allow: plain text keeps every line break and blank line
(sentences are translated one by one, service.api.translation); HTML goes through service.api.html(_markup); in
.docx and .odt files each paragraph is translated as a whole, and its runs (Word) or spans and links
(ODF) of different formatting are carried like HTML's inline elements: the paragraph becomes HTML with
one `<span>` per formatted piece, is translated with its markup carried, and the pieces are rebuilt
with their own formatting. Images, tabs, line breaks, fields and notes in a paragraph are kept and
moved with it. Headers, footers and tables are translated too.

The store (TRANSLATOR_FILES_DIR, a temporary directory by default: the container's root is read-only
and /tmp a tmpfs) deletes a translation TRANSLATOR_FILES_MAX_AGE_S after it was made, and the oldest
ones once all together pass TRANSLATOR_FILES_MAX_TOTAL_BYTES.
"""

from __future__ import annotations

import asyncio
import copy
import html
import io
import logging
import os
import re
import stat
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from service.api.errors import ApiError
from service.api.html import has_letters, split_html
from service.api.html_markup import Translate, translate_documents
from service.config import Settings

log = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".txt", ".html", ".htm", ".docx", ".odt")
STORED_NAME = re.compile(r"^[0-9a-f]{32}\.[A-Za-z0-9._-]{1,200}$")
ODF_MAX_SPACES = 10_000  # text:s's largest space count (a whole page of spaces is far less)
MAX_UNPACKED_RATIO = 40  # a .docx/.odt may unpack to at most this times TRANSLATOR_MAX_FILE_BYTES (zip bombs)


class FilesUnavailable(RuntimeError):
    """The directory of translated files cannot be made or written; the message names it."""


class FileStore:
    """Translated files by name (`<uuid>.<original name>`), bounded by age and total size."""

    def __init__(self, directory: Path, max_age_s: float, max_total_bytes: int):
        self.directory, self.max_age_s, self.max_total_bytes = Path(directory), max_age_s, max_total_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> "FileStore":
        directory = settings.files_dir or Path(tempfile.gettempdir()) / "translator-files"
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            store = cls(directory, settings.files_max_age_s, settings.files_max_total_bytes)
            store.expire()
        except OSError as error:
            raise FilesUnavailable(f"files directory {directory}: {error.strerror or error}") from None
        return store

    def files(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.directory.iterdir():
            if STORED_NAME.match(path.name):
                try:
                    with_stat = path.stat()
                except FileNotFoundError:  # expired by a concurrent save since iterdir listed it
                    continue
                if stat.S_ISREG(with_stat.st_mode):
                    found.append((with_stat.st_mtime, with_stat.st_size, path))
        return sorted(found)

    def expire(self, room: int = 0) -> None:
        """Delete what is too old, then the oldest until `room` more bytes fit."""
        now, kept = time.time(), []
        for made, size, path in self.files():
            if now - made > self.max_age_s:
                path.unlink(missing_ok=True)
            else:
                kept.append((made, size, path))
        total = sum(size for _, size, _ in kept)
        for _, size, path in kept:
            if total + room <= self.max_total_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def save(self, data: bytes, filename: str) -> str:
        if len(data) > self.max_total_bytes:
            raise ApiError("invalid", f"Invalid request: the translated file ({len(data)} bytes) is larger than the "
                                      f"store of translated files ({self.max_total_bytes} bytes)")
        self.expire(room=len(data))
        name = f"{uuid.uuid4().hex}.{safe_name(filename)}"
        temporary = self.directory / f".{name}.part"
        temporary.write_bytes(data)
        os.replace(temporary, self.directory / name)
        return name

    def read(self, name: str) -> bytes | None:
        """The stored file's bytes, or None (unknown, expired, or not a name this store makes). Opened before
        its age is checked: once open, a concurrent expiry (an unlink) cannot cut the read short."""
        if not STORED_NAME.match(name):
            return None
        path = self.directory / name
        try:
            with path.open("rb") as file:
                if time.time() - os.fstat(file.fileno()).st_mtime > self.max_age_s:
                    path.unlink(missing_ok=True)
                    return None
                return file.read()
        except OSError:  # gone: expired, or pushed out by newer files
            return None


def safe_name(filename: str) -> str:
    """Werkzeug's secure_filename, roughly: the base name in ASCII letters, digits, `.`, `_`, `-`."""
    base = re.split(r"[\\/]", filename)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base.encode("ascii", "ignore").decode()).strip("._") or "file"
    stem, extension = os.path.splitext(base)
    return stem[:150] + extension[:20]


def extension_of(filename: str) -> str:
    return os.path.splitext(filename)[1].lower()


def download_name(stored: str) -> str:
    return stored.split(".", 1)[1]


# --- one paragraph of runs, as HTML with one span per formatted piece ----------------------------------------
@dataclass
class Piece:
    text: str | None  # None: an atom (kept whole: an image, a tab, a field)
    key: int  # which original run / span it came from (the formatting to rebuild it with)


SPAN = re.compile(r'<span data-k="(\d+)">|</span>|<img data-k="(\d+)">')


def pieces_to_html(pieces: list[Piece]) -> tuple[str, int]:
    """→ (markup, base key): the formatting with the most text goes without a span."""
    lengths: dict[int, int] = {}
    for piece in pieces:
        if piece.text is not None:
            lengths[piece.key] = lengths.get(piece.key, 0) + len(piece.text)
    base = max(lengths, key=lambda k: lengths[k]) if lengths else -1
    out = []
    for piece in pieces:
        if piece.text is None:
            out.append(f'<img data-k="{piece.key}">')
        elif piece.key == base:
            out.append(html.escape(piece.text, quote=False))
        else:
            out.append(f'<span data-k="{piece.key}">{html.escape(piece.text, quote=False)}</span>')
    return "".join(out), base


def html_to_pieces(markup: str, base: int) -> list[Piece]:
    pieces: list[Piece] = []
    key, position = base, 0
    for match in SPAN.finditer(markup):
        if match.start() > position:
            pieces.append(Piece(html.unescape(markup[position:match.start()]), key))
        if match.group(1) is not None:
            key = int(match.group(1))
        elif match.group(2) is not None:
            pieces.append(Piece(None, int(match.group(2))))
        else:
            key = base
        position = match.end()
    if position < len(markup):
        pieces.append(Piece(html.unescape(markup[position:]), key))
    return [p for p in pieces if p.text is None or p.text]


async def translate_paragraphs(paragraphs: list[list[Piece]], translate: Translate, language: str,
                               strategy: str) -> list[list[Piece] | None]:
    """Paragraphs with letters in them → their translated pieces (None: leave the paragraph as it is)."""
    todo = [i for i, pieces in enumerate(paragraphs) if any(p.text and has_letters(p.text) for p in pieces)]
    if not todo:
        return [None] * len(paragraphs)
    markups = [pieces_to_html(paragraphs[i]) for i in todo]
    outcome = await translate_documents([split_html(markup, language) for markup, _ in markups], translate, strategy)  # type: ignore[arg-type]
    result: list[list[Piece] | None] = [None] * len(paragraphs)
    for i, (_, base), translated in zip(todo, markups, outcome.html):
        result[i] = html_to_pieces(translated, base)
    return result


# --- formats -------------------------------------------------------------------------------------------------
def check_archive(data: bytes, kind: str, limit: int) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ApiError("invalid", f"Invalid request: the file is not a valid {kind} document (not a ZIP archive)") from None
    if unpacked > limit * MAX_UNPACKED_RATIO:
        raise ApiError("invalid", f"Invalid request: the {kind} document unpacks to {unpacked} bytes; at most {limit * MAX_UNPACKED_RATIO}")


def count_chars(paragraphs: list[list[Piece]]) -> int:
    return sum(len(p.text) for pieces in paragraphs for p in pieces if p.text)


def check_chars(count: int, limit: int) -> None:
    if count > limit:
        raise ApiError("invalid", f"Invalid request: the file has {count} characters of text; the limit is {limit}")


async def translate_text_file(data: bytes, translate: Translate, settings: Settings, language: str) -> bytes:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ApiError("invalid", f"Invalid request: the .txt file is not UTF-8 text (byte 0x{data[error.start]:02x} "
                                  f"at position {error.start})") from None
    check_chars(len(text), settings.max_file_chars)
    lines = text.split("\n")
    translated = await translate(lines)
    return "\n".join(translated).encode("utf-8")


async def translate_html_file(data: bytes, translate: Translate, settings: Settings, language: str) -> bytes:
    try:
        markup = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        markup = data.decode("latin-1")  # HTML without a UTF-8 body: its bytes kept as they were
        encoding = "latin-1"
    else:
        encoding = "utf-8"
    document = split_html(markup, language)
    check_chars(sum(len(s.text) for s in document.sentences), settings.max_file_chars)
    outcome = await translate_documents([document], translate, settings.html_strategy)
    return outcome.html[0].encode(encoding, "xmlcharrefreplace")


# Word: w:r runs of a paragraph; a run with anything but its properties and text is an atom.
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
TEXT_RUN_CHILDREN = {f"{W}rPr", f"{W}t"}
PARAGRAPH_PARTS_OK = {f"{W}pPr", f"{W}r", f"{W}bookmarkStart", f"{W}bookmarkEnd", f"{W}proofErr"}


def docx_paragraphs(document) -> list:
    """Every paragraph element of the body, tables, headers and footers (each once)."""
    roots = [document.element.body]
    for section in document.sections:
        for part in (section.header, section.footer, section.first_page_header, section.first_page_footer,
                     section.even_page_header, section.even_page_footer):
            if not part.is_linked_to_previous:
                roots.append(part._element)
    seen, found = set(), []
    for root in roots:
        for p in root.iter(f"{W}p"):
            if id(p) not in seen:
                seen.add(id(p))
                found.append(p)
    return found


def docx_pieces(p) -> list[Piece] | None:
    """A paragraph's runs → pieces (key = the run's position among the paragraph's children); None when the
    paragraph holds more than runs (hyperlinks, fields, tracked changes): then its runs are translated one by one."""
    children = list(p)
    if any(child.tag not in PARAGRAPH_PARTS_OK for child in children):
        return None
    pieces = []
    for index, child in enumerate(children):
        if child.tag != f"{W}r":
            continue
        if all(grand.tag in TEXT_RUN_CHILDREN for grand in child):
            text = "".join(t.text or "" for t in child.iter(f"{W}t"))
            if text:
                pieces.append(Piece(text, index))
        else:
            pieces.append(Piece(None, index))
    return pieces


def docx_rebuild(p, pieces: list[Piece]) -> None:
    children = list(p)
    runs = [child for child in children if child.tag == f"{W}r"]
    anchor = runs[0].getprevious() if runs else None
    for run in runs:
        p.remove(run)
    insert_at = (list(p).index(anchor) + 1) if anchor is not None else (1 if len(p) and p[0].tag == f"{W}pPr" else 0)
    for offset, piece in enumerate(pieces):
        original = children[piece.key]
        if piece.text is None:
            element = original
        else:
            element = copy.deepcopy(original)
            for t in list(element.iter(f"{W}t")):
                element.remove(t)
            t = element.makeelement(f"{W}t", {})
            t.text = piece.text
            t.set("{http://www.w3.org/XML/1998/namespace}space", "preserve")
            element.append(t)
        p.insert(insert_at + offset, element)


async def translate_docx(data: bytes, translate: Translate, settings: Settings, language: str) -> bytes:
    import docx  # python-docx: only the file route needs it

    check_archive(data, ".docx", settings.max_file_bytes)
    try:
        document = await asyncio.to_thread(docx.Document, io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - python-docx raises many kinds on a corrupt file
        raise ApiError("invalid", f"Invalid request: the file is not a valid .docx document ({type(error).__name__})") from None
    elements = docx_paragraphs(document)
    paragraphs, whole = [], []
    for p in elements:
        pieces = docx_pieces(p)
        if pieces is None:  # run by run
            for run in p.iter(f"{W}r"):
                texts = list(run.iter(f"{W}t"))
                if texts:
                    whole.append(texts)
        else:
            paragraphs.append((p, pieces))
    check_chars(count_chars([pieces for _, pieces in paragraphs]) + sum(len(t.text or "") for texts in whole for t in texts),
                settings.max_file_chars)
    translated = await translate_paragraphs([pieces for _, pieces in paragraphs], translate, language, settings.html_strategy)
    for (p, _), pieces in zip(paragraphs, translated):
        if pieces is not None:
            docx_rebuild(p, pieces)
    if whole:
        outputs = await translate(["".join(t.text or "" for t in texts) for texts in whole])
        for texts, output in zip(whole, outputs):
            texts[0].text = output
            for t in texts[1:]:
                t.text = ""
    buffer = io.BytesIO()
    await asyncio.to_thread(document.save, buffer)
    return buffer.getvalue()


def odf_space_count(value: str | None) -> int:
    """text:s's text:c, a positive integer (1 when absent). A file is refused over a bad one before anything is built
    from it: a 2 KB file saying ten billion spaces would otherwise ask for that much memory."""
    if not value:
        return 1
    if not (value.isascii() and value.isdigit() and len(value) <= 6 and 1 <= int(value) <= ODF_MAX_SPACES):
        raise ApiError("invalid", f"Invalid request: the file is not a valid OpenDocument text (text:s with "
                                  f"text:c={value[:20]!r}; a count of 1 to {ODF_MAX_SPACES} spaces)")
    return int(value)


# OpenDocument: text:p / text:h with text, text:span and text:a children (nested spans are flattened into
# their outermost span); text:s is a space; anything else (tabs, line breaks, frames, notes) is an atom.
def odf_pieces(paragraph, keep: list) -> list[Piece]:
    from odf.namespaces import TEXTNS

    pieces: list[Piece] = []

    def text_of(node) -> str:
        if node.nodeType == node.TEXT_NODE:
            return node.data
        if node.qname == (TEXTNS, "s"):
            return " " * odf_space_count(node.getAttrNS(TEXTNS, "c"))
        if node.qname == (TEXTNS, "tab"):
            return "\t"
        if node.qname == (TEXTNS, "line-break"):
            return "\n"
        return "".join(text_of(child) for child in node.childNodes)

    base_key = len(keep)
    keep.append(None)  # the paragraph's own text
    for node in paragraph.childNodes:
        if node.nodeType == node.TEXT_NODE or node.qname == (TEXTNS, "s"):
            pieces.append(Piece(text_of(node), base_key))
        elif node.qname in ((TEXTNS, "span"), (TEXTNS, "a")) and all(
                child.nodeType == child.TEXT_NODE or child.qname in ((TEXTNS, "span"), (TEXTNS, "s"))
                for child in node.childNodes):
            keep.append(node)
            pieces.append(Piece(text_of(node), len(keep) - 1))
        else:
            keep.append(node)
            pieces.append(Piece(None, len(keep) - 1))
    merged: list[Piece] = []
    for piece in pieces:
        if merged and piece.text is not None and merged[-1].text is not None and merged[-1].key == piece.key:
            merged[-1] = Piece(merged[-1].text + piece.text, piece.key)
        elif piece.text != "":
            merged.append(piece)
    return merged


def odf_rebuild(paragraph, pieces: list[Piece], keep: list) -> None:
    from odf.element import Element, Text

    for child in list(paragraph.childNodes):
        if child.nodeType == child.TEXT_NODE:  # odfpy's removeChild takes elements only
            paragraph.childNodes.remove(child)
            child.parentNode = child.nextSibling = child.previousSibling = None
        else:
            paragraph.removeChild(child)
    for piece in pieces:
        original = keep[piece.key]
        if piece.text is None:
            paragraph.appendChild(original)
        elif original is None:
            paragraph.appendChild(Text(piece.text))
        else:
            element = Element(qname=original.qname, qattributes=dict(original.attributes), check_grammar=False)
            element.appendChild(Text(piece.text))
            paragraph.appendChild(element)


async def translate_odt(data: bytes, translate: Translate, settings: Settings, language: str) -> bytes:
    from odf import opendocument, text as odf_text

    check_archive(data, ".odt", settings.max_file_bytes)
    try:
        document = await asyncio.to_thread(opendocument.load, io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - odfpy raises many kinds on a corrupt file
        raise ApiError("invalid", f"Invalid request: the file is not a valid .odt document ({type(error).__name__})") from None
    if not str(document.mimetype).startswith("application/vnd.oasis.opendocument.text"):
        raise ApiError("invalid", f"Invalid request: the file is not an OpenDocument text ({document.mimetype})")
    elements = []
    for root in (document.text, document.masterstyles):
        for kind in (odf_text.P, odf_text.H):
            elements += root.getElementsByType(kind)
    keep: list = []
    paragraphs = [(p, odf_pieces(p, keep)) for p in elements]
    check_chars(count_chars([pieces for _, pieces in paragraphs]), settings.max_file_chars)
    translated = await translate_paragraphs([pieces for _, pieces in paragraphs], translate, language, settings.html_strategy)
    for (p, _), pieces in zip(paragraphs, translated):
        if pieces is not None:
            odf_rebuild(p, pieces, keep)
    buffer = io.BytesIO()
    await asyncio.to_thread(document.save, buffer)
    return buffer.getvalue()


TRANSLATORS = {".txt": translate_text_file, ".html": translate_html_file, ".htm": translate_html_file,
               ".docx": translate_docx, ".odt": translate_odt}


async def translate_file(data: bytes, filename: str, translate: Translate, settings: Settings, language: str) -> bytes:
    extension = extension_of(filename)
    if extension not in TRANSLATORS:
        raise ApiError("invalid", "Invalid request: file format not supported")
    return await TRANSLATORS[extension](data, translate, settings, language)
