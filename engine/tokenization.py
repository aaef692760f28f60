"""Text ↔ token ids for a model package, in the two layouts a package may have.

- Our packages: one SentencePiece model (`spm.model`) whose ids are the model's ids; a source sentence is
  its pieces' ids + EOS, an output is decoded by the same model.
- Packages imported from OPUS-MT (Marian) checkpoints: a source and a target SentencePiece model and a
  vocabulary map (`vocab.json`, piece → model id) shared by both sides. A source sentence is the source
  model's pieces looked up in the map (a piece the map lacks is UNK) + EOS; an output's ids become pieces
  through the inverse map, special tokens are left out, and the target model joins the pieces into text.
  This is what transformers' MarianTokenizer does (`tokenizer(texts)`, `decode(ids, skip_special_tokens=True)`).

`load_tokenization` checks the files against package.json's special ids and vocabulary size and raises
PackageError on any mismatch, so a package whose tokenizer does not fit its model never serves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import sentencepiece as spm

from engine.package import PackageError, PackageManifest

SPIECE_UNDERLINE = "▁"


class Tokenization(Protocol):
    def encode(self, text: str) -> list[int]:
        """One source text → its ids with EOS appended."""

    def decode(self, ids: list[int], unknowns: Sequence[str] | None = None) -> str:
        """One output's ids (without EOS) → its text. With `unknowns` (the source's, see below), an UNK in the
        output becomes the source span the k-th UNK of the source stood for, in order, or nothing once they run out."""

    def unknowns(self, text: str) -> list[str]:
        """The spans of a source text its vocabulary lacks (each one UNK id), in order."""


class SentencePieceTokenization:
    """One SentencePiece model whose ids are the model's (our own packages)."""

    def __init__(self, path: Path, manifest: PackageManifest):
        self.processor = spm.SentencePieceProcessor(model_file=str(path))
        self.eos, self.unk = manifest.special_ids.eos, manifest.special_ids.unk
        ids, sp = manifest.special_ids, self.processor
        if sp.get_piece_size() != manifest.model.vocab_size:
            raise PackageError(f"{manifest.name}: tokenizer has {sp.get_piece_size()} pieces, model {manifest.model.vocab_size}")
        if (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) != (ids.pad, ids.unk, ids.bos, ids.eos):
            raise PackageError(f"{manifest.name}: tokenizer special ids differ from package.json")

    def encode(self, text: str) -> list[int]:
        # One call per text: given a list, sentencepiece starts a thread pool on every call (~80 µs for
        # one sentence against ~4 µs; milliseconds when the cores are busy), and this runs in the event loop.
        return self.processor.encode(text, out_type=int) + [self.eos]

    def decode(self, ids: list[int], unknowns: Sequence[str] | None = None) -> str:
        ids = list(map(int, ids))
        if unknowns is None or self.unk not in ids:
            return self.processor.decode(ids)  # an UNK reads " ⁇ ", SentencePiece's own rendering
        spans, text = iter(unknowns), []
        for piece in self.processor.decode(ids, return_type="proto").pieces:
            if piece.id != self.unk:
                text.append(piece.surface)
                continue
            span = next(spans, None)
            if span is not None:
                text.append(span)
            elif text and text[-1] == " ":  # nothing to put back: the space piece before it goes too
                text.pop()
        return "".join(text)

    def unknowns(self, text: str) -> list[str]:
        return [piece.surface for piece in self.processor.encode(text, return_type="proto").pieces if piece.id == self.unk]


class VocabularyTokenization:
    """Source and target SentencePiece models with a vocabulary map between their pieces and the model's ids
    (OPUS-MT / Marian packages)."""

    def __init__(self, directory: Path, manifest: PackageManifest):
        files = manifest.vocabulary
        assert files is not None
        self.source = spm.SentencePieceProcessor(model_file=str(directory / files.source_spm))
        self.target = spm.SentencePieceProcessor(model_file=str(directory / files.target_spm))
        try:
            vocab = json.loads((directory / files.vocab).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PackageError(f"{manifest.name}: {files.vocab} is not a JSON vocabulary: {error}") from error
        self.piece_to_id = check_vocabulary(vocab, manifest, files.vocab)
        self.id_to_piece = {i: piece for piece, i in self.piece_to_id.items()}
        self.eos, self.unk = manifest.special_ids.eos, manifest.special_ids.unk
        self.special = {self.piece_to_id[piece] for piece in files.special_pieces}

    def encode(self, text: str) -> list[int]:
        code, text = split_language_code(text)
        pieces = code + self.source.encode(text, out_type=str)
        return [self.piece_to_id.get(piece, self.unk) for piece in pieces] + [self.eos]

    def decode(self, ids: list[int], unknowns: Sequence[str] | None = None) -> str:
        """UNK is a special token here and always left out, as MarianTokenizer leaves it (`unknowns` is not used)."""
        pieces = [self.piece(int(i)) for i in ids if int(i) not in self.special]
        return self.target.decode_pieces(pieces).replace(SPIECE_UNDERLINE, " ").strip()

    def unknowns(self, text: str) -> list[str]:
        return []

    def piece(self, index: int) -> str:
        piece = self.id_to_piece.get(index)
        if piece is None and 0 <= index < self.target.get_piece_size():  # an id the map skips: the target model's
            piece = self.target.id_to_piece(index)
        return piece if piece else self.id_to_piece[self.unk]


def split_language_code(text: str) -> tuple[list[str], str]:
    """A leading target-language token (">>fr<<") stays one piece, as MarianTokenizer keeps it."""
    if text.startswith(">>") and (end := text.find("<<")) != -1:
        return [text[: end + 2]], text[end + 2 :]
    return [], text


def check_vocabulary(vocab: object, manifest: PackageManifest, name: str) -> dict[str, int]:
    """vocab.json must map pieces to distinct ids inside the model's vocabulary, its special pieces to package.json's
    special ids → the map."""
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and type(v) is int for k, v in vocab.items()):
        raise PackageError(f"{manifest.name}: {name} must map pieces (strings) to ids (integers)")
    ids = list(vocab.values())
    if not ids:
        raise PackageError(f"{manifest.name}: {name} is empty")
    if len(set(ids)) != len(ids):
        raise PackageError(f"{manifest.name}: {name} gives one id to several pieces")
    if min(ids) < 0 or max(ids) >= manifest.model.vocab_size:
        raise PackageError(f"{manifest.name}: {name} has ids outside the model's vocabulary (0..{manifest.model.vocab_size - 1})")
    files, special = manifest.vocabulary, manifest.special_ids
    assert files is not None
    expected = {files.eos_piece: special.eos, files.unk_piece: special.unk, files.pad_piece: special.pad}
    for piece, wanted in expected.items():
        if vocab.get(piece) != wanted:
            raise PackageError(f"{manifest.name}: {name} gives {piece!r} the id {vocab.get(piece)}; package.json says {wanted}")
    missing = [piece for piece in files.special_pieces if piece not in vocab]
    if missing:
        raise PackageError(f"{manifest.name}: special pieces {missing} are not in {name}")
    return vocab


def load_tokenization(directory: Path | str, manifest: PackageManifest) -> Tokenization:
    directory = Path(directory)
    if manifest.vocabulary is not None:
        return VocabularyTokenization(directory, manifest)
    return SentencePieceTokenization(directory / manifest.tokenizer, manifest)
