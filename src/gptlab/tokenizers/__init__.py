"""Tokenizers — one protocol (`Tokenizer`), four kinds: char, word, gpt2 (tiktoken), bpe (HF
tokenizers). `load_tokenizer(path)` reads any saved one back; `build_tokenizer(kind, ...)`
makes one from a corpus (what `gptlab prepare` calls).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from gptlab.checks import is_int
from gptlab.errors import ConfigError, GptlabError
from gptlab.tokenizers.base import EOT, FORMAT_VERSION, Tokenizer, TokenizerKind, read_text_file
from gptlab.tokenizers.bpe import BPETokenizer
from gptlab.tokenizers.char import CharTokenizer
from gptlab.tokenizers.gpt2 import GPT2_VOCAB_SIZE, GPT2Tokenizer
from gptlab.tokenizers.word import WordTokenizer

__all__ = [
    "DEFAULT_BPE_VOCAB_SIZE",
    "EOT",
    "KINDS",
    "BPETokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "Tokenizer",
    "TokenizerKind",
    "WordTokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "same_tokenizer",
]

# Each class's `name` is its kind; the order is TokenizerKind's (a test checks both agree).
KINDS: dict[TokenizerKind, type[Tokenizer]] = {
    cls.name: cls for cls in (CharTokenizer, WordTokenizer, GPT2Tokenizer, BPETokenizer)
}
DEFAULT_BPE_VOCAB_SIZE = 4096


def same_tokenizer(a_path: str | os.PathLike[str], b_path: str | os.PathLike[str]) -> bool:
    """Whether two saved tokenizer files hold the same tokenizer (`Tokenizer.save` writes a
    canonical file, so equal tokenizers are equal bytes)."""
    return Path(a_path).read_bytes() == Path(b_path).read_bytes()


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Read a tokenizer saved by `Tokenizer.save` (any kind).

    Raises:
        GptlabError: the file is missing, not JSON, or not a gptlab tokenizer file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GptlabError(f"tokenizer file {path} does not exist: check the path") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GptlabError(f"tokenizer file {path} is not valid JSON ({exc})") from exc
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in KINDS:
        raise GptlabError(
            f"{path} is not a gptlab tokenizer file (kind {kind!r}; expected one of "
            f"{', '.join(KINDS)})"
        )
    version = data.get("format", FORMAT_VERSION)
    if not is_int(version):
        raise GptlabError(f"{path} has format {version!r}, not a whole number: it is damaged")
    if version > FORMAT_VERSION:
        raise GptlabError(
            f"{path} has tokenizer file format {version}, newer than this gptlab reads "
            f"({FORMAT_VERSION}): upgrade gptlab"
        )
    try:
        return KINDS[kind].from_dict(data)
    except (KeyError, TypeError) as exc:
        raise GptlabError(f"{kind} tokenizer file {path} is incomplete ({exc!r})") from exc


def build_tokenizer(
    kind: TokenizerKind,
    text: str | Iterable[str] | None = None,
    files: Sequence[str | os.PathLike[str]] | None = None,
    vocab_size: int | None = None,
    unk: bool = False,
) -> Tokenizer:
    """Make a tokenizer of `kind` for a corpus given as `text` and/or `files`.

    Args:
        text: corpus text (char/word vocabularies and bpe merges are learned from it), or an
            iterable of text blocks: char and word read it as a stream, bpe collects it.
        files: corpus files (UTF-8), used with or instead of `text`.
        vocab_size: bpe only (default 4096); gpt2 accepts only 50257.
        unk: char only: add an `<unk>` id for unseen characters (word always has `<|unk|>`;
            gpt2 and bpe are byte-level and never meet an unknown character).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown tokenizer {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "gpt2":
        if vocab_size not in (None, GPT2_VOCAB_SIZE):
            raise ConfigError(
                f"vocab size {vocab_size} does not apply to gpt2 (always {GPT2_VOCAB_SIZE}): "
                "drop --vocab-size or use --tokenizer bpe"
            )
        return GPT2Tokenizer()
    if kind in ("char", "word") and vocab_size is not None:
        raise ConfigError(
            f"vocab size {vocab_size} does not apply to the {kind} tokenizer (its vocabulary "
            "comes from the corpus): drop --vocab-size or use --tokenizer bpe"
        )
    if text is None and not files:
        raise ConfigError(f"the {kind} tokenizer is learned from a corpus: give text or files")
    blocks: Iterable[str] = [text] if isinstance(text, str) else (text or [])
    if kind == "bpe":
        sources: list = [*blocks, *(Path(f) for f in files or [])]
        return BPETokenizer.train(sources, vocab_size or DEFAULT_BPE_VOCAB_SIZE)
    texts = itertools.chain(blocks, (read_text_file(f) for f in files or []))
    if kind == "char":
        return CharTokenizer.from_text(texts, unk=unk)
    return WordTokenizer.from_text(texts)
