"""`gptlab stats` in-process on tiny files: output, --json, --help and errors."""

from __future__ import annotations

import json

import pytest

from gptlab.cli import main
from gptlab.tokenizers import CharTokenizer


@pytest.fixture
def corpus(tmp_path, tiny_text):
    path = tmp_path / "input.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


def test_stats_lines(corpus, tiny_text, capsys):
    assert main(["stats", str(corpus)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["characters", f"{len(tiny_text):,}"]
    assert out[2].split() == ["lines", "160"]
    assert out[3].split() == ["distinct_characters", str(len(set(tiny_text)))]


def test_stats_json_with_tokenizers(corpus, tiny_text, tmp_path, capsys):
    assert main(["stats", str(corpus), "--tokenizer", "gpt2", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["tokenizer"] == "gpt2" and stats["vocab_size"] == 50257
    assert 0 < stats["tokens_per_char"] < 1
    saved = CharTokenizer.from_text(tiny_text).save(tmp_path / "tokenizer.json")
    assert main(["stats", str(corpus), str(corpus), "--tokenizer", str(saved), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["tokens"] == stats["characters"] == 2 * len(tiny_text)
    assert main(["stats", str(corpus), "--tokenizer", "bpe", "--vocab_size", "280", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] == 280


def test_stats_clean(tmp_path, capsys):
    path = tmp_path / "x.txt"
    path.write_text("AbC#\r\n", encoding="utf-8")
    assert main(["stats", str(path), "--clean", "newlines,lower,seed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["distinct_characters"] == 4  # a b c \n


def test_stats_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["stats", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--tokenizer KIND_OR_JSON" in out and "--vocab_size" in out and "(default: None)" in out


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        (lambda p: p.write_bytes(b"ok\xff"), [], "is not valid UTF-8 (byte offset 2)"),
        (lambda p: p.write_bytes(b""), [], "is empty: give a file with text in it"),
        (lambda p: p.write_bytes(b"ab\x00cd\n"), [], "looks like a binary file (NUL byte at"),
        (lambda p: p.write_text("hi\n", encoding="utf-16"), [], "is UTF-16 text"),
        (lambda p: p.write_text("x"), ["--tokenizer", "sp"], "--tokenizer 'sp' is neither a kind"),
        (lambda p: p.write_text("x"), ["--clean", "upper"], "unknown cleaning step 'upper'"),
        (lambda p: p.write_text("x"), ["--tokenizer", "gpt2", "--vocab-size", "9"],
         "vocab size 9 does not apply to gpt2"),
        (lambda p: None, [], "in.txt does not exist: check the path"),
    ],
)
def test_stats_errors(tmp_path, capsys, make, argv, message):
    path = tmp_path / "in.txt"
    make(path)
    assert main(["stats", str(path), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
