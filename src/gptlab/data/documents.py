"""The documents of prepare's inputs, whatever their format, as streams of text blocks.

A text file is one document; a record file (JSON Lines, JSON, CSV/TSV, Parquet, Arrow) one
document per non-empty record (`gptlab.data.formats`). Each document comes as blocks cut
at tokenization-safe points, so that a record's ids equal those of the same text written
to a .txt file of its own.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
from tqdm import tqdm

from gptlab.data.corpus import file_sha256
from gptlab.data.formats import (
    DEFAULT_TEXT_FIELD,
    RECORD_FORMATS,
    InputFormat,
    RecordCounts,
    input_format,
    iter_records,
)
from gptlab.data.reading import SCAN_BLOCK, SourceScan, document_texts, record_texts
from gptlab.errors import ConfigError, GptlabError
from gptlab.tokenizers.char import mark_chars

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordOptions:
    """How to read record files: `format` ("auto": by extension), the dotted `text_field`
    (None: "text"), and whether bad records are skipped (counted) instead of an error."""

    format: InputFormat = "auto"
    text_field: str | None = None
    skip_bad_records: bool = False

    def __post_init__(self) -> None:
        if self.format not in get_args(InputFormat):
            raise ConfigError(
                f"--format {self.format!r} is unknown: choose one of "
                f"{', '.join(get_args(InputFormat))}"
            )
        if self.text_field is not None and (
            not isinstance(self.text_field, str) or "" in self.text_field.split(".")
        ):
            raise ConfigError(
                f"--text-field {self.text_field!r} must be a field name or a dotted path, "
                "e.g. text or meta.body"
            )

    @property
    def field(self) -> str:
        return self.text_field or DEFAULT_TEXT_FIELD

    def is_default(self) -> bool:
        return self == RecordOptions()


@dataclass(frozen=True)
class InputFile:
    """One input file and its format ("txt" or one of RECORD_FORMATS)."""

    path: Path
    format: str = "txt"


def classify_inputs(files: Sequence[Path], records: RecordOptions) -> list[InputFile]:
    """Each file with its format; text files and record files together are an error (a
    text file has no field to read)."""
    inputs = [InputFile(path, input_format(path, records.format)) for path in files]
    text = [i.path for i in inputs if i.format == "txt"]
    rows = [i for i in inputs if i.format != "txt"]
    if text and rows:
        raise GptlabError(
            f"--input mixes text files ({text[0]}) with {rows[0].format} files "
            f"({rows[0].path}), and a text file has no field {records.field!r}: prepare them "
            "separately, or pass --format txt to read every file as plain text"
        )
    if records.text_field is not None and not rows:
        raise ConfigError(
            f"--text-field applies to record files ({', '.join(RECORD_FORMATS)}), and "
            f"{files[0]} is plain text: drop --text-field, or pass --format"
        )
    return inputs


def iter_documents(
    inputs: Sequence[InputFile | Path],
    errors: str = "strict",
    clean: Sequence[str] = (),
    block_bytes: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
    records: RecordOptions | None = None,
    counts: RecordCounts | None = None,
) -> Iterator[Iterator[str]]:
    """Every document of `inputs` in order, each as an iterator of cleaned text blocks
    (consume each one before asking for the next).

    Args:
        inputs: files with their formats (a bare Path is a text file).
        errors, clean, block_bytes, on_bytes: as for `reading.document_texts`.
        records: how record files are read; counts: updated as documents are read.
    """
    records = records or RecordOptions()
    counts = counts if counts is not None else RecordCounts()
    for item in inputs:
        item = item if isinstance(item, InputFile) else InputFile(Path(item))
        if item.format == "txt":
            counts.documents += 1
            yield document_texts(item.path, errors, clean, block_bytes, None, on_bytes)
            continue
        for text in iter_records(
            item.path, item.format, records.field, records.skip_bad_records, counts, on_bytes
        ):
            yield record_texts(text, clean, block_bytes)


def packed_texts(pieces: Iterable[str | None], separator: str, size: int) -> Iterator[str]:
    """Consecutive pieces joined into packs of at least `size` characters (the last one may
    be shorter), each None replaced by `separator`; no piece is ever cut.

    Many small records then cost one encode call (or one character scan) per pack instead
    of one each: ["a", None, "b"] with separator "<|endoftext|>" -> ["a<|endoftext|>b"].
    """
    pack: list[str] = []
    chars = 0
    for piece in pieces:
        piece = separator if piece is None else piece
        pack.append(piece)
        chars += len(piece)
        if chars >= size:
            yield "".join(pack)
            pack, chars = [], 0
    if pack:
        yield "".join(pack)


def log_counts(counts: RecordCounts) -> None:
    """Say how many records were empty or skipped, and where the first skipped ones are."""
    if counts.empty:
        logger.info("skipped %d empty record(s)", counts.empty)
    if counts.skipped:
        logger.warning("skipped %d bad record(s) (--skip-bad-records), first at %s",
                       counts.skipped, ", ".join(counts.skipped_where))


def scan_records(
    inputs: Sequence[InputFile],
    records: RecordOptions,
    errors: str = "strict",
    clean: Sequence[str] = (),
    want_chars: bool = False,
    progress: bool = False,
) -> SourceScan:
    """`reading.scan_sources` for record files: hash each file's bytes and, for a char
    vocabulary, read its documents (validating every record) and collect their characters.
    Without `want_chars` nothing is parsed here: records are checked while encoding."""
    nonempty = [i for i in inputs if i.path.stat().st_size > 0]
    if not nonempty:
        what = inputs[0].path if len(inputs) == 1 else f"all {len(inputs)} input files"
        raise GptlabError(f"{what} is empty: pass a file with records in it")
    total = sum(i.path.stat().st_size for i in nonempty)
    digests = [file_sha256(i.path) for i in nonempty]
    sha = digests[0] if len(digests) == 1 else hashlib.sha256(
        "".join(d + "\n" for d in digests).encode()
    ).hexdigest()
    chars = None
    if want_chars:
        seen = np.zeros(sys.maxunicode + 1, dtype=bool)
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="scan",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        with bar:
            documents = iter_documents(nonempty, errors, clean, None, bar.update, records)
            texts = (text for blocks in documents for text in blocks)
            for pack in packed_texts(texts, "", SCAN_BLOCK):  # one numpy pass per pack
                mark_chars(seen, pack)
        chars = {chr(c) for c in np.flatnonzero(seen)}
    return SourceScan([i.path for i in nonempty], sha, total, chars, 0, list(nonempty))
