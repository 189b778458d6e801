"""Byte-level BPE trained on the user's corpus with HuggingFace `tokenizers` (Rust).

Same recipe as GPT-2: a byte-level pre-tokenizer (GPT-2's split regex, bytes mapped to
printable characters), all 256 bytes in the initial alphabet so no text is ever unknown,
then merges learned up to `vocab_size`. Special tokens come first (`<|endoftext|>` = id 0 by
default). The trained HF tokenizer is embedded in gptlab's JSON file, so one file holds it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gptlab.errors import GptlabError
from gptlab.tokenizers.base import (
    EOT,
    Tokenizer,
    read_text_file,
    resolve_num_threads,
    starts_with_bom,
)
from gptlab.tokenizers.chunking import split_for_parallel

log = logging.getLogger(__name__)

N_BYTES = 256
_PARALLEL_MIN_CHARS = 1 << 20
_FAST_MIN_CHARS = 1 << 16


def _new_hf_tokenizer():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _split_sources(texts_or_files) -> tuple[list[str], list[str]]:
    """(texts, file paths): a `str` is text, a `Path` (or os.PathLike) a file."""
    if isinstance(texts_or_files, (str, os.PathLike)):
        texts_or_files = [texts_or_files]
    texts: list[str] = []
    files: list[str] = []
    for item in texts_or_files:
        if isinstance(item, os.PathLike):
            if not os.path.isfile(item):
                raise GptlabError(f"BPE training file {item} does not exist: check the path")
            files.append(os.fspath(item))
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise GptlabError(f"BPE training source {item!r} is neither text (str) nor a Path")
    return texts, files


class BPETokenizer(Tokenizer):
    """A trained byte-level BPE (wraps a `tokenizers.Tokenizer`): `train` or `load_tokenizer`."""

    name = "bpe"

    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer
        self.special_tokens = {
            tok.content: int(i)
            for i, tok in hf_tokenizer.get_added_tokens_decoder().items()
            if tok.special
        }

    @classmethod
    def train(
        cls,
        texts_or_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        vocab_size: int,
        special_tokens: Sequence[str] = (EOT,),
        min_frequency: int = 2,
    ) -> BPETokenizer:
        """Learn merges from texts (`str` items) and/or files (`pathlib.Path` items).

        Args:
            texts_or_files: one text or path, or an iterable of them.
            vocab_size: final vocabulary size, >= 256 + len(special_tokens).
            special_tokens: added first, ids 0, 1, ...; default `<|endoftext|>`.
            min_frequency: a pair must occur this often to be merged.

        On a tiny corpus the vocabulary may come out smaller than `vocab_size`.
        """
        from tokenizers import pre_tokenizers, trainers

        special_tokens = list(special_tokens)
        floor = N_BYTES + len(special_tokens)
        if vocab_size < floor:
            raise GptlabError(
                f"BPE vocab_size {vocab_size} is too small: it needs >= {floor} (256 bytes + "
                f"{len(special_tokens)} special tokens); use e.g. --vocab-size 4096"
            )
        texts, files = _split_sources(texts_or_files)
        if not any(texts) and not any(os.path.getsize(f) for f in files):
            raise GptlabError("cannot train a BPE tokenizer on an empty corpus: give some text")
        tok = _new_hf_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        # HF reads files as they are; one with a byte order mark is read here, without it
        if files and not texts and not any(starts_with_bom(f) for f in files):
            try:
                tok.train(files, trainer=trainer)  # HF reads (and parallelizes over) the files
            except Exception as exc:  # HF raises a bare Exception, e.g. for invalid UTF-8
                for f in files:
                    read_text_file(f)  # raises the GptlabError naming a bad file and its problem
                raise GptlabError(f"BPE training failed on {', '.join(files)}: {exc}") from None
        else:
            sources = texts + [read_text_file(f) for f in files]
            tok.train_from_iterator(sources, trainer=trainer, length=len(sources))
        log.info("trained BPE: %d ids (asked for %d)", tok.get_vocab_size(), vocab_size)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids; the literal text of a special token becomes its id."""
        if len(text) >= _FAST_MIN_CHARS:  # skips the offsets bookkeeping, which costs CPU
            return self.hf.encode_batch_fast([text], add_special_tokens=False)[0].ids
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """Encode `texts`; any num_threads except 1 uses HF's parallel batch encoder.

        HF tokenizers sizes its thread pool once per process (env RAYON_NUM_THREADS), so a
        count other than 1 or 0 (all cores) cannot be honoured exactly.
        """
        if resolve_num_threads(num_threads) == 1:
            return [self.encode(t) for t in texts]
        encodings = self.hf.encode_batch_fast(texts, add_special_tokens=False)
        return [e.ids for e in encodings]

    def encode_to_array(self, text: str, num_threads: int = 0) -> np.ndarray:
        """Encode into (n_tokens,) uint32; long texts are split exactly and encoded in parallel."""
        n = resolve_num_threads(num_threads)
        if n == 1 or len(text) < _PARALLEL_MIN_CHARS:
            return np.asarray(self.encode(text), dtype=np.uint32)
        batches = self.encode_batch(split_for_parallel(text, 4 * n), num_threads=n)
        return np.concatenate([np.asarray(ids, dtype=np.uint32) for ids in batches])

    def decode(self, ids: Sequence[int]) -> str:
        self.check_ids(ids)
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return {"hf_tokenizer": json.loads(self.hf.to_str())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return cls(HFTokenizer.from_str(json.dumps(data["hf_tokenizer"])))
        except Exception as exc:  # the Rust side raises plain Exception on a bad spec
            raise GptlabError(
                f"bpe tokenizer file holds an unreadable HF tokenizer ({exc}): re-create it"
            ) from exc
