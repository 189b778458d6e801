"""`gptlab prepare`: goldens, streaming == whole-text encoding, idempotence, bad input."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlab.cli import main
from gptlab.data import corpus, load_meta, load_split, prepare, reading, token_dtype
from gptlab.errors import ConfigError, GptlabError
from gptlab.tokenizers import GPT2Tokenizer, load_tokenizer

# The module, not the function `gptlab.data.prepare` that shadows it as a package attribute.
prepare_module = importlib.import_module("gptlab.data.prepare")
encode_module = importlib.import_module("gptlab.data.encode")
META_KEYS = {
    "tokenizer", "vocab_size", "dtype", "train_tokens", "val_tokens", "split",
    "source_sha256", "gptlab_version", "source", "tokenizer_file",
}
TRICKY = (
    "Hello  world \nnext line\n\n\nTabs\there\n  indented\nCafé naïve — “quotes”\n"
    "numbers 12345 and 'contractions' don't\r\nwindows line\n \n<|endoftext|> literal\n"
    "trailing spaces   \nEND"
)


def all_ids(data_dir) -> np.ndarray:
    return np.concatenate([load_split(data_dir, "train"), load_split(data_dir, "val")])


@pytest.fixture
def small_blocks(monkeypatch):
    """Read and encode in tiny blocks so that every test text is cut in many places."""
    monkeypatch.setattr(encode_module, "_ENCODE_BLOCK", 23)
    monkeypatch.setattr(reading, "SCAN_BLOCK", 17)


def test_char_shakespeare_golden(shakespeare_path, tmp_path):
    meta = prepare(shakespeare_path, tmp_path / "ds", tokenizer="char")
    assert META_KEYS <= meta.keys()
    assert meta == load_meta(tmp_path / "ds")
    assert meta["vocab_size"] == 65
    assert (meta["train_tokens"], meta["val_tokens"]) == (1_003_854, 111_540)
    assert meta["dtype"] == "uint16" and meta["split"] == 0.9
    assert meta["source_sha256"] == corpus.NAMED_CORPORA["shakespeare"].sha256
    train = load_split(tmp_path / "ds", "train")
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    assert (tmp_path / "ds/train.bin").stat().st_size == 2 * 1_003_854
    tok = load_tokenizer(tmp_path / "ds" / meta["tokenizer_file"])
    assert tok.encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]
    text = shakespeare_path.read_text(encoding="utf-8")
    assert tok.decode(train[:200].tolist()) == text[:200]
    assert tok.decode(load_split(tmp_path / "ds", "val").tolist()) == text[1_003_854:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp folders left
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "ds").iterdir()} == {0o666 & ~mask}


@pytest.mark.parametrize("kind", ["char", "word", "gpt2", "bpe"])
def test_streaming_equals_whole_text_encoding(kind, tmp_path, small_blocks):
    source = tmp_path / "in.txt"
    text = TRICKY * 3
    source.write_text(text, encoding="utf-8", newline="")
    options = {"vocab_size": 300} if kind == "bpe" else {}
    meta = prepare(source, tmp_path / "ds", tokenizer=kind, **options)
    tok = load_tokenizer(tmp_path / "ds/tokenizer.json")
    assert all_ids(tmp_path / "ds").tolist() == tok.encode(text)
    assert meta["total_tokens"] == meta["train_tokens"] + meta["val_tokens"]
    assert meta["train_tokens"] == int(0.9 * meta["total_tokens"])
    assert max(all_ids(tmp_path / "ds")) < meta["vocab_size"]


_ALPHABET = st.sampled_from(list("ab Z.,'\n\t\r!") + ["  ", "\n\n", "é", " \n", "12"])


@settings(max_examples=40, deadline=None)
@given(st.lists(_ALPHABET, min_size=1, max_size=80).map("".join))
def test_safe_cuts_keep_gpt2_ids(text):
    gpt2 = GPT2Tokenizer()
    raw = text.encode("utf-8")
    pieces, start = [], 0
    while (cut := reading.safe_cut(raw[start:], allow_space=True)) > 0:
        pieces.append(raw[start : start + cut].decode("utf-8"))
        start += cut
    pieces.append(raw[start:].decode("utf-8"))
    assert "".join(pieces) == text
    assert sum((gpt2.encode(p) for p in pieces), []) == gpt2.encode(text)


def test_documents_are_joined_with_endoftext(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("First document.\n" * 5)
    (docs / "b.txt").write_text("Second one.\n" * 5)
    (docs / "empty.txt").write_text("")
    meta = prepare(docs, tmp_path / "gpt2", tokenizer="gpt2", split=0.5)
    gpt2 = GPT2Tokenizer()
    expected = gpt2.encode("First document.\n" * 5) + [50256] + gpt2.encode("Second one.\n" * 5)
    assert all_ids(tmp_path / "gpt2").tolist() == expected
    assert meta["source_files"] == 2 and meta["eot_id"] == 50256
    prepare(str(docs / "*.txt"), tmp_path / "char", tokenizer="char")  # no EOT: concatenated
    chars = load_tokenizer(tmp_path / "char/tokenizer.json")
    assert chars.decode(all_ids(tmp_path / "char").tolist()) == (
        "First document.\n" * 5 + "Second one.\n" * 5
    )


def test_gpt2_worker_processes_give_the_same_ids_in_order(tmp_path, monkeypatch, shakespeare_path):
    # Small blocks and no size threshold: many blocks in flight across two processes.
    monkeypatch.setattr(encode_module, "_PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(encode_module, "_ENCODE_BLOCK", 4096)
    docs = tmp_path / "docs"
    docs.mkdir()
    text = shakespeare_path.read_text(encoding="utf-8")[:60_000]
    (docs / "a.txt").write_text(text)
    (docs / "b.txt").write_text("Second one.\n" * 5)
    one = prepare(docs, tmp_path / "one", tokenizer="gpt2", workers=1)
    two = prepare(docs, tmp_path / "two", tokenizer="gpt2", workers=2)
    gpt2 = GPT2Tokenizer()
    expected = gpt2.encode(text) + [50256] + gpt2.encode("Second one.\n" * 5)
    assert all_ids(tmp_path / "two").tolist() == expected == all_ids(tmp_path / "one").tolist()
    assert one == two


def test_workers_must_be_a_count(tmp_path, tiny_text):
    source = tmp_path / "in.txt"
    source.write_text(tiny_text)
    with pytest.raises(ConfigError, match="--workers -1 must be a whole number >= 0"):
        prepare(source, tmp_path / "ds", tokenizer="gpt2", workers=-1)
    assert not (tmp_path / "ds").exists()


def test_rerun_is_idempotent_and_deterministic(tmp_path, tiny_text):
    source = tmp_path / "in.txt"
    source.write_text(tiny_text)
    first = prepare(source, tmp_path / "a", tokenizer="bpe", vocab_size=280)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    assert prepare(source, tmp_path / "a", tokenizer="bpe", vocab_size=280) == first
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == stamps
    prepare(source, tmp_path / "b", tokenizer="bpe", vocab_size=280)
    for name in ("train.bin", "val.bin", "meta.json", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_different_dataset_needs_force(tmp_path, tiny_text):
    source = tmp_path / "in.txt"
    source.write_text(tiny_text)
    prepare(source, tmp_path / "ds", tokenizer="char")
    with pytest.raises(GptlabError, match=r"ds holds a different dataset \(char tokens of .*"
                       r"in.txt\): pass another --out, or --force to replace it"):
        prepare(source, tmp_path / "ds", tokenizer="gpt2")
    assert load_meta(tmp_path / "ds")["tokenizer"] == "char"
    meta = prepare(source, tmp_path / "ds", tokenizer="gpt2", force=True)
    assert load_meta(tmp_path / "ds") == meta and meta["tokenizer"] == "gpt2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in.txt"]


def test_named_corpus_from_cache_offline(tmp_path, monkeypatch, shakespeare_path):
    def fail(url, dest, timeout=60.0):
        raise OSError("network is unreachable")

    monkeypatch.setattr(corpus, "download", fail)
    with pytest.raises(GptlabError, match="gptlab corpus add shakespeare FILE"):
        prepare("shakespeare", tmp_path / "ds", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "ds").exists()
    corpus.add_corpus("shakespeare", shakespeare_path, tmp_path / "cache")
    meta = prepare("shakespeare", tmp_path / "ds", cache_dir=tmp_path / "cache", split=0.5)
    assert meta["source"] == "shakespeare" and meta["train_tokens"] == 557_697


@pytest.mark.parametrize("kind", ["char", "gpt2"])
@pytest.mark.parametrize("steps", ["lower,seed,strip", "nfkc,newlines"])
def test_cleaned_streaming_equals_whole_text(kind, steps, tmp_path, small_blocks):
    from gptlab.text import clean

    source = tmp_path / "in.txt"
    text = "  \n" + TRICKY.replace("END", "Σ 42\n") * 3 + "\n\t ﬁn  \n"
    source.write_text(text, encoding="utf-8", newline="")
    prepare(source, tmp_path / "ds", tokenizer=kind, clean=steps)
    tok = load_tokenizer(tmp_path / "ds/tokenizer.json")
    assert all_ids(tmp_path / "ds").tolist() == tok.encode(clean(text, steps))


def test_clean_steps_are_applied(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("ABC abc\n" * 10)
    meta = prepare(source, tmp_path / "ds", tokenizer="char", clean="lower")
    assert meta["vocab_size"] == 5 and meta["options"]["clean"] == ["lower"]


def test_invalid_utf8_names_file_and_offset(tmp_path):
    source = tmp_path / "bad.txt"
    source.write_bytes(b"good line\n" * 3 + b"caf\xe9\n" + b"more\n" * 3)
    with pytest.raises(GptlabError) as info:
        prepare(source, tmp_path / "ds")
    assert str(info.value) == (
        f"{source} is not valid UTF-8 at byte offset 33: fix the file, or pass "
        "--errors replace to substitute U+FFFD"
    )
    assert not (tmp_path / "ds").exists()
    meta = prepare(source, tmp_path / "ds", errors="replace")
    text = load_tokenizer(tmp_path / "ds/tokenizer.json").decode(all_ids(tmp_path / "ds"))
    assert "caf\ufffd\n" in text and meta["options"]["errors"] == "replace"


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (b"", {}, "in.txt is empty: pass a file with text in it"),
        (b"text\x00\x01\x02", {}, r"in.txt looks like a binary file \(NUL byte at byte offset 4\)"),
        (b"abcdefghij" * 10, {"block_size": 10},
         "gives 10 val tokens, too few for --block-size 10 \\(need >= 11\\)"),
        (b"ab", {}, "gives 1 train tokens, too few for training \\(need >= 2\\)"),
        (b"abc\n", {"split": 1.0}, "--split 1.0 must be between 0 and 1"),
        (b"abc\n", {"vocab_size": 500}, "--vocab-size applies to --tokenizer bpe only"),
        (b"abc\n", {"tokenizer": "bpe", "vocab_size": 100}, "--vocab-size 100 is out of range"),
        (b"abc\n", {"tokenizer": "morse"}, "unknown tokenizer 'morse': choose one of char"),
        (b"abc\n", {"errors": "ignore"}, "--errors 'ignore' must be 'strict' or 'replace'"),
        (b"abc\n", {"clean": "lower,shout"}, "unknown cleaning step 'shout'"),
        (b"123\n", {"clean": "seed,strip"}, "holds no text after cleaning"),
    ],
)
def test_bad_input_leaves_nothing(tmp_path, content, kwargs, message):
    source = tmp_path / "in.txt"
    source.write_bytes(content)
    with pytest.raises(GptlabError, match=message):
        prepare(source, tmp_path / "ds", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_output_folder_checks(tmp_path, tiny_text):
    source = tmp_path / "in.txt"
    source.write_text(tiny_text)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/notes.txt").write_text("mine")
    with pytest.raises(GptlabError, match="busy is not empty and holds no gptlab dataset"):
        prepare(source, tmp_path / "busy", force=True)
    assert (tmp_path / "busy/notes.txt").read_text() == "mine"
    with pytest.raises(GptlabError, match="in.txt is a file: pass a folder path"):
        prepare(source, source)
    (tmp_path / "empty").mkdir()
    assert prepare(source, tmp_path / "empty")["train_tokens"] > 0
    with pytest.raises(GptlabError, match="input 'missing.txt' not found"):
        prepare("missing.txt", tmp_path / "x")


def test_token_dtype_and_uint32_split(tmp_path):
    assert token_dtype(65) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32 and token_dtype(100_277) == np.uint32
    np.array([70_000, 1, 2], dtype="<u4").tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint32"}))
    assert load_split(tmp_path, "val").tolist() == [70_000, 1, 2]
    with pytest.raises(GptlabError, match="train.bin is missing"):
        load_split(tmp_path, "train")
    with pytest.raises(GptlabError, match="split 'test' must be 'train' or 'val'"):
        load_split(tmp_path, "test")


def test_cli_prepare(tmp_path, tiny_text, capsys):
    source = tmp_path / "in.txt"
    source.write_text(tiny_text)
    argv = ["prepare", "--tokenizer", "gpt2", "--input", str(source), "--out", str(tmp_path / "ds")]
    assert main([*argv, "--block_size", "8"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == load_meta(tmp_path / "ds")
    assert "encode" in captured.err  # the progress bar
    assert main([*argv[:-1], str(tmp_path / "ds2"), "--split", "0.5", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == 0.5


def test_cli_prepare_errors(tmp_path, capsys):
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01")
    out = tmp_path / "ds"
    assert main(["prepare", "--input", str(tmp_path / "bin.dat"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith("error: ") and "bin.dat looks like a binary file" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as info:
        main(["prepare", "--out", str(out)])
    assert info.value.code == 2
    assert "--input" in capsys.readouterr().err


def test_cli_prepare_help(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--tokenizer", "--input", "--out", "--split", "--vocab-size", "--clean",
                   "--errors", "--block-size", "--force", "--cache-dir"):
        assert option in out
    assert "(default: 0.9)" in out and "(default: strict)" in out


def test_nothing_left_when_encoding_crashes(tmp_path, tiny_text, monkeypatch):
    source = tmp_path / "in.txt"
    source.write_text(tiny_text)

    def boom(*args, **kwargs):
        raise GptlabError("disk full")

    monkeypatch.setattr(prepare_module, "split_train_val", boom)
    with pytest.raises(GptlabError, match="disk full"):
        prepare(source, tmp_path / "ds")
    assert sorted(os.listdir(tmp_path)) == ["in.txt"]


def test_rejects_option_errors_early():
    with pytest.raises(ConfigError):
        prepare("anything", "out", split=0)


def test_sigterm_mid_prepare_stops_cleanly_and_leaves_nothing(tmp_path, shakespeare_path,
                                                              gptlab_cmd, subprocess_env):
    import subprocess
    import time

    big = tmp_path / "big.txt"
    big.write_bytes(shakespeare_path.read_bytes() * 24)  # 27 MB: gpt2 worker processes
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [*gptlab_cmd, "prepare", "--tokenizer", "gpt2", "--input", str(big),
         "--out", str(work / "ds"), "--no-progress"],
        env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(work.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # wait for the temporary dataset folder: encoding has begun
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert list(work.iterdir()) == []


def _blocked_signals() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_encode_workers_start_with_interrupts_blocked():
    """The forked workers keep SIGINT/SIGTERM blocked (only the parent handles them); the
    parent's own mask is back as it was once they have started."""
    before = _blocked_signals()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        encode_module._start_workers(pool)
        assert _blocked_signals() == before
        in_worker = pool.submit(_blocked_signals).result(timeout=60)
    assert {signal.SIGINT, signal.SIGTERM} <= in_worker


def test_tokenizer_file_reuses_a_saved_tokenizer(tmp_path):
    """--tokenizer-file encodes new text with an existing tokenizer, byte for byte."""
    (tmp_path / "a.txt").write_text("the cat sat on the mat\n" * 30, encoding="utf-8")
    (tmp_path / "b.txt").write_text("a cat the hat\n" * 40, encoding="utf-8")
    first = prepare(tmp_path / "a.txt", tmp_path / "d1", tokenizer="char")
    tok_file = tmp_path / "d1" / "tokenizer.json"
    meta = prepare(tmp_path / "b.txt", tmp_path / "d2", tokenizer_file=tok_file)
    assert (tmp_path / "d2" / "tokenizer.json").read_bytes() == tok_file.read_bytes()
    assert meta["vocab_size"] == first["vocab_size"] and meta["tokenizer"] == "char"
    tok = load_tokenizer(tok_file)
    assert all_ids(tmp_path / "d2").tolist() == tok.encode("a cat the hat\n" * 40)
    assert "tokenizer_sha256" in meta["options"]
    # the same command again finds the dataset in place; a built tokenizer is another dataset
    assert prepare(tmp_path / "b.txt", tmp_path / "d2", tokenizer_file=tok_file) == meta
    with pytest.raises(GptlabError, match="different dataset"):
        prepare(tmp_path / "b.txt", tmp_path / "d2", tokenizer="char")


def test_tokenizer_file_char_without_a_character_fails_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("abc abc\n" * 30, encoding="utf-8")
    (tmp_path / "b.txt").write_text("abc xyz\n" * 30, encoding="utf-8")
    prepare(tmp_path / "a.txt", tmp_path / "d1", tokenizer="char")
    code = main(["prepare", "--tokenizer-file", str(tmp_path / "d1" / "tokenizer.json"),
                 "--input", str(tmp_path / "b.txt"), "--out", str(tmp_path / "d2")])
    assert code != 0
    err = capsys.readouterr().err
    assert "3 character(s)" in err and "'x', 'y', 'z'" in err and "Traceback" not in err
    assert not (tmp_path / "d2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "d1"]


def test_tokenizer_file_with_unk_maps_unknown_characters(tmp_path):
    from gptlab.tokenizers import CharTokenizer

    tok = CharTokenizer(list("ab \n"), unk=True)
    tok.save(tmp_path / "tok.json")
    (tmp_path / "b.txt").write_text("ab xb\n" * 40, encoding="utf-8")
    prepare(tmp_path / "b.txt", tmp_path / "d", tokenizer_file=tmp_path / "tok.json")
    ids = all_ids(tmp_path / "d").tolist()
    assert ids == tok.encode("ab xb\n" * 40) and ids[3] == tok.vocab_size - 1


def test_tokenizer_file_refuses_vocab_size(tmp_path):
    (tmp_path / "a.txt").write_text("abc\n" * 50, encoding="utf-8")
    prepare(tmp_path / "a.txt", tmp_path / "d1", tokenizer="char")
    with pytest.raises(ConfigError, match="--vocab-size does not apply"):
        prepare(tmp_path / "a.txt", tmp_path / "d2", vocab_size=300,
                tokenizer_file=tmp_path / "d1" / "tokenizer.json")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "train.bin").write_bytes((d / "train.bin").read_bytes() + b"x"),
         "train.bin holds .* bytes, not the .* uint16 tokens"),
        (lambda d: (d / "train.bin").write_bytes(b""), "train.bin holds 0 bytes"),
        (lambda d: (d / "meta.json").write_text('{"dtype": "float99"}'), "names no token dtype"),
        (lambda d: (d / "meta.json").write_text("[1]"), "is not a dataset description"),
    ],
)
def test_damaged_dataset_files_give_one_line_errors(tmp_path, damage, message):
    (tmp_path / "a.txt").write_text("some text to split\n" * 20, encoding="utf-8")
    prepare(tmp_path / "a.txt", tmp_path / "d")
    damage(tmp_path / "d")
    with pytest.raises(GptlabError, match=message):
        load_split(tmp_path / "d", "train")


def test_prepare_rebuilds_its_own_damaged_dataset(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("some text to split\n" * 20, encoding="utf-8")
    meta = prepare(tmp_path / "a.txt", tmp_path / "d")
    good = all_ids(tmp_path / "d").tolist()
    os.truncate(tmp_path / "d" / "train.bin", 10)
    (tmp_path / "d" / "val.bin").unlink()
    assert prepare(tmp_path / "a.txt", tmp_path / "d") == meta  # not "up to date", not "other"
    assert all_ids(tmp_path / "d").tolist() == good
    (tmp_path / "d" / "meta.json").write_text("garbage")
    with pytest.raises(GptlabError, match="damaged dataset .* add --force"):
        prepare(tmp_path / "a.txt", tmp_path / "d")
    assert main(["prepare", "--input", str(tmp_path / "a.txt"), "--out", str(tmp_path / "d"),
                 "--force", "--no-progress"]) == 0
    assert all_ids(tmp_path / "d").tolist() == good


@pytest.mark.parametrize("size", ["256", "99999999999999999999"])
def test_bpe_vocab_size_out_of_range_is_one_line(tmp_path, capsys, size):
    (tmp_path / "a.txt").write_text("abc\n" * 50, encoding="utf-8")
    assert main(["prepare", "--tokenizer", "bpe", "--vocab-size", size, "--input",
                 str(tmp_path / "a.txt"), "--out", str(tmp_path / "d")]) == 1
    assert f"--vocab-size {size} is out of range: byte-level BPE needs 257 to 1,048,576" in (
        capsys.readouterr().err)


def test_out_inside_the_input_folder_is_not_read_back(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("some text to split\n" * 20, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    meta = prepare(".", "ds")
    assert meta["source_files"] == 1
    assert prepare(".", "ds") == meta  # the rerun finds it in place, ds/ is not an input


@pytest.mark.parametrize("out", [".", ".."])
def test_out_as_the_current_folder_is_refused(tmp_path, monkeypatch, capsys, out):
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.txt").write_text("some text to split\n" * 20, encoding="utf-8")
    monkeypatch.chdir(work)
    assert main(["prepare", "--input", "a.txt", "--out", out]) == 1
    assert f"--out {out} is the current folder or one above it" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "work"]


def test_utf16_input_is_named_with_the_fix(tmp_path, capsys):
    (tmp_path / "u.txt").write_text("hello there\n" * 20, encoding="utf-16")
    assert main(["prepare", "--input", str(tmp_path / "u.txt"), "--out",
                 str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "is UTF-16 text" in err and "iconv -f UTF-16 -t UTF-8" in err
    assert not (tmp_path / "d").exists()


def test_bpe_default_vocab_size_spelled_out_is_the_same_dataset(tmp_path):
    (tmp_path / "a.txt").write_text("some text to split\n" * 20, encoding="utf-8")
    meta = prepare(tmp_path / "a.txt", tmp_path / "d", tokenizer="bpe")
    assert prepare(tmp_path / "a.txt", tmp_path / "d", tokenizer="bpe", vocab_size=4096) == meta


@pytest.mark.parametrize("appended", ["A", "~", "Ж"])
def test_input_that_changes_after_the_scan_is_an_error_not_wrong_ids(tmp_path, monkeypatch,
                                                                      appended):
    src = tmp_path / "a.txt"
    src.write_text("abc abc\n" * 30, encoding="utf-8")
    scan = prepare_module.scan_sources

    def scan_then_edit(*args, **kwargs):
        result = scan(*args, **kwargs)
        with open(src, "a", encoding="utf-8") as f:  # another program writes to the file
            f.write(appended * 5)
        return result

    monkeypatch.setattr(prepare_module, "scan_sources", scan_then_edit)
    with pytest.raises(GptlabError, match="an input file changed while it was being prepared"):
        prepare(src, tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"split": "abc"}, "split 'abc' must be a number"),
     ({"tokenizer": "bpe", "vocab_size": "300"}, "vocab_size '300' must be a whole number"),
     ({"block_size": "8"}, "block_size '8' must be a whole number")],
)
def test_prepare_api_wrong_types_are_config_errors(tmp_path, kwargs, message):
    (tmp_path / "a.txt").write_text("abc\n" * 50, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        prepare(tmp_path / "a.txt", tmp_path / "d", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"split": True}, "split True must be a number"),
     ({"block_size": 8.0}, "block_size 8.0 must be a whole number"),
     ({"workers": "2"}, "--workers '2' must be a whole number >= 0"),
     ({"workers": True}, "--workers True must be a whole number >= 0")],
)
def test_options_check_themselves_when_created(kwargs, message):
    from gptlab.data.prepare import PrepareOptions

    with pytest.raises(ConfigError, match=message):
        PrepareOptions(**kwargs)


def test_options_normalize_and_record_what_decides_the_content():
    from gptlab.data.prepare import PrepareOptions

    opts = PrepareOptions(tokenizer="bpe", split=1 / 2, vocab_size=4096, clean="Lower, seed",
                          block_size=8, workers=2)
    assert opts.vocab_size is None and opts.clean == ("lower", "seed")  # 4096 is the default
    assert opts.as_dict() == {"tokenizer": "bpe", "split": 0.5, "vocab_size": None,
                              "clean": ["lower", "seed"], "errors": "strict", "unk": False}


def test_split_train_val_is_the_seeds_90_percent(tmp_path):
    ids = np.arange(1_000, 1_025, dtype="<u2")  # 25 tokens
    ids.tofile(tmp_path / "tokens.bin")
    dtype = token_dtype(65)
    n_train, n_val = prepare_module.split_train_val(tmp_path / "tokens.bin", tmp_path, 0.9, dtype)
    n = int(0.9 * len(ids))  # seed 001: train_data = data[:n], val_data = data[n:]
    assert (n_train, n_val) == (n, len(ids) - n) == (22, 3)
    assert np.fromfile(tmp_path / "train.bin", dtype=dtype).tolist() == ids[:n].tolist()
    assert np.fromfile(tmp_path / "val.bin", dtype=dtype).tolist() == ids[n:].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin", "val.bin"]


def test_cli_choices_come_from_the_literals(capsys):
    from typing import get_args

    from gptlab.data.reading import TextErrors
    from gptlab.tokenizers import TokenizerKind

    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = capsys.readouterr().out
    assert "{" + ",".join(get_args(TokenizerKind)) + "}" in out
    assert "{" + ",".join(get_args(TextErrors)) + "}" in out


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_a_utf8_byte_order_mark_is_not_text(kind, tmp_path, tiny_text, small_blocks):
    """A BOM-prefixed file (as Windows editors save) gives the very dataset of the same file
    without one; meta.json counts the files whose BOM was dropped."""
    opts = dict(tokenizer=kind, vocab_size=300 if kind == "bpe" else None)
    (tmp_path / "plain.txt").write_text(tiny_text, encoding="utf-8")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + tiny_text.encode("utf-8"))
    plain = prepare(tmp_path / "plain.txt", tmp_path / "plain", **opts)
    bom = prepare(tmp_path / "bom.txt", tmp_path / "bom", **opts)
    assert (plain["bom_stripped"], bom["bom_stripped"]) == (0, 1)
    assert bom["source_sha256"] != plain["source_sha256"]  # the hash is of the file's bytes
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (tmp_path / "bom" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    if kind == "char":
        assert "\ufeff" not in load_tokenizer(tmp_path / "bom" / "tokenizer.json").chars
