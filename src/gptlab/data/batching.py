"""Batches of (inputs, targets) for next-token training, two ways, both from the seeds:

- `RandomBatches`: the lecture's `get_batch` (seed 001), what `gptlab train` uses.
- `SlidingWindowDataset` + `create_dataloader`: seed 002's windows of `max_length` tokens
  every `stride` tokens, served by a torch DataLoader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gptlab.data.dataset import Split, load_split
from gptlab.errors import GptlabError
from gptlab.tokenizers import GPT2Tokenizer

TokenIds = Sequence[int] | np.ndarray | torch.Tensor


class TextEncoder(Protocol):
    """A gptlab `Tokenizer`, or anything else with `encode` (seed 002 passes tiktoken's)."""

    def encode(self, text: str) -> list[int]: ...


class RandomBatches:
    """Random-offset batches from a token stream (seeded by its own torch.Generator), as the
    seed's `get_batch(split)`.

    Each call draws `ix = torch.randint(len(data) - block_size, (batch_size,))` from the
    sampler's own generator and returns x = data[i : i+T] and y = data[i+1 : i+T+1] for
    each i, both int64 of shape (B, T). With the same seed it returns exactly what the
    seed's `get_batch` returns after `torch.manual_seed(seed)`.

    Args:
        data: a dataset folder written by `gptlab prepare` (its `split` .bin is memory-
            mapped, never loaded whole), or a 1-D array/tensor of token ids.
        split: used only when `data` is a folder.
        batch_size, block_size: B and T, the context length.
        device: where batches go; on CUDA they are pinned and copied non-blocking.
        seed: seeds the generator; None draws a random seed.
    """

    def __init__(
        self,
        data: str | os.PathLike | TokenIds,
        split: Split = "train",
        batch_size: int = 4,
        block_size: int = 8,
        device: str | torch.device = "cpu",
        seed: int | None = None,
    ) -> None:
        if isinstance(data, (str, os.PathLike)):
            self.data = load_split(Path(data), split)
            where = f"{data} ({split})"
        else:
            is_array = isinstance(data, (np.ndarray, torch.Tensor))
            self.data = data if is_array else np.asarray(data, dtype=np.int64)
            where = "the token array"
        if batch_size < 1 or block_size < 1:
            raise GptlabError(
                f"batch_size {batch_size} and block_size {block_size} must both be >= 1"
            )
        if len(self.data) <= block_size:
            raise GptlabError(
                f"{where} has {len(self.data)} tokens, too few for block_size {block_size}: "
                "use a smaller block_size or more data"
            )
        self.split = split
        self.batch_size = batch_size
        self.block_size = block_size
        self.device = torch.device(device)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self._offsets = np.arange(block_size + 1)  # (T+1,)

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x, y), each int64 of shape (B, T) on `device`; y is x shifted by one."""
        ix = torch.randint(
            len(self.data) - self.block_size, (self.batch_size,), generator=self.generator
        )
        index = ix.numpy()[:, None] + self._offsets  # (B, T+1)
        if isinstance(self.data, torch.Tensor):
            window = self.data[torch.from_numpy(index)].long()
        else:
            # Fancy indexing a memmap reads only the pages these windows touch.
            window = torch.from_numpy(np.asarray(self.data[index], dtype=np.int64))  # (B, T+1)
        x, y = window[:, :-1], window[:, 1:]  # (B, T) each
        if self.device.type == "cuda":
            x = x.contiguous().pin_memory().to(self.device, non_blocking=True)
            y = y.contiguous().pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            x, y = x.to(self.device), y.to(self.device)
        return x, y

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get_batch()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.get_batch()

    def state_dict(self) -> dict[str, Any]:
        """The generator state (a uint8 tensor): restoring it replays the same batches."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state saved by `state_dict()`."""
        self.generator.set_state(state["generator"])


class SlidingWindowDataset(Dataset):
    """Seed 002's dataset: windows of `max_length` tokens, one every `stride` tokens.

    Item k is (input, target) with input = ids[s : s+L] and target = ids[s+1 : s+L+1],
    s = k * stride, for s in range(0, len(ids) - max_length, stride); both int64 of
    shape (L,). Windows are sliced on access, not stored.
    """

    def __init__(self, token_ids: TokenIds, max_length: int, stride: int) -> None:
        if max_length < 1 or stride < 1:
            raise GptlabError(f"max_length {max_length} and stride {stride} must both be >= 1")
        self.token_ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))
        self.max_length = max_length
        self.stride = stride
        self.starts = range(0, len(self.token_ids) - max_length, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.starts[index]
        window = self.token_ids[s : s + self.max_length + 1]  # (L+1,)
        return window[:-1], window[1:]


def sliding_windows(
    text_or_ids: str | TokenIds, max_length: int, stride: int, tokenizer: Any = None
) -> SlidingWindowDataset:
    """Seed 002's windows over a text (encoded with `tokenizer`, GPT-2 BPE by default) or
    over token ids; too few tokens for one window is an error."""
    if isinstance(text_or_ids, str):
        ids: TokenIds = (tokenizer or GPT2Tokenizer()).encode(text_or_ids)
    else:
        ids = text_or_ids
    dataset = SlidingWindowDataset(ids, max_length, stride)
    if len(dataset) == 0:
        raise GptlabError(
            f"{len(ids)} tokens are too few for one window of max_length {max_length} (it needs "
            f"{max_length + 1}): use a smaller max_length or more text"
        )
    return dataset


def create_dataloader(
    text_or_ids: str | TokenIds,
    tokenizer: TextEncoder | None = None,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
) -> DataLoader:
    """A DataLoader over `SlidingWindowDataset`, as seed 002's `create_dataloader`.

    Args:
        text_or_ids: raw text (encoded with `tokenizer`, GPT-2 BPE by default) or token ids.
        tokenizer: anything with `encode(text) -> list[int]`; ignored for token ids.
        batch_size, shuffle, drop_last, num_workers: passed to DataLoader.
        max_length, stride: window length and step.
        seed: seeds the shuffling order (None: torch's global generator).
    Returns:
        A DataLoader yielding (inputs, targets), each int64 of shape (batch_size, max_length).
    """
    dataset = sliding_windows(text_or_ids, max_length, stride, tokenizer)
    if drop_last and len(dataset) < batch_size:
        raise GptlabError(
            f"the text gives {len(dataset)} windows, fewer than batch_size {batch_size}, so "
            "drop_last=True would leave no batch: lower batch_size or pass drop_last=False"
        )
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
        num_workers=num_workers, generator=generator,
    )
