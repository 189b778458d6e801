"""Character-level tokenizer: one id per character, as in the "build a GPT" lecture (seed 001).

The vocabulary is the sorted set of distinct characters of the corpus (Tiny Shakespeare: 65),
so `encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]` there. Encoding goes through
a numpy lookup table indexed by code point (`lookup_table`), the vectorized form of the
seed's `[stoi[c] for c in text]` that large texts need (see benchmarks/bench_tokenizers.py).
It is gptlab's one char table: `gptlab prepare` encodes through it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gptlab.errors import GptlabError
from gptlab.tokenizers.base import Tokenizer

UNK = "<unk>"
UNK_DECODED = "\ufffd"  # what an <unk> id decodes to: U+FFFD REPLACEMENT CHARACTER


class UnknownCharacterError(GptlabError):
    """A text holds a character outside a char vocabulary that has no `<unk>`."""


def code_points(text: str) -> np.ndarray:
    """The text's code points as a uint32 array of shape (len(text),), without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def mark_chars(seen: np.ndarray, text: str) -> None:
    """Mark the code points of `text` in `seen`, a bool table of shape (0x110000,)."""
    if text.isascii():  # O(1) check in CPython; counting bytes beats a UTF-32 scatter
        counts = np.bincount(np.frombuffer(text.encode("ascii"), dtype=np.uint8), minlength=128)
        seen[:128] |= counts > 0
    else:
        seen[code_points(text)] = True


def distinct_chars(texts: Iterable[str]) -> list[str]:
    """Sorted distinct characters over all `texts` (marked in a code-point table, not a set)."""
    seen = np.zeros(0x110000, dtype=bool)
    for text in texts:
        mark_chars(seen, text)
    return [chr(c) for c in np.flatnonzero(seen)]


class CharTokenizer(Tokenizer):
    """One id per character.

    Args:
        chars: the vocabulary, id i being chars[i]; single, distinct characters.
        unk: append an `<unk>` id that every character outside `chars` encodes to (it
            decodes to U+FFFD). Without it, such a character is an error.
    """

    name = "char"

    def __init__(self, chars: Sequence[str], unk: bool = False) -> None:
        chars = list(chars)
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise GptlabError(f"char vocabulary entry {i} is {c!r}, not a single character")
        if len(set(chars)) != len(chars):
            dup = next(c for c in chars if chars.count(c) > 1)
            raise GptlabError(f"char vocabulary lists {dup!r} twice: give distinct characters")
        if not chars:
            raise GptlabError("char vocabulary is empty: build it from a non-empty text")
        self.chars = chars
        self.unk = unk
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.special_tokens = {UNK: len(chars)} if unk else {}
        self._itos = chars + ([UNK_DECODED] if unk else [])
        self._table = self.lookup_table()

    @classmethod
    def from_text(cls, text: str | Iterable[str], unk: bool = False) -> CharTokenizer:
        """Vocabulary = sorted distinct characters of `text` (a string or an iterable of them)."""
        return cls(distinct_chars([text] if isinstance(text, str) else text), unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str) -> list[int]:
        return self.encode_to_array(text).tolist()

    def lookup_table(self) -> np.ndarray:
        """Code point -> id, -1 where absent: `stoi` as an int32 array. The last slot catches
        every code point above the vocabulary's largest, so a clipped lookup stays in range."""
        codes = code_points("".join(self.chars))
        table = np.full(int(codes.max()) + 2, -1, dtype=np.int32)
        table[codes] = np.arange(len(self.chars))
        return table

    def encode_to_array(self, text: str) -> np.ndarray:
        """Encode with a vectorized table lookup: (len(text),) uint32 ids.

        Raises:
            UnknownCharacterError: a character outside the vocabulary, without `unk`.
        """
        if text.isascii():  # O(1) in CPython; skips the 4-bytes-per-char UTF-32 copy
            codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)  # (N,)
        else:
            codes = code_points(text)  # (N,) uint32
        # mode="clip" sends every code point above the table to its last slot, the -1 sentinel.
        ids = np.take(self._table, codes, mode="clip")  # (N,) int32, -1 = unknown
        if ids.size and ids.min() < 0:
            missing = ids < 0
            if not self.unk:
                self._raise_unknown(text, int(np.argmax(missing)))
            ids[missing] = self.special_tokens[UNK]
        return ids.view(np.uint32)  # every id is now >= 0: reinterpret without a copy

    def _raise_unknown(self, text: str, pos: int) -> None:
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise UnknownCharacterError(
            f"character {text[pos]!r} at position {pos} (line {line}, column {column}) is not "
            f"in the char tokenizer's {len(self.chars)}-character vocabulary: rebuild the "
            "vocabulary from this text, or use the <unk> fallback (CharTokenizer(..., unk=True), "
            "`gptlab prepare --unk`)"
        )

    def decode(self, ids: Sequence[int]) -> str:
        self.check_ids(ids)
        itos = self._itos
        return "".join([itos[i] for i in ids])

    def to_dict(self) -> dict[str, Any]:
        return {"chars": self.chars, "unk": self.unk}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(data["chars"], unk=bool(data.get("unk", False)))
