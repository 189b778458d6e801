"""How text becomes tokens: each piece, its id and the characters it covers.

Seed 001 encodes "hii there" one character at a time; seed 002 splits words with a regex
(whitespace dropped, unknown words → `<|unk|>`) and then with GPT-2's byte-level BPE (no
unknowns, spaces glued to the next word). `token_table` shows one split with character
spans; `compare_tokenizers` puts several side by side with their token counts.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gptlab.data.dataset import TOKENIZER_FILE
from gptlab.errors import GptlabError
from gptlab.inspect.plain import Plain, check_text, encode_text, piece
from gptlab.tokenizers import (
    KINDS,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
)
from gptlab.tokenizers.word import split_words


@dataclass(frozen=True)
class TokenRow(Plain):
    """One token of a text.

    Fields:
        index: its position in the token list.
        id: its id; piece: the vocabulary entry (`<|unk|>` / `<unk>` for an unknown).
        start, end: the characters text[start:end] it came from. A GPT-2 or bpe token that
            holds part of a multi-byte character shares that character with its neighbour.
        text: text[start:end], the original (for an unknown token: what it replaced).
        unknown: whether the id is the tokenizer's unknown token.
        dropped_before: text between the previous token's end and `start` that no token
            covers (the word tokenizer drops whitespace); "" for the other kinds.
    """

    index: int
    id: int
    piece: str
    start: int
    end: int
    text: str
    unknown: bool
    dropped_before: str


@dataclass(frozen=True)
class TokenTable(Plain):
    """A text split by one tokenizer: rows, ids, and the text left after the last token."""

    tokenizer: str
    text: str
    ids: tuple[int, ...]
    rows: tuple[TokenRow, ...]
    dropped_after: str


def token_table(tokenizer: Tokenizer, text: str) -> TokenTable:
    """Seed 001's `encode(text)` / seed 002's token split, with each piece's characters.

    Tiny Shakespeare's char tokenizer gives ids (46, 47, 47, 1, 58, 46, 43, 56, 43) for
    "hii there", spans (0, 1), (1, 2), ...

    Args:
        tokenizer: a char, word, gpt2 or bpe tokenizer.
        text: the text (non-empty).

    Returns:
        TokenTable with one TokenRow per id of `tokenizer.encode(text)`.

    Raises:
        GptlabError: empty text, a text with no tokens, or a character outside a char
            vocabulary without `<unk>` (`UnknownCharacterError`).
    """
    ids = encode_text(tokenizer, text)
    spans = token_spans(tokenizer, text, ids)
    unk = {tokenizer.special_tokens.get(name) for name in ("<|unk|>", "<unk>")} - {None}
    rows, covered = [], 0
    for index, (token_id, (start, end)) in enumerate(zip(ids, spans, strict=True)):
        dropped = text[covered:start] if start > covered else ""
        rows.append(
            TokenRow(
                index=index,
                id=token_id,
                piece=piece(tokenizer, token_id),
                start=start,
                end=end,
                text=text[start:end],
                unknown=token_id in unk,
                dropped_before=dropped,
            )
        )
        covered = max(covered, end)
    return TokenTable(
        tokenizer=tokenizer.name,
        text=text,
        ids=tuple(ids),
        rows=tuple(rows),
        dropped_after=text[covered:],
    )


def token_spans(tokenizer: Tokenizer, text: str, ids: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) character span of each id of `tokenizer.encode(text)`."""
    if isinstance(tokenizer, CharTokenizer):
        return [(i, i + 1) for i in range(len(ids))]  # one id per character, <unk> too
    if isinstance(tokenizer, WordTokenizer):
        return _word_spans(text)
    if isinstance(tokenizer, GPT2Tokenizer):
        encoding = tokenizer.encoding
        return _byte_spans(text, [len(encoding.decode_single_token_bytes(i)) for i in ids])
    if isinstance(tokenizer, BPETokenizer):
        return list(tokenizer.hf.encode(text, add_special_tokens=False).offsets)
    raise GptlabError(
        f"token spans are known for the {', '.join(KINDS)} tokenizers, not "
        f"{type(tokenizer).__name__}"
    )


def _word_spans(text: str) -> list[tuple[int, int]]:
    # split_words keeps every character except whitespace, in order: skip whitespace, match
    spans, pos = [], 0
    for word in split_words(text):
        while text[pos].isspace():
            pos += 1
        assert text.startswith(word, pos), (word, pos)
        spans.append((pos, pos + len(word)))
        pos += len(word)
    return spans


def _byte_spans(text: str, token_bytes: Sequence[int]) -> list[tuple[int, int]]:
    # character i starts at byte char_starts[i]; the last entry is the text's byte length
    lengths = (len(c.encode("utf-8", "surrogatepass")) for c in text)
    char_starts = [0, *itertools.accumulate(lengths)]
    if sum(token_bytes) != char_starts[-1]:
        raise GptlabError("the tokens do not decode to the text (a lone surrogate?): clean it")
    spans, byte = [], 0
    for n in token_bytes:
        start = bisect.bisect_right(char_starts, byte) - 1  # the character holding byte 0
        end = bisect.bisect_left(char_starts, byte + n)  # first character starting at/after
        spans.append((start, max(end, start + 1)))
        byte += n
    return spans


@dataclass(frozen=True)
class TokenizerSplit(Plain):
    """One tokenizer's split of the text in `compare_tokenizers`."""

    name: str
    kind: str
    n_tokens: int
    chars_per_token: float
    table: TokenTable


def compare_tokenizers(
    text: str,
    kinds_or_files: str | Sequence[str | os.PathLike[str] | Tokenizer],
    corpus: str | None = None,
) -> list[TokenizerSplit]:
    """The same text under several tokenizers: token counts and characters per token
    (seed 002's "Simple: 9235, BPE: 5145" comparison, with the pieces).

    Args:
        text: the text to split.
        kinds_or_files: tokenizers, each a kind ("char", "word", "gpt2", "bpe"), a
            tokenizer.json file, a run or dataset folder holding one, or a Tokenizer; a
            string is split at commas ("char,word,gpt2").
        corpus: where the char, word and bpe kinds learn their vocabulary (default: the
            text itself, so the word tokenizer then meets no unknown word).

    Returns:
        One TokenizerSplit per tokenizer, in the order given.
    """
    check_text(text)
    if isinstance(kinds_or_files, str):
        kinds_or_files = [part.strip() for part in kinds_or_files.split(",") if part.strip()]
    if not kinds_or_files:
        raise GptlabError("no tokenizers to compare: give kinds or files, e.g. 'char,gpt2'")
    splits = []
    for item in kinds_or_files:
        name, tokenizer = _resolve_tokenizer(item, corpus if corpus is not None else text)
        table = token_table(tokenizer, text)
        n = len(table.ids)
        splits.append(TokenizerSplit(name, tokenizer.name, n, len(text) / n, table))
    return splits


def _resolve_tokenizer(item: str | os.PathLike[str] | Tokenizer, corpus: str):
    if isinstance(item, Tokenizer):
        return item.name, item
    if isinstance(item, str) and item in KINDS:
        return item, build_tokenizer(item, text=None if item == "gpt2" else corpus)
    path = Path(item)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise GptlabError(
            f"{item!s} is neither a tokenizer kind ({', '.join(KINDS)}) nor a tokenizer.json "
            "file or a folder holding one: check the name or path"
        )
    return str(item), load_tokenizer(path)


def format_token_table(table: TokenTable) -> list[str]:
    """Seed 001's encode output (`[46, 47, 47, 1, ...]`) and one line per token:
    index, id, piece, span, and what an unknown token replaced or whitespace was dropped."""
    lines = [str(list(table.ids))]
    for r in table.rows:
        notes = []
        if r.dropped_before:
            notes.append(f"{r.dropped_before!r} dropped before it")
        if r.unknown:
            notes.append(f"unknown: {r.text!r}")
        elif r.text != r.piece:
            notes.append(f"text {r.text!r}")
        note = f"  ({'; '.join(notes)})" if notes else ""
        lines.append(f"{r.index:>4} {r.id:>7}  {r.piece!r:<16} {r.start}:{r.end}{note}")
    if table.dropped_after:
        lines.append(f"  (dropped at the end: {table.dropped_after!r})")
    return lines


def format_compare_tokenizers(splits: Sequence[TokenizerSplit]) -> list[str]:
    """One line per tokenizer: `gpt2: 10 tokens, 3.30 chars/token | 'Here' | ' is' ...`."""
    return [
        f"{s.name}: {s.n_tokens} tokens, {s.chars_per_token:.2f} chars/token | "
        + " | ".join(repr(r.piece) for r in s.table.rows)
        for s in splits
    ]
