"""Back-translation: real German-only text, machine-translated into English by a de→en package, as extra en→de
training pairs (synthetic English source, real German target).

    python -m model.backtranslate --package models/de-en --out data/en-de [--cache data/cache] [--beam 4]

Reads the German sentences of Debian's fortunes-de (model/corpus/fortune.py), translates them with the engine
(ONNX Runtime, no torch), filters the pairs with the general corpus's filters (length ratio, placeholders,
language identification: an "English" side the model left in German is dropped) and drops every German sentence
that is already a side of a pair in OUT (training, valid or test files, compared letters-only), so that no
held-out sentence reaches training this way. Writes OUT/train.backtranslated.tsv (English<TAB>German, like
every train.<domain>.tsv; `--train-weights backtranslated=W` samples it) and OUT/BACKTRANSLATED.md.
`python -m model.data debian` removes the file when it rebuilds OUT: back-translate after building the corpus.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from engine.sessions import RuntimeOptions
from engine.translator import Translator
from model.corpus.fortune import FORTUNES_PACKAGE, fortune_files, german_sentences
from model.corpus.general import dedupe_key, general_rejection
from model.corpus.sources import BACKTRANSLATED
from model.corpus_sources import fetch_package, package_licence
from model.data import normalise, source_column
from model.tokenizer import read_tsv_pairs

OUT_FILE = f"train.{BACKTRANSLATED}.tsv"
CARD_FILE = "BACKTRANSLATED.md"
HELD_OR_TRAINED = "German already a side of a pair in the corpus (letters only)"
REPEATED = "German repeated (letters only)"


def corpus_german(out: Path) -> set[str]:
    """Letters-only keys of every German sentence in OUT's pair files (English<TAB>German), the output excepted."""
    return {dedupe_key(de) for path in sorted(out.glob("*.tsv")) if path.name != OUT_FILE
            for _, de in read_tsv_pairs(path)}


def translate_all(translator: Translator, sentences: list[str], beam_size: int, batch_size: int = 32) -> list[str]:
    """Each sentence's best translation, in order; batches of similar length."""
    ids = translator.tokenize(sentences)
    limit = translator.max_source_tokens
    ids = [s if len(s) <= limit else s[: limit - 1] + s[-1:] for s in ids]  # keep EOS; the filters judge the result
    with tqdm(total=len(ids), desc="back-translating", unit=" sentences", disable=None) as progress:
        results = translator.translate_in_batches(ids, translator.search_options(beam_size=beam_size), batch_size,
                                                  progress.update)
    return translator.detokenize([r.hypotheses[0].tokens if r.hypotheses else [] for r in results])


def filter_pairs(pairs: Iterable[tuple[str, str]], known_german: set[str]) -> tuple[list[tuple[str, str]], Counter]:
    kept, removed, seen = [], Counter(), set()
    for en, de in pairs:
        en, de = normalise(en), normalise(de)
        key = dedupe_key(de)
        reason = (HELD_OR_TRAINED if key in known_german else REPEATED if key in seen
                  else general_rejection(en, de))
        if reason:
            removed[reason] += 1
            continue
        seen.add(key)
        kept.append((en, de))
    return kept, removed


def card(package, licence: str, model: Translator, beam_size: int, read: int, kept: int, removed: Counter,
         seconds: float, command: str) -> str:
    lines = [
        "# Back-translated pairs (train.backtranslated.tsv, not committed)", "",
        f"German-only text from Debian's `{package.name}` {package.version} (licence: {licence}): quotes, jokes, "
        "sayings and chat logs, split into sentences by engine.segmentation (model/corpus/fortune.py). Its English "
        f"side is machine-made: the `{model.name}` package ({model.precision}, {model.source_language}→"
        f"{model.target_language}), beam {beam_size}, so the pairs train en→de only (a de→en model must not learn "
        "to produce this English).", "",
        f"- German sentences read: {read:,}",
        f"- pairs kept: {kept:,}",
        *(f"- removed, {reason}: {count:,}" for reason, count in removed.most_common()),
        f"- translation time: {seconds:.0f} s", "",
        f"Reproduce (after `python -m model.data debian`): `{command}`", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, required=True, help="a de→en model package (models/de-en)")
    parser.add_argument("--out", type=Path, required=True, help="the en–de corpus directory (data/en-de)")
    parser.add_argument("--cache", type=Path, default=Path("data/cache"), help="where Debian packages are kept")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="the first N German sentences only")
    args = parser.parse_args(argv)
    translator = Translator(args.package, RuntimeOptions(intra_op_threads=args.threads))
    if (translator.source_language, translator.target_language) != ("de", "en"):
        parser.error(f"{args.package} translates {translator.source_language}→{translator.target_language}, not de→en")
    if source_column(args.out, "en", "de") != 0:  # every train.<domain>.tsv of the Debian recipe is English<TAB>German
        parser.error(f"{args.out} does not hold English<TAB>German pairs")
    package = fetch_package(FORTUNES_PACKAGE, args.cache)
    german = list(german_sentences(fortune_files(package.root)))[: args.limit]
    started = time.perf_counter()
    english = translate_all(translator, german, args.beam)
    seconds = time.perf_counter() - started
    kept, removed = filter_pairs(zip(english, german), corpus_german(args.out))
    (args.out / OUT_FILE).write_text("".join(f"{en}\t{de}\n" for en, de in kept), encoding="utf-8")
    command = (f"python -m model.backtranslate --package {args.package} --out {args.out} --cache {args.cache} "
               f"--beam {args.beam}")
    (args.out / CARD_FILE).write_text(card(package, package_licence(package), translator, args.beam, len(german),
                                           len(kept), removed, seconds, command), encoding="utf-8")
    print(f"{len(kept):,} of {len(german):,} pairs → {args.out / OUT_FILE} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
