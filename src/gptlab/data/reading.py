"""Reading text files in bounded blocks, with validation, hashing and a character scan.

Blocks are cut only after a newline with a visible ASCII character on both sides. At
such a point every tokenizer gptlab has (char, the seed's word regex, GPT-2's and
byte-level BPE's pre-tokenizer regex) ends a pre-token, so encoding block by block gives
exactly the ids of encoding the whole file at once; the cut also always falls on a UTF-8
character boundary.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from gptlab.data.formats import compression, open_input
from gptlab.errors import GptlabError
from gptlab.files import check_not_binary
from gptlab.text import clean
from gptlab.tokenizers.base import UTF8_BOM, starts_with_bom
from gptlab.tokenizers.char import mark_chars

logger = logging.getLogger(__name__)

TextErrors = Literal["strict", "replace"]  # invalid UTF-8: fail, or substitute U+FFFD
SCAN_BLOCK = 1 << 22  # 4 MiB
_MAX_CARRY = 1 << 26  # past 64 MiB without a newline cut, also cut between words
# Visible ASCII and ASCII letters, as bytes values (ints) and as 1-char strings, so that
# `safe_cut` works on both bytes and str.
_VISIBLE = set(range(0x21, 0x7F)) | {chr(c) for c in range(0x21, 0x7F)}
_LETTERS = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LETTERS |= {chr(c) for c in _LETTERS}


def safe_cut(buf: bytes | str, allow_space: bool = False) -> int:
    """Index just after the last tokenization-safe cut point in `buf`, or 0 if none.

    A safe point is after a newline with visible ASCII on both sides (GPT-2's regex treats
    whitespace at the very end of a text specially, so the newline must not end a run of
    spaces); with `allow_space`, also before a space between two ASCII letters.
    """
    newline, space = (b"\n", b" ") if isinstance(buf, bytes) else ("\n", " ")
    end = len(buf) - 1
    while (i := buf.rfind(newline, 1, end)) >= 0:
        if buf[i + 1] in _VISIBLE and buf[i - 1] in _VISIBLE:
            return i + 1
        end = i
    if allow_space:
        end = len(buf) - 1
        while (i := buf.rfind(space, 1, end)) >= 0:
            if buf[i - 1] in _LETTERS and buf[i + 1] in _LETTERS:
                return i
            end = i
    return 0


def _check_bytes(path: Path, raw: bytes, offset: int, errors: TextErrors) -> str:
    """Decode one block, rejecting binary data and (when strict) invalid UTF-8."""
    check_not_binary(path, raw, offset)
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise GptlabError(
            f"{path} is not valid UTF-8 at byte offset {offset + exc.start}: fix the file, or "
            "pass --errors replace to substitute U+FFFD"
        ) from None


def iter_text_blocks(
    path: Path,
    errors: TextErrors = "strict",
    block_bytes: int = SCAN_BLOCK,
    on_raw: Callable[[bytes], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """Yield the text of a UTF-8 file in blocks, each cut at a safe point; a UTF-8 byte
    order mark at the start is dropped (`on_raw` still sees it: the file's hash is its bytes').

    Args:
        block_bytes: bytes read per step; a block is at most about this size unless the
            file has no safe cut point for a long stretch.
        on_raw: called with each block's raw bytes, in order (e.g. to hash the file).
        on_bytes: called with each block's number of raw bytes, for progress bars.
    """
    offset = 0
    carry = b""
    if compression(path):  # progress counts the compressed bytes read
        opened, on_bytes = open_input(path, on_bytes), None
    else:
        opened = open(path, "rb")
    # An incremental decoder is not needed: every cut lies on a character boundary.
    with opened as f:
        while True:
            block = f.read(block_bytes)
            buf = carry + block if carry else block
            if not buf:
                return
            cut = len(buf) if not block else safe_cut(buf, len(buf) > _MAX_CARRY)
            if cut == 0:
                carry = buf
                continue
            raw, carry = (buf, b"") if cut == len(buf) else (buf[:cut], buf[cut:])
            text = _check_bytes(path, raw, offset, errors)
            if offset == 0:
                text = text.removeprefix(UTF8_BOM)  # an encoding signature, not text
            if on_raw is not None:
                on_raw(raw)
            if on_bytes is not None:
                on_bytes(len(raw))
            offset += len(raw)
            yield text


def _reblock(texts: Iterator[str], strip: bool) -> Iterator[str]:
    """Re-cut cleaned blocks at safe points of the cleaned text; `strip` trims the ends.

    Cleaning can delete the characters around a raw cut point, so the cleaned text is
    re-cut to keep block-by-block encoding exact. With `strip`, the document's leading
    whitespace is dropped from the first non-empty block and its trailing whitespace from
    the last (the carry always holds the end of the document, as cuts need visible text).
    """
    carry = ""
    started = not strip
    for text in texts:
        buf = carry + text
        if not started:
            buf = buf.lstrip()
            started = bool(buf)
        cut = safe_cut(buf, len(buf) > _MAX_CARRY)
        if cut:
            yield buf[:cut]
        carry = buf[cut:]
    if strip:
        carry = carry.rstrip()
    if carry:
        yield carry


def document_texts(
    path: Path,
    errors: TextErrors = "strict",
    clean_steps: Sequence[str] = (),
    block_bytes: int | None = None,
    on_raw: Callable[[bytes], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """One document's text in blocks, cleaned, each block cut at a tokenization-safe point.

    `clean_steps` are gptlab.text cleaning steps, applied block by block; `strip` trims the
    whole document's ends (after the other steps, wherever it is listed). The other
    arguments are `iter_text_blocks`'.
    """
    texts = iter_text_blocks(path, errors, block_bytes or SCAN_BLOCK, on_raw, on_bytes)
    return _cleaned(texts, clean_steps)


def record_texts(
    text: str, clean_steps: Sequence[str] = (), block_chars: int | None = None
) -> Iterator[str]:
    """One record's text as `document_texts` gives the same text read from a file of its
    own: a leading byte order mark dropped, cut into blocks at safe points, cleaned."""
    block_chars = block_chars or SCAN_BLOCK
    if not clean_steps and len(text) <= block_chars:  # most records: one block, as it is
        return iter((text.removeprefix(UTF8_BOM),))
    return _cleaned(_text_blocks(text.removeprefix(UTF8_BOM), block_chars),
                    clean_steps)


def _text_blocks(text: str, block_chars: int) -> Iterator[str]:
    start = 0
    while len(text) - start > block_chars:
        end = start + block_chars
        while (cut := safe_cut(text[start:end], end - start > _MAX_CARRY)) == 0:
            if end >= len(text):
                break
            end = min(len(text), start + 2 * (end - start))
        if cut == 0:
            break
        yield text[start : start + cut]
        start += cut
    if start < len(text):
        yield text[start:] if start else text


def _cleaned(texts: Iterator[str], clean_steps: Sequence[str]) -> Iterator[str]:
    if not clean_steps:
        return texts
    local = [step for step in clean_steps if step != "strip"]
    cleaned = (clean(text, local) for text in texts) if local else texts
    return _reblock(cleaned, strip="strip" in clean_steps)


@dataclass
class SourceScan:
    """What one pass over the sources learned."""

    files: list[Path]  # the non-empty files, in order
    sha256: str  # one file: its SHA-256; several: SHA-256 of their hex digests, one per line
    nbytes: int
    chars: set[str] | None  # distinct characters after cleaning, when asked for
    bom_files: int = 0  # how many files started with a UTF-8 byte order mark (dropped)
    inputs: list = field(default_factory=list)  # documents.InputFile of each file, if known


def scan_sources(
    files: list[Path],
    errors: TextErrors = "strict",
    clean_steps: Sequence[str] = (),
    want_chars: bool = False,
    progress: bool = False,
) -> SourceScan:
    """Read every file once: validate it, hash it, and optionally collect its characters.

    Empty files among several are skipped with a warning; an empty single input, or
    inputs that are all empty, raise GptlabError.
    """
    nonempty = [f for f in files if f.stat().st_size > 0]
    for f in files:
        if f.stat().st_size == 0 and len(files) > 1:
            logger.warning("skipping empty file %s", f)
    if not nonempty:
        what = files[0] if len(files) == 1 else f"all {len(files)} input files"
        raise GptlabError(f"{what} is empty: pass a file with text in it")
    total = sum(f.stat().st_size for f in nonempty)
    seen = np.zeros(sys.maxunicode + 1, dtype=bool) if want_chars else None
    digests = []
    bar = tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="scan",
        disable=not progress, file=sys.stderr, dynamic_ncols=True,
    )
    with bar:
        for path in nonempty:
            digest = hashlib.sha256()
            steps = clean_steps if want_chars else ()  # cleaning matters only for chars
            for text in document_texts(path, errors, steps, None, digest.update, bar.update):
                if seen is not None:
                    mark_chars(seen, text)
            digests.append(digest.hexdigest())
    sha = digests[0] if len(digests) == 1 else hashlib.sha256(
        "".join(d + "\n" for d in digests).encode()
    ).hexdigest()
    chars = None if seen is None else {chr(c) for c in np.flatnonzero(seen)}
    bom_files = sum(starts_with_bom(path) for path in nonempty)
    if bom_files:
        logger.info("dropped the UTF-8 byte order mark at the start of %d file(s)", bom_files)
    return SourceScan(nonempty, sha, total, chars, bom_files)
