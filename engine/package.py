"""A model package: the only thing the service knows about a model.

    models/en-de/
      package.json    this schema: languages, special ids, dims, limits, precision, graph I/O, checksums
      encoder.onnx    input_ids → memory + cross-attention keys/values
      decoder.onnx    one decoder step over in-place caches, returning each row's best candidates
                      (export/decoder_graph.py)
      spm.model       the SentencePiece tokenizer
      parity.json     the export's parity report against PyTorch

A package imported from an OPUS-MT (Marian) checkpoint (export/importers/marian.py) has, in place of
spm.model, a source and a target SentencePiece model and the vocabulary map between their pieces and the
model's ids (`vocabulary`: source.spm, target.spm, vocab.json; engine/tokenization.py), and its parity
report is against transformers' MarianMTModel. Its `bos` is the decoder's start token, which for Marian is
the padding token.

`load_package` refuses anything broken (missing or altered file, wrong language pair, a schema
it does not know) with one clear error, so a bad package stops the service at start-up
instead of translating garbage.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FORMAT_VERSION = 2  # 2: the decoder step with in-place caches and in-graph top-k (1: growing caches, full log-probs)
MANIFEST = "package.json"
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")  # ISO 639 code, optional region/script


class PackageError(ValueError):
    """The package directory cannot be served; the message says why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpecialIds(Strict):
    pad: int = Field(ge=0)
    unk: int = Field(ge=0)
    bos: int = Field(ge=0)
    eos: int = Field(ge=0)


class ModelDims(Strict):
    vocab_size: int = Field(gt=4)
    d_model: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    n_encoder_layers: int = Field(gt=0)
    n_decoder_layers: int = Field(gt=0)

    @model_validator(mode="after")
    def heads_fill_the_model(self) -> "ModelDims":
        if self.n_heads * self.head_dim != self.d_model:
            raise ValueError(f"n_heads × head_dim = {self.n_heads * self.head_dim} ≠ d_model = {self.d_model}")
        return self


class Limits(Strict):
    max_source_tokens: int = Field(gt=0)  # including EOS
    max_positions: int = Field(gt=0)  # size of the position table: caps source and output length

    @model_validator(mode="after")
    def source_fits(self) -> "Limits":
        if self.max_source_tokens > self.max_positions:
            raise ValueError("max_source_tokens exceeds max_positions")
        return self


class GraphSpec(Strict):
    file: str
    inputs: list[str]
    outputs: list[str]


class Graphs(Strict):
    encoder: GraphSpec
    decoder: GraphSpec


class SourceCheckpoint(Strict):
    path: str
    model_safetensors_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # of `weights_file`
    weights_file: str = "model.safetensors"  # imported checkpoints may have pytorch_model.bin


class Vocabulary(Strict):
    """Two SentencePiece models and a vocabulary map (piece → id) shared by source and target (Marian)."""

    source_spm: str = "source.spm"
    target_spm: str = "target.spm"
    vocab: str = "vocab.json"
    eos_piece: str = "</s>"
    unk_piece: str = "<unk>"
    pad_piece: str = "<pad>"
    special_pieces: list[str] = ["</s>", "<unk>", "<pad>"]  # left out of decoded text


class Decoding(Strict):
    """Search settings chosen for these weights on their validation splits (`python -m model.choose_decoding`);
    a request's own settings (beam size, n-best) go on top."""

    length_penalty: float = Field(1.0, ge=0.0, le=4.0)  # beam hypotheses score log-prob sum / length ** this


class PackageManifest(Strict):
    format_version: Literal[2]
    name: str  # "<source>-<target>"
    source_language: str
    target_language: str
    precision: Literal["fp32", "int8", "fp16"]
    special_ids: SpecialIds
    model: ModelDims
    limits: Limits
    graphs: Graphs
    tokenizer: str = "spm.model"  # the (source) SentencePiece model; Marian packages: source.spm, ids via `vocabulary`
    vocabulary: Vocabulary | None = None  # imported Marian packages (engine/tokenization.py)
    decoding: Decoding = Decoding()  # packages exported before it was recorded search with the defaults
    files: dict[str, str]  # file name → sha256 of every file in the package but package.json
    source_checkpoint: SourceCheckpoint
    versions: dict[str, str | int]  # torch, onnx, onnxruntime, opset, exporter (older packages: onnxscript too)
    export_options: dict[str, bool | int | str] = {}  # int8: per_channel, reduce_range, row_scales; imported: importer
    parity: dict | None = None  # summary of parity.json

    @model_validator(mode="after")
    def consistent(self) -> "PackageManifest":
        for code in (self.source_language, self.target_language):
            if not LANGUAGE_CODE.fullmatch(code):  # match's $ would also take a code ending in a line break
                raise ValueError(f"{code!r} is not a language code")
        if self.source_language == self.target_language:
            raise ValueError("source and target language are the same")
        if self.name != f"{self.source_language}-{self.target_language}":
            raise ValueError(f"name {self.name!r} does not match {self.source_language}-{self.target_language}")
        ids = self.special_ids
        distinct = {ids.pad, ids.unk, ids.bos, ids.eos}
        # Marian starts decoding from the padding token: bos (the decoder's start) may be pad there.
        if (len(distinct) != 4 and not (self.vocabulary and ids.bos == ids.pad and len(distinct) == 3)) \
                or max(ids.pad, ids.unk, ids.bos, ids.eos) >= self.model.vocab_size:
            raise ValueError("special ids must be distinct and inside the vocabulary")
        tokenizers = (self.vocabulary.source_spm, self.vocabulary.target_spm, self.vocabulary.vocab) if self.vocabulary else ()
        for needed in (self.graphs.encoder.file, self.graphs.decoder.file, self.tokenizer, *tokenizers):
            if needed not in self.files:
                raise ValueError(f"{needed} has no checksum in 'files'")
        for name in self.files:
            if Path(name).name != name or name == MANIFEST:
                raise ValueError(f"{name!r}: files must be plain names inside the package directory")
        return self


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> PackageManifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise PackageError(f"{directory}: no {MANIFEST}; not a model package")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackageError(f"{path}: invalid manifest: {error}") from error
    version = values.get("format_version") if isinstance(values, dict) else None
    if type(version) is int and version < FORMAT_VERSION:  # not a bool, which is an int to isinstance
        source = values.get("source_checkpoint")
        checkpoint = source.get("path", "checkpoints/<pair>") if isinstance(source, dict) else "checkpoints/<pair>"
        raise PackageError(
            f"{directory}: package format {version} was written by an older export; this engine reads format "
            f"{FORMAT_VERSION}. Re-export it: python -m export --checkpoint {checkpoint} --out {directory} "
            f"--precision {values.get('precision', 'int8')}")
    try:
        return PackageManifest.model_validate(values)
    except ValidationError as error:
        raise PackageError(f"{path}: invalid manifest: {error}") from error


def load_package(
    directory: Path | str, expect_pair: tuple[str, str] | None = None, verify_checksums: bool = True,
    require_parity: bool = True,
) -> PackageManifest:
    """Validate a package directory → its manifest, or raise PackageError saying what is wrong.
    `require_parity=False` only for the export's own parity run, before the result is recorded."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if require_parity and not (manifest.parity and manifest.parity.get("passed") is True):
        raise PackageError(f"{directory}: the export's parity check against PyTorch did not pass or was not run")
    if expect_pair and (manifest.source_language, manifest.target_language) != tuple(expect_pair):
        raise PackageError(
            f"{directory}: package translates {manifest.name}, expected {expect_pair[0]}-{expect_pair[1]}"
        )
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise PackageError(f"{directory}: {name} is missing")
        if verify_checksums and sha256_of(path) != expected:
            raise PackageError(f"{directory}: {name} is corrupted or was changed (sha256 mismatch)")
    return manifest


def write_manifest(directory: Path, manifest: PackageManifest) -> Path:
    """Write package.json with the checksums recomputed from the files on disk."""
    directory = Path(directory)
    files = {name: sha256_of(directory / name) for name in sorted(manifest.files)}
    manifest = manifest.model_copy(update={"files": files})
    PackageManifest.model_validate(manifest.model_dump())  # re-check after the update
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest.model_dump(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
