"""Manual pages (roff source with the man macros): paragraph blocks aligned between the English and German pages.

German manual pages (manpages-de) are made with po4a from the English source, so both languages share the
block structure. A block is the running text between paragraph macros (`.PP`, `.TP`, `.IP`, `.SH`, …); font
macros (`.B`, `.BR`, …) and escapes (`\\fB`, `\\-`, `\\(em`, …) are inline text. Preformatted text (`.nf`/`.EX`)
and tables (`.TS`) are skipped. The German "ÜBERSETZUNG" section (translator credits and licence) is dropped.
Pages align block by block when both have the same number of blocks, otherwise section by section where a
section has the same number of blocks on both sides.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from model.corpus.text import consistent

BREAK_MACROS = {"PP", "P", "LP", "HP", "TP", "TQ", "IP", "SH", "SS", "TH", "br", "sp", "RS", "RE", "in", "ti", "bp",
                "SY", "YS", "OP", "ce", "PD", "UN"}
INLINE_MACROS = {"UR", "UE", "MT", "ME"}  # links: the text between them stays in the paragraph
ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI"}  # arguments joined without spaces: `.BR ls (1)` → "ls(1)"
FONT = {"B", "I", "SM", "SB", "R"}
SKIP_UNTIL = {"nf": "fi", "EX": "EE", "TS": "TE", "de": ".", "ig": ".", "EQ": "EN"}
TRANSLATOR_SECTIONS = {"ÜBERSETZUNG", "ÜBERSETZER", "ÜBERSETZUNGEN"}
NAMED = {"aq": "'", "dq": '"', "em": "—", "en": "–", "bu": "•", "lq": "“", "rq": "”", "oq": "‘", "cq": "’",
         "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›", "ti": "~", "ha": "^", "rs": "\\", "hy": "-", "co": "©",
         "rg": "®", "tm": "™", "mc": "µ", "de": "°", "mu": "×", "di": "÷", "pl": "+", "mi": "−", "eq": "=",
         "<=": "≤", ">=": "≥", "->": "→", "<-": "←", "sl": "/", "ga": "`", "aa": "´", "at": "@", "sh": "#",
         "Do": "$", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "ss": "ß", ":a": "ä", ":o": "ö", ":u": "ü",
         ":A": "Ä", ":O": "Ö", ":U": "Ü", "Eu": "€", "bv": "|", "ba": "|", "or": "|", "dg": "†", "pc": "·"}
ESCAPE = re.compile(
    r"\\(?:f(?:\[[^\]]*\]|\(..|.)"  # font changes
    r"|\*(?:\[[^\]]*\]|\(..|.)"  # defined strings
    r"|s[-+]?(?:\d|\(\d\d|\[\d+\])"  # size changes
    r"|\((..)|\[([^\]]*)\]"  # named characters: groups 1, 2
    r"|([-e&~ 0|^,/:c%\\.'`\"t]))"  # single-character escapes: group 3
)
SINGLE = {"-": "-", "e": "\\", "&": "", "~": " ", " ": " ", "0": " ", "|": "", "^": "", ",": "", "/": "", ":": "",
          "c": "", "%": "", "\\": "\\", ".": ".", "'": "´", "`": "`", '"': "", "t": " "}


def unescape(text: str) -> str:
    def replace(match: re.Match) -> str:
        if match.group(1) or match.group(2):
            return NAMED.get(match.group(1) or match.group(2), "")
        if match.group(3):
            return SINGLE[match.group(3)]
        return ""  # font, string or size change
    if '\\"' in text:  # an inline comment runs to the end of the line
        text = text.split('\\"', 1)[0]
    return ESCAPE.sub(replace, text)


def macro_arguments(rest: str) -> list[str]:
    """Arguments of a request line: blank-separated, double quotes group ("" inside is a quote)."""
    return [a[1:-1].replace('""', '"') if a.startswith('"') else a for a in re.findall(r'"(?:[^"]|"")*"?|\S+', rest)]


def man_blocks(source: str) -> list[tuple[int, str]]:
    """(section number, paragraph text) of a page's running text, in order; section 0 is before the first .SH."""
    blocks: list[tuple[int, str]] = []
    current: list[str] = []
    section, skip_until, translator = 0, None, False
    tag_line = False  # after .TP/.TQ the next input line is the tag: a block of its own

    def flush() -> None:
        text = " ".join(" ".join(current).split())
        if text and not translator:
            blocks.append((section, text))
        current.clear()

    for line in source.splitlines():
        if skip_until is not None:
            if line.lstrip(".'").split(maxsplit=1)[:1] == [skip_until] or (skip_until == "." and line.strip() == ".."):
                skip_until = None
            continue
        if line.startswith((".", "'")):
            body = line[1:].lstrip()
            if body.startswith(('\\"', "\\}")) or not body:
                continue
            name, _, rest = body.partition(" ")
            name = name.strip()
            if name in SKIP_UNTIL:
                flush()
                skip_until = SKIP_UNTIL[name]
            elif name in ("SH", "SS"):
                flush()
                title = unescape(" ".join(macro_arguments(rest)))
                if name == "SH":
                    section += 1
                    translator = translator or title.strip().upper() in TRANSLATOR_SECTIONS
                current.append(title)
                flush()
            elif name == "IP":
                flush()
                tag = unescape(macro_arguments(rest)[0]) if macro_arguments(rest) else ""
                if tag.strip() and tag.strip() not in ("•", "*", "-", "—"):
                    current.append(tag)
                    flush()
            elif name in BREAK_MACROS:
                flush()
                tag_line = name in ("TP", "TQ")
            elif name in ALTERNATING or name in FONT:
                current.append(unescape(("" if name in ALTERNATING else " ").join(macro_arguments(rest))))
                if tag_line:
                    flush()
                    tag_line = False
            elif name in INLINE_MACROS:
                if name in ("UE", "ME") and rest.strip():
                    if current:
                        current[-1] += unescape(rest.strip())  # closing punctuation after a link
                    else:
                        current.append(unescape(rest.strip()))
            # any other request (.ad, .na, .ft, .hy, .ds, .if, …) carries no running text
            continue
        if line.startswith((" ", "\t")) and line.strip():  # roff breaks before an indented text line
            flush()
        if not line.strip():  # a blank line is a paragraph break
            flush()
            continue
        current.append(unescape(line))
        if tag_line:
            flush()
            tag_line = False
    flush()
    return blocks


def read_page(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def align_blocks(english: list[tuple[int, str]], german: list[tuple[int, str]]) -> Iterator[tuple[str, str]]:
    """Blocks paired by position (whole page, else section by section); pairings whose lengths do not look like
    translations (model.corpus.text.consistent) are dropped."""
    if len(english) == len(german):
        pairs = [(en, de) for (_, en), (_, de) in zip(english, german)]
        yield from pairs if consistent(pairs) else []
        return
    en_sections: dict[int, list[str]] = {}
    de_sections: dict[int, list[str]] = {}
    for number, text in english:
        en_sections.setdefault(number, []).append(text)
    for number, text in german:
        de_sections.setdefault(number, []).append(text)
    if len(en_sections) != len(de_sections):
        return
    for en_blocks, de_blocks in zip(en_sections.values(), de_sections.values()):
        if len(en_blocks) == len(de_blocks) and consistent(list(zip(en_blocks, de_blocks))):
            yield from zip(en_blocks, de_blocks)


def man_page_pairs(english_roots: list[Path], german_root: Path) -> Iterator[tuple[str, str]]:
    """Pages under `german_root` (…/man/de) paired with the page of the same section and name under the first
    English root (…/man) that has it; `.so` redirections skipped."""
    for german_page in sorted(german_root.glob("man*/*")):
        relative = german_page.relative_to(german_root)
        english_page = next((root / relative for root in english_roots if (root / relative).exists()), None)
        if english_page is None:
            continue
        en_source, de_source = read_page(english_page), read_page(german_page)
        if en_source.startswith(".so ") or de_source.startswith(".so "):
            continue
        yield from align_blocks(man_blocks(en_source), man_blocks(de_source))
