"""Corpus sources and the named-corpus cache (no network: the downloader is replaced)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gptlab.cli import main
from gptlab.data import corpus
from gptlab.errors import GptlabError

SHAKESPEARE = corpus.NAMED_CORPORA["shakespeare"]


@pytest.fixture
def offline(monkeypatch):
    """Make any download attempt fail like a machine without network, and record it."""
    calls = []

    def fail(url, dest, timeout=60.0):
        calls.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(corpus, "download", fail)
    return calls


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv(corpus.CACHE_ENV_VAR, str(path))
    return path


def test_recorded_hash_matches_the_shared_copy(shakespeare_path):
    assert corpus.file_sha256(shakespeare_path) == SHAKESPEARE.sha256
    assert shakespeare_path.stat().st_size == SHAKESPEARE.size


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(corpus.CACHE_ENV_VAR, raising=False)
    assert corpus.cache_dir() == Path("~/.cache/gptlab").expanduser()
    monkeypatch.setenv(corpus.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert corpus.cache_dir() == tmp_path / "env"
    assert corpus.cache_dir(tmp_path / "flag") == tmp_path / "flag"


def test_failed_download_says_what_to_do(cache, offline):
    with pytest.raises(GptlabError) as info:
        corpus.fetch_corpus("shakespeare")
    message = str(info.value)
    assert "\n" not in message
    assert "could not download corpus 'shakespeare'" in message
    assert "pass --input FILE" in message
    assert "`gptlab corpus add shakespeare FILE`" in message
    assert offline == [SHAKESPEARE.url]
    assert not corpus.cached_corpus_path("shakespeare").exists()


def test_download_is_verified_and_cached_once(cache, monkeypatch, shakespeare_path):
    calls = []

    def fake_download(url, dest, timeout=60.0):
        calls.append(url)
        shutil.copyfile(shakespeare_path, dest)

    monkeypatch.setattr(corpus, "download", fake_download)
    path = corpus.fetch_corpus("shakespeare")
    assert path == cache / "corpora" / "tinyshakespeare.txt"
    assert path.read_bytes() == shakespeare_path.read_bytes()
    assert corpus.fetch_corpus("shakespeare") == path  # cached: no second download
    assert calls == [SHAKESPEARE.url]


def test_corrupt_download_is_rejected(cache, monkeypatch):
    monkeypatch.setattr(corpus, "download", lambda url, dest, timeout=60.0: dest.write_text("x"))
    with pytest.raises(GptlabError, match="the download from .* has SHA-256"):
        corpus.fetch_corpus("shakespeare")
    assert not corpus.cached_corpus_path("shakespeare").exists()


def test_add_then_fetch_is_offline(cache, offline, shakespeare_path):
    dest = corpus.add_corpus("shakespeare", shakespeare_path)
    assert dest.read_bytes() == shakespeare_path.read_bytes()
    assert corpus.fetch_corpus("shakespeare") == dest
    assert offline == []
    assert list(dest.parent.iterdir()) == [dest]  # no temp files left


def test_add_rejects_wrong_file(cache, tmp_path):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not shakespeare\n")
    with pytest.raises(GptlabError, match=r"wrong.txt has SHA-256 [0-9a-f]{64}, expected 86c4e6"):
        corpus.add_corpus("shakespeare", wrong)
    with pytest.raises(GptlabError, match="unknown corpus 'homer': known corpora are shakespeare"):
        corpus.add_corpus("homer", wrong)
    with pytest.raises(GptlabError, match="missing.txt is not a file"):
        corpus.add_corpus("shakespeare", tmp_path / "missing.txt")


def test_corrupt_cache_is_reported(cache, offline):
    path = corpus.cached_corpus_path("shakespeare")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * SHAKESPEARE.size)
    with pytest.raises(GptlabError, match="is corrupt .* `gptlab corpus add shakespeare FILE`"):
        corpus.fetch_corpus("shakespeare")


def test_resolve_file_folder_glob_and_name(tmp_path, cache, offline, shakespeare_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.txt", "a.txt", "sub/c.md", ".hidden"):
        (folder / name).write_text(name)
    assert corpus.resolve_sources(str(folder / "a.txt")) == [folder / "a.txt"]
    everything = [folder / "a.txt", folder / "b.txt", folder / "sub/c.md"]
    assert corpus.resolve_sources(folder) == everything
    assert corpus.resolve_sources(str(folder / "*.txt")) == [folder / "a.txt", folder / "b.txt"]
    assert corpus.resolve_sources([folder / "b.txt", str(folder / "**/*.md")]) == [
        folder / "b.txt", folder / "sub/c.md"
    ]
    corpus.add_corpus("shakespeare", shakespeare_path)
    assert corpus.resolve_sources("shakespeare") == [cache / "corpora" / "tinyshakespeare.txt"]


def test_resolve_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GptlabError, match="input 'nope.txt' not found: pass a file, folder"):
        corpus.resolve_sources("nope.txt")
    with pytest.raises(GptlabError, match="empty holds no files"):
        corpus.resolve_sources(tmp_path / "empty")
    with pytest.raises(GptlabError, match=r"pattern '.*\*.xyz' matches no files"):
        corpus.resolve_sources(str(tmp_path / "*.xyz"))
    with pytest.raises(GptlabError, match="no input given"):
        corpus.resolve_sources([])


def test_cli_corpus_list_and_add(tmp_path, capsys, offline, shakespeare_path):
    cache_flag = ["corpus", "--cache-dir", str(tmp_path / "c")]
    assert main([*cache_flag, "list"]) == 0
    assert capsys.readouterr().out.startswith("shakespeare\tnot cached\t")
    assert main([*cache_flag, "add", "shakespeare", str(shakespeare_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c/corpora/tinyshakespeare.txt")
    assert main([*cache_flag, "list"]) == 0
    assert capsys.readouterr().out.startswith("shakespeare\tcached\t")


def test_cli_corpus_errors(tmp_path, capsys, offline):
    assert main(["corpus", "--cache-dir", str(tmp_path), "fetch", "shakespeare"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not download corpus 'shakespeare'")
    assert err.count("\n") == 1
    assert main(["corpus", "add", "shakespeare", str(tmp_path / "missing")]) == 1
    assert "missing is not a file" in capsys.readouterr().err


def test_cli_corpus_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["corpus", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "gptlab corpus add NAME FILE" in out and "--cache-dir" in out
