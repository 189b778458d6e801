"""Input files as documents: plain text, JSON Lines, JSON, CSV/TSV, Parquet and Arrow, each
optionally compressed (gzip, bzip2, xz, zstd).

A text file is one document (read in blocks by `gptlab.data.reading`); a record file holds
one document per record, the string at `text_field` (a dotted path, e.g. `meta.body`).
`iter_records` streams a record file's documents: JSON Lines and CSV line by line, JSON
element by element, Parquet and Arrow batch by batch, so memory stays bounded by a batch.

Compression is found from the file's first bytes (not its name; `gptlab.data.compressed`);
the format from the name with any compression suffix removed, then checked against the
content.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from gptlab.data.compressed import DATA_EXTRA, READ_BYTES, compression, open_input
from gptlab.errors import GptlabError

InputFormat = Literal["auto", "txt", "jsonl", "json", "csv", "tsv", "parquet", "arrow"]
RECORD_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "arrow")
DEFAULT_TEXT_FIELD = "text"
_EXTENSIONS = {
    ".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
    ".tsv": "tsv", ".parquet": "parquet", ".arrow": "arrow",
}
_COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}
_BATCH_ROWS = 1024  # Parquet/Arrow rows per batch: bounded memory, few Python calls
# What a reader's record position counts, for messages: "in.jsonl line 3", "in.parquet row 7".
_PLACES = {"jsonl": "line", "json": "record", "csv": "line", "tsv": "line",
           "parquet": "row", "arrow": "row"}
_JSON = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"  # JSON's whitespace (str.isspace would allow more)


@dataclass
class RecordCounts:
    """What reading record files found: documents kept, empty records, bad ones skipped."""

    documents: int = 0
    empty: int = 0
    skipped: int = 0
    skipped_where: list[str] = field(default_factory=list)  # the first few, for the log


def input_format(path: Path, override: InputFormat = "auto") -> str:
    """The format of `path`: `override`, else its extension's (after a compression suffix),
    else "txt"; a record format is checked against the file's first bytes."""
    if override not in get_args(InputFormat):
        raise GptlabError(
            f"unknown --format {override!r}: choose one of {', '.join(get_args(InputFormat))}"
        )
    name = path.name.lower()
    suffix = Path(name).suffix
    if suffix in _COMPRESSED_SUFFIXES:
        name = name[: -len(suffix)]
    fmt = override if override != "auto" else _EXTENSIONS.get(Path(name).suffix, "txt")
    _check_content(path, fmt)
    return fmt


def _check_content(path: Path, fmt: str) -> None:
    if fmt in ("parquet", "arrow"):
        if compression(path):
            raise GptlabError(
                f"{path} is a compressed {fmt} file: decompress it first ({fmt} files "
                "compress their columns themselves)"
            )
        with open(path, "rb") as f:
            head = f.read(8)
        magic_ok = head.startswith(b"PAR1") if fmt == "parquet" else (
            head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff")
        )
        if not magic_ok:
            raise GptlabError(
                f"{path} is not a {fmt} file (its first bytes are {head[:4]!r}): pass "
                "--format to say what it is"
            )
    elif fmt in ("jsonl", "json"):
        with open_input(path) as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head and head[:1] not in (b"{", b"[", b'"'):
            raise GptlabError(
                f"{path} does not hold JSON (it starts with {head[:20]!r}): pass --format to "
                "say what it is, or fix the file"
            )


def json_type(value: Any) -> str:
    """JSON's name for a decoded value's type: null, boolean, number, string, list, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


class BadRecord(GptlabError):
    """A record without the text field or with a non-string one (`--skip-bad-records`)."""


def field_text(record: Any, text_field: str, where: str) -> str:
    """The string at dotted `text_field` of `record` (a bare string record is its own text).

    Raises:
        BadRecord: the field is missing (naming the fields there are) or not a string.
    """
    if isinstance(record, str):
        return record
    value = record
    for i, key in enumerate(text_field.split(".")):
        if not isinstance(value, dict) or key not in value:
            path = ".".join(text_field.split(".")[:i]) or "the record"
            has = ", ".join(repr(k) for k in value) if isinstance(value, dict) else (
                f"a {json_type(value)}"
            )
            raise BadRecord(
                f"{where} has no field {text_field!r} ({path} holds {has or 'no fields'}): "
                "pass --text-field NAME, or --skip-bad-records to skip such records"
            )
        value = value[key]
    if not isinstance(value, str):
        raise BadRecord(
            f"{where}: field {text_field!r} is a {json_type(value)}, not a string: fix the "
            "record, or pass --skip-bad-records to skip such records"
        )
    return value


def iter_records(
    path: Path,
    fmt: str,
    text_field: str = DEFAULT_TEXT_FIELD,
    skip_bad_records: bool = False,
    counts: RecordCounts | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The non-empty documents of a record file, in order (see the module docstring).

    Args:
        fmt: one of RECORD_FORMATS (see `input_format`).
        skip_bad_records: skip (and count) records whose field is missing or not a string,
            instead of raising BadRecord.
        counts: updated with documents, empty records and skipped ones as they are read.
        on_bytes: called with bytes read from the file, for progress bars.
    """
    readers = {"jsonl": _jsonl_records, "json": _json_records, "csv": _csv_records,
               "tsv": _csv_records, "parquet": _parquet_records, "arrow": _arrow_records}
    pairs = readers[fmt](path, fmt, text_field, on_bytes)
    return record_documents(path, fmt, pairs, text_field, skip_bad_records, counts)


def record_documents(
    path: Path,
    fmt: str,
    pairs: Iterable[tuple[Any, int]],
    text_field: str,
    skip_bad_records: bool = False,
    counts: RecordCounts | None = None,
) -> Iterator[str]:
    """The non-empty texts at `text_field` of (record, position) pairs, counting the
    empty and the skipped records (`iter_records`' second half)."""
    counts = counts if counts is not None else RecordCounts()
    flat = "." not in text_field
    for record, position in pairs:
        # The common case without a call: a record whose undotted field is a string.
        text = record.get(text_field) if flat and type(record) is dict else None
        if type(text) is not str:
            where = f"{path} {_PLACES[fmt]} {position}"
            try:
                text = field_text(record, text_field, where)
            except BadRecord:
                if not skip_bad_records:
                    raise
                counts.skipped += 1
                if len(counts.skipped_where) < 5:
                    counts.skipped_where.append(where)
                continue
        if not text:
            counts.empty += 1
            continue
        counts.documents += 1
        yield text


def _jsonl_records(path: Path, fmt: str, text_field: str, on_bytes) -> Iterator[tuple[Any, int]]:
    with open_input(path, on_bytes) as f:
        yield from jsonl_line_records(path, f, 1)


def jsonl_line_records(
    path: Path, lines: Iterable[bytes], first_number: int
) -> Iterator[tuple[Any, int]]:
    """(record, line number) for each non-blank JSON line of `lines`, the first of which is
    line `first_number` of `path`."""
    for number, line in enumerate(lines, first_number):
        try:
            record = fast_json_loads(line)
        except FAST_JSON_ERRORS:
            try:  # json.loads(line) without its per-call overhead, for the common line
                text = line.decode("utf-8")
                record, end = _JSON.raw_decode(text)
                if text[end:].strip(_JSON_SPACE):
                    raise json.JSONDecodeError("Extra data", text, end) from None
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = _odd_line(path, number, line)
                if record is _BLANK:
                    continue
        yield record, number


def _no_fast_json(line: bytes) -> Any:
    raise ValueError


# orjson (in the data extra) parses a line in about half the time of the standard library.
# It is strict RFC 8259, so whatever it refuses (a blank line, NaN, a lone surrogate, a
# byte order mark, a huge integer, malformed JSON) goes to the standard library, which
# reads or rejects it as it would without orjson.
try:
    import orjson

    fast_json_loads: Callable[[bytes], Any] = orjson.loads
    FAST_JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson comes with the data and test extras
    fast_json_loads, FAST_JSON_ERRORS = _no_fast_json, (ValueError,)


_BLANK = object()


def _odd_line(path: Path, number: int, line: bytes) -> Any:
    """A line the fast path refused: blank (_BLANK), one `json.loads` reads (leading
    whitespace, a byte order mark, UTF-16), or malformed (GptlabError naming the line)."""
    if not line.strip():
        return _BLANK
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GptlabError(
            f"{path} line {number}: malformed JSON ({_reason(exc)}): fix or delete that line"
        ) from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return "not valid UTF-8"


def _json_records(path: Path, fmt: str, text_field: str, on_bytes) -> Iterator[tuple[Any, int]]:
    """The elements of a top-level JSON list, decoded one at a time from a sliding buffer."""
    with open_input(path, on_bytes) as f:
        stream = _JsonStream(io.TextIOWrapper(f, encoding="utf-8-sig"), path)
        if stream.peek() != "[":
            raise GptlabError(
                f"{path} is not a JSON list of records: pass --format jsonl for one record "
                "per line"
            )
        stream.pos += 1
        index = 0
        while (c := stream.peek()) != "]":
            if index > 0:
                if c != ",":
                    stream.fail(f"record {index}", "expected ',' or ']' between records")
                stream.pos += 1
                stream.peek()  # raw_decode does not skip leading whitespace
            yield stream.decode(f"record {index}"), index
            index += 1


class _JsonStream:
    """A window on a JSON text: `decode` reads the next value, refilling as it needs."""

    def __init__(self, reader: io.TextIOWrapper, path: Path):
        self.reader, self.path = reader, path
        self.buf, self.pos, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()

    def fill(self) -> bool:
        chunk = "" if self.eof else _read_text(self.reader, self.path)
        self.eof = not chunk
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return bool(chunk)

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                self.fail("the list", "the file ends before its closing ']'")

    def decode(self, what: str) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # a number may go on in the next chunk
                    self.pos = end
                    return value
            except json.JSONDecodeError as exc:
                if self.eof:
                    self.fail(what, f"{exc.msg}")
            self.fill()

    def fail(self, what: str, reason: str):
        raise GptlabError(f"{self.path} {what}: malformed JSON ({reason}): fix the file")


def _read_text(reader: io.TextIOWrapper, path: Path) -> str:
    try:
        return reader.read(READ_BYTES)
    except UnicodeDecodeError:
        raise GptlabError(f"{path} is not valid UTF-8: convert it to UTF-8") from None


def _csv_records(path: Path, fmt: str, text_field: str, on_bytes) -> Iterator[tuple[Any, int]]:
    csv.field_size_limit(2**31 - 1)  # a document is one field: allow long ones
    delimiter = "\t" if fmt == "tsv" else ","
    with open_input(path, on_bytes) as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
        rows = csv.reader(text, delimiter=delimiter)
        try:
            header = next(rows, None)
            if header is None:
                return
            for row in rows:
                if len(row) != len(header):
                    raise GptlabError(
                        f"{path} line {rows.line_num}: {len(row)} fields, but the header has "
                        f"{len(header)}: fix that row (quote fields holding the delimiter)"
                    )
                yield dict(zip(header, row, strict=True)), rows.line_num
        except csv.Error as exc:
            raise GptlabError(f"{path} line {rows.line_num}: bad CSV ({exc}): fix that row") \
                from None
        except UnicodeDecodeError:
            raise GptlabError(f"{path} is not valid UTF-8: convert it to UTF-8") from None


def _pyarrow(path: Path):
    try:
        import pyarrow
    except ImportError:
        raise GptlabError(
            f"reading {path} needs pyarrow, which is not installed: {DATA_EXTRA}"
        ) from None
    return pyarrow


def _column(path: Path, names: list[str], text_field: str) -> str:
    top = text_field.split(".")[0]
    if top not in names:
        raise GptlabError(
            f"{path} has no column {top!r} (its columns: {', '.join(names)}): pass "
            "--text-field COLUMN"
        )
    return top


def column_records(values: Any, column: str, first: int) -> Iterator[tuple[Any, int]]:
    """({column: value}, row) of each value of a pyarrow array, rows counted from `first`."""
    return (({column: value}, row) for row, value in enumerate(values.to_pylist(), first))


def _batch_records(batches, path: Path, column: str, on_rows) -> Iterator[tuple[Any, int]]:
    row = 0
    for batch in batches:
        yield from column_records(batch.column(column), column, row)
        row += batch.num_rows
        on_rows(batch.num_rows)


def _parquet_records(path: Path, fmt: str, text_field: str, on_bytes) -> Iterator[tuple[Any, int]]:
    yield from _batch_records(*columnar_batches(path, fmt, text_field, on_bytes))


_arrow_records = _parquet_records


def columnar_batches(path: Path, fmt: str, text_field: str, on_bytes):
    """(batches, path, column, on_rows) of a Parquet or Arrow file: batches of rows of the
    column holding `text_field`, and the progress callback to give each batch's rows."""
    return (_parquet_batches if fmt == "parquet" else _arrow_batches)(path, text_field, on_bytes)


def _parquet_batches(path: Path, text_field: str, on_bytes):
    _pyarrow(path)
    import pyarrow.parquet as pq

    try:
        # pre_buffer (pyarrow's default) reads every row group ahead: memory would grow
        # with the file; without it one row group at a time is in memory
        pf = pq.ParquetFile(path, pre_buffer=False)
    except Exception as exc:  # pyarrow's ArrowInvalid and OSError: a damaged file
        raise GptlabError(f"{path} is not a readable Parquet file ({exc})") from None
    column = _column(path, pf.schema_arrow.names, text_field)
    on_rows = _row_progress(path, pf.metadata.num_rows, on_bytes)
    return pf.iter_batches(batch_size=_BATCH_ROWS, columns=[column]), path, column, on_rows


def _arrow_batches(path: Path, text_field: str, on_bytes):
    pa = _pyarrow(path)
    import pyarrow.ipc

    source = pa.memory_map(str(path))
    try:
        reader = (pyarrow.ipc.open_file(source) if source.read(6) == b"ARROW1"
                  else None)
        if reader is None:
            source.seek(0)
            reader = pyarrow.ipc.open_stream(source)
            batches: Any = reader
        else:
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except Exception as exc:  # pyarrow's ArrowInvalid: not Arrow IPC data
        raise GptlabError(f"{path} is not a readable Arrow file ({exc})") from None
    column = _column(path, reader.schema.names, text_field)
    return batches, path, column, _row_progress(path, None, on_bytes)


def _row_progress(path: Path, total_rows: int | None, on_bytes) -> Callable[[int], None]:
    """Progress for columnar files: the file's size spread evenly over its rows."""
    size = os.path.getsize(path)
    done = [0, 0]  # rows, bytes reported

    def on_rows(n: int) -> None:
        done[0] += n
        if on_bytes is None:
            return
        target = size if not total_rows else min(size, size * done[0] // total_rows)
        if target > done[1]:
            on_bytes(target - done[1])
            done[1] = target

    return on_rows
