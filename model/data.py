"""A reproducible parallel corpus: Debian packages (or your own data) → train/valid/test TSVs and a data card.

    python -m model.data debian --out data/en-de [--cache data/cache]
    python -m model.data user --tsv pairs.tsv --src-lang en --tgt-lang de --out data/my-en-de
    python -m model.data user --src corpus.en --tgt corpus.de --src-lang en --tgt-lang de --out data/my-en-de

Every pair is normalised (NFC, whitespace), filtered, deduplicated on both sides (the first source in
priority order wins) and assigned to a split by a hash of its first-column sentence, so a rerun gives
byte-identical files and a sentence in the test split never reappears in training. The output directory
holds train.tsv, valid.tsv, test.tsv (first column<TAB>second column), columns.json naming their
languages, and DATA_CARD.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from model.corpus_sources import (
    DING_PACKAGE, GETTEXT_PACKAGES, HELP_PACKAGES, Package, ding_pairs, fetch_package, gettext_catalogs, gettext_pairs,
    help_pairs, package_licence,
)

SPLITS = ("train", "valid", "test")
TEST_BUCKETS = range(0, 75)  # of 1000: ~7.5% of the LibreOffice help pairs (the test split is help text only)
VALID_BUCKETS = range(75, 88)  # ~1.3% of every source
TEST_SOURCE = "libreoffice-help"
MAX_CHARS, MAX_WORDS, MAX_RATIO = 400, 100, 3.0
PLACEHOLDER = re.compile(r"%(?:\d+\$)?[-+ #0]*\d*(?:\.\d+)?[sdiuxXfgecp%]|%\([a-z_]+\)[sd]|%\d+|\{\d*\}|\$\(?[A-Z_]+\)?|\$\{[^}]*\}")
MARKUP = re.compile(r"</?[a-zA-Z][^>]*>")


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).replace("\u00a0", " ").split())


def letters(text: str) -> int:
    return sum(ch.isalpha() for ch in PLACEHOLDER.sub("", text))


def rejection(first: str, second: str) -> str | None:
    """The name of the first filter a pair fails, or None if it is kept."""
    if not first or not second:
        return "empty side"
    if first.casefold() == second.casefold():
        return "identical sides"
    if max(len(first), len(second)) > MAX_CHARS or max(len(first.split()), len(second.split())) > MAX_WORDS:
        return f"longer than {MAX_CHARS} characters or {MAX_WORDS} words"
    if max(len(first), len(second)) > 12 and max(len(first), len(second)) > MAX_RATIO * min(len(first), len(second)):
        return f"length ratio over {MAX_RATIO}"
    if letters(first) < 2 or letters(second) < 2:
        return "only numbers, punctuation or placeholders"
    if MARKUP.search(first) or MARKUP.search(second):
        return "markup left in the text"
    if Counter(PLACEHOLDER.findall(first)) != Counter(PLACEHOLDER.findall(second)):
        return "placeholders differ between sides"
    return None


def bucket(sentence: str) -> int:
    return int(hashlib.sha256(sentence.encode("utf-8")).hexdigest()[:8], 16) % 1000


def split_of(first: str, source: str) -> str:
    b = bucket(first)
    if b in TEST_BUCKETS and source == TEST_SOURCE:
        return "test"
    return "valid" if b in VALID_BUCKETS else "train"


class CorpusBuilder:
    """Feeds (source name, pairs) in priority order; keeps counts for the data card."""

    def __init__(self) -> None:
        self.seen_first: set[str] = set()
        self.seen_second: set[str] = set()
        self.splits: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
        self.raw: Counter = Counter()
        self.rejected: dict[str, Counter] = defaultdict(Counter)
        self.kept: dict[str, Counter] = defaultdict(Counter)  # source → split → pairs

    def add(self, source: str, pairs: Iterable[tuple[str, str]]) -> None:
        for first, second in pairs:
            self.raw[source] += 1
            first, second = normalise(first), normalise(second)
            reason = rejection(first, second)
            if reason is None and (first in self.seen_first or second in self.seen_second):
                reason = "duplicate (either side seen before)"
            if reason:
                self.rejected[source][reason] += 1
                continue
            self.seen_first.add(first)
            self.seen_second.add(second)
            split = split_of(first, source)
            self.splits[split].append((first, second))
            self.kept[source][split] += 1

    def write(self, out: Path, columns: tuple[str, str]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        for name, pairs in self.splits.items():
            pairs.sort(key=lambda p: (hashlib.sha256(p[0].encode()).hexdigest(), p[1]))
            (out / f"{name}.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
        (out / "columns.json").write_text(json.dumps({"columns": list(columns)}) + "\n")

    def card_tables(self) -> list[str]:
        lines = ["## Pairs per source", "", "| source | raw pairs | kept | train | valid | test |", "|---|---|---|---|---|---|"]
        for source in self.raw:
            kept = self.kept[source]
            lines.append(f"| {source} | {self.raw[source]:,} | {sum(kept.values()):,} | {kept['train']:,} | {kept['valid']:,} | {kept['test']:,} |")
        totals = {name: len(pairs) for name, pairs in self.splits.items()}
        lines.append(f"| **all** | {sum(self.raw.values()):,} | {sum(totals.values()):,} | {totals['train']:,} | {totals['valid']:,} | {totals['test']:,} |")
        lines += ["", "## Pairs removed, by filter (in the order applied)", "", "| source | filter | pairs |", "|---|---|---|"]
        for source, reasons in self.rejected.items():
            lines += [f"| {source} | {reason} | {count:,} |" for reason, count in reasons.most_common()]
        return lines


SPLIT_RULES = [
    "## Filters and splits",
    "",
    "- Normalisation: Unicode NFC, no-break spaces to spaces, whitespace collapsed.",
    f"- Removed: an empty side; identical sides; over {MAX_CHARS} characters or {MAX_WORDS} words; a character-length "
    f"ratio over {MAX_RATIO} (when the longer side exceeds 12 characters); fewer than two letters outside placeholders; "
    "leftover markup; printf/brace/shell placeholders that differ between the sides (identical ones are kept, so the "
    "model learns to copy them).",
    "- Deduplication on both sides: a pair whose first or second sentence was already taken is dropped; sources are "
    "read in priority order (LibreOffice help, gettext catalogs, Ding), so the cleanest source wins.",
    f"- Split by `sha256(first column)[:8] mod 1000`: buckets {TEST_BUCKETS.start}-{TEST_BUCKETS.stop - 1} of the "
    f"LibreOffice help → test; buckets {VALID_BUCKETS.start}-{VALID_BUCKETS.stop - 1} of every source → valid; the rest → train. "
    "The hash depends only on the sentence, so a rebuild gives the same split and en→de and de→en share it.",
]


def build_debian(out: Path, cache: Path) -> None:
    builder, packages = CorpusBuilder(), []
    help_en, help_de = (fetch_package(name, cache) for name in HELP_PACKAGES)
    packages += [help_en, help_de]
    print("reading LibreOffice help …")
    builder.add(TEST_SOURCE, help_pairs(help_en.root / "usr/share/libreoffice/help/en-US", help_de.root / "usr/share/libreoffice/help/de"))
    print("reading gettext catalogs …")
    for name in GETTEXT_PACKAGES:
        package = fetch_package(name, cache)
        packages.append(package)
        builder.add("gettext", gettext_pairs(gettext_catalogs(package)))
    print("reading the Ding dictionary …")
    ding = fetch_package(DING_PACKAGE, cache)
    packages.append(ding)
    builder.add("ding", ding_pairs(ding.root / "usr/share/trans/de-en"))
    builder.write(out, ("en", "de"))
    write_card(out, builder, packages, "python -m model.data debian --out " + str(out))


def write_card(out: Path, builder: CorpusBuilder, packages: list[Package], command: str) -> None:
    lines = ["# Data card", "", f"Built by `{command}` (see `model/data.py`); columns: {json.loads((out / 'columns.json').read_text())['columns']}.", ""]
    if packages:
        lines += ["## Debian packages (fetched with `apt-get download`, unpacked with `dpkg-deb -x`, never installed)", "",
                  "| package | version | licence |", "|---|---|---|"]
        lines += [f"| {p.name} | {p.version} | {package_licence(p)} |" for p in packages]
        lines.append("")
    lines += builder.card_tables() + [""] + SPLIT_RULES
    (out / "DATA_CARD.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def source_column(data: Path, src_lang: str, tgt_lang: str) -> int:
    """Which TSV column holds the source language (columns.json, written by model.data, names them)."""
    columns_file = data / "columns.json"
    columns = json.loads(columns_file.read_text())["columns"] if columns_file.exists() else ["en", "de"]
    if sorted(columns) != sorted([src_lang, tgt_lang]):
        raise ValueError(f"{data} holds {columns}, not {src_lang} and {tgt_lang}")
    return columns.index(src_lang)


def read_user_pairs(tsv: Path | None, src: Path | None, tgt: Path | None) -> Iterable[tuple[str, str]]:
    if tsv is not None:
        with open(tsv, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 2:
                    yield parts[0], parts[1]
        return
    assert src is not None and tgt is not None
    with open(src, encoding="utf-8", errors="replace") as a, open(tgt, encoding="utf-8", errors="replace") as b:
        for first, second in zip(a, b, strict=True):
            yield first, second


def build_user(out: Path, pairs: Iterable[tuple[str, str]], columns: tuple[str, str], command: str) -> None:
    builder = CorpusBuilder()
    builder.add("user", pairs)
    # A user corpus has one source, so its test split is drawn from it.
    builder.splits["test"] += [p for p in builder.splits["train"] if bucket(p[0]) in TEST_BUCKETS]
    builder.splits["train"] = [p for p in builder.splits["train"] if bucket(p[0]) not in TEST_BUCKETS]
    builder.kept["user"]["test"] = len(builder.splits["test"])
    builder.kept["user"]["train"] = len(builder.splits["train"])
    builder.write(out, columns)
    write_card(out, builder, [], command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    debian = commands.add_parser("debian", help="build the en–de corpus from Debian packages")
    debian.add_argument("--out", type=Path, default=Path("data/en-de"))
    debian.add_argument("--cache", type=Path, default=Path("data/cache"))
    user = commands.add_parser("user", help="prepare your own parallel data")
    user.add_argument("--tsv", type=Path, help="source<TAB>target per line")
    user.add_argument("--src", type=Path, help="source sentences, one per line (with --tgt)")
    user.add_argument("--tgt", type=Path, help="target sentences, aligned line by line with --src")
    user.add_argument("--src-lang", required=True)
    user.add_argument("--tgt-lang", required=True)
    user.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "debian":
        build_debian(args.out, args.cache)
    else:
        if (args.tsv is None) == (args.src is None or args.tgt is None):
            parser.error("give either --tsv, or both --src and --tgt")
        command = "python -m model.data user " + " ".join(argv or [])
        build_user(args.out, read_user_pairs(args.tsv, args.src, args.tgt), (args.src_lang, args.tgt_lang), command)
    print((args.out / "DATA_CARD.md").read_text())


if __name__ == "__main__":
    main()
