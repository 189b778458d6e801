"""What every inspect view shares: JSON-ready results, input checks, and token pieces.

Results are frozen dataclasses whose `to_dict()` turns nested dataclasses, tuples and
tensors into dicts, lists and numbers, so a CLI's `--json`, a server endpoint and the tests
read one shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from gptlab.checks import is_int
from gptlab.errors import GptlabError
from gptlab.tokenizers import Tokenizer


def plain(value: Any) -> Any:
    """`value` as JSON-ready data: dataclass → dict, tuple/list → list, tensor → nested lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


class Plain:
    """Mixin for the result dataclasses: `to_dict()` gives their JSON-ready form."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, nested rows included, as dicts, lists, numbers and strings."""
        return plain(self)


def check_text(text: str) -> None:
    """Raise GptlabError unless `text` is a non-empty string."""
    if not isinstance(text, str):
        raise GptlabError(f"text must be a string, got {type(text).__name__}: pass the text")
    if not text:
        raise GptlabError("the text is empty: give at least one character to inspect")


def check_k(k: int, name: str = "k") -> None:
    """Raise GptlabError unless `k` is an integer >= 1."""
    if not is_int(k) or k < 1:
        raise GptlabError(f"{name} must be a whole number >= 1, got {k!r}: e.g. {name}=5")


def encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """Check and encode `text`; a text that gives no tokens (only whitespace for the word
    tokenizer) is an error, and so is a character outside a char vocabulary
    (`UnknownCharacterError`, raised by the tokenizer itself)."""
    check_text(text)
    ids = tokenizer.encode(text)
    if not ids:
        raise GptlabError(
            f"the text {text[:40]!r} gives no tokens with the {tokenizer.name} tokenizer: "
            "give text with at least one word"
        )
    return ids


def piece(tokenizer: Tokenizer, token_id: int) -> str:
    """The text one id stands for: a special token's name (`<|endoftext|>`, `<|unk|>`,
    `<unk>`), else `decode([id])` (a GPT-2 id holding part of a UTF-8 character shows
    U+FFFD)."""
    for name, special_id in tokenizer.special_tokens.items():
        if special_id == token_id:
            return name
    return tokenizer.decode([token_id])


def as_sequence(idx: Tensor | Sequence[int], vocab_size: int) -> Tensor:
    """One sequence of ids as a (T,) int64 tensor; (T,) or (1, T) input, ids < vocab_size.

    Raises:
        GptlabError: a batch of several sequences, no ids, or an id outside the vocabulary.
    """
    ids = torch.as_tensor(idx)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise GptlabError(
            f"idx must be one sequence of shape (T,) or (1, T), got {tuple(ids.shape)}: "
            "inspect one sequence at a time"
        )
    if ids.numel() == 0:
        raise GptlabError("idx holds no token ids: give at least one token")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise GptlabError(f"idx must hold integer token ids, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        pos = int(bad.nonzero()[0])
        raise GptlabError(
            f"token id {int(ids[pos])} at position {pos} is outside the model's vocabulary "
            f"(0..{vocab_size - 1}): encode with the run's own tokenizer"
        )
    return ids.long()


def last_block(ids: Tensor, block_size: int) -> tuple[Tensor, int]:
    """The last `block_size` ids of a (T,) sequence and how many were dropped from its front
    (what the model can read at once; generation crops the same way)."""
    dropped = max(0, ids.shape[0] - block_size)
    return ids[dropped:], dropped


@contextmanager
def evaluating(model: nn.Module) -> Iterator[torch.device]:
    """Run the body in eval mode without gradients, then restore the model's mode.

    Yields the device of the model's parameters (where its inputs must go)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)
