"""What the load generator sends: sentences from a corpus, their token counts, and a length mix.

A corpus is the project's TSV split (`data/en-de/test.tsv`, columns named in `columns.json`) or any
text file with one sentence per line. Token counts come from the model package's SentencePiece model
when it is at hand, else from the server itself (/v1/encode returns the token ids, so any running
service can count for us), else from words as an approximation."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

ENCODE_CHUNK = 64  # texts per /v1/encode call: the service's default TRANSLATOR_MAX_TEXTS_PER_REQUEST


def read_corpus(path: Path, language: str) -> list[str]:
    """The `language` column of a TSV split with a columns.json beside it, else every non-empty line."""
    columns_file = path.parent / "columns.json"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".tsv" and columns_file.is_file():
        columns = json.loads(columns_file.read_text())["columns"]
        if language not in columns:
            raise ValueError(f"{path}: no {language!r} column (columns.json names {columns})")
        column = columns.index(language)
        lines = [fields[column] for fields in (line.split("\t") for line in lines) if len(fields) > column]
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise ValueError(f"{path}: no sentences")
    return sentences


class TokenCounter(Protocol):
    """Source tokens per text, counted as the service counts them (end-of-sentence included)."""

    name: str

    def count(self, texts: list[str]) -> list[int]: ...


class SentencePieceCounter:
    def __init__(self, model_file: Path):
        import sentencepiece  # a serving dependency; imported here so `translator load --help` stays light

        self.name = f"SentencePiece ({model_file})"
        self.processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))

    def count(self, texts: list[str]) -> list[int]:
        return [len(ids) + 1 for ids in self.processor.encode(list(texts))]


class ServerCounter:
    """Asks the running service (/v1/encode, encoder only): exact for whatever model it serves."""

    def __init__(self, url: str, source: str, timeout: float = 60.0):
        self.name = f"the server's /v1/encode ({url})"
        self.url, self.source, self.timeout = url.rstrip("/"), source, timeout

    def count(self, texts: list[str]) -> list[int]:
        counts: list[int] = []
        with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
            for start in range(0, len(texts), ENCODE_CHUNK):
                response = client.post("/v1/encode", json={"text": texts[start:start + ENCODE_CHUNK], "source": self.source})
                response.raise_for_status()
                counts += [len(item["token_ids"]) for item in response.json()["items"]]
        return counts


class WordCounter:
    """Words + 1: an approximation for servers that are not this service (subwords run longer)."""

    name = "words + 1 (approximation)"

    def count(self, texts: list[str]) -> list[int]:
        return [len(text.split()) + 1 for text in texts]


def package_tokenizer(models_dir: Path, source: str, target: str) -> Path | None:
    """The SentencePiece model of the `source-target` package under `models_dir`, if there is one."""
    manifest = models_dir / f"{source}-{target}" / "package.json"
    if not manifest.is_file():
        return None
    tokenizer = manifest.parent / json.loads(manifest.read_text()).get("tokenizer", "spm.model")
    return tokenizer if tokenizer.is_file() else None


def package_max_source_tokens(models_dir: Path, source: str, target: str) -> int | None:
    manifest = models_dir / f"{source}-{target}" / "package.json"
    return json.loads(manifest.read_text())["limits"]["max_source_tokens"] if manifest.is_file() else None


def counter_for(models_dir: Path | None, url: str | None, source: str, target: str) -> TokenCounter:
    tokenizer = package_tokenizer(models_dir, source, target) if models_dir else None
    if tokenizer:
        return SentencePieceCounter(tokenizer)
    if url:
        return ServerCounter(url, source)
    return WordCounter()


@dataclass(frozen=True)
class LengthBin:
    """Sentences of `low`..`high` source tokens (inclusive; high None = no upper end), drawn with `weight`."""

    low: int
    high: int | None
    weight: float

    def holds(self, tokens: int) -> bool:
        return tokens >= self.low and (self.high is None or tokens <= self.high)

    def label(self) -> str:
        return f"{self.low}-{self.high if self.high is not None else ''}"


def parse_mix(text: str) -> list[LengthBin]:
    """"1-16:0.5,17-32:0.3,33-:0.2" → bins (token ranges, inclusive) with their shares of requests."""
    bins = []
    for part in text.split(","):
        span, _, weight = part.strip().partition(":")
        low, _, high = span.partition("-")
        try:
            bins.append(LengthBin(int(low), int(high) if high.strip() else None, float(weight or 1)))
        except ValueError:
            raise ValueError(f"length mix part {part!r}: write LOW-HIGH:WEIGHT, e.g. 1-16:0.5 or 33-:0.2") from None
    if any(b.weight < 0 for b in bins) or not sum(b.weight for b in bins):
        raise ValueError("length mix weights must be non-negative and not all zero")
    return bins


class SentencePicker:
    """Chooses the next text to send: in corpus order (each once, then again), uniformly at random,
    or by length mix (a bin by its weight, then a sentence of that bin uniformly)."""

    def __init__(self, sentences: list[str], order: str = "random", seed: int = 0):
        if order not in ("random", "sequential"):
            raise ValueError(f"order is {order!r}: random or sequential")
        self.bins: list[list[str]] = [list(sentences)]
        self.weights = [1.0]
        self.order = order
        self.random = random.Random(seed)
        self.position = 0

    @classmethod
    def by_mix(cls, sentences: list[str], counts: list[int], mix: list[LengthBin], seed: int = 0) -> "SentencePicker":
        picker = cls(sentences, "random", seed)
        picker.bins = [[s for s, n in zip(sentences, counts) if b.holds(n)] for b in mix]
        empty = [b.label() for b, members in zip(mix, picker.bins) if not members and b.weight > 0]
        if empty:
            raise ValueError(f"no corpus sentence has a token count in {', '.join(empty)}")
        picker.weights = [b.weight for b in mix]
        return picker

    def pick(self) -> str:
        if self.order == "sequential":
            sentences = self.bins[0]
            text = sentences[self.position % len(sentences)]
            self.position += 1
            return text
        members = self.random.choices(self.bins, self.weights)[0]
        return self.random.choice(members)


def texts_of_length(sentences: list[str], counter: TokenCounter, length: int, variants: int, seed: int = 0) -> list[str]:
    """`variants` texts of at most `length` source tokens (EOS included), each as long as fits."""
    chance = random.Random(seed * 1000 + length)
    streams = []
    for _ in range(variants):
        position, words = chance.randrange(len(sentences)), []
        while len(words) < length:  # every word is at least one token, so `length` words always overflow
            words += sentences[position % len(sentences)].split()
            position += 1
        streams.append(words[:length])
    fits, overflows = [0] * variants, [len(words) + 1 for words in streams]  # invariant: fits fits, overflows does not
    while any(hi - lo > 1 for lo, hi in zip(fits, overflows)):  # binary search on word counts, all texts at once
        middles = [(lo + hi) // 2 for lo, hi in zip(fits, overflows)]
        counts = counter.count([" ".join(words[:m]) for words, m in zip(streams, middles)])
        for i, (m, n) in enumerate(zip(middles, counts)):
            if overflows[i] - fits[i] > 1:
                fits[i], overflows[i] = (m, overflows[i]) if n <= length else (fits[i], m)
    return [" ".join(words[:n]) for words, n in zip(streams, fits) if n]
