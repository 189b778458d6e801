"""A prepared dataset folder, as `gptlab prepare` writes it and training reads it.

    train.bin, val.bin  raw little-endian token ids (uint16 when the vocabulary fits, else
                        uint32), read with `np.memmap` without loading them into RAM
    tokenizer.json      the tokenizer that made the ids (`gptlab.tokenizers.load_tokenizer`)
    meta.json           what was prepared: token counts, dtype, source hash, options
    checksums.json      size and xxh3_128 checksum of the four files above
                        (`gptlab.integrity`), verified when `prepare` finds the dataset
                        already there and when training or evaluation starts
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gptlab.errors import GptlabError
from gptlab.integrity import verify_file

META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
Split = Literal["train", "val"]
SPLIT_FILES: dict[Split, str] = {"train": "train.bin", "val": "val.bin"}
FORMAT_VERSION = 1
DATASET_FILES = (*SPLIT_FILES.values(), TOKENIZER_FILE, META_FILE)  # what checksums.json lists


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32 (little-endian)."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


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


def load_split(data_dir: str | os.PathLike, split: Split) -> np.memmap:
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


def verify_dataset(
    data_dir: str | os.PathLike, splits: tuple[Split, ...] = ("train", "val")
) -> None:
    """Check meta.json, tokenizer.json and the `splits`' token files against the folder's
    checksums.json (every byte: hashing runs far faster than the disk, see
    docs/benchmarks.md); files an older gptlab wrote without checksums pass unchecked.

    Raises:
        CorruptFileError: a file changed since `prepare` wrote it, naming it and the fix.
    """
    data_dir = Path(data_dir)
    fix = (f"prepare the dataset again (`gptlab prepare ... --out {data_dir} --force`; a "
           "dataset that `gptlab train` prepared itself is rebuilt by the same command)")
    for name in (META_FILE, TOKENIZER_FILE, *(SPLIT_FILES[s] for s in splits)):
        verify_file(data_dir / name, fix)


def is_intact(data_dir: Path) -> bool:
    """Whether a dataset folder's token files and tokenizer are all there, at full size,
    and match their checksums."""
    from gptlab.tokenizers import load_tokenizer

    try:
        load_tokenizer(data_dir / TOKENIZER_FILE)
        for split in SPLIT_FILES:
            load_split(data_dir, split)
        verify_dataset(data_dir)
    except GptlabError:
        return False
    return True
