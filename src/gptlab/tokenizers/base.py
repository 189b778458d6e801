"""The protocol every gptlab tokenizer follows, and its JSON file format.

A tokenizer turns text into a list of integer ids (`encode`) and back (`decode`). All four
kinds (char, word, gpt2, bpe) share this interface, so `gptlab prepare` and the rest of
gptlab never ask which kind they hold. A tokenizer is saved as ONE self-describing JSON file,
`{"kind": "<name>", "format": 1, ...}`, which `gptlab.tokenizers.load_tokenizer` reads back.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from gptlab.errors import GptlabError
from gptlab.files import atomic_write_bytes, check_not_binary

EOT = "<|endoftext|>"  # GPT-2's document separator; the seeds join documents with it
FORMAT_VERSION = 1
TokenizerKind = Literal["char", "word", "gpt2", "bpe"]  # also the JSON file's "kind"
UTF8_BOM = "\ufeff"  # a byte order mark: a file's encoding signature, not a character of it
UTF8_BOM_BYTES = UTF8_BOM.encode("utf-8")


def starts_with_bom(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with a UTF-8 byte order mark (b"\\xef\\xbb\\xbf"); False
    also when it cannot be read (its reader reports that)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(UTF8_BOM_BYTES)) == UTF8_BOM_BYTES
    except OSError:
        return False


def read_text_file(path: str | os.PathLike[str]) -> str:
    """A corpus file's text; a missing, binary, UTF-16 or non-UTF-8 file is a GptlabError.

    A UTF-8 byte order mark at the start (Windows editors write one) is not text: it is
    dropped.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GptlabError(f"{path} does not exist: check the path") from None
    except IsADirectoryError:
        raise GptlabError(f"{path} is a folder: give text files") from None
    check_not_binary(path, data)
    try:
        return data.decode("utf-8").removeprefix(UTF8_BOM)
    except UnicodeDecodeError as exc:
        raise GptlabError(
            f"{path} is not valid UTF-8 (byte offset {exc.start}): convert it to UTF-8"
        ) from None


def resolve_num_threads(num_threads: int) -> int:
    """0 means every core this process may use; otherwise the number itself (>= 1)."""
    if num_threads < 0:
        raise GptlabError(f"num_threads={num_threads} must be >= 0 (0 uses all cores)")
    if num_threads:
        return num_threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Tokenizer(abc.ABC):
    """Common interface of the char, word, gpt2 and bpe tokenizers; `name` is the kind.

    `special_tokens` maps special token text to id, e.g. {"<|endoftext|>": 50256}.
    """

    name: ClassVar[TokenizerKind]
    special_tokens: dict[str, int]

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids; every id `encode` returns is in range(vocab_size)."""

    @property
    def eot_id(self) -> int | None:
        """Id of `<|endoftext|>`, or None when this tokenizer has no such token."""
        return self.special_tokens.get(EOT)

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text -> token ids."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text."""

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """One id list per text, each equal to `encode(text)`; kinds with a parallel encoder
        use `num_threads` cores (0 = all)."""
        resolve_num_threads(num_threads)
        return [self.encode(text) for text in texts]

    def encode_to_array(self, text: str) -> np.ndarray:
        """Encode into a 1-D uint32 array of shape (n_tokens,): the fast path for prepare."""
        return np.asarray(self.encode(text), dtype=np.uint32)

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer, minus "kind" and "format"."""

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        """Rebuild from `to_dict()`'s output."""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer as one JSON file, atomically; returns the path written.

        Raises:
            GptlabError: `path` is a folder.
            WriteError: the write failed (a full disk, a read-only folder, ...).
        """
        path = Path(path)
        if path.is_dir():
            raise GptlabError(
                f"cannot save the tokenizer to {path}: it is a folder; pass a file path, "
                f"e.g. {path / 'tokenizer.json'}"
            )
        data = {"kind": self.name, "format": FORMAT_VERSION, **self.to_dict()}
        try:
            body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in a char vocabulary: escape it
            body = json.dumps(data).encode("ascii")
        atomic_write_bytes(path, body + b"\n")
        return path

    def check_ids(self, ids: Sequence[int]) -> None:
        """Raise GptlabError naming the first id outside range(vocab_size)."""
        arr = np.asarray(ids)
        bad = (arr < 0) | (arr >= self.vocab_size)
        if bad.any():
            pos = int(np.argmax(bad))
            raise GptlabError(
                f"token id {int(arr[pos])} at position {pos} is outside the {self.name} "
                f"tokenizer's vocabulary (0..{self.vocab_size - 1}): were these ids made "
                "with another tokenizer?"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
