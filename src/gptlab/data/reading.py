"""Reading text files in bounded blocks, with validation, hashing and a character scan.

Blocks are cut only after a newline that is followed by a visible ASCII character. At
such a point every tokenizer gptlab has (char, the seed's word regex, GPT-2's and
byte-level BPE's pre-tokenizer regex) ends a pre-token, so encoding block by block gives
exactly the ids of encoding the whole file at once; the cut also always falls on a UTF-8
character boundary.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gptlab.errors import GptlabError

logger = logging.getLogger(__name__)

SCAN_BLOCK = 1 << 24  # 16 MiB
_MAX_CARRY = 1 << 26  # past 64 MiB without a newline cut, also cut between words
_VISIBLE_ASCII = range(0x21, 0x7F)
_LETTERS = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def safe_cut(buf: bytes, allow_space: bool = False) -> int:
    """Index just after the last tokenization-safe cut point in `buf`, or 0 if none.

    A safe point is after b"\\n" when the next byte is visible ASCII; with `allow_space`,
    also before b" " between two ASCII letters (a pre-token ends at the letter).
    """
    end = len(buf) - 1
    while (i := buf.rfind(b"\n", 0, end)) >= 0:
        if buf[i + 1] in _VISIBLE_ASCII:
            return i + 1
        end = i
    if allow_space:
        end = len(buf) - 1
        while (i := buf.rfind(b" ", 1, end)) >= 0:
            if buf[i - 1] in _LETTERS and buf[i + 1] in _LETTERS:
                return i
            end = i
    return 0


def _check_bytes(path: Path, raw: bytes, offset: int, errors: str) -> str:
    """Decode one block, rejecting binary data and (when strict) invalid UTF-8."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise GptlabError(
            f"{path} looks like a binary file (NUL byte at byte offset {offset + nul}): "
            "pass UTF-8 text files only"
        )
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise GptlabError(
            f"{path} is not valid UTF-8 at byte offset {offset + exc.start}: fix the file, or "
            "pass --errors replace to substitute U+FFFD"
        ) from None


def iter_text_blocks(
    path: Path,
    errors: str = "strict",
    block_bytes: int = SCAN_BLOCK,
    on_raw: Callable[[bytes], None] | None = None,
) -> Iterator[tuple[str, int]]:
    """Yield (text, n_raw_bytes) blocks of a UTF-8 file, each cut at a safe point.

    Args:
        path: the file.
        errors: "strict" (invalid UTF-8 raises GptlabError with the byte offset) or "replace".
        block_bytes: bytes read per step; a block is at most about this size unless the
            file has no safe cut point for a long stretch.
        on_raw: called with each block's raw bytes, in order (e.g. to hash the file).
    """
    offset = 0
    carry = b""
    # An incremental decoder is not needed: every cut lies on a character boundary.
    with open(path, "rb") as f:
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
            if on_raw is not None:
                on_raw(raw)
            offset += len(raw)
            yield text, len(raw)


@dataclass
class SourceScan:
    """What one pass over the sources learned."""

    files: list[Path]  # the non-empty files, in order
    sha256: str  # one file: its SHA-256; several: SHA-256 of their hex digests, one per line
    nbytes: int
    chars: set[str] | None  # distinct characters after cleaning, when asked for


def _mark_chars(seen: np.ndarray, text: str) -> None:
    # Marking code points in a table is ~10x faster than set(text) on large blocks.
    seen[np.frombuffer(text.encode("utf-32-le"), dtype="<u4")] = True


def scan_sources(
    files: list[Path],
    errors: str = "strict",
    cleaner: Callable[[str], str] | None = None,
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
            for text, nbytes in iter_text_blocks(path, errors, on_raw=digest.update):
                if seen is not None:
                    _mark_chars(seen, cleaner(text) if cleaner else text)
                bar.update(nbytes)
            digests.append(digest.hexdigest())
    sha = digests[0] if len(digests) == 1 else hashlib.sha256(
        "".join(d + "\n" for d in digests).encode()
    ).hexdigest()
    chars = None if seen is None else {chr(c) for c in np.flatnonzero(seen)}
    return SourceScan(nonempty, sha, total, chars)
