"""Qt's compiled translation catalogs (.qm), read without Qt.

Layout (Qt's `qtranslator.cpp`): a 16-byte magic, then sections of [tag: 1 byte][length: 4 bytes big-endian][data];
the Messages section (tag 0x69) is a run of messages, each a list of [field tag: 1 byte][payload] ending with the
End tag. Translations are UTF-16BE, source texts, contexts and comments UTF-8 (lengths are 4-byte big-endian byte
counts; a translation length of 0xFFFFFFFF means "no translation"). Numerus messages carry several Translation
fields; only single-translation messages are returned.
"""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = bytes.fromhex("3cb86418caef9c95cd211cbf60a1bddd")
MESSAGES_SECTION = 0x69
END, SOURCE_TEXT16, TRANSLATION, CONTEXT16, OBSOLETE1, SOURCE_TEXT, CONTEXT, COMMENT, OBSOLETE2 = range(1, 10)


class QmError(ValueError):
    pass


def _messages_block(data: bytes) -> bytes:
    if not data.startswith(MAGIC):
        raise QmError("not a Qt .qm file (bad magic)")
    position = len(MAGIC)
    while position + 5 <= len(data):
        tag, length = data[position], struct.unpack_from(">I", data, position + 1)[0]
        position += 5
        if tag == MESSAGES_SECTION:
            return data[position:position + length]
        position += length
    return b""


def read_qm(path: Path) -> list[tuple[str, str, str]]:
    """→ (context, source text, translation) for each message with a source text and exactly one translation."""
    block = _messages_block(Path(path).read_bytes())
    messages, position = [], 0
    context, source, translations = "", "", []
    while position < len(block):
        tag = block[position]
        position += 1
        if tag == END:
            if source and len(translations) == 1:
                messages.append((context, source, translations[0]))
            context, source, translations = "", "", []
        elif tag in (OBSOLETE1, OBSOLETE2):
            position += 4 if tag == OBSOLETE1 else 0  # a 4-byte hash, or nothing
        else:
            if position + 4 > len(block):
                raise QmError(f"truncated message field at byte {position}")
            length = struct.unpack_from(">I", block, position)[0]
            position += 4
            if tag == TRANSLATION:
                if length != 0xFFFFFFFF:
                    translations.append(block[position:position + length].decode("utf-16-be", errors="replace"))
                    position += length
            elif tag in (SOURCE_TEXT, CONTEXT, COMMENT, SOURCE_TEXT16, CONTEXT16):
                text = block[position:position + length].decode("utf-8", errors="replace")
                position += length
                if tag in (SOURCE_TEXT, SOURCE_TEXT16):
                    source = text
                elif tag in (CONTEXT, CONTEXT16):
                    context = text
            else:
                raise QmError(f"unknown message field tag {tag:#x} at byte {position - 5}")
    return messages
