"""Character-level tokenizer: one id per character, as in the "build a GPT" lecture (seed 001).

The vocabulary is the sorted set of distinct characters of the corpus (Tiny Shakespeare: 65),
so `encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]` there. Encoding goes through
a numpy lookup table indexed by code point, which is many times faster than the seed's
`[stoi[c] for c in text]` on large texts (see benchmarks/bench_tokenizers.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gptlab.errors import GptlabError
from gptlab.tokenizers.base import Tokenizer

UNK = "<unk>"
UNK_DECODED = "\ufffd"  # what an <unk> id decodes to: U+FFFD REPLACEMENT CHARACTER


def code_points(text: str) -> np.ndarray:
    """The text's code points as a uint32 array of shape (len(text),), without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def distinct_chars(texts: Iterable[str]) -> list[str]:
    """Sorted distinct characters over all `texts` (marked in a code-point table, not a set)."""
    seen = np.zeros(0x110000, dtype=bool)
    for text in texts:
        seen[code_points(text)] = True
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
        # Lookup table: code point -> id, -1 where absent. The last slot catches every code
        # point above the vocabulary's largest, so indexing never goes out of range.
        codes = code_points("".join(chars))
        self._table = np.full(int(codes.max()) + 2, -1, dtype=np.int64)
        self._table[codes] = np.arange(len(chars))

    @classmethod
    def from_text(cls, text: str | Iterable[str], unk: bool = False) -> CharTokenizer:
        """Vocabulary = sorted distinct characters of `text` (a string or an iterable of them)."""
        texts = [text] if isinstance(text, str) else text
        chars = distinct_chars(texts)
        if not chars:
            raise GptlabError("cannot build a char vocabulary from empty text: give some text")
        return cls(chars, unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str) -> list[int]:
        return self.encode_to_array(text).tolist()

    def encode_to_array(self, text: str) -> np.ndarray:
        """Encode with a vectorized table lookup: (len(text),) uint32 ids."""
        codes = code_points(text)
        ids = self._table[np.minimum(codes, len(self._table) - 1)]  # (N,) int64, -1 = unknown
        missing = ids < 0
        if missing.any():
            if not self.unk:
                self._raise_unknown(text, int(np.argmax(missing)))
            ids[missing] = self.special_tokens[UNK]
        return ids.astype(np.uint32)

    def _raise_unknown(self, text: str, pos: int) -> None:
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise GptlabError(
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
