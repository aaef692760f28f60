"""Cleaning, deduplication and per-domain splits of the general-language sources (model.corpus.sources).

They are added after the original corpus (LibreOffice help, gettext, Ding; `model.data.Corpus`), which is left
exactly as it was: its train/valid/test files rebuild byte-identically. Everything here only removes new pairs:
a new pair that repeats any earlier pair (exactly, or up to case, digits, spaces and punctuation, on either side)
is dropped, so no held-out sentence of any domain, old or new, can reach a training file.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from tqdm import tqdm

from engine.segmentation import split_sentences
from model.corpus.sources import DOMAINS, HELD_OUT_DOMAINS, Source
from model.data import (
    DUPLICATE, FILTER_ORDER, MARKUP, MIN_WORDS, PLACEHOLDER, TEST_BUCKETS, Corpus, bucket, letters, normalise,
    rejection,
)

# Placeholders of the new sources on top of printf/brace/shell ones: Wesnoth's `$unit.name|`, MediaWiki's `$1`,
# named braces `{count}`, entities left over `&foo;`, `%name%` tokens.
GENERAL_PLACEHOLDER = re.compile(
    PLACEHOLDER.pattern + r"|\$[A-Za-z_][\w.]*\|?|\$\d+|\{[A-Za-z_][\w.]*\}|&[A-Za-z][\w.-]*;|%[A-Za-z_]+%")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
CREDITS = re.compile(r"translator[-_ ]?credits|translated by|übersetzt von|übersetzung(?:en)?\s*:|your names", re.I)
TEMPLATE = re.compile(r"\{\{|\}\}|\[\[|\]\]")  # wikitext templates/links: the German side rewrites their insides
ATTRIBUTE = re.compile(r"\b[a-z_]+=['\"]")  # markup remnants: Wesnoth help's text='…', dst='…'
NUMBER = re.compile(r"\d+")
LANGID_MIN_WORDS, LANGID_CONFIDENCE = 3, 0.9
CREDITS_FILTER = "translator credits or e-mail addresses"
ATTRIBUTE_FILTER = "markup attributes left (name='…')"
NUMBERS_FILTER = "numbers differ between sides"
TEMPLATE_FILTER = "wiki templates or links"
LANGID_FILTER = f"language identification (py3langid: a side of {LANGID_MIN_WORDS}+ words in the other language)"
NEAR_DUPLICATE_EARLIER = "near-duplicate of an earlier pair (letters only, either side)"
GENERAL_FILTER_ORDER = FILTER_ORDER[:-2] + [CREDITS_FILTER, TEMPLATE_FILTER, ATTRIBUTE_FILTER, NUMBERS_FILTER,
                                            LANGID_FILTER, DUPLICATE,
                                            NEAR_DUPLICATE_EARLIER]
# Held-out buckets of the new domains: test as in the original corpus; valid wider (the domains are smaller),
# and each capped (by hash order; pairs over the cap train).
GENERAL_VALID_BUCKETS = range(90, 130)
MAX_TEST, MAX_VALID = 2000, 500


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(["de", "en"])
    return identifier


def wrong_language(en: str, de: str) -> bool:
    """A side of LANGID_MIN_WORDS+ words that py3langid, choosing between English and German, puts in the other
    language with confidence ≥ LANGID_CONFIDENCE (an untranslated or mistranslated entry)."""
    for text, language in ((en, "en"), (de, "de")):
        if len(text.split()) >= LANGID_MIN_WORDS:
            guess, probability = _identifier().classify(text)
            if guess != language and probability >= LANGID_CONFIDENCE:
                return True
    return False


def general_rejection(en: str, de: str, min_words: int = MIN_WORDS) -> str | None:
    reason = rejection(en, de, GENERAL_PLACEHOLDER, min_words)
    if reason is not None:
        return reason
    if EMAIL.search(en + " " + de) or CREDITS.search(en + " " + de):
        return CREDITS_FILTER
    if TEMPLATE.search(en) or TEMPLATE.search(de):
        return TEMPLATE_FILTER
    if ATTRIBUTE.search(en) or ATTRIBUTE.search(de):
        return ATTRIBUTE_FILTER
    if sorted(NUMBER.findall(en)) != sorted(NUMBER.findall(de)):  # "3.5" and "3,5" agree: digit runs compared
        return NUMBERS_FILTER
    if wrong_language(en, de):
        return LANGID_FILTER
    return None


def dedupe_key(sentence: str) -> str:
    """Letters only, case-folded: "Turn 5: Attack!" and "turn 6 - attack" are one sentence for deduplication."""
    return "".join(ch for ch in sentence.casefold() if ch.isalpha())


def is_general_test_grade(en: str, de: str) -> bool:
    """A real sentence on each side (4+ words, one sentence by engine.segmentation, ending in . ! ? or a closing
    quote after one; the English starting with a capital, digit or quote), mostly letters, no placeholders or markup,
    German 0.6–2.0× the English length."""
    def ends(text: str) -> bool:
        return text.rstrip("\"'”“»«’)").endswith((".", "!", "?", "…"))
    return (len(en.split()) >= 4 and len(de.split()) >= 3 and ends(en) and ends(de)
            and (en[0].isupper() or en[0].isdigit() or en[0] in "\"'“‘(")
            and 0.6 <= len(de) / len(en) <= 2.0
            and letters(en, GENERAL_PLACEHOLDER) >= 0.7 * len(en.replace(" ", ""))
            and not GENERAL_PLACEHOLDER.search(en + " " + de) and not MARKUP.search(en + " " + de)
            and len(split_sentences(en, "en")) == 1 and len(split_sentences(de, "de")) == 1)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class GeneralCorpus:
    """Sources in priority order after `base`; pairs filtered, deduplicated against everything before them, then
    split per domain: held-out valid/test for HELD_OUT_DOMAINS, training files for every domain."""

    def __init__(self, base: Corpus) -> None:
        self.seen_en, self.seen_de = set(base.seen_en), set(base.seen_de)
        self.keys = {dedupe_key(side) for en, de, _ in base.pairs for side in (en, de)}
        self.keys.discard("")
        self.raw: Counter = Counter()
        self.domain: dict[str, str] = {}
        self.removed: dict[str, Counter] = defaultdict(Counter)
        self.pairs: list[tuple[str, str, str]] = []  # (en, de, source name)
        self.splits: dict[str, list[tuple[str, str, str]]] = {}  # "train.dialogue", "test.manuals", …

    def add(self, source: Source, pairs: Iterable[tuple[str, str]]) -> None:
        self.domain[source.name] = source.domain
        self.raw[source.name] += 0
        for en, de in tqdm(pairs, desc=source.name, unit=" pairs", disable=None, leave=False):
            self.raw[source.name] += 1
            en, de = normalise(en), normalise(de)
            reason = general_rejection(en, de, source.min_words)
            if reason is None and (en in self.seen_en or de in self.seen_de):
                reason = DUPLICATE
            keys = (dedupe_key(en), dedupe_key(de))
            if reason is None and (keys[0] in self.keys or keys[1] in self.keys):
                reason = NEAR_DUPLICATE_EARLIER
            if reason:
                self.removed[source.name][reason] += 1
                continue
            self.seen_en.add(en)
            self.seen_de.add(de)
            self.keys.update(keys)
            self.pairs.append((en, de, source.name))

    def split(self) -> None:
        splits: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        candidates: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for en, de, source in self.pairs:
            domain, b = self.domain[source], bucket(en)
            held_out = domain in HELD_OUT_DOMAINS and (b in TEST_BUCKETS or b in GENERAL_VALID_BUCKETS)
            if held_out and is_general_test_grade(en, de):
                candidates[("test." if b in TEST_BUCKETS else "valid.") + domain].append((en, de, source))
            else:
                splits["train." + domain].append((en, de, source))
        for name, pairs in sorted(candidates.items()):
            ordered = sorted(pairs, key=lambda p: (_hash(p[0]), p[1]))
            cap = MAX_TEST if name.startswith("test.") else MAX_VALID
            splits[name] = ordered[:cap]
            splits["train." + name.split(".", 1)[1]] += ordered[cap:]
        self.splits = dict(splits)

    def write(self, out: Path) -> dict[str, str]:
        """Each split as <name>.tsv (train.<domain>, valid.<domain>, test.<domain>), sorted by hash; → sha256s."""
        digests = {}
        order = [f"{kind}.{domain}" for kind in ("train", "valid", "test") for domain in DOMAINS]
        for name in [n for n in order if n in self.splits]:
            ordered = sorted(self.splits[name], key=lambda p: (_hash(p[0]), p[1]))
            data = "".join(f"{en}\t{de}\n" for en, de, _ in ordered).encode("utf-8")
            (out / f"{name}.tsv").write_bytes(data)
            digests[name] = hashlib.sha256(data).hexdigest()
        return digests

    def card_tables(self) -> list[str]:
        sources = list(self.raw)
        kept = Counter(p[2] for p in self.pairs)
        per_split = {kind: Counter(p[2] for name, pairs in self.splits.items() if name.startswith(kind + ".")
                                   for p in pairs) for kind in ("train", "valid", "test")}
        lines = ["## General-language sources: pairs per source", "",
                 "| source | domain | raw pairs | after filters and dedupe | train | valid | test |",
                 "|---|---|---|---|---|---|---|"]
        for s in sources:
            counts = [self.raw[s], kept[s]] + [per_split[kind][s] for kind in ("train", "valid", "test")]
            lines.append(f"| {s} | {self.domain[s]} | " + " | ".join(f"{n:,}" for n in counts) + " |")
        totals = [sum(self.raw.values()), len(self.pairs)] + [sum(per_split[k].values()) for k in ("train", "valid", "test")]
        lines.append("| **all** | | " + " | ".join(f"{n:,}" for n in totals) + " |")
        lines += ["", "## General-language files", "", "| file | pairs |", "|---|---|"]
        lines += [f"| {name}.tsv | {len(pairs):,} |" for name, pairs in self.splits.items()]
        lines += ["", "## General-language sources: pairs removed by each filter, in the order applied "
                  "(pairs left afterwards)", "",
                  "| source | raw | " + " | ".join(n for n in GENERAL_FILTER_ORDER if self._used(n)) + " |",
                  "|---|---|" + "---|" * sum(self._used(n) for n in GENERAL_FILTER_ORDER)]
        for s in sources:
            left, cells = self.raw[s], []
            for name in (n for n in GENERAL_FILTER_ORDER if self._used(n)):
                left -= self.removed[s][name]
                cells.append(f"−{self.removed[s][name]:,} ({left:,})")
            lines.append(f"| {s} | {self.raw[s]:,} | " + " | ".join(cells) + " |")
        return lines

    def _used(self, name: str) -> bool:
        return any(self.removed[s][name] for s in self.raw)


SKIPPED = """## Sources looked at and not used (yet)

- KDE handbooks are read from the rendered `index.cache.bz2` of the 93 bookworm packages found to ship both
  languages (see the list in model/corpus/sources.py), not from `index.docbook`, whose `&entities;` need KDE's
  DocBook customisation; other packages with handbooks were not searched for.
- Stellarium (Qt catalogs: UI and star names), hedgewars' Qt catalog and weapon texts, and calibre (its catalogs
  ship inside a zip archive): UI strings, the lowest value for general language; not read in this round.
- Probed for story and everyday text and not read: adonthell-data and lugaru-data (no German); flare-game,
  pingus-data, supertux-data, lincity-ng-data and megaglest-data (.po or .lng files, a few hundred pairs each,
  mostly item names and UI); openttd-data (compiled .lng, UI), minetest-data (UI); tuxpaint-stamps-default (about
  500 one-line descriptions, a 160 MB download).
- 0ad-data (a 1.4 GB download for 4.7k pairs) and dict-freedict-eng-deu (repeats Ding).
- Reserved for independent evaluation and never read: the package `wesnoth-1.16-utbs` (and its catalog
  `wesnoth-utbs.mo` wherever it ships) and apt's `Translation-*` description indexes.
"""


def card_text(general: GeneralCorpus) -> list[str]:
    from model.corpus.sources import SOURCES

    notes = [f"- {s.name} ({s.domain}): {s.note}." for s in SOURCES if s.name in general.raw]
    rules = f"""## General-language sources: extraction, filters and splits

Read after the original corpus, which they never change (its files above rebuild byte-identically). Sources in
priority order (an earlier source wins a duplicate):

{chr(10).join(notes)}

- Documents aligned by position (man pages, Mallard, DocBook, HTML, KDE handbooks) pair a whole file when both
  languages have the same number of blocks, otherwise section by section; a file or section is dropped when
  under 80 % of its pairs of 20+ characters have a German/English length ratio within 0.5–2.5 (a shifted
  alignment).
- Paragraphs (every source) are split into sentence pairs with `engine/segmentation.py` (sentencex, shared with
  the service) when both sides give the same number of sentences; otherwise the paragraph stays one pair.
  (The original LibreOffice help keeps its old regular-expression splitter, so its test split stays
  byte-identical.)
- Markup: Pango/HTML formatting tags removed on both sides and entities unescaped (lxml for HTML, DocBook and
  Mallard); any other tag left (`<npcname>`, `<ref>`) drops the pair.
- Filters: the original ones (above), with placeholders extended to Wesnoth's `$name|`, MediaWiki's `$1`,
  named braces `{{name}}`, `&entity;` and `%name%` — a pair is kept only when both sides hold the same
  placeholders; then translator credits and e-mail addresses, wiki templates/links, markup attributes left
  (`text='…'`), numbers that differ between the sides (digit runs compared, so "3.5" = "3,5"), language identification
  (py3langid restricted to English and German: a side of {LANGID_MIN_WORDS}+ words recognised as the other
  language with probability ≥ {LANGID_CONFIDENCE} is an untranslated or wrong entry); exact duplicates of any
  earlier pair (either side), then near-duplicates: either side equal to a side of any earlier pair, original
  corpus included, after keeping letters only (case, digits, spaces, punctuation ignored).
- Splits: bucket = `int(sha256(English)[:8], 16) % 1000` as above. In the domains {", ".join(HELD_OUT_DOMAINS)}:
  buckets {TEST_BUCKETS.start}–{TEST_BUCKETS.stop - 1} → `test.<domain>.tsv`, buckets
  {GENERAL_VALID_BUCKETS.start}–{GENERAL_VALID_BUCKETS.stop - 1} → `valid.<domain>.tsv`, for test-grade pairs
  only (one real sentence a side: 4+ English words starting with a capital, digit or quote, ending in `.`, `!`,
  `?` or `…`, mostly letters, no
  placeholders or markup, German 0.6–2.0× the English length), at most {MAX_TEST:,} test and {MAX_VALID:,}
  valid pairs per domain (lowest hashes first); everything else → `train.<domain>.tsv`. Because the
  near-duplicate key is global, no held-out sentence (either side) occurs in any training file.
- The `train.<domain>.tsv` files are not committed (git-ignored; rebuild them with the command below); the
  valid/test files are.
"""
    return rules.splitlines() + [""] + general.card_tables() + [""] + SKIPPED.splitlines() + [""]
