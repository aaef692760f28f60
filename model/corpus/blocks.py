"""Documents in XML or HTML (Mallard pages, DocBook, HTML manuals): text blocks aligned by document order.

Translated documentation is generated from the English source (itstool, po4a, DocBook toolchains), so the German
file of the same name has the same block structure. A block is the text of an innermost block element (a
paragraph, title, list item, table cell…); code, screens, credits and metadata are skipped. Two files align block
by block when they have the same number of blocks, otherwise heading by heading where a section has the same
number of blocks on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from lxml import etree
from lxml import html as lxml_html

from model.corpus.text import consistent

MALLARD_BLOCKS = {"title", "subtitle", "desc", "p", "item", "td", "th", "caption"}
MALLARD_SKIP = {"info", "screen", "comment", "credit", "media", "synopsis"}  # inline code, keys, files stay
DOCBOOK_BLOCKS = {"title", "para", "simpara", "term", "entry", "listitem", "member", "subtitle", "caption", "glossterm"}
DOCBOOK_SKIP = {"screen", "programlisting", "synopsis", "cmdsynopsis", "funcsynopsis", "bookinfo", "articleinfo",
                "info", "authorgroup", "author", "othercredit", "legalnotice", "revhistory", "copyright", "indexterm",
                "remark", "literallayout"}
HTML_BLOCKS = {"title", "h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "dt", "dd", "td", "th", "caption", "figcaption",
               "blockquote"}
HTML_SKIP = {"script", "style", "pre", "head", "nav"}
HEADINGS = {"title", "h1", "h2", "h3", "h4", "h5", "h6", "subtitle"}


def _local(tag) -> str:
    if not isinstance(tag, str):
        return ""  # comments, processing instructions, entities
    return tag.rsplit("}", 1)[-1]


def _text(element, skip: set[str]) -> str:
    """The element's text without skipped descendants (their tails kept)."""
    parts: list[str] = []

    def walk(node) -> None:
        name = _local(node.tag)
        if node is not element and name in skip:
            if node.tail:
                parts.append(node.tail)
            return
        if isinstance(node.tag, str) and node.text:
            parts.append(node.text)
        for child in node:
            walk(child)
        if node is not element and node.tail:
            parts.append(node.tail)

    walk(element)
    return " ".join("".join(parts).replace("\u00b6", "").split())  # ¶: Sphinx's heading anchors


def leaf_blocks(root, blocks: set[str], skip: set[str]) -> list[tuple[bool, str]]:
    """(is a heading, text) of each block element that holds no other block element, in document order."""
    out: list[tuple[bool, str]] = []

    def walk(node) -> None:
        name = _local(node.tag)
        if name in skip:
            return
        inner = [child for child in node if isinstance(child.tag, str)]
        if name in blocks and not any(_contains_block(child, blocks, skip) for child in inner):
            text = _text(node, skip)
            if text:
                out.append((name in HEADINGS, text))
            return
        for child in inner:
            walk(child)

    walk(root)
    return out


def _contains_block(node, blocks: set[str], skip: set[str]) -> bool:
    name = _local(node.tag)
    if name in skip:
        return False
    return name in blocks or any(_contains_block(c, blocks, skip) for c in node if isinstance(c.tag, str))


def align(english: list[tuple[bool, str]], german: list[tuple[bool, str]]) -> list[tuple[str, str]]:
    """Blocks paired by position (whole file, else section by section); a file or section whose pairs fail
    `consistent` (lengths that do not look like translations: a shifted alignment) gives nothing."""
    if len(english) == len(german):
        pairs = [(en, de) for (_, en), (_, de) in zip(english, german)]
        return pairs if consistent(pairs) else []
    en_sections, de_sections = _sections(english), _sections(german)
    pairs = []
    if len(en_sections) == len(de_sections):
        for en_blocks, de_blocks in zip(en_sections, de_sections):
            if len(en_blocks) == len(de_blocks) and consistent(list(zip(en_blocks, de_blocks))):
                pairs += zip(en_blocks, de_blocks)
    return pairs


def _sections(blocks: list[tuple[bool, str]]) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for heading, text in blocks:
        if heading and sections[-1]:
            sections.append([])
        sections[-1].append(text)
    return sections


XML_PARSER = etree.XMLParser(resolve_entities=False, recover=True, no_network=True, load_dtd=False, huge_tree=True)


def mallard_blocks(path: Path) -> list[tuple[bool, str]]:
    root = etree.parse(str(path), XML_PARSER).getroot()
    return [] if root is None else leaf_blocks(root, MALLARD_BLOCKS, MALLARD_SKIP)


def docbook_blocks(path: Path, entities: dict[str, str] | None = None) -> list[tuple[bool, str]]:
    """DocBook XML; `&name;` references are replaced from `entities` (unknown ones dropped) before parsing,
    since the DTDs that define them are not read."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if entities is not None:
        text = re.sub(r"&([A-Za-z][\w.-]*);", lambda m: entities.get(m.group(1), m.group(0) if m.group(1) in
                      ("amp", "lt", "gt", "quot", "apos") else ""), text)
    root = etree.fromstring(text.encode("utf-8"), XML_PARSER)
    return [] if root is None else leaf_blocks(root, DOCBOOK_BLOCKS, DOCBOOK_SKIP)


def html_blocks(path: Path) -> list[tuple[bool, str]]:
    document = lxml_html.parse(str(path), lxml_html.HTMLParser(encoding="utf-8", remove_comments=True))
    root = document.getroot()
    body = root.find("body") if root is not None else None
    return [] if body is None else leaf_blocks(body, HTML_BLOCKS, HTML_SKIP)


def html_string_blocks(markup: str, drop: str | None = None) -> list[tuple[bool, str]]:
    """`html_blocks` of a string; `drop`: an XPath of elements removed first (navigation, credits)."""
    root = lxml_html.document_fromstring(markup, parser=lxml_html.HTMLParser(encoding="utf-8", remove_comments=True))
    if drop:
        for element in root.xpath(drop):
            element.drop_tree()
    body = root.find("body")
    return [] if body is None else leaf_blocks(body, HTML_BLOCKS, HTML_SKIP)


# KDE handbooks ship index.cache.bz2: every page of the rendered DocBook (entities resolved by KDE's own
# toolchain), each wrapped in <FILENAME filename="…">. Pages pair by file name; the header, navigation bars,
# table of contents and author/translator credits are not running text.
KDE_PAGE = re.compile(r'<FILENAME filename="([^"]+)">(.*?)</FILENAME>', re.S)
KDE_DROP = ('//*[@id="header" or @id="footer" or @id="footer_text" or contains(@class, "navCenter") '
            'or contains(@class, "navigation") or contains(@class, "toc") or contains(@class, "authorgroup") '
            'or contains(@class, "othercredit") or contains(@class, "author") or contains(@class, "copyright") '
            'or contains(@class, "legalnotice") or contains(@class, "releaseinfo") or contains(@class, "pubdate")]')


def kde_cache_pages(path: Path) -> dict[str, str]:
    import bz2

    text = bz2.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    return {name: page for name, page in KDE_PAGE.findall(text)}


def kde_handbook_pairs(english: Path, german: Path) -> Iterator[tuple[str, str]]:
    """Aligned blocks of the pages with the same file name in two index.cache.bz2 files."""
    try:
        en_pages, de_pages = kde_cache_pages(english), kde_cache_pages(german)
    except (OSError, ValueError):
        return
    for name, en_page in en_pages.items():
        if name in de_pages:
            try:
                yield from align(html_string_blocks(en_page, KDE_DROP), html_string_blocks(de_pages[name], KDE_DROP))
            except (etree.Error, ValueError):
                continue


def document_pairs(pages: list[tuple[Path, Path]], reader: Callable[[Path], list[tuple[bool, str]]]
                   ) -> Iterator[tuple[str, str]]:
    """Aligned blocks of each (English file, German file), in the given order; unreadable files skipped."""
    for english, german in pages:
        try:
            en_blocks, de_blocks = reader(english), reader(german)
        except (OSError, etree.Error, ValueError):
            continue
        yield from align(en_blocks, de_blocks)


def same_name_pages(en_root: Path, de_root: Path, pattern: str, rename: Callable[[str], str] = lambda p: p
                    ) -> list[tuple[Path, Path]]:
    """(English, German) files with the same relative path (after `rename`) under the two roots."""
    pages = []
    for english in sorted(en_root.glob(pattern)):
        german = de_root / rename(str(english.relative_to(en_root)))
        if german.exists() and german != english:
            pages.append((english, german))
    return pages
