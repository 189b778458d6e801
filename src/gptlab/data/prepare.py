"""`gptlab prepare`: text files → tokenizer.json + train.bin / val.bin + meta.json.

`prepare` runs six steps, each a function here or in a module beside this one:

1. options   `PrepareOptions` checks every argument when it is created.
2. scan      `scan_inputs` reads the files once: validates, hashes, collects characters;
             `up_to_date_dataset` then finds whether `out` already holds this dataset.
3. tokenizer `dataset_tokenizer`: a given tokenizer file, or `build_tokenizer`'s.
4. encode    `encode.write_tokens` streams all files into one file of token ids.
5. split     `split_train_val`: the first 90% of the tokens train, the rest validate.
6. install   `install.build_folder` / `install.install`: built aside, renamed into place.

The folder's files are described in `gptlab.data.dataset`, which reads them back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from gptlab import __version__
from gptlab.checks import is_int, is_number
from gptlab.data.corpus import resolve_sources
from gptlab.data.dataset import (
    DATASET_FILES,
    FORMAT_VERSION,
    META_FILE,
    SPLIT_FILES,
    TOKENIZER_FILE,
    token_dtype,
)
from gptlab.data.documents import (
    RecordOptions,
    classify_inputs,
    log_counts,
    scan_records,
)
from gptlab.data.encode import corpus_texts, write_tokens
from gptlab.data.formats import InputFormat, RecordCounts, compression
from gptlab.data.install import build_folder, existing_dataset, install, output_dir
from gptlab.data.reading import SourceScan, TextErrors, scan_sources
from gptlab.errors import ConfigError, GptlabError
from gptlab.files import write_json
from gptlab.integrity import record_files, verify_file
from gptlab.text import parse_steps
from gptlab.tokenizers import (
    DEFAULT_BPE_VOCAB_SIZE,
    CharTokenizer,
    Tokenizer,
    TokenizerKind,
    build_tokenizer,
    load_tokenizer,
)

logger = logging.getLogger(__name__)

MAX_BPE_VOCAB_SIZE = 1 << 20  # far above any text's useful merges; ids stay uint32
ALL_TOKENS_FILE = "tokens.bin"  # every token in order, before the split


@dataclass
class PrepareOptions:
    """`prepare`'s options, checked and normalized when created.

    Attributes:
        split: fraction of tokens for train (first `int(split * n)` tokens).
        vocab_size: BPE vocabulary size (bpe only; default 4096).
        clean: cleaning steps for gptlab.text.clean (comma-separated or a list).
        unk: char/word tokenizers map unknown text to an unknown token later on.
        block_size: fail unless both splits hold more than `block_size` tokens.
        workers: processes encoding a gpt2 input of 16 MiB or more (0 = one per core,
            1 = this process only; needs fork). Other inputs encode in this process.
        tokenizer_file: encode with this saved tokenizer (e.g. a run's tokenizer.json, to
            fine-tune that run on new text) instead of building one; `tokenizer` and `unk`
            are then taken from the file, and `tokenizer_sha256` is its SHA-256.
        records: how record files (JSON Lines, Parquet, CSV, ...) are read: the format,
            the text field and whether bad records are skipped (`RecordOptions`).

    With the source bytes, the first six (and `tokenizer_sha256`) decide the dataset's
    content: `as_dict` is what meta.json records as "options".

    Raises:
        ConfigError: a wrong type or value, naming the argument and the fix.
    """

    tokenizer: TokenizerKind = "char"
    split: float = 0.9
    vocab_size: int | None = None
    clean: str | list[str] | tuple[str, ...] | None = ()  # becomes a tuple of step names
    errors: TextErrors = "strict"
    unk: bool = False
    block_size: int | None = None
    workers: int = 0
    tokenizer_file: str | os.PathLike | None = None
    records: RecordOptions = field(default_factory=RecordOptions)
    tokenizer_sha256: str | None = field(default=None, init=False)
    given_tokenizer: Tokenizer | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_types()
        if self.tokenizer == "bpe" and self.vocab_size == DEFAULT_BPE_VOCAB_SIZE:
            self.vocab_size = None  # the default spelled out is the same dataset as the default
        self.split = float(self.split)
        self.clean = tuple(parse_steps(self.clean)) if self.clean else ()
        if self.tokenizer_file is not None:
            self._load_tokenizer_file()
        self._check_values()

    def as_dict(self) -> dict[str, Any]:
        options = {
            "tokenizer": self.tokenizer,
            "split": self.split,
            "vocab_size": self.vocab_size,
            "clean": list(self.clean),
            "errors": self.errors,
            "unk": self.unk,
        }
        if self.tokenizer_sha256 is not None:
            options["tokenizer_sha256"] = self.tokenizer_sha256
        if not self.records.is_default():  # absent by default: older datasets stay current
            options["input_format"] = self.records.format
            options["text_field"] = self.records.field
            options["skip_bad_records"] = self.records.skip_bad_records
        return options

    def _check_types(self) -> None:
        if not is_number(self.split):
            raise ConfigError(f"split {self.split!r} must be a number between 0 and 1, e.g. 0.9")
        for name in ("vocab_size", "block_size"):
            value = getattr(self, name)
            if value is not None and not is_int(value):
                raise ConfigError(f"{name} {value!r} must be a whole number")

    def _load_tokenizer_file(self) -> None:
        path = Path(self.tokenizer_file).expanduser()
        if self.vocab_size is not None:
            raise ConfigError(
                "--vocab-size does not apply with --tokenizer-file: drop --vocab-size"
            )
        verify_file(path, "use an intact copy of that tokenizer")
        self.given_tokenizer = load_tokenizer(path)
        self.tokenizer_file = path
        self.tokenizer = self.given_tokenizer.name
        self.unk = False  # the file's own `unk` decides
        self.tokenizer_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()

    def _check_values(self) -> None:
        kinds = get_args(TokenizerKind)
        if self.tokenizer not in kinds:
            raise ConfigError(
                f"unknown tokenizer {self.tokenizer!r}: choose one of {', '.join(kinds)}"
            )
        if not 0.0 < self.split < 1.0:
            raise ConfigError(f"--split {self.split} must be between 0 and 1 (exclusive), e.g. 0.9")
        if self.errors not in get_args(TextErrors):
            raise ConfigError(f"--errors {self.errors!r} must be 'strict' or 'replace'")
        if self.vocab_size is not None and self.tokenizer != "bpe":
            raise ConfigError(
                f"--vocab-size applies to --tokenizer bpe only (got --tokenizer "
                f"{self.tokenizer}): drop --vocab-size"
            )
        if self.vocab_size is not None and not 257 <= self.vocab_size <= MAX_BPE_VOCAB_SIZE:
            raise ConfigError(
                f"--vocab-size {self.vocab_size} is out of range: byte-level BPE needs 257 to "
                f"{MAX_BPE_VOCAB_SIZE:,}"
            )
        if self.block_size is not None and self.block_size < 1:
            raise ConfigError(f"--block-size {self.block_size} must be >= 1")
        if not is_int(self.workers) or self.workers < 0:
            raise ConfigError(
                f"--workers {self.workers!r} must be a whole number >= 0 (0: one per core)"
            )


def prepare(
    inputs: str | os.PathLike | list[str | os.PathLike],
    out: str | os.PathLike,
    tokenizer: TokenizerKind = "char",
    split: float = 0.9,
    vocab_size: int | None = None,
    clean: str | list[str] | None = None,
    errors: TextErrors = "strict",
    block_size: int | None = None,
    unk: bool = False,
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    workers: int = 0,
    tokenizer_file: str | os.PathLike | None = None,
    input_format: InputFormat = "auto",
    text_field: str | None = None,
    skip_bad_records: bool = False,
) -> dict[str, Any]:
    """Tokenize text into a dataset folder (train.bin, val.bin, tokenizer.json, meta.json);
    returns the meta written to meta.json.

    Args:
        inputs: a file, folder, glob or named corpus ("shakespeare"), or a list of them;
            a text file is one document, a record file (.jsonl, .json, .csv, .tsv, .parquet,
            .arrow, a `datasets.save_to_disk` folder; any compressed) one per record;
            documents are joined with `<|endoftext|>` where the tokenizer has it.
        out: the dataset folder to create. If it already holds this very dataset (same
            source bytes and options) it is left as is; another dataset is an error
            unless `force` (then it is replaced).
        cache_dir: corpus cache folder (default $GPTLAB_CACHE_DIR or ~/.cache/gptlab).
        progress: show tqdm progress bars on stderr.
        tokenizer, ..., tokenizer_file: the options, each described on `PrepareOptions`.
        input_format, text_field, skip_bad_records: how record files are read, each
            described on `RecordOptions`.
    """
    opts = PrepareOptions(
        tokenizer=tokenizer, split=split, vocab_size=vocab_size, clean=clean, errors=errors,
        unk=unk, block_size=block_size, workers=workers, tokenizer_file=tokenizer_file,
        records=RecordOptions(input_format, text_field, skip_bad_records),
    )
    out = output_dir(out)
    scan = scan_inputs(inputs, out, opts, cache_dir, progress)
    if (existing := up_to_date_dataset(out, opts, scan, force)) is not None:
        return existing
    source = describe_inputs(inputs, scan.files)
    with build_folder(out) as tmp:
        tok = dataset_tokenizer(opts, scan)
        dtype = token_dtype(tok.vocab_size)
        counts = encode_inputs(tok, tmp / ALL_TOKENS_FILE, dtype, opts, scan, progress)
        n_train, n_val = split_train_val(tmp / ALL_TOKENS_FILE, tmp, opts.split, dtype)
        check_split_sizes(n_train, n_val, opts.block_size, source)
        meta = write_tokenizer_and_meta(tmp, tok, dtype, opts, scan, source, n_train, n_val)
        meta = record_meta(tmp, meta, scan, opts.records, counts)
        record_files(tmp, DATASET_FILES)  # checksums of the files as written, read back
        install(tmp, out)
    logger.info("wrote %s: %d train + %d val %s tokens (vocab %d, %s)", out, n_train, n_val,
                opts.tokenizer, tok.vocab_size, dtype.name)
    return meta


def encode_inputs(
    tok: Tokenizer, dest: Path, dtype: np.dtype, opts: PrepareOptions, scan: SourceScan,
    progress: bool,
) -> RecordCounts:
    """Step 4: every document's ids into `dest`; returns what reading the records found."""
    counts = RecordCounts()
    write_tokens(
        tok, scan.inputs, dest, dtype, errors=opts.errors, clean=opts.clean,
        total_bytes=scan.nbytes, workers=opts.workers, progress=progress,
        records=opts.records, counts=counts,
    )
    log_counts(counts)
    return counts


def scan_inputs(
    inputs: Any, out: Path, opts: PrepareOptions, cache_dir: str | os.PathLike | None,
    progress: bool,
) -> SourceScan:
    """Resolve `inputs` to files and read them once: validate, hash, collect characters."""
    files = resolve_sources(inputs, cache_dir)
    if out.is_dir():  # a dataset written inside an input folder is not input on a rerun
        files = [f for f in files if not f.resolve().is_relative_to(out.resolve())]
    if not files:
        raise GptlabError(f"the input holds no files outside --out {out}: pass text files")
    inputs = classify_inputs(files, opts.records)
    want_chars = opts.tokenizer == "char"
    if all(i.format == "txt" for i in inputs):
        scan = scan_sources(files, opts.errors, opts.clean, want_chars, progress)
        scan.inputs = [i for i in inputs if i.path in set(scan.files)]
    else:
        scan = scan_records(inputs, opts.records, opts.errors, opts.clean, want_chars, progress)
    if opts.given_tokenizer is not None and opts.tokenizer == "char":
        _check_chars_known(opts.given_tokenizer, scan.chars, opts.tokenizer_file)
    return scan


def up_to_date_dataset(
    out: Path, opts: PrepareOptions, scan: SourceScan, force: bool
) -> dict[str, Any] | None:
    """The meta of this very dataset when `out` already holds it intact, else None."""
    existing = existing_dataset(out, opts.as_dict(), scan.sha256, force)
    if existing is not None:
        check_split_sizes(
            existing["train_tokens"], existing["val_tokens"], opts.block_size, existing["source"]
        )
        logger.info("%s already holds this dataset: nothing to do", out)
    return existing


def _check_chars_known(tok: CharTokenizer, chars: set[str], path: Path) -> None:
    """A char tokenizer read from a file must know every character of the input."""
    missing = sorted(chars - set(tok.chars))
    if missing and not tok.unk:
        shown = ", ".join(repr(c) for c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise GptlabError(
            f"the input holds {len(missing)} character(s) that the char tokenizer {path} does "
            f"not know ({shown}{more}): remove them from the text, or build a new tokenizer "
            "(and model) for it"
        )


def dataset_tokenizer(opts: PrepareOptions, scan: SourceScan) -> Tokenizer:
    """The given tokenizer file's tokenizer, or one `build_tokenizer` learns from the input."""
    if opts.given_tokenizer is not None:
        return opts.given_tokenizer
    if opts.tokenizer == "char":  # the scan already collected the characters
        if not scan.chars:
            raise GptlabError("the input holds no text after cleaning: check --clean")
        return build_tokenizer("char", text="".join(sorted(scan.chars)), unk=opts.unk)
    raw_files = not opts.clean and opts.errors == "strict" and all(
        i.format == "txt" and compression(i.path) is None for i in scan.inputs
    )
    if opts.tokenizer == "gpt2" or (opts.tokenizer == "bpe" and raw_files):
        # gpt2 learns nothing; bpe on unchanged files lets HF read (and parallelize) them
        return build_tokenizer(opts.tokenizer, files=scan.files, vocab_size=opts.vocab_size)
    # streamed: word keeps only its vocabulary, bpe collects the texts
    texts = corpus_texts(scan.inputs, opts.errors, opts.clean, opts.records)
    return build_tokenizer(opts.tokenizer, text=texts, vocab_size=opts.vocab_size)


def split_train_val(
    tokens_path: Path, data_dir: Path, split: float, dtype: np.dtype
) -> tuple[int, int]:
    """train/val split: the first 90% of tokens train, the rest validate (with split=0.9).

    Seed 001's `n = int(0.9*len(data)); train_data = data[:n]; val_data = data[n:]`, on
    the token ids in `tokens_path`: tokens [n:] are copied to `data_dir`/val.bin, and the
    file, truncated to the first n, becomes `data_dir`/train.bin. Returns (n, n_val).
    """
    n_tokens = tokens_path.stat().st_size // dtype.itemsize
    n = int(split * n_tokens)
    start = n * dtype.itemsize
    with open(tokens_path, "rb") as src, open(data_dir / SPLIT_FILES["val"], "wb") as dst:
        src.seek(start)
        shutil.copyfileobj(src, dst, 1 << 22)
    os.truncate(tokens_path, start)
    os.replace(tokens_path, data_dir / SPLIT_FILES["train"])
    return n, n_tokens - n


def check_split_sizes(n_train: int, n_val: int, block_size: int | None, source: str) -> None:
    """Each split must hold one window of `block_size` inputs plus its shifted target."""
    need = (block_size or 1) + 1
    for name, n in (("train", n_train), ("val", n_val)):
        if n < need:
            what = f"--block-size {block_size}" if block_size else "training"
            raise GptlabError(
                f"{source} gives {n} {name} tokens, too few for {what} (need >= {need}): "
                "use a bigger input, another --split, or a smaller --block-size"
            )


def describe_inputs(inputs: Any, files: list[Path]) -> str:
    """The inputs as the user named them, for meta.json's "source" and messages."""
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    text = " ".join(os.fspath(s) for s in specs)
    return text if len(files) == 1 else f"{text} ({len(files)} files)"


def write_tokenizer_and_meta(
    data_dir: Path, tok: Tokenizer, dtype: np.dtype, opts: PrepareOptions, scan: SourceScan,
    source: str, n_train: int, n_val: int,
) -> dict[str, Any]:
    """Save the tokenizer and meta.json into `data_dir`; returns the meta written."""
    tok.save(data_dir / TOKENIZER_FILE)
    meta = {
        "format": "gptlab-dataset",
        "format_version": FORMAT_VERSION,
        "gptlab_version": __version__,
        "tokenizer": opts.tokenizer,
        "tokenizer_file": TOKENIZER_FILE,
        "vocab_size": int(tok.vocab_size),
        "eot_id": tok.eot_id,
        "dtype": dtype.name,
        "split": opts.split,
        "train_tokens": n_train,
        "val_tokens": n_val,
        "total_tokens": n_train + n_val,
        "source": source,
        "source_files": len(scan.files),
        "source_bytes": scan.nbytes,
        "source_sha256": scan.sha256,
        "bom_stripped": scan.bom_files,  # files whose UTF-8 byte order mark was dropped
        "options": opts.as_dict(),
    }
    write_json(data_dir / META_FILE, meta)
    return meta


def record_meta(
    data_dir: Path, meta: dict[str, Any], scan: SourceScan, records: RecordOptions,
    counts: RecordCounts,
) -> dict[str, Any]:
    """Add what the dataset was made from to meta.json: the input format(s), the text field
    (record files only), documents, and empty and skipped records."""
    formats = sorted({i.format for i in scan.inputs})
    meta["input_format"] = formats[0] if len(formats) == 1 else formats
    if formats != ["txt"]:
        meta["text_field"] = records.field
    meta["documents"] = counts.documents
    meta["empty_records"] = counts.empty
    meta["skipped_records"] = counts.skipped
    write_json(data_dir / META_FILE, meta)
    return meta
