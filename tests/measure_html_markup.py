"""Which way of carrying inline markup through translation works better, measured on real HTML: the
LibreOffice help pages (Debian's libreoffice-help-en-us and libreoffice-help-de, as data/cache holds
them after `make data`), whose German pages are human translations of the English ones with the same
markup, paragraph by paragraph (the same `par_id` in the same page).

For every English paragraph with inline markup (a, b, i, em, strong, span, code) whose German twin has
the same inline elements, and whose text is held out from training (every sentence of it in
data/en-de/test.tsv, else counted apart as "seen"), each strategy of service.api.html_markup translates the
paragraph with the shipped en-de model (greedy). Reported per strategy:
- carried: sentences whose markup the strategy placed itself (the rest fell back to piece by piece);
- element chrF: chrF of each inline element's text in our output against the same element's text in
  the human German page (is the markup around the right words?), and the share matching exactly;
- text chrF: corpus chrF of the output's text (tags removed) against the human German paragraph.
`pieces` is the old way (every text node on its own) for comparison.

    .venv/bin/python -m tests.measure_html_markup [--limit 400] [--json results/html_markup.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html as html_module
import json
import re
import time
from pathlib import Path
from unittest import mock

from sacrebleu.metrics import CHRF

from engine.segmentation import split_sentences
from engine.translator import Translator
from service.api import html, html_markup

ROOT = Path(__file__).resolve().parent.parent
HELP = ROOT / "data" / "cache" / "unpacked"
EN = HELP / "libreoffice-help-en-us" / "usr" / "share" / "libreoffice" / "help" / "en-US"
DE = HELP / "libreoffice-help-de" / "usr" / "share" / "libreoffice" / "help" / "de"
PARAGRAPH = re.compile(r'<(p|h[1-6]) id="((?:par|hd)_id[^"]+)"[^>]*>(.*?)</\1>', re.S)
INLINE = re.compile(r"<(a|b|i|em|strong|span|code)\b([^>]*)>(.*?)</\1>", re.S)
chrf = CHRF()


def text_of(markup: str) -> str:
    return re.sub(r"\s+", " ", html_module.unescape(re.sub(r"<[^>]+>", "", markup))).strip()


def elements(markup: str) -> list[tuple[str, str]]:
    """(tag and attributes, text) of the innermost-first inline elements that hold text."""
    found = []
    for match in INLINE.finditer(markup):
        content = text_of(match.group(3))
        if content and any(c.isalpha() for c in content):
            found.append((match.group(1) + re.sub(r'\s+id="[^"]*"', "", match.group(2)), content))
    return found


def pairs(limit: int, held_out: set[str]) -> list[tuple[str, str, bool]]:
    """(English paragraph markup, German paragraph markup, held out) with the same inline elements."""
    out = []
    for page in sorted(EN.rglob("*.html")):
        twin = DE / page.relative_to(EN)
        if not twin.is_file():
            continue
        german = {m.group(2): m.group(3) for m in PARAGRAPH.finditer(twin.read_text(encoding="utf-8", errors="replace"))}
        for match in PARAGRAPH.finditer(page.read_text(encoding="utf-8", errors="replace")):
            english, other = match.group(3), german.get(match.group(2))
            if other is None or "hidden" in english or "<img" in english or "<br" in english:
                continue  # platform switches (hidden variants) and images: not what is measured here
            ours, theirs = elements(english), elements(other)
            if not ours or [tag for tag, _ in ours] != [tag for tag, _ in theirs]:
                continue
            plain = text_of(english)
            if not 20 <= len(plain) <= 400 or plain == text_of(other):
                continue
            seen = not all(sentence in held_out for sentence in split_sentences(plain, "en"))
            out.append((f"<p>{english}</p>", f"<p>{other}</p>", not seen))
            if len(out) >= limit * 4:
                return out
    return out


def measure(translator: Translator, samples: list[tuple[str, str, bool]], strategy: str) -> dict:
    async def translate(texts: list[str]) -> list[str]:
        results = []
        for start in range(0, len(texts), 32):
            chunk = [t if len(translator.tokenize([t])[0]) <= translator.max_source_tokens else "" for t in texts[start:start + 32]]
            results += [n_best[0].text if text else "" for text, n_best in zip(chunk, translator.translate(chunk, beam_size=1))]
        return results

    real = "align" if strategy == "pieces" else strategy
    started = time.monotonic()
    with mock.patch.object(html, "aligned", lambda *a: None) if strategy == "pieces" else contextlib.nullcontext():
        outcome = asyncio.run(html_markup.translate_documents([html.split_html(english, "en") for english, _, _ in samples], translate, real))
    seconds = time.monotonic() - started
    element_scores, exact, outputs, references = [], 0, [], []
    for (english, german, _), translated in zip(samples, outcome.html):
        ours, theirs = elements(translated), elements(german)
        outputs.append(text_of(translated))
        references.append(text_of(german))
        if [tag for tag, _ in ours] != [tag for tag, _ in theirs]:
            element_scores += [0.0] * len(theirs)  # an element lost or reordered: nothing right
            continue
        for (_, mine), (_, reference) in zip(ours, theirs):
            element_scores.append(chrf.sentence_score(mine, [reference]).score)
            exact += mine.casefold() == reference.casefold()
    return {"strategy": strategy, "paragraphs": len(samples), "sentences_with_markup": outcome.sentences,
            "carried": outcome.carried, "carried_share": round(outcome.carried / max(outcome.sentences, 1), 3),
            "elements": len(element_scores), "element_chrf": round(sum(element_scores) / max(len(element_scores), 1), 2),
            "element_exact_share": round(exact / max(len(element_scores), 1), 3),
            "text_chrf": round(chrf.corpus_score(outputs, [references]).score, 2), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="paragraphs per set (held out, seen)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    held_out = {line.split("\t")[0] for line in (ROOT / "data" / "en-de" / "test.tsv").read_text(encoding="utf-8").splitlines()}
    found = pairs(args.limit, held_out)
    sets = {"held_out": [s for s in found if s[2]][:args.limit], "seen": [s for s in found if not s[2]][:args.limit]}
    translator = Translator(args.models_dir / "en-de")
    report = {name: [measure(translator, samples, strategy) for strategy in ("align", "placeholders", "pieces")]
              for name, samples in sets.items() if samples}
    for name, rows in report.items():
        print(f"\n{name} ({rows[0]['paragraphs']} paragraphs)")
        print("| strategy | sentences with markup | carried by the strategy | element chrF | element exact | text chrF |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['strategy']} | {row['sentences_with_markup']} | {row['carried_share']:.1%} | {row['element_chrf']} | "
                  f"{row['element_exact_share']:.1%} | {row['text_chrf']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
