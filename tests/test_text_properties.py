"""Property tests of the text path (Hypothesis): tokenizer → model → detokenizer, and the same through
HTTP, on arbitrary Unicode, control characters, emoji, right-to-left text, very long words and
whitespace only. Whatever comes in: no crash and no 5xx (a text the service cannot take is a 400
naming it), the output is valid UTF-8, it stays within the output length limit
(⌈1.5 × source tokens⌉ + 10, TRANSLATOR_MAX_LENGTH_RATIO), and each call finishes in bounded time.

    TEXT_EXAMPLES=300 pytest tests/test_text_properties.py     # `make fuzz`
"""

from __future__ import annotations

import json
import math
import os
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service_support import models_dir, serving, translators  # noqa: F401 - fixtures

EXAMPLES = int(os.environ.get("TEXT_EXAMPLES", "25"))
SECONDS_PER_CALL = 20.0  # a generous bound on one greedy translation of at most max_text_chars
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

no_surrogates = st.characters(exclude_categories=("Cs",))  # a str JSON cannot carry as UTF-8: tested apart
CONTROL = st.characters(categories=("Cc", "Cf", "Zl", "Zp"))
EMOJI = st.one_of(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
                  st.sampled_from(["\u200d", "\ufe0f", "\U0001F3FD", "👩‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪"]))
RTL = st.one_of(st.characters(min_codepoint=0x0590, max_codepoint=0x06FF),  # Hebrew, Arabic
                st.sampled_from(["\u202e", "\u202b", "\u200f", "\u2067", "\u2069", " "]))
WHITESPACE = st.sampled_from([" ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "\u2028", "\u200b", "\ufeff", "\x0b", "\x0c"])
LATIN_WORD = st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1, max_size=12)

TEXTS = {
    "any_unicode": st.text(no_surrogates, min_size=1, max_size=300),
    "control_characters": st.lists(st.one_of(CONTROL, LATIN_WORD, st.just(" ")), min_size=1, max_size=60).map("".join),
    "emoji": st.lists(st.one_of(EMOJI, LATIN_WORD, st.just(" ")), min_size=1, max_size=40).map("".join),
    "right_to_left": st.lists(st.one_of(RTL, LATIN_WORD), min_size=1, max_size=60).map("".join),
    "very_long_words": st.lists(st.text(st.characters(categories=("L", "N")), min_size=50, max_size=1000),
                                min_size=1, max_size=3).map(" ".join),
    "whitespace_only": st.text(WHITESPACE, min_size=1, max_size=50),
}


def output_limit(source_tokens: int, ratio: float = 1.5) -> int:
    return math.ceil(source_tokens * ratio) + 10


@pytest.fixture(scope="module")
def en_de(translators):  # noqa: F811
    return translators["en-de"]


@pytest.fixture(scope="module")
def server(models_dir, translators):  # noqa: F811
    with serving(models_dir, translators) as running:
        yield running


@pytest.mark.parametrize("kind", TEXTS)
def test_tokenizer_and_model_take_any_text(en_de, kind):
    vocabulary = en_de.manifest.model.vocab_size

    @PROPERTY
    @given(TEXTS[kind])
    def check(text):
        (ids,) = en_de.tokenize([text])
        assert ids[-1] == en_de.manifest.special_ids.eos and all(0 <= i < vocabulary for i in ids)
        assert isinstance(en_de.detokenize([ids[:-1]])[0], str)
        if len(ids) > en_de.max_source_tokens:
            return  # the service refuses it with a 400 (checked over HTTP below)
        started = time.monotonic()
        (result,) = en_de.translate_ids([ids], en_de.search_options(max_length=512, max_length_ratio=1.5))
        assert time.monotonic() - started < SECONDS_PER_CALL
        best = result.hypotheses[0].tokens
        assert len(best) <= output_limit(len(ids))
        en_de.detokenize([best])[0].encode("utf-8")  # raises on anything that is not valid UTF-8

    check()


@pytest.mark.parametrize("kind", TEXTS)
def test_http_answers_any_text_with_a_translation_or_a_400(server, kind):
    @PROPERTY
    @given(TEXTS[kind])
    def check(text):
        started = time.monotonic()
        answer = httpx.post(server.url + "/v1/translate", json={"text": text, "source": "en", "target": "de"},
                            timeout=SECONDS_PER_CALL)
        assert time.monotonic() - started < SECONDS_PER_CALL
        assert answer.status_code in (200, 400), answer.text
        answer.content.decode("utf-8")  # strict: the whole body is valid UTF-8
        if answer.status_code == 400:
            assert answer.json()["detail"].startswith("text "), answer.text  # the message names the text
            return
        (item,) = answer.json()["translations"]
        # A text is translated sentence by sentence, each within ⌈1.5 × its tokens⌉ + 10 (ceil and + 10 per sentence).
        assert item["target_tokens"] <= output_limit(item["source_tokens"]) + 11 * max(item["sentences"] - 1, 0)

    check()


def test_lone_surrogates_are_a_400_naming_the_text(server):
    """JSON can spell a lone UTF-16 surrogate (`"\\ud800"`); no UTF-8 tokenizer can take one."""

    @PROPERTY
    @given(st.text(no_surrogates, max_size=20), st.characters(categories=("Cs",)), st.text(no_surrogates, max_size=20))
    def check(before, surrogate, after):
        body = json.dumps({"text": ["fine", before + surrogate + after], "source": "en", "target": "de"})  # \udxxx
        answer = httpx.post(server.url + "/v1/translate", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400
        assert answer.json()["detail"] == (f"text[1] is not valid Unicode: a lone surrogate (U+{ord(surrogate):04X}) "
                                           f"at character {len(before)}")

    check()
