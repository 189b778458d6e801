"""How a token stream becomes training examples.

- `batch_table`: seed 001's loop over one row of `get_batch` (`RandomBatches`): a block of
  T tokens holds T examples, "when input is tensor([18]) the target: 47", ...
- `window_table`: seed 002's `GPTDataset.visualize` (`SlidingWindowDataset`): windows of
  max_length tokens every `stride` tokens, "i=0 <input text> ----> <target text>", and how
  many tokens each window shares with the one before (max_length - stride when positive).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gptlab.checks import is_int
from gptlab.data.batching import RandomBatches, TokenIds, sliding_windows
from gptlab.errors import GptlabError
from gptlab.inspect.plain import Plain, check_k, encode_text
from gptlab.tokenizers import GPT2Tokenizer, Tokenizer


@dataclass(frozen=True)
class BatchRow(Plain):
    """Example t of a block: the context x[:t+1] and the target y[t] that follows it."""

    t: int
    context: tuple[int, ...]
    target: int
    context_text: str | None
    target_text: str | None


@dataclass(frozen=True)
class BatchTable(Plain):
    """One block of a batch and the block_size examples it holds.

    Fields:
        block_size: T.
        offset: where x starts in the token stream; None when drawn by `RandomBatches`
            (which does not report its offsets).
        x, y: the block's inputs and targets (y is x shifted by one), T ids each.
        rows: T BatchRows, t = 0..T-1.
    """

    block_size: int
    offset: int | None
    x: tuple[int, ...]
    y: tuple[int, ...]
    rows: tuple[BatchRow, ...]


def batch_table(
    data: RandomBatches | str | os.PathLike[str] | TokenIds,
    block_size: int | None = None,
    *,
    offset: int | None = None,
    split: str = "train",
    batch_size: int = 4,
    row: int = 0,
    seed: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> BatchTable:
    """Seed 001's "when input is [...] the target: ..." examples of one block.

    With `offset`, the block is data[offset : offset+T] (seed 001's first loop is offset 0,
    block 8 of Tiny Shakespeare's train split); without, row `row` of one batch that
    `RandomBatches` draws (seed 001's second loop; `seed=1337` and batch_size 4 give its
    [24, 43, 58, ...]).

    Args:
        data: a RandomBatches sampler, a dataset folder from `gptlab prepare`, or 1-D ids.
        block_size: T (default: the sampler's, else 8).
        offset: take the block at this offset instead of drawing one.
        split, batch_size, seed: for the sampler built from a folder or ids.
        row: which row of the drawn batch (0..batch_size-1).
        tokenizer: when given, each context and target is also decoded to text.

    Returns:
        BatchTable with block_size rows.
    """
    sampler = _sampler(data, block_size, split, batch_size, seed)
    T = sampler.block_size
    if offset is None:
        if not is_int(row) or not 0 <= row < sampler.batch_size:
            raise GptlabError(f"row {row!r} is not in the batch: pick 0..{sampler.batch_size - 1}")
        xb, yb = sampler.get_batch()  # (B, T) each
        x, y = xb[row].tolist(), yb[row].tolist()
    else:
        last = len(sampler.data) - T - 1
        if not is_int(offset) or not 0 <= offset <= last:
            raise GptlabError(f"offset {offset!r} leaves no full block: pick 0..{last}")
        window = np.asarray(sampler.data[offset : offset + T + 1], dtype=np.int64)  # (T+1,)
        x, y = window[:-1].tolist(), window[1:].tolist()

    def decode(ids: list[int]) -> str | None:
        return None if tokenizer is None else tokenizer.decode(ids)

    rows = tuple(
        BatchRow(t, tuple(x[: t + 1]), y[t], decode(x[: t + 1]), decode([y[t]])) for t in range(T)
    )
    return BatchTable(block_size=T, offset=offset, x=tuple(x), y=tuple(y), rows=rows)


def _sampler(data, block_size, split, batch_size, seed) -> RandomBatches:
    if isinstance(data, RandomBatches):
        if block_size not in (None, data.block_size):
            raise GptlabError(
                f"block_size {block_size} differs from the sampler's {data.block_size}: "
                "drop block_size or build the sampler with it"
            )
        return data
    block = 8 if block_size is None else block_size  # seed 001's block_size
    return RandomBatches(data, split=split, batch_size=batch_size, block_size=block, seed=seed)


def format_batch_table(
    table: BatchTable, style: Literal["tensor", "list", "text"] = "tensor"
) -> list[str]:
    """Seed 001's printed lines, one per example.

    style "tensor": `when input is tensor([18, 47]) the target: 56` (its first loop);
    "list": `when input is [24, 43] the target: 58` (its loop over a batch);
    "text": `when input is 'Fi' the target: 'r'` (needs a table made with a tokenizer).
    """
    if style == "text" and table.rows and table.rows[0].context_text is None:
        raise GptlabError("style 'text' needs a batch_table made with a tokenizer: pass one")
    lines = []
    for r in table.rows:
        if style == "tensor":
            context, target = tensor_repr(r.context), str(r.target)
        elif style == "list":
            context, target = str(list(r.context)), str(r.target)
        elif style == "text":
            context, target = repr(r.context_text), repr(r.target_text)
        else:
            raise GptlabError(f"style {style!r} is not tensor, list or text")
        lines.append(f"when input is {context} the target: {target}")
    return lines


def tensor_repr(ids: Sequence[int]) -> str:
    """How torch prints a short 1-D integer tensor: `tensor([18, 47, 56, 57, 58,  1])`
    (every entry right-aligned to the widest; no line wrapping)."""
    width = max(len(str(i)) for i in ids)
    return "tensor([" + ", ".join(str(i).rjust(width) for i in ids) + "])"


@dataclass(frozen=True)
class WindowRow(Plain):
    """Window `index` of a sliding-window dataset.

    Fields:
        index: k, the dataset item; i: its first token's position (k · stride), the
            seed's loop variable.
        input_ids, target_ids: ids[i : i+L] and ids[i+1 : i+L+1].
        input_text, target_text: them decoded (None without a tokenizer).
        overlap: tokens of the input shared with the previous window's input
            (max(0, max_length - stride); 0 for the first window).
    """

    index: int
    i: int
    input_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    input_text: str | None
    target_text: str | None
    overlap: int


@dataclass(frozen=True)
class WindowTable(Plain):
    """The first windows of seed 002's sliding-window dataset over a text.

    `n_windows` counts every window of the text; `rows` holds at most `max_windows`."""

    max_length: int
    stride: int
    n_windows: int
    rows: tuple[WindowRow, ...]


def window_table(
    text_or_ids: str | TokenIds,
    tokenizer: Tokenizer | None = None,
    max_length: int = 4,
    stride: int = 1,
    max_windows: int = 20,
) -> WindowTable:
    """Seed 002's `visualize`: the first `max_windows` (input, target) windows.

    GPT-2 on the-verdict with max_length 3, stride 1 gives inputs [40, 367, 2885],
    [367, 2885, 1464], ...; neighbouring windows share max_length - stride tokens.

    Args:
        text_or_ids: raw text (encoded with `tokenizer`, GPT-2 BPE by default, as seed
            002's `create_dataloader`) or token ids.
        tokenizer: encodes text and decodes windows (ids without one: no text columns).
        max_length: L, tokens per window; stride: step between window starts.
        max_windows: how many rows to return.

    Returns:
        WindowTable of min(max_windows, n_windows) rows.
    """
    check_k(max_windows, "max_windows")
    if isinstance(text_or_ids, str):
        tokenizer = tokenizer or GPT2Tokenizer()  # seed 002's default; it decodes too
        text_or_ids = encode_text(tokenizer, text_or_ids)
    dataset = sliding_windows(text_or_ids, max_length, stride)
    rows = []
    for k in range(min(max_windows, len(dataset))):
        x, y = (t.tolist() for t in dataset[k])
        i = dataset.starts[k]
        overlap = max(0, dataset.starts[k - 1] + max_length - i) if k else 0
        x_text = None if tokenizer is None else tokenizer.decode(x)
        y_text = None if tokenizer is None else tokenizer.decode(y)
        rows.append(WindowRow(k, i, tuple(x), tuple(y), x_text, y_text, overlap))
    return WindowTable(max_length, stride, len(dataset), tuple(rows))


def format_window_table(table: WindowTable, show_overlap: bool = False) -> list[str]:
    """Seed 002's lines `i=0 I HAD always ---->  HAD always thought` (ids when the table
    has no text); with `show_overlap`, each line ends with `  (overlap 2)`."""
    lines = []
    for r in table.rows:
        if r.input_text is None:
            inputs, targets = str(list(r.input_ids)), str(list(r.target_ids))
        else:
            inputs, targets = r.input_text, r.target_text
        note = f"  (overlap {r.overlap})" if show_overlap and r.index else ""
        lines.append(f"i={r.i} {inputs} ----> {targets}{note}")
    return lines

