"""`gptlab prepare`: text files → tokenizer.json + train.bin / val.bin + meta.json.

The dataset folder holds raw little-endian token ids (uint16 when the vocabulary fits,
else uint32) that `np.memmap` reads directly, the saved tokenizer, and meta.json.

Large inputs stream: each file is read in blocks cut only where a cut cannot change the
tokenization (after a newline between two visible ASCII characters), so memory stays
bounded by the block size, not the file size. All tokens go to one file first; the split
(first `int(split * n)` tokens train, the rest val, as in the seeds) is made afterwards.
The folder is built in a temporary folder beside `out` and renamed into place, so a
failure leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from gptlab import __version__
from gptlab.data.corpus import resolve_sources
from gptlab.data.reading import document_texts, scan_sources
from gptlab.errors import ConfigError, GptlabError
from gptlab.files import set_normal_mode

logger = logging.getLogger(__name__)

TOKENIZER_KINDS = ("char", "word", "gpt2", "bpe")
DEFAULT_BPE_VOCAB_SIZE = 4096
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
SPLIT_FILES = {"train": "train.bin", "val": "val.bin"}
FORMAT_VERSION = 1
_ENCODE_BLOCK = 1 << 20  # bytes of text per encode call (one batch item for gpt2/bpe)
# gpt2 inputs this large are encoded in worker processes: tiktoken's threads in one process
# contend on its allocator (2 threads were 1.3-1.5x faster than one on 2 cores; 2 processes
# 1.9x), and a process costs ~0.1 s to start.
_PROCESS_MIN_BYTES = 16 << 20


@dataclass(frozen=True)
class PrepareOptions:
    """What decides the content of a dataset folder (besides the source bytes)."""

    tokenizer: str
    split: float
    vocab_size: int | None
    clean: tuple[str, ...]
    errors: str
    unk: bool
    tokenizer_sha256: str | None = None  # set when an existing tokenizer file is reused

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
        return options


def _parse_clean(clean: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if not clean:
        return ()
    from gptlab.text import parse_steps  # raises ConfigError naming an unknown step

    return tuple(parse_steps(clean))


MAX_BPE_VOCAB_SIZE = 1 << 20  # far above any text's useful merges; ids stay uint32


def _validate_options(opts: PrepareOptions, block_size: int | None) -> None:
    if opts.tokenizer not in TOKENIZER_KINDS:
        raise ConfigError(
            f"unknown tokenizer {opts.tokenizer!r}: choose one of {', '.join(TOKENIZER_KINDS)}"
        )
    if not 0.0 < opts.split < 1.0:
        raise ConfigError(f"--split {opts.split} must be between 0 and 1 (exclusive), e.g. 0.9")
    if opts.errors not in ("strict", "replace"):
        raise ConfigError(f"--errors {opts.errors!r} must be 'strict' or 'replace'")
    if opts.vocab_size is not None and opts.tokenizer != "bpe":
        raise ConfigError(
            f"--vocab-size applies to --tokenizer bpe only (got --tokenizer {opts.tokenizer}): "
            "drop --vocab-size"
        )
    if opts.vocab_size is not None and not 257 <= opts.vocab_size <= MAX_BPE_VOCAB_SIZE:
        raise ConfigError(
            f"--vocab-size {opts.vocab_size} is out of range: byte-level BPE needs 257 to "
            f"{MAX_BPE_VOCAB_SIZE:,}"
        )
    if block_size is not None and block_size < 1:
        raise ConfigError(f"--block-size {block_size} must be >= 1")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32 (little-endian)."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def _all_texts(files: list[Path], opts: PrepareOptions) -> Iterator[str]:
    for path in files:
        yield from document_texts(path, opts.errors, opts.clean, _ENCODE_BLOCK)


def _load_given_tokenizer(path: Path, opts: PrepareOptions):
    """The tokenizer saved at `path` (--tokenizer-file), its kind put into `opts`."""
    from gptlab import tokenizers as tk

    if opts.vocab_size is not None:
        raise ConfigError("--vocab-size does not apply with --tokenizer-file: drop --vocab-size")
    tok = tk.load_tokenizer(path)
    kind = next(name for name, cls in tk.KINDS.items() if isinstance(tok, cls))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return tok, dataclasses.replace(opts, tokenizer=kind, unk=False, tokenizer_sha256=sha)


def _check_chars_known(tok, chars: set[str], path: Path) -> None:
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


def _build_tokenizer(opts: PrepareOptions, files: list[Path], chars: set[str] | None):
    """Build or train the tokenizer the options ask for (char uses the scanned characters)."""
    from gptlab import tokenizers as tk

    if opts.tokenizer == "char":
        assert chars is not None
        if not chars:
            raise GptlabError("the input holds no text after cleaning: check --clean")
        return tk.CharTokenizer(sorted(chars), unk=opts.unk)
    if opts.tokenizer == "gpt2":
        return tk.GPT2Tokenizer()
    if opts.tokenizer == "word":
        return tk.WordTokenizer.from_text(_all_texts(files, opts))  # streams: keeps only the set
    vocab = opts.vocab_size or DEFAULT_BPE_VOCAB_SIZE
    if not opts.clean and opts.errors == "strict":
        return tk.BPETokenizer.train(list(files), vocab)  # HF reads the files itself
    return tk.BPETokenizer.train(list(_all_texts(files, opts)), vocab)


def _encoded_blocks(
    tok, files: list[Path], opts: PrepareOptions, bar, workers: int = 1
) -> Iterator[np.ndarray]:
    """Token id arrays for all files in order, documents joined by the tokenizer's EOT.

    `workers` > 1 encodes gpt2 blocks in that many worker processes (in order)."""
    if workers > 1 and opts.tokenizer == "gpt2":
        yield from _encoded_blocks_in_processes(files, opts, bar, workers, tok.eot_id)
        return
    batched = opts.tokenizer == "bpe"  # gpt2's encode_to_array is parallel on its own
    batch_len = max(4, 2 * (os.cpu_count() or 1))
    # a char tokenizer with <unk> (only ever read from a file) maps unknown characters itself
    table = _char_table(tok) if opts.tokenizer == "char" and not tok.unk else None
    eot = tok.eot_id
    for doc_index, path in enumerate(files):
        if doc_index > 0 and eot is not None:
            yield np.array([eot], dtype=np.int64)
        batch: list[str] = []
        for text in document_texts(path, opts.errors, opts.clean, _ENCODE_BLOCK, None, bar.update):
            if table is not None:
                yield _encode_chars(text, table)
            elif not batched:
                yield tok.encode_to_array(text)
            else:
                batch.append(text)
                if len(batch) == batch_len:
                    yield from _encode_batch(tok, batch)
                    batch = []
        if batch:
            yield from _encode_batch(tok, batch)


_worker_tokenizer = None  # a worker process's GPT2Tokenizer, built on first use


def _ignore_interrupts() -> None:
    # A worker leaves Ctrl-C / SIGTERM to the parent, which stops submitting, cleans up its
    # temporary folder and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _gpt2_encode_block(text: str) -> np.ndarray:
    global _worker_tokenizer
    if _worker_tokenizer is None:
        from gptlab.tokenizers import GPT2Tokenizer

        _worker_tokenizer = GPT2Tokenizer()
    return _worker_tokenizer.encode_to_array(text, num_threads=1)


def _encoded_blocks_in_processes(
    files: list[Path], opts: PrepareOptions, bar, workers: int, eot: int
) -> Iterator[np.ndarray]:
    """gpt2 blocks encoded by a pool of forked processes, at most 2 blocks per worker in
    flight (memory stays bounded), results in input order."""
    pending: deque[Future] = deque()
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=fork, initializer=_ignore_interrupts) as pool:
        for doc_index, path in enumerate(files):
            if doc_index > 0:
                pending.append(_done(np.array([eot], dtype=np.int64)))
            for text in document_texts(path, opts.errors, opts.clean, _ENCODE_BLOCK, None,
                                       bar.update):
                pending.append(pool.submit(_gpt2_encode_block, text))
                while len(pending) > 2 * workers:
                    yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _encode_workers(opts: PrepareOptions, total_bytes: int, workers: int) -> int:
    """How many processes encode: `workers` (0 = one per core) for large gpt2 inputs where
    fork is available, else 1 (this process; its encoders still use threads)."""
    if opts.tokenizer != "gpt2" or total_bytes < _PROCESS_MIN_BYTES:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    from gptlab.tokenizers.base import resolve_num_threads

    return resolve_num_threads(workers)


_NOT_IN_VOCAB = -1


def _char_table(tok) -> np.ndarray:
    """Code point -> id table for a char tokenizer (-1: not in the vocabulary)."""
    codes = [ord(c) for c in tok.chars]
    table = np.full(max(codes) + 1, _NOT_IN_VOCAB, dtype=np.int32)
    table[codes] = np.arange(len(codes))
    return table


def _encode_chars(text: str, table: np.ndarray) -> np.ndarray:
    # The vocabulary came from scanning these very files, so every character is in the
    # table unless a file changed between the scan and now: that is checked, not assumed.
    if text.isascii():  # O(1) in CPython; skips the 4-bytes-per-char UTF-32 copy
        codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    else:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    if codes.size and int(codes.max()) >= len(table):
        raise _changed_while_preparing()
    ids = table[codes]  # (len(text),)
    if ids.size and int(ids.min()) == _NOT_IN_VOCAB:
        raise _changed_while_preparing()
    return ids


def _changed_while_preparing() -> GptlabError:
    return GptlabError(
        "an input file changed while it was being prepared (it holds characters the first "
        "pass did not see): run prepare again once the files stay put"
    )


def _encode_batch(tok, texts: list[str]) -> Iterator[np.ndarray]:
    for ids in tok.encode_batch(texts, num_threads=0):
        yield np.array(ids, dtype=np.int64)


def _write_tokens(
    tok, files, opts, dest: Path, dtype: np.dtype, total_bytes: int, progress: bool,
    workers: int = 0,
):
    """Encode every file into `dest` (raw ids); returns the number of tokens written."""
    n = 0
    workers = _encode_workers(opts, total_bytes, workers)
    bar = tqdm(
        total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="encode",
        disable=not progress, file=sys.stderr, dynamic_ncols=True,
    )
    with bar, open(dest, "wb") as f:
        for ids in _encoded_blocks(tok, files, opts, bar, workers):
            ids.astype(dtype, copy=False).tofile(f)
            n += len(ids)
    return n


def _split_tokens(all_path: Path, out_dir: Path, n_train: int, dtype: np.dtype) -> None:
    """Move tokens [n_train:] of `all_path` to val.bin; the truncated rest becomes train.bin."""
    start = n_train * dtype.itemsize
    with open(all_path, "rb") as src, open(out_dir / SPLIT_FILES["val"], "wb") as dst:
        src.seek(start)
        shutil.copyfileobj(src, dst, 1 << 22)
    os.truncate(all_path, start)
    os.replace(all_path, out_dir / SPLIT_FILES["train"])


def _check_split_sizes(n_total: int, n_train: int, block_size: int | None, source: str) -> None:
    need = (block_size or 1) + 1  # one window of block_size inputs plus its shifted target
    for name, n in (("train", n_train), ("val", n_total - n_train)):
        if n < need:
            what = f"--block-size {block_size}" if block_size else "training"
            raise GptlabError(
                f"{source} gives {n} {name} tokens, too few for {what} (need >= {need}): "
                "use a bigger input, another --split, or a smaller --block-size"
            )


def _describe(inputs: Any, files: list[Path]) -> str:
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    text = " ".join(os.fspath(s) for s in specs)
    return text if len(files) == 1 else f"{text} ({len(files)} files)"


def _existing_dataset(out: Path, opts: PrepareOptions, sha: str, force: bool) -> dict | None:
    """Return the meta of an up-to-date dataset in `out`; raise if it holds another one."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise GptlabError(f"--out {out} is a file: pass a folder path for the dataset")
    meta_path = out / META_FILE
    if not meta_path.is_file():
        if any(out.iterdir()):
            raise GptlabError(
                f"--out {out} is not empty and holds no gptlab dataset: pass another --out"
            )
        return None
    try:
        meta = load_meta(out)
    except GptlabError:
        if force:
            return None
        raise GptlabError(
            f"--out {out} holds a damaged dataset ({META_FILE} is unreadable): add --force to "
            "rebuild it"
        ) from None
    if meta.get("source_sha256") == sha and meta.get("options") == opts.as_dict():
        if _intact(out):
            return meta
        return None  # this very dataset, damaged: rebuilding it loses nothing
    if force:
        return None
    raise GptlabError(
        f"--out {out} holds a different dataset ({meta.get('tokenizer')} tokens of "
        f"{meta.get('source')}): pass another --out, or --force to replace it"
    )


def _intact(out: Path) -> bool:
    """Whether a dataset folder's token files and tokenizer are all there, at full size."""
    from gptlab.tokenizers import load_tokenizer

    try:
        load_tokenizer(out / TOKENIZER_FILE)
        for split in SPLIT_FILES:
            load_split(out, split)
    except GptlabError:
        return False
    return True


def _install(tmp: Path, out: Path) -> None:
    """Move the finished folder `tmp` to `out`, replacing an old dataset or empty folder."""
    # mkdtemp/mkstemp create private (0700/0600) entries; give the dataset normal modes.
    set_normal_mode(tmp, directory=True)
    for path in tmp.iterdir():
        set_normal_mode(path)
    if not out.exists():
        os.replace(tmp, out)
        return
    trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.replace(out, trash / "old")
    os.replace(tmp, out)
    shutil.rmtree(trash, ignore_errors=True)


def prepare(
    inputs: str | os.PathLike | list[str | os.PathLike],
    out: str | os.PathLike,
    tokenizer: Literal["char", "word", "gpt2", "bpe"] = "char",
    split: float = 0.9,
    vocab_size: int | None = None,
    clean: str | list[str] | None = None,
    errors: Literal["strict", "replace"] = "strict",
    block_size: int | None = None,
    unk: bool = False,
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    workers: int = 0,
    tokenizer_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Tokenize text into a dataset folder: train.bin, val.bin, tokenizer.json, meta.json.

    Args:
        inputs: a file, folder, glob or named corpus ("shakespeare"), or a list of them;
            each file is one document, joined with `<|endoftext|>` where the tokenizer has it.
        out: the dataset folder to create. If it already holds this very dataset (same
            source bytes and options) it is left as is; another dataset is an error
            unless `force`.
        tokenizer: "char" | "word" | "gpt2" | "bpe".
        split: fraction of tokens for train (first `int(split * n)` tokens).
        vocab_size: BPE vocabulary size (bpe only; default 4096).
        clean: cleaning steps for gptlab.text.clean (comma-separated or a list); none by default.
        errors: "strict" rejects invalid UTF-8 (naming file and byte offset); "replace"
            substitutes U+FFFD.
        block_size: fail unless both splits hold more than `block_size` tokens.
        unk: char/word tokenizers map unknown text to an unknown token later on.
        force: replace a different dataset already in `out`.
        cache_dir: corpus cache folder (default $GPTLAB_CACHE_DIR or ~/.cache/gptlab).
        progress: show tqdm progress bars on stderr.
        workers: processes encoding a gpt2 input of 16 MiB or more (0 = one per core,
            1 = this process only; Linux/macOS with fork). Smaller inputs and the other
            tokenizers encode in this process, bpe and gpt2 on all cores' threads.
        tokenizer_file: encode with this saved tokenizer (e.g. a run's tokenizer.json, to
            fine-tune that run on new text) instead of building one; `tokenizer` and `unk`
            are then taken from the file.
    Returns:
        The meta dict written to meta.json.
    """
    if isinstance(split, bool) or not isinstance(split, (int, float)):
        raise ConfigError(f"split {split!r} must be a number between 0 and 1, e.g. 0.9")
    for name, value in (("vocab_size", vocab_size), ("block_size", block_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{name} {value!r} must be a whole number")
    if tokenizer == "bpe" and vocab_size == DEFAULT_BPE_VOCAB_SIZE:
        vocab_size = None  # the default spelled out is the same dataset as the default
    opts = PrepareOptions(tokenizer, float(split), vocab_size, _parse_clean(clean), errors, unk)
    given_tok = None
    if tokenizer_file is not None:
        tokenizer_file = Path(tokenizer_file).expanduser()
        given_tok, opts = _load_given_tokenizer(tokenizer_file, opts)
        tokenizer = opts.tokenizer
    _validate_options(opts, block_size)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"--workers {workers!r} must be a whole number >= 0 (0: one per core)")
    out = Path(out).expanduser()
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ConfigError(
            f"--out {out} is the current folder or one above it: name a folder to create, "
            "e.g. --out data"
        )
    # a dataset written inside an input folder is not part of its own input on a rerun
    files = resolve_sources(inputs, cache_dir)
    if out.is_dir():
        files = [f for f in files if not f.resolve().is_relative_to(out.resolve())]
    if not files:
        raise GptlabError(f"the input holds no files outside --out {out}: pass text files")
    scan = scan_sources(
        files, opts.errors, opts.clean, want_chars=tokenizer == "char", progress=progress
    )
    if given_tok is not None and opts.tokenizer == "char":
        _check_chars_known(given_tok, scan.chars, tokenizer_file)
    existing = _existing_dataset(out, opts, scan.sha256, force)
    if existing is not None:
        _check_split_sizes(
            existing["train_tokens"] + existing["val_tokens"], existing["train_tokens"],
            block_size, existing["source"],
        )
        logger.info("%s already holds this dataset: nothing to do", out)
        return existing
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        meta = _build_dataset(
            tmp, scan, opts, _describe(inputs, scan.files), block_size, progress, workers,
            given_tok,
        )
        _install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "wrote %s: %d train + %d val %s tokens (vocab %d, %s)", out, meta["train_tokens"],
        meta["val_tokens"], tokenizer, meta["vocab_size"], meta["dtype"],
    )
    return meta


def _build_dataset(
    tmp: Path, scan, opts: PrepareOptions, source: str, block_size, progress, workers: int = 0,
    tok=None,
):
    if tok is None:
        tok = _build_tokenizer(opts, scan.files, scan.chars)
    dtype = token_dtype(tok.vocab_size)
    all_path = tmp / "tokens.bin"
    n_total = _write_tokens(
        tok, scan.files, opts, all_path, dtype, scan.nbytes, progress, workers
    )
    n_train = int(opts.split * n_total)
    _check_split_sizes(n_total, n_train, block_size, source)
    _split_tokens(all_path, tmp, n_train, dtype)
    tok.save(tmp / TOKENIZER_FILE)
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
        "val_tokens": n_total - n_train,
        "total_tokens": n_total,
        "source": source,
        "source_files": len(scan.files),
        "source_bytes": scan.nbytes,
        "source_sha256": scan.sha256,
        "options": opts.as_dict(),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def load_meta(data_dir: str | os.PathLike) -> dict[str, Any]:
    """Read `data_dir/meta.json` written by prepare."""
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        raise GptlabError(
            f"{data_dir} holds no {META_FILE}: create the dataset with "
            f"`gptlab prepare --out {data_dir}`"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GptlabError(
            f"{path} is not valid JSON ({exc}): prepare the dataset again with --force"
        ) from exc
    if not isinstance(meta, dict):
        raise GptlabError(f"{path} is not a dataset description: prepare it again with --force")
    return meta


def load_split(data_dir: str | os.PathLike, split: Literal["train", "val"]) -> np.memmap:
    """Memory-map one split's token ids, shape (n_tokens,), without reading it into RAM."""
    if split not in SPLIT_FILES:
        raise GptlabError(f"split {split!r} must be 'train' or 'val'")
    meta = load_meta(data_dir)
    path = Path(data_dir) / SPLIT_FILES[split]
    if not path.is_file():
        raise GptlabError(f"{path} is missing: prepare the dataset again with `gptlab prepare`")
    damaged = f"the dataset in {data_dir} is damaged: prepare it again with --force"
    if meta.get("dtype") not in ("uint16", "uint32"):
        raise GptlabError(f"{META_FILE} names no token dtype (uint16/uint32): {damaged}")
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    expected = meta.get(f"{split}_tokens")
    size = path.stat().st_size
    if size % dtype.itemsize or not size or (
        expected is not None and size // dtype.itemsize != expected
    ):
        counted = f"the {expected}" if expected is not None else "whole"
        raise GptlabError(
            f"{path} holds {size} bytes, not {counted} {meta['dtype']} tokens: {damaged}"
        )
    return np.memmap(path, dtype=dtype, mode="r")
