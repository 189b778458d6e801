"""Cut a long text into pieces that encode to the same ids separately as together.

Parallel encoders (tiktoken's and HF tokenizers' batch APIs) need a list of texts. Cutting
at an arbitrary point could change the ids: a BPE pre-tokenizer piece could straddle the
cut, and GPT-2's `\\s++$` rule treats the end of a text differently. A newline with a visible,
non-space character on both sides is a boundary no pre-tokenizer piece of GPT-2's regex (nor
HF ByteLevel's, nor the word/char tokenizers') crosses, and it never sits at the end of a
whitespace run, so cutting right after it is exact.
"""

from __future__ import annotations


def _solid(c: str) -> bool:
    # Conservative "not whitespace to any regex engine": printable and not a space.
    return c.isprintable() and not c.isspace()


def find_cut(text: str, near: int) -> int | None:
    """The first index >= `near` right after a safe newline (see module doc), or None."""
    i = text.find("\n", max(near - 1, 1))
    while i != -1 and i + 1 < len(text):
        if _solid(text[i - 1]) and _solid(text[i + 1]):
            return i + 1
        i = text.find("\n", i + 1)
    return None


def split_for_parallel(text: str, n_pieces: int) -> list[str]:
    """Split `text` into about `n_pieces` pieces at safe newlines; "".join(result) == text.

    Text without safe newlines comes back as fewer (possibly one) pieces.
    """
    target = max(1, len(text) // max(1, n_pieces))
    pieces: list[str] = []
    start = 0
    while len(text) - start > target:
        cut = find_cut(text, start + target)
        if cut is None:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces
