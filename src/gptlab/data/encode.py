"""Encoding the input files into one file of token ids, block by block, in order.

Blocks are cut where the ids cannot change (`gptlab.data.reading`), so memory stays bounded
by the block size, not the file size. Documents are joined by the tokenizer's
`<|endoftext|>` where it has one.

Where the cores go: bpe encodes batches of blocks on HF tokenizers' threads, gpt2's
`encode_to_array` splits a block over tiktoken's threads, and a large gpt2 input is
encoded by a pool of worker processes instead (`encode_workers`). For char and gpt2, small
documents (records) are first joined into packs of about `_ENCODE_BLOCK` characters, so
each pack costs one encode call (`_PACKS_EXACTLY`).
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from gptlab.data.blocks import (
    BLOCK_FORMATS,
    arrow_block_text,
    block_records,
    jsonl_block_text,
    record_blocks,
)
from gptlab.data.documents import InputFile, RecordOptions, iter_documents, packed_texts
from gptlab.data.formats import RecordCounts, record_documents
from gptlab.data.reading import record_texts
from gptlab.errors import GptlabError
from gptlab.tokenizers import GPT2Tokenizer, Tokenizer
from gptlab.tokenizers.base import EOT, resolve_num_threads
from gptlab.tokenizers.char import UnknownCharacterError

_Job = TypeVar("_Job")
_Result = TypeVar("_Result")
_ENCODE_BLOCK = 1 << 20  # bytes of text per encode call (one batch item for gpt2/bpe)
# gpt2 inputs this large are encoded in worker processes: tiktoken's threads in one process
# contend on its allocator, which separate processes do not share; below this size the
# start-up of the processes is not worth it.
_PROCESS_MIN_BYTES = 16 << 20
# Tokenizers for which encoding a pack of documents joined by `<|endoftext|>` (char: by
# nothing, it has no EOT) gives exactly the documents' ids with an EOT id between them, so
# small records are encoded many per call (`packed_texts`). char maps character by
# character; tiktoken cuts its input at every allowed special token before its regex runs,
# so no id spans a separator, and a document's own literal `<|endoftext|>` is id 50256 in
# a pack as it is alone.
_PACKS_EXACTLY = ("char", "gpt2")


def corpus_texts(
    files: Sequence[Path | InputFile], errors: str, clean: Sequence[str],
    records: RecordOptions | None = None,
) -> Iterator[str]:
    """The cleaned text of all documents, in encode-sized blocks (for learning a vocabulary)."""
    for blocks in iter_documents(files, errors, clean, _ENCODE_BLOCK, None, records):
        yield from blocks


def encode_workers(tok: Tokenizer, total_bytes: int, workers: int) -> int:
    """How many processes encode: `workers` (0 = one per core) for large gpt2 inputs where
    fork is available, else 1 (this process; its encoders still use threads)."""
    fork = "fork" in multiprocessing.get_all_start_methods()
    if tok.name != "gpt2" or total_bytes < _PROCESS_MIN_BYTES or not fork:
        return 1
    return resolve_num_threads(workers)


def write_tokens(
    tok: Tokenizer,
    files: Sequence[Path | InputFile],
    dest: Path,
    dtype: np.dtype,
    *,
    errors: str,
    clean: Sequence[str],
    total_bytes: int,
    workers: int = 0,
    progress: bool = False,
    records: RecordOptions | None = None,
    counts: RecordCounts | None = None,
) -> int:
    """Encode every document into `dest` as raw `dtype` ids; returns the number of tokens
    written.

    Args:
        tok: the tokenizer; a char tokenizer without `<unk>` must know every character.
        files: the input files, in order (a bare Path is a text file: one document);
            `total_bytes` is their size (for the progress bar).
        errors, clean: how to decode and clean the text (as for `document_texts`).
        workers: processes for a large gpt2 input (0 = one per core; see `encode_workers`).
        records, counts: how record files are read, and what reading them found.
    """
    n = 0
    workers = encode_workers(tok, total_bytes, workers)
    bar = tqdm(
        total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="encode",
        disable=not progress, file=sys.stderr, dynamic_ncols=True,
    )
    if workers > 1 and _all_blocked(files):
        blocks = _records_encoded_in_processes(
            files, tok.eot_id, records or RecordOptions(), clean, bar.update,
            counts if counts is not None else RecordCounts(), workers,
        )
    else:
        documents = iter_documents(files, errors, clean, _ENCODE_BLOCK, bar.update, records,
                                   counts)
        blocks = _encoded_blocks(tok, _pieces(documents, tok.eot_id), workers)
    with bar, open(dest, "wb") as f:
        for ids in blocks:
            # f.write, not ndarray.tofile: a failed write then keeps its errno (ENOSPC, ...)
            f.write(np.ascontiguousarray(ids, dtype=dtype).data)
            n += len(ids)
    return n


def _pieces(documents: Iterator[Iterator[str]], eot: int | None) -> Iterator[str | None]:
    """The documents' text blocks in order, with None (an EOT id) between documents when
    the tokenizer has one."""
    for index, blocks in enumerate(documents):
        if index > 0 and eot is not None:
            yield None
        yield from blocks


def _encoded_blocks(
    tok: Tokenizer, pieces: Iterator[str | None], workers: int
) -> Iterator[np.ndarray]:
    """Token id arrays for all pieces in order (None: the tokenizer's EOT id)."""
    if tok.name in _PACKS_EXACTLY:
        packs = packed_texts(pieces, EOT if tok.eot_id is not None else "", _ENCODE_BLOCK)
        if workers > 1 and tok.name == "gpt2":
            yield from _encoded_packs_in_processes(packs, workers)
        else:  # one pack encodes (its encoder free of the GIL) while the next one is read
            with ThreadPoolExecutor(1) as pool:
                yield from _results_in_order(pool, functools.partial(_encode_block, tok),
                                             packs, in_flight=1)
        return
    batched = tok.name == "bpe"
    batch_len = max(4, 2 * (os.cpu_count() or 1))
    eot = np.array([tok.eot_id if tok.eot_id is not None else 0], dtype=np.int64)
    batch: list[str] = []
    for text in pieces:
        if text is None or not batched:
            if batch:
                yield from _encode_batch(tok, batch)
                batch = []
            yield eot if text is None else _encode_block(tok, text)
        else:
            batch.append(text)
            if len(batch) == batch_len:
                yield from _encode_batch(tok, batch)
                batch = []
    if batch:
        yield from _encode_batch(tok, batch)


def _encode_block(tok: Tokenizer, text: str) -> np.ndarray:
    try:
        return tok.encode_to_array(text)
    except UnknownCharacterError:
        # The char vocabulary came from scanning these very files (or was checked against
        # them), so an unknown character means a file changed between the scan and now.
        raise GptlabError(
            "an input file changed while it was being prepared (it holds characters the first "
            "pass did not see): run prepare again once the files stay put"
        ) from None


def _encode_batch(tok: Tokenizer, texts: list[str]) -> Iterator[np.ndarray]:
    for ids in tok.encode_batch(texts, num_threads=0):
        yield np.array(ids, dtype=np.int64)


def _gpt2_encode_pack(text: str) -> np.ndarray:
    # Cheap: `gpt2_encoding` is cached per process, and a forked worker inherits it.
    return GPT2Tokenizer().encode_to_array(text, num_threads=1)


def _encoded_packs_in_processes(packs: Iterator[str], workers: int) -> Iterator[np.ndarray]:
    """gpt2 packs encoded by a pool of forked processes, results in input order."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        _start_workers(pool)
        yield from _results_in_order(pool, _gpt2_encode_pack, packs, in_flight=2 * workers)


def _all_blocked(files: Sequence[Path | InputFile]) -> bool:
    return all(isinstance(f, InputFile) and f.format in BLOCK_FORMATS for f in files)


def _records_encoded_in_processes(
    inputs: Sequence[InputFile],
    eot_id: int,
    records: RecordOptions,
    clean: Sequence[str],
    on_bytes: Callable[[int], None],
    counts: RecordCounts,
    workers: int,
) -> Iterator[np.ndarray]:
    """gpt2 ids of JSON Lines, Parquet or Arrow files, each block of records
    (`record_blocks`) read and encoded in a forked worker (`_gpt2_encode_records`): this
    process only reads blocks, so turning records into text runs on every core too.
    Results come in input order; an EOT id goes between blocks that hold documents, as
    `_pieces` puts one between documents."""
    job = functools.partial(_gpt2_encode_records, text_field=records.field,
                            skip_bad_records=records.skip_bad_records, clean=tuple(clean))
    blocks = ((item.path, item.format, first, block) for item in inputs
              for first, block in record_blocks(item.path, item.format, records.field,
                                                _ENCODE_BLOCK, on_bytes))
    eot = np.array([eot_id], dtype=np.int64)
    started = False
    # The workers build and drop a dict per record and no reference cycles: the cyclic
    # garbage collector would only cost them time.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=gc.disable) as pool:
        _start_workers(pool)
        for ids, found in _results_in_order(pool, job, blocks, in_flight=2 * workers):
            counts.empty += found.empty
            counts.skipped += found.skipped
            counts.skipped_where.extend(found.skipped_where[: 5 - len(counts.skipped_where)])
            counts.documents += found.documents
            if found.documents:
                if started:
                    yield eot
                started = True
                yield ids


def _gpt2_encode_records(
    job: tuple[Path, str, int, Any], text_field: str, skip_bad_records: bool,
    clean: tuple[str, ...],
) -> tuple[np.ndarray, RecordCounts]:
    """One block of records (path, format, first position, block) -> the gpt2 ids of its
    documents joined by EOT, and what reading them found."""
    path, fmt, first, block = job
    found = RecordCounts()
    pack = None
    if not clean and "." not in text_field:  # the common case, in bulk
        fast = jsonl_block_text if fmt == "jsonl" else arrow_block_text
        pack = fast(block, text_field, EOT, found)
    if pack is None:  # (the bulk readers count nothing before they succeed)
        pairs = block_records(path, fmt, text_field, first, block)
        texts = record_documents(path, fmt, pairs, text_field, skip_bad_records, found)
        pack = EOT.join("".join(record_texts(text, clean)) for text in texts)
    return _gpt2_encode_pack(pack), found


def _results_in_order(
    pool: Executor, fn: Callable[[_Job], _Result], packs: Iterator[_Job], in_flight: int
) -> Iterator[_Result]:
    """fn(pack) for every pack, computed in `pool` with at most `in_flight` packs waiting
    (memory stays bounded), yielded in input order."""
    pending: deque[Future] = deque()
    for text in packs:
        pending.append(pool.submit(fn, text))
        while len(pending) > in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _start_workers(pool: ProcessPoolExecutor) -> None:
    """Fork the pool's workers (a fork pool starts all of them on its first submit) with
    SIGINT and SIGTERM blocked: the workers keep that mask, so Ctrl-C and SIGTERM reach only
    the parent (which stops submitting, shuts the pool down and removes its temporary
    folder), and a signal sent meanwhile reaches the parent once its mask is restored."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        pool.submit(int)  # a no-op: forks the workers
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


