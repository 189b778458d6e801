"""Hypothesis properties of every tokenizer: round trips, id ranges, save/load, batching."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlab.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)
from gptlab.tokenizers.chunking import split_for_parallel

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EOT = "<|endoftext|>"

# Arbitrary text (no lone surrogates: they are not valid text for byte-level tokenizers),
# with the special token and a few awkward characters mixed in often.
any_text = st.lists(
    st.one_of(st.text(max_size=30), st.sampled_from([EOT, "\n", "\r\n", " ", "'s", "😀", "--"])),
    max_size=12,
).map("".join)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_text):
    """Each kind, built from the tiny corpus, next to its saved-and-loaded copy."""
    toks: dict[str, Tokenizer] = {
        "char": CharTokenizer.from_text(tiny_text),
        "char_unk": CharTokenizer.from_text(tiny_text, unk=True),
        "word": WordTokenizer.from_text(tiny_text),
        "gpt2": GPT2Tokenizer(),
        "bpe": BPETokenizer.train(tiny_text, vocab_size=320),
    }
    out = tmp_path_factory.mktemp("toks")
    return {k: (t, load_tokenizer(t.save(out / f"{k}.json"))) for k, t in toks.items()}


def check_common(tok: Tokenizer, loaded: Tokenizer, text: str) -> list[int]:
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert loaded.encode(text) == ids
    assert tok.encode_to_array(text).tolist() == ids
    return ids


@PROPS
@given(data=st.data())
def test_char_round_trip_over_its_alphabet(saved, data):
    tok, loaded = saved["char"]
    text = data.draw(st.text(alphabet=tok.chars))
    ids = check_common(tok, loaded, text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


@PROPS
@given(text=st.text())
def test_char_unk_encodes_anything(saved, text):
    tok, loaded = saved["char_unk"]
    ids = check_common(tok, loaded, text)
    unk = tok.special_tokens["<unk>"]
    assert [i == unk for i in ids] == [c not in tok.stoi for c in text]


@PROPS
@given(text=any_text)
def test_gpt2_round_trip(saved, text):
    tok, loaded = saved["gpt2"]
    ids = check_common(tok, loaded, text)
    assert tok.decode(ids) == text
    assert ids.count(50256) == text.count(EOT)


@PROPS
@given(text=any_text)
def test_bpe_round_trip(saved, text):
    tok, loaded = saved["bpe"]
    ids = check_common(tok, loaded, text)
    assert tok.decode(ids) == text
    assert ids.count(tok.eot_id) == text.count(EOT)


@PROPS
@given(text=any_text)
def test_word_reencoding_is_stable(saved, text):
    tok, loaded = saved["word"]
    ids = check_common(tok, loaded, text)
    assert tok.encode(tok.decode(ids)) == ids


@PROPS
@given(data=st.data())
def test_word_decode_then_encode_gives_the_ids_back(saved, data):
    # Any id sequence at all, not only ones that came from text.
    tok, _ = saved["word"]
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=20))
    assert tok.encode(tok.decode(ids)) == ids


@PROPS
@given(
    pieces=st.lists(
        st.one_of(st.text(max_size=8), st.sampled_from(["\n", "a\nb", ".\n'", " \n", EOT])),
        max_size=30,
    ),
    n=st.integers(1, 8),
)
def test_parallel_split_never_changes_ids(saved, pieces, n):
    text = "".join(pieces)
    parts = split_for_parallel(text, n)
    assert "".join(parts) == text
    for kind in ("gpt2", "bpe", "word"):
        tok, _ = saved[kind]
        joined = [i for part in parts for i in tok.encode(part)]
        assert joined == tok.encode(text), (kind, parts)
