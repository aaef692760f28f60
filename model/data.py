"""A reproducible parallel corpus: Debian packages (or your own data) → train/valid/test TSVs and a data card.

    python -m model.data debian --out data/en-de [--cache data/cache]
    python -m model.data user --tsv pairs.tsv --src-lang en --tgt-lang de --out data/my-en-de
    python -m model.data user --src corpus.en --tgt corpus.de --src-lang en --tgt-lang de --out data/my-en-de

Every pair is normalised (NFC, whitespace), filtered, deduplicated on both sides (the first source in
priority order wins) and assigned to a split by a hash of its first-column (English) sentence, so a rerun
gives byte-identical files and en→de and de→en share one split. The output directory holds train.tsv,
valid.tsv, test.tsv (first column<TAB>second column, no header), columns.json naming their languages,
and DATA_CARD.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from model.corpus_sources import (
    DING_FILE, DING_PACKAGE, GETTEXT_PACKAGES, HELP_DIRS, HELP_PACKAGES, Package, ding_pairs, fetch_package,
    gettext_catalogs, gettext_pairs, help_pairs, package_licence, split_sentences,
)

SPLITS = ("train", "valid", "test")
HELP, GETTEXT, DING, USER = "libreoffice-help", "gettext", "ding", "user"  # read in this order = dedupe priority
# Buckets of sha256(English) mod 1000. Test-grade LibreOffice help sentences in the test buckets form the test
# split; every other pair there trains (dedupe and the near-duplicate filter keep test sentences out of training).
TEST_BUCKETS = range(0, 90)
VALID_BUCKETS = range(90, 98)
MAX_CHARS, MAX_WORDS, MAX_RATIO, RATIO_ALLOWANCE, MIN_WORDS = 400, 100, 3.0, 12, 2
PLACEHOLDER = re.compile(  # printf (%s, %1$d, %(name)s), Qt (%1), brace ({0}), LibreOffice/shell ($(ARG1), ${VAR})
    r"%(?:\d+\$)?[-+ #0]*\d*(?:\.\d+)?[sdiuxXfgecp%]|%\([a-z_]+\)[sd]|%\d+|\{\d*\}|\$\(?[A-Z_]+\)?|\$\{[^}]*\}")
MARKUP = re.compile(r"</?[a-zA-Z][^>]*>")
CLI_HELP = "command-line help (options, usage, console tables)"
# `--verbose  explain what is done`, `Usage: …`, and console tables (`| clear . . . . clear the playlist`)
COMMAND_LINE_HELP = re.compile(r"^(?:-{1,2}[A-Za-z]|usage:|\|)|\.(?: \.){3}", re.I)
CONJUGATION = re.compile(r"\b(?:I/)?he/she\b|\ber/sie\b")  # Ding verb tables: "he/she has/had led"
DUPLICATE = "duplicate (either side seen before)"
NEAR_DUPLICATE = "near-duplicate of a test pair"
# The card lists removals in the order the filters run (`rejection`, then dedupe, then `Corpus.split`).
FILTER_ORDER = [
    "empty side", "identical sides", f"longer than {MAX_CHARS} characters or {MAX_WORDS} words",
    f"length ratio over {MAX_RATIO}", "only numbers, punctuation or placeholders", "markup left in the text",
    "placeholders differ between sides", f"fewer than {MIN_WORDS} words", CLI_HELP,
    "verb conjugation table", DUPLICATE, NEAR_DUPLICATE,
]


def normalise(text: str) -> str:
    """NFC, no-break spaces to spaces, all whitespace (tabs, newlines) collapsed: a TSV field can't break."""
    return " ".join(unicodedata.normalize("NFC", text).replace("\u00a0", " ").split())


def letters(text: str, placeholder: re.Pattern = PLACEHOLDER) -> int:
    return sum(ch.isalpha() for ch in placeholder.sub("", text))


def rejection(en: str, de: str, placeholder: re.Pattern = PLACEHOLDER, min_words: int = MIN_WORDS) -> str | None:
    """The name of the first filter a normalised pair fails, or None if it is kept. `min_words` is lowered only for
    a dictionary's word entries, where a one-word pair is the point rather than a stray UI label."""
    longer, shorter = max(len(en), len(de)), min(len(en), len(de))
    checks = (
        ("empty side", not en or not de),
        ("identical sides", en.casefold() == de.casefold()),
        (f"longer than {MAX_CHARS} characters or {MAX_WORDS} words",
         longer > MAX_CHARS or max(len(en.split()), len(de.split())) > MAX_WORDS),
        (f"length ratio over {MAX_RATIO}", longer > RATIO_ALLOWANCE and longer > MAX_RATIO * shorter),
        ("only numbers, punctuation or placeholders", letters(en, placeholder) < 2 or letters(de, placeholder) < 2),
        ("markup left in the text", bool(MARKUP.search(en) or MARKUP.search(de))),
        ("placeholders differ between sides", Counter(placeholder.findall(en)) != Counter(placeholder.findall(de))),
        (f"fewer than {MIN_WORDS} words", len(en.split()) < min_words),
        (CLI_HELP, bool(COMMAND_LINE_HELP.search(en) or COMMAND_LINE_HELP.search(de))),
        ("verb conjugation table", bool(CONJUGATION.search(en) or CONJUGATION.search(de))),
    )
    return next((name for name, failed in checks if failed), None)


def bucket(sentence: str) -> int:
    return int(hashlib.sha256(sentence.encode("utf-8")).hexdigest()[:8], 16) % 1000


def is_test_grade(en: str, de: str) -> bool:
    """A real sentence on each side: 4+ words, one sentence ending in . ! or ?, mostly letters, no placeholders,
    and a German length typical of a translation (0.7–1.9× the English; outside it the help's German is often an
    outdated text under the same paragraph id)."""
    return (len(en.split()) >= 4 and en[-1] in ".!?" and de[-1] in ".!?" and 0.7 <= len(de) / len(en) <= 1.9
            and len(split_sentences(en)) == 1 and len(split_sentences(de)) == 1
            and letters(en) >= 0.7 * len(en.replace(" ", "")) and not PLACEHOLDER.search(en + de))


def near_key(sentence: str) -> str:
    """Letters and digits, case-folded: "Click OK." and "click OK" are the same sentence for leakage purposes."""
    return "".join(ch for ch in sentence.casefold() if ch.isalnum())


class Corpus:
    """Takes (source name, pairs) in priority order, filters and dedupes them, then splits; counts everything."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str, str]] = []  # (en, de, source) that passed the filters
        self.seen_en: set[str] = set()
        self.seen_de: set[str] = set()
        self.raw: Counter = Counter()
        self.removed: dict[str, Counter] = defaultdict(Counter)  # source → filter → pairs
        self.splits: dict[str, list[tuple[str, str, str]]] = {}

    def add(self, source: str, pairs: Iterable[tuple[str, str]]) -> None:
        for en, de in tqdm(pairs, desc=source, unit=" pairs", disable=None, leave=False):
            self.raw[source] += 1
            en, de = normalise(en), normalise(de)
            reason = rejection(en, de)
            # Deduping the German side too keeps a test sentence's German out of training for de→en.
            if reason is None and (en in self.seen_en or de in self.seen_de):
                reason = DUPLICATE
            if reason:
                self.removed[source][reason] += 1
                continue
            self.seen_en.add(en)
            self.seen_de.add(de)
            self.pairs.append((en, de, source))

    def split(self, test_sources: set[str], test_grade_only: bool = True) -> None:
        """Assign each kept pair to train/valid/test by the bucket of its first column (see SPLIT_DEBIAN)."""
        splits: dict[str, list[tuple[str, str, str]]] = {name: [] for name in SPLITS}
        for en, de, source in self.pairs:
            b = bucket(en)
            if b in TEST_BUCKETS:
                is_test = source in test_sources and (not test_grade_only or is_test_grade(en, de))
                splits["test" if is_test else "train"].append((en, de, source))
            else:
                splits["valid" if b in VALID_BUCKETS else "train"].append((en, de, source))
        # The exact-string dedupe misses "Click OK." vs "click OK"; keep those out of train and valid as well.
        test_keys = {near_key(side) for en, de, _ in splits["test"] for side in (en, de)}
        for name in ("train", "valid"):
            kept = [p for p in splits[name] if near_key(p[0]) not in test_keys and near_key(p[1]) not in test_keys]
            for _, _, source in set(splits[name]) - set(kept):
                self.removed[source][NEAR_DUPLICATE] += 1
            splits[name] = kept
        self.splits = splits

    def write(self, out: Path, columns: tuple[str, str]) -> dict[str, str]:
        """Write the splits sorted by hash (deterministic, and not grouped by source); return their sha256."""
        out.mkdir(parents=True, exist_ok=True)
        digests = {}
        for name, pairs in self.splits.items():
            ordered = sorted(pairs, key=lambda p: (hashlib.sha256(p[0].encode()).hexdigest(), p[1]))
            data = "".join(f"{en}\t{de}\n" for en, de, _ in ordered).encode("utf-8")
            (out / f"{name}.tsv").write_bytes(data)
            digests[name] = hashlib.sha256(data).hexdigest()
        (out / "columns.json").write_text(json.dumps({"columns": list(columns)}) + "\n")
        return digests

    def card_tables(self) -> list[str]:
        sources = list(self.raw)
        kept = Counter(p[2] for p in self.pairs)
        in_split = {name: Counter(p[2] for p in pairs) for name, pairs in self.splits.items()}
        lines = ["## Pairs per source", "", "| source | raw pairs | after filters and dedupe | train | valid | test |",
                 "|---|---|---|---|---|---|"]
        for s in sources:
            counts = [self.raw[s], kept[s]] + [in_split[name][s] for name in SPLITS]
            lines.append(f"| {s} | " + " | ".join(f"{n:,}" for n in counts) + " |")
        totals = [sum(self.raw.values()), len(self.pairs)] + [len(self.splits[name]) for name in SPLITS]
        lines.append("| **all** | " + " | ".join(f"{n:,}" for n in totals) + " |")
        lines += ["", "## Pairs removed by each filter, in the order applied (pairs left afterwards)", "",
                  "| filter | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
        left = dict(self.raw)
        lines.append("| raw | " + " | ".join(f"{left[s]:,}" for s in sources) + " |")
        names = FILTER_ORDER + sorted({n for s in sources for n in self.removed[s]} - set(FILTER_ORDER))
        order = [name for name in names if any(self.removed[s][name] for s in sources)]
        for name in order:
            cells = []
            for s in sources:
                left[s] -= self.removed[s][name]
                cells.append(f"−{self.removed[s][name]:,} ({left[s]:,})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines


EXTRACTION = """## Extraction

- LibreOffice help: `<p>`/`<h*>` elements with the same `par_id…`/`hd_id…` id in the same page of each language,
  tags stripped (the Linux/default variant of platform-specific text kept), entities unescaped, a space left
  before punctuation by a removed icon closed up. A paragraph is split into sentences (`.`/`!`/`?`, space, then a
  capital, digit or quote; not after a single letter or an abbreviation such as "e.g.", "z. B.") only when both
  sides give the same number of sentences; otherwise it stays one pair.
- gettext: msgid → msgstr of the German `.mo` catalogs; header and plural entries skipped, msgctxt prefix
  dropped; accelerator markers (`~`, `_`, `&` before a letter) removed unless the token occurs verbatim on
  the other side (an identifier such as `max_depth`); `%PRODUCTNAME` written out as "LibreOffice".
- Ding: `de | de2 :: en | en2` sub-entries paired one to one; `{…}`, `[…]`, `(…)`, `<…>` and `/abbr./` notes
  stripped; the first `;` alternative kept; "sth."/"sb."/"etw."/"jdn."/"jdm."/"jds."/"jd." written out; pieces
  of 3+ words on both sides kept; lists of related words (`a ~ b`) skipped.
"""

FILTERS = f"""## Normalisation and filters (first column = English for the Debian corpus)

- Normalisation: Unicode NFC, no-break spaces to spaces, whitespace (tabs and newlines included) collapsed.
- Removed: an empty side; identical sides (case-insensitive); over {MAX_CHARS} characters or {MAX_WORDS} words; a
  character-length ratio over {MAX_RATIO} (when the longer side exceeds {RATIO_ALLOWANCE} characters); fewer than two
  letters outside placeholders; leftover markup; printf/brace/shell placeholders (`%s`, `%1$d`, `{{0}}`, `$(ARG1)`)
  whose multiset differs between the sides (identical ones are kept, so the model learns to copy them); a first
  column of fewer than {MIN_WORDS} words (single-word UI labels and function names; not in the dictionary's word
  entries, the lexicon domain below); command-line help (a side
  starting with `-x`/`--xyz`, `Usage:` or `|`, or with `. . . .` leaders); verb-conjugation rows
  (`he/she has/had …`).
- Deduplication on both sides: a pair whose first- or second-column sentence was already taken is dropped (so
  neither direction sees a test sentence in training); sources are read in priority order (LibreOffice help,
  gettext catalogs, Ding), so the cleanest source wins.
"""

SPLIT_RULE = f"""- Bucket = `int(sha256(first column)[:8], 16) % 1000`. The hash depends only on the sentence, so a
  rebuild gives the same split, and en→de and de→en models share it.
- Buckets {VALID_BUCKETS.start}–{VALID_BUCKETS.stop - 1} → valid; the rest → train, except as above. Train and
  valid pairs whose either side matches a test sentence up to case, spaces and punctuation are dropped too.
- Each file is sorted by the hash of its first column, so a rebuild from the same input is byte-identical.
"""
SPLIT_DEBIAN = f"""## Splits

- Buckets {TEST_BUCKETS.start}–{TEST_BUCKETS.stop - 1}: LibreOffice help pairs of real sentences (4+ words, one
  sentence a side ending in `.`, `!` or `?`, mostly letters, no placeholders, German 0.7–1.9× the English length)
  → test; every other pair in those buckets (headings, UI strings, gettext, Ding) → train.
""" + SPLIT_RULE
SPLIT_USER = f"""## Splits

- Buckets {TEST_BUCKETS.start}–{TEST_BUCKETS.stop - 1} → test (every pair there: the data has one source).
""" + SPLIT_RULE


def read_debian_sources(cache: Path) -> Iterator[tuple[str, list[Package], Iterable[tuple[str, str]]]]:
    """(source, its packages, its pairs) in priority order; packages are fetched as they are reached."""
    help_en, help_de = (fetch_package(name, cache) for name in HELP_PACKAGES)
    yield HELP, [help_en, help_de], help_pairs(help_en.root / HELP_DIRS[0], help_de.root / HELP_DIRS[1])
    for name in GETTEXT_PACKAGES:
        package = fetch_package(name, cache)
        yield GETTEXT, [package], gettext_pairs(gettext_catalogs(package))
    ding = fetch_package(DING_PACKAGE, cache)
    yield DING, [ding], ding_pairs(ding.root / DING_FILE)


def build_debian(out: Path, cache: Path, general: bool = True) -> None:
    """The original corpus (train/valid/test.tsv, byte-identical to earlier builds), then the general-language
    sources of model.corpus.sources (train.<domain>.tsv, valid.<domain>.tsv, test.<domain>.tsv)."""
    corpus, packages = Corpus(), []
    for source, source_packages, pairs in read_debian_sources(cache):
        packages += source_packages
        corpus.add(source, pairs)
    corpus.split({HELP})
    digests = corpus.write(out, ("en", "de"))
    extra = None
    if general:
        from model.corpus.general import GeneralCorpus  # it builds on this module's filters
        from model.corpus.sources import SOURCES

        extra = GeneralCorpus(corpus)
        for source in SOURCES:
            fetched = [fetch_package(name, cache) for name in source.packages]
            packages += [p for p in fetched if p not in packages]
            extra.add(source, source.read({p.name: p for p in fetched}))
        extra.split()
        for stale in out.glob("*.*.tsv"):  # a domain that no longer has pairs must not leave an old file behind
            stale.unlink()
        digests.update(extra.write(out))
    write_card(out, corpus, packages, f"python -m model.data debian --out {out} --cache {cache}", digests, extra)


def package_section(packages: list[Package]) -> list[str]:
    lines = ["## Debian packages (fetched with `apt-get download`, unpacked with `dpkg-deb -x`, never installed)", "",
             "| package | version | licence (Debian copyright file) |", "|---|---|---|"]
    lines += [f"| {p.name} | {p.version} | {package_licence(p)} |" for p in packages]
    return lines + ["", "The LibreOffice help is MPL-2.0 and the Ding dictionary GPL-2+; each gettext catalog carries "
                    "its package's licence. Derived pairs keep the licence of their source.", ""]


def reproduce_section(command: str, digests: dict[str, str], debian: bool) -> list[str]:
    lines = ["## How to reproduce", "", "From the repository root:", "", "```sh", command, "```", ""]
    if debian:
        lines += ["The recipe runs `apt-get download NAME` (Debian bookworm sources) into `<cache>/debs/` unless a "
                  "`.deb` is already there. If the archive has moved on, put the versions listed above into the "
                  "cache first (`apt-get download NAME=VERSION`, or snapshot.debian.org); the same packages give "
                  "byte-identical files:", ""]
    return lines + ["| file | sha256 |", "|---|---|"] + [f"| {n}.tsv | `{d}` |" for n, d in digests.items()] + [""]


def write_card(out: Path, corpus: Corpus, packages: list[Package], command: str, digests: dict[str, str],
               general=None) -> None:
    columns = json.loads((out / "columns.json").read_text())["columns"]
    lines = ["# Data card", "", f"Built by `model/data.py`. Columns of every TSV: {columns[0]}<TAB>{columns[1]}.", ""]
    lines += package_section(packages) if packages else ["Source: user-supplied parallel data ('user').", ""]
    rules = EXTRACTION + "\n" + FILTERS + "\n" + SPLIT_DEBIAN if packages else FILTERS + "\n" + SPLIT_USER
    lines += corpus.card_tables() + [""] + rules.splitlines() + [""]
    if general is not None:
        from model.corpus.general import card_text

        lines += card_text(general)
    lines += reproduce_section(command, digests, debian=bool(packages))
    (out / "DATA_CARD.md").write_text("\n".join(lines), encoding="utf-8")


def source_column(data: Path, src_lang: str, tgt_lang: str) -> int:
    """Which TSV column holds the source language (columns.json, written by model.data, names them)."""
    columns_file = data / "columns.json"
    columns = json.loads(columns_file.read_text())["columns"] if columns_file.exists() else ["en", "de"]
    if sorted(columns) != sorted([src_lang, tgt_lang]):
        raise ValueError(f"{data} holds {columns}, not {src_lang} and {tgt_lang}")
    return columns.index(src_lang)


def read_user_pairs(tsv: Path | None, src: Path | None, tgt: Path | None) -> Iterator[tuple[str, str]]:
    """A TSV (first two columns; a line without a tab counts as an empty side) or two line-aligned files."""
    if tsv is not None:
        with open(tsv, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\r\n").split("\t")
                yield parts[0], parts[1] if len(parts) > 1 else ""
        return
    assert src is not None and tgt is not None
    with open(src, encoding="utf-8", errors="replace") as a, open(tgt, encoding="utf-8", errors="replace") as b:
        try:
            yield from zip(a, b, strict=True)
        except ValueError as error:
            raise SystemExit(f"{src} and {tgt} have different numbers of lines") from error


def build_user(out: Path, pairs: Iterable[tuple[str, str]], columns: tuple[str, str], command: str) -> None:
    corpus = Corpus()
    corpus.add(USER, pairs)
    corpus.split({USER}, test_grade_only=False)  # one source, so the test split is drawn from all of it
    digests = corpus.write(out, columns)
    write_card(out, corpus, [], command, digests)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    debian = commands.add_parser("debian", help="build the en–de corpus from Debian packages")
    debian.add_argument("--out", type=Path, default=Path("data/en-de"))
    debian.add_argument("--cache", type=Path, default=Path("data/cache"))
    debian.add_argument("--no-general", action="store_true",
                        help="only the original LibreOffice/gettext/Ding corpus (train/valid/test.tsv)")
    user = commands.add_parser("user", help="prepare your own parallel data")
    user.add_argument("--tsv", type=Path, help="source<TAB>target per line")
    user.add_argument("--src", type=Path, help="source sentences, one per line (with --tgt)")
    user.add_argument("--tgt", type=Path, help="target sentences, aligned line by line with --src")
    user.add_argument("--src-lang", required=True)
    user.add_argument("--tgt-lang", required=True)
    user.add_argument("--out", type=Path, required=True)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.command == "debian":
        build_debian(args.out, args.cache, general=not args.no_general)
    else:
        if (args.tsv is None) == (args.src is None or args.tgt is None):
            parser.error("give either --tsv, or both --src and --tgt")
        command = "python -m model.data " + " ".join(argv)
        build_user(args.out, read_user_pairs(args.tsv, args.src, args.tgt), (args.src_lang, args.tgt_lang), command)
    print((args.out / "DATA_CARD.md").read_text())
    print(f"built {args.out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
