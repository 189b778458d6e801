"""Word-level tokenizer: seed 002's regex tokenizer with `<|endoftext|>` and `<|unk|>`.

Text is split on punctuation `, . : ; ? _ ! " ( ) '`, on `--` and on whitespace; whitespace
is dropped. The vocabulary is the sorted distinct tokens of the corpus followed by the two
special tokens (the-verdict: 1,130 + 2 = 1,132). Words outside the vocabulary encode to
`<|unk|>`. Because whitespace is dropped, decode cannot give the original text back; it joins
tokens with spaces and re-attaches punctuation the way the seed does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from gptlab.errors import GptlabError
from gptlab.tokenizers.base import EOT, Tokenizer

UNK = "<|unk|>"
SPLIT_RE = re.compile(r'([,.:;?_!"()\']|--|\s)')  # seed 002
_SPACE_BEFORE_PUNCT_RE = re.compile(r'\s+([,.:;?_!"()\'])')
_EOT_RE = re.compile(f"({re.escape(EOT)})")


def split_words(text: str) -> list[str]:
    """Seed 002's tokens: split on punctuation, `--` and whitespace; drop whitespace.

    A literal `<|endoftext|>` is kept as one token even when glued to other text.
    """
    tokens: list[str] = []
    for part in _EOT_RE.split(text):
        if part == EOT:
            tokens.append(EOT)
        elif part:
            tokens.extend(t for t in SPLIT_RE.split(part) if t and not t.isspace())
    return tokens


class WordTokenizer(Tokenizer):
    """Regex word tokenizer (seed 002).

    Args:
        words: the ordinary vocabulary, id i being words[i]; `<|endoftext|>` and `<|unk|>`
            are appended after them (ids len(words) and len(words) + 1).
    """

    name = "word"

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        if len(set(words)) != len(words):
            raise GptlabError("word vocabulary lists a word twice: give distinct words")
        clash = {EOT, UNK} & set(words)
        if clash:
            raise GptlabError(f"word vocabulary contains the special token {clash.pop()!r}")
        self.words = words
        self._itos = words + [EOT, UNK]
        self.stoi = {w: i for i, w in enumerate(self._itos)}
        self.special_tokens = {EOT: len(words), UNK: len(words) + 1}
        self.unk_id = len(words) + 1

    @classmethod
    def from_text(cls, text: str | Iterable[str]) -> WordTokenizer:
        """Vocabulary = sorted distinct tokens of `text` (a string or an iterable of them)."""
        texts = [text] if isinstance(text, str) else text
        vocab: set[str] = set()
        for part in texts:
            vocab.update(split_words(part))
        vocab -= {EOT, UNK}  # the specials get their own ids after the words
        if not vocab:
            raise GptlabError("cannot build a word vocabulary from text with no words: give text")
        return cls(sorted(vocab))

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str) -> list[int]:
        """Token ids; unknown words become `<|unk|>`, a literal `<|endoftext|>` its own id."""
        stoi, unk = self.stoi, self.unk_id
        return [stoi.get(t, unk) for t in split_words(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Join tokens with spaces, then drop the space before punctuation (as seed 002)."""
        self.check_ids(ids)
        text = " ".join([self._itos[i] for i in ids])
        return _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)

    def to_dict(self) -> dict[str, Any]:
        return {"words": self.words}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        return cls(data["words"])
