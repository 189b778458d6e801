"""gptlab.text: cleaning steps and corpus statistics."""

from __future__ import annotations

import re

import pytest

from gptlab.errors import ConfigError
from gptlab.text import CLEAN_STEPS, SEED_RECIPE, clean, corpus_stats, parse_steps
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer


def test_default_keeps_text_as_is():
    text = "Ünïcode\r\nMiXed ﬁ\u00a0text\r"
    assert clean(text) == text
    assert clean(text, None) == text
    assert clean(text, "") == text


def test_each_step():
    assert clean("e\u0301", ["nfc"]) == "\u00e9"
    assert clean("\u00e9", ["nfkc"]) == "\u00e9"
    assert clean("ﬁne", ["nfkc"]) == "fine"
    assert clean("ﬁne", ["nfc"]) == "ﬁne"  # NFC keeps compatibility characters
    assert clean("a\r\nb\rc\n", ["newlines"]) == "a\nb\nc\n"
    assert clean("HeLLo", ["lower"]) == "hello"
    assert clean("  x \n", ["strip"]) == "x"


def test_seed_recipe_matches_seed_000():
    text = "Hello, World! Welcome to Language Modeling. 42 ünïcode #tags [ok] *a-b* $&"
    seed = re.sub(r'[^a-zA-Z\s,.:;?_&$!"()\-\*\[\]]', "", text.lower()).strip()
    assert clean(text, SEED_RECIPE) == seed
    assert clean("Hello, World! Welcome to Language Modeling.", "lower,seed,strip") == (
        "hello, world! welcome to language modeling."
    )


def test_steps_compose_in_order():
    # Filtering before lowercasing keeps capitals; the other order keeps nothing different.
    assert clean("ÀB", "seed,lower") == "b"
    assert clean("ÀB", "lower,seed") == "b"
    assert clean("Ä", "nfkc,lower") == "ä"
    assert clean("A\u0308", "lower,nfc") == "ä"


def test_parse_steps_accepts_string_and_list():
    assert parse_steps(" NFC , lower,") == ["nfc", "lower"]
    assert parse_steps(["nfkc", "seed"]) == ["nfkc", "seed"]
    assert set(CLEAN_STEPS) == {"nfc", "nfkc", "newlines", "lower", "seed", "strip"}


def test_unknown_step_names_it_and_the_choices():
    with pytest.raises(ConfigError, match=r"unknown cleaning step 'upper': choose from nfc, nfkc"):
        clean("x", "nfc,upper")


def test_corpus_stats_small():
    stats = corpus_stats("ab\nba\nc")
    assert stats == {"characters": 7, "bytes": 7, "lines": 3, "distinct_characters": 4}
    assert corpus_stats("")["lines"] == 0
    assert corpus_stats("x\n")["lines"] == 1
    assert corpus_stats("é")["bytes"] == 2


def test_corpus_stats_shakespeare(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    stats = corpus_stats(text, tok)
    assert stats["characters"] == 1_115_394
    assert stats["distinct_characters"] == 65
    assert stats["lines"] == 40_000
    assert stats["tokens"] == 1_115_394
    assert stats["tokens_per_char"] == 1.0
    assert stats["tokenizer"] == "char" and stats["vocab_size"] == 65


def test_corpus_stats_gpt2_verdict(verdict_path):
    text = verdict_path.read_text(encoding="utf-8")
    stats = corpus_stats(text, GPT2Tokenizer())
    assert stats["tokens"] == 5145
    assert stats["tokens_per_char"] == pytest.approx(5145 / len(text))
