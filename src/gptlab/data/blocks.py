"""Record files cut into blocks of records, for the encoding worker processes.

`record_blocks` reads a JSON Lines, Parquet or Arrow file as unparsed blocks (whole lines;
runs of Arrow rows) without looking inside a record, so that the main process only reads
and each worker parses, checks and encodes its block (`gptlab.data.encode`). A block's
documents are then either joined in bulk (`jsonl_block_text`, `arrow_block_text`: the
common block of well-formed records with a string field) or read one by one
(`block_records`, then `formats.record_documents`, for the errors and skipped records).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gptlab.data.compressed import open_input
from gptlab.data.formats import (
    FAST_JSON_ERRORS,
    RecordCounts,
    column_records,
    columnar_batches,
    fast_json_loads,
    jsonl_line_records,
)
from gptlab.tokenizers.base import UTF8_BOM

BLOCK_FORMATS = ("jsonl", "parquet", "arrow")  # the formats `record_blocks` reads


def record_blocks(
    path: Path,
    fmt: str,
    text_field: str,
    block_bytes: int,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """A file of one of BLOCK_FORMATS as unparsed blocks of about `block_bytes`: (position
    of the block's first record, block), where a JSON Lines block is the bytes of whole
    lines (decompressed) and a Parquet/Arrow block the pyarrow array of a run of rows of
    the text field's column. `block_records` reads a block's records, so that they can be
    read elsewhere (in encoding worker processes)."""
    if fmt == "jsonl":
        yield from _jsonl_blocks(path, block_bytes, on_bytes)
        return
    import pyarrow as pa

    batches, path, column, on_rows = columnar_batches(path, fmt, text_field, on_bytes)
    row, run = 0, []
    for batch in batches:
        run.append(batch.column(column))
        on_rows(len(run[-1]))
        if sum(values.nbytes for values in run) >= block_bytes:
            block = pa.concat_arrays(run)
            yield row, block
            row, run = row + len(block), []
    if run:
        yield row, pa.concat_arrays(run)


def block_records(
    path: Path, fmt: str, text_field: str, first: int, block: Any
) -> Iterator[tuple[Any, int]]:
    """(record, position) of each record of a block from `record_blocks`."""
    if fmt == "jsonl":
        return jsonl_line_records(path, block.split(b"\n"), first)
    return column_records(block, text_field.split(".")[0], first)


def jsonl_block_text(block: bytes, text_field: str, separator: str, counts: RecordCounts
                     ) -> str | None:
    """A JSON Lines block's documents joined by `separator` (as reading them one by one does) in
    a few bulk calls; None when any line is not a record with a string at the (undotted)
    `text_field` (then its lines are read one by one, for the errors, the blank lines and
    the skipping of bad records)."""
    try:
        records = list(map(fast_json_loads, block.rstrip(b"\n").split(b"\n")))
    except FAST_JSON_ERRORS:
        return None
    # map and filter with built-ins: this runs once per record of a large input
    if set(map(type, records)) != {dict}:
        return None
    texts = list(map(dict.get, records, itertools.repeat(text_field)))
    if set(map(type, texts)) != {str}:
        return None
    kept = list(filter(None, texts))
    counts.empty += len(texts) - len(kept)
    counts.documents += len(kept)
    joined = separator.join(kept)
    if UTF8_BOM in joined:  # rare: drop the marks that start a document, keep the others
        joined = separator.join(t.removeprefix(UTF8_BOM) for t in kept)
    return joined


def arrow_block_text(block: Any, text_field: str, separator: str, counts: RecordCounts
                     ) -> str | None:
    """A Parquet/Arrow block's documents joined by `separator` (a leading byte order mark
    dropped from each, empty ones counted), all in pyarrow's C++; None when the block is not
    a string column without nulls (then its records are read one by one, for the errors
    and the skipping of bad records)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(block.type) or pa.types.is_large_string(block.type)) or (
        block.null_count
    ):
        return None
    texts = block.filter(pc.not_equal(pc.binary_length(block), 0))
    counts.empty += len(block) - len(texts)
    counts.documents += len(texts)
    if pc.any(pc.starts_with(texts, UTF8_BOM)).as_py():
        texts = pc.replace_substring_regex(texts, "^" + UTF8_BOM, "")
    one_list = pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts)
    return pc.binary_join(one_list, separator)[0].as_py()


def _jsonl_blocks(
    path: Path, block_bytes: int, on_bytes: Callable[[int], None] | None
) -> Iterator[tuple[int, bytes]]:
    number = 1
    with open_input(path, on_bytes) as f:
        parts: list[bytes] = []
        while block := f.read(block_bytes):
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # a line longer than a block: keep reading it
                parts.append(block)
                continue
            lines = b"".join([*parts, block[:cut]]) if parts else block[:cut]
            parts = [block[cut:]] if cut < len(block) else []
            yield number, lines
            number += lines.count(b"\n")
        if parts:
            yield number, b"".join(parts)
