"""The views of `gptlab inspect`: each computed by `gptlab.inspect`, then drawn as text.

`COMPUTE[name](run, text, ids, args)` returns the library's result (or a dict of results)
that `--json` prints with `to_dict()`; `RENDER[name](result, run, args, colour)` returns
the lines a terminal shows: aligned, long tables with their middle rows hidden, ANSI
colour only when `colour` is set.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptlab.errors import GptlabError

if TYPE_CHECKING:
    from torch import Tensor

    from gptlab.checkpoint import Run

BOLD, DIM, RED, GREEN, YELLOW = "1", "2", "31", "32", "33"
MAX_COLUMNS = 16  # attention matrix columns before the middle ones are hidden
LABEL_WIDTH = 8
SEED_BLOCK = 8  # seed 001's block_size for its "when input is ..." lines
SEED_WINDOW = 4  # seed 002's max_length for its sliding windows
NEIGHBOURS_OF = 3  # distinct prompt tokens whose embedding neighbours are shown


def paint(text: str, code: str, colour: bool) -> str:
    """`text` in an ANSI style (BOLD, RED, ...) when `colour`, else unchanged."""
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def heading(name: str, sentence: str, colour: bool) -> str:
    """`== name ==` and the view's one-sentence explanation, wrapped."""
    wrapped = textwrap.fill(sentence, width=88, initial_indent="   ", subsequent_indent="   ")
    return paint(f"== {name} ==", BOLD, colour) + "\n" + paint(wrapped, DIM, colour)


def clip(lines: Sequence[str], max_rows: int) -> list[str]:
    """At most `max_rows` lines: the first and last ones, and a line saying how many of
    the middle ones are hidden."""
    if len(lines) <= max_rows:
        return list(lines)
    head = max_rows // 2
    tail = max_rows - head
    hidden = len(lines) - max_rows
    return [*lines[:head], f"  … {hidden} rows hidden (--rows to show more) …", *lines[-tail:]]


def shown_positions(T: int, limit: int) -> list[int | None]:
    """0..T-1, or its first and last limit/2 with None where the middle is left out."""
    if T <= limit:
        return list(range(T))
    head = limit // 2
    return [*range(head), None, *range(T - (limit - head), T)]


def short(piece: str, width: int = LABEL_WIDTH) -> str:
    """A piece as a short one-line label: its repr, clipped with … past `width`."""
    text = repr(piece)
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------- tokens


def compute_tokens(run: Run, text: str, ids: list[int], args: argparse.Namespace) -> Any:
    from gptlab.inspect import token_table

    return token_table(run.tokenizer, text)


def render_tokens(table: Any, run: Run, args: argparse.Namespace, colour: bool) -> list[str]:
    from gptlab.inspect import format_token_table

    lines = format_token_table(table)
    ids, rows = lines[0], lines[1:]
    n = len(table.ids)
    if n > args.rows:  # the ids list alone would fill the screen
        head, tail = table.ids[: args.rows // 2], table.ids[-(args.rows // 2):]
        ids = f"[{', '.join(map(str, head))}, … {n - len(head) - len(tail)} more …, " \
              f"{', '.join(map(str, tail))}]"
    rows = [paint(line, YELLOW, colour) if r.unknown else line
            for line, r in zip(rows, table.rows, strict=False)] + rows[len(table.rows):]
    title = f"{n} tokens ({table.tokenizer} tokenizer), {len(table.text)} characters:"
    return [title, ids, f"{'#':>4} {'id':>7}  {'piece':<16} span", *clip(rows, args.rows)]


# ---------------------------------------------------------------------------- next


def compute_next(run: Run, text: str, ids: list[int], args: argparse.Namespace) -> Any:
    from gptlab.inspect import next_token_table

    return next_token_table(run.model, run.tokenizer, text, k=args.k)


def surprisal_colour(bits: float | None) -> str | None:
    """Green below 1 bit (the model expected it), yellow below 4, red above."""
    if bits is None:
        return None
    return GREEN if bits < 1 else YELLOW if bits < 4 else RED


def render_next(table: Any, run: Run, args: argparse.Namespace, colour: bool) -> list[str]:
    from gptlab.inspect import format_next_token_table

    lines = format_next_token_table(table)
    start = 2 if table.truncated else 1  # the truncation note, then the column header
    end = start + len(table.rows)
    body = []
    for line, row in zip(lines[start:end], table.rows, strict=True):
        code = surprisal_colour(row.surprisal_bits)
        body.append(paint(line, code, colour) if code else line)
    return [*lines[:start], *clip(body, args.rows), *lines[end:]]


# ---------------------------------------------------------------------------- attention


def compute_attention(run: Run, text: str, ids: list[int], args: argparse.Namespace) -> Any:
    from gptlab.inspect import attention_maps

    return attention_maps(run.model, ids)


def matrix_lines(wei: Tensor, labels: Sequence[str], max_rows: int, colour: bool) -> list[str]:
    """One head's (T, T) weights as rows `i 'label' w[i,0] w[i,1] ...` (2 decimals, `·`
    above the diagonal, each row's largest weight bold), middle rows and columns hidden."""
    T = wei.shape[0]
    columns = shown_positions(T, MAX_COLUMNS)
    rows = shown_positions(T, max_rows)
    lines = [" " * (7 + LABEL_WIDTH) + " ".join("   …" if j is None else f"{j:>4}"
                                                 for j in columns)]
    for i in rows:
        if i is None:
            hidden = T - len(rows) + 1
            lines.append(f"  … {hidden} rows hidden (--rows to show more) …")
            continue
        best = int(wei[i].argmax())
        cells = []
        for j in columns:
            if j is None:
                cells.append("   …")
            elif j > i:
                cells.append("   ·")
            else:
                cell = f"{float(wei[i, j]):.2f}"
                cells.append(paint(cell, BOLD, colour) if j == best else cell)
        lines.append(f"{i:>4}  {short(labels[i]):<{LABEL_WIDTH}} " + " ".join(cells))
    return lines


def render_attention(maps: Any, run: Run, args: argparse.Namespace, colour: bool) -> list[str]:
    from gptlab.inspect.plain import piece

    labels = [piece(run.tokenizer, i) for i in maps.ids]
    n_layer, n_head, T, _ = maps.weights.shape
    lines = [f"layer {args.layer}, head {args.head}: row i takes w[i, j] from token j "
             "(each row sums to 1; · is the future, masked by tril)"]
    lines += matrix_lines(maps.weights[args.layer, args.head], labels, args.rows, colour)
    lines.append(f"where the last token {short(labels[-1])} (position {T - 1}) looks most, "
                 "per layer and head:")
    for layer in range(n_layer):
        cells = []
        for head in range(n_head):
            row = maps.weights[layer, head, T - 1]  # (T,)
            j = int(row.argmax())
            cells.append(f"h{head} → {j} {short(labels[j])} {float(row[j]):.2f}")
        lines.append(f"  layer {layer}: " + " | ".join(cells))
    return lines


# ---------------------------------------------------------------------------- batches


def dataset_dir(run: Run) -> Path | None:
    """The prepared dataset folder the run was trained on, when it is still there."""
    recorded = (run.config.get("data") or {}).get("dir")
    return Path(recorded) if recorded and Path(recorded).is_dir() else None


def compute_batches(run: Run, text: str, ids: list[int], args: argparse.Namespace) -> Any:
    from gptlab.inspect import batch_table, window_table

    block = min(SEED_BLOCK, run.model.config.block_size)
    batch, source, folder = None, None, dataset_dir(run)
    if folder is not None:
        try:
            batch = batch_table(folder, block, offset=0, tokenizer=run.tokenizer)
            source = f"the run's dataset {folder} (train split, offset 0)"
        except GptlabError:  # a split too short or unreadable: show the prompt's instead
            batch = None
    if batch is None and len(ids) >= 2:
        batch = batch_table(ids, min(block, len(ids) - 1), offset=0, tokenizer=run.tokenizer)
        source = "the prompt (offset 0)"
    windows = None
    if len(ids) >= 2:
        windows = window_table(ids, run.tokenizer, max_length=min(SEED_WINDOW, len(ids) - 1),
                               stride=1, max_windows=args.rows)
    return {"source": source, "batch": batch, "windows": windows}


def one_line(line: str) -> str:
    return line.replace("\n", "\\n")


def render_batches(result: dict, run: Run, args: argparse.Namespace, colour: bool) -> list[str]:
    from gptlab.inspect import format_batch_table, format_window_table

    batch, windows = result["batch"], result["windows"]
    if batch is None:
        return ["(the prompt is one token: too short for a batch or a window)"]
    lines = [f"one block of {batch.block_size} tokens from {result['source']}:"]
    lines += format_batch_table(batch, "tensor")
    lines.append("the same examples, decoded:")
    lines += [one_line(line) for line in format_batch_table(batch, "text")]
    lines.append(f"sliding windows of the prompt (max_length {windows.max_length}, stride "
                 f"{windows.stride}; {windows.n_windows} windows):")
    lines += [one_line(line) for line in format_window_table(windows, show_overlap=True)]
    if windows.n_windows > len(windows.rows):
        lines.append(f"  … {windows.n_windows - len(windows.rows)} more windows (--rows)")
    return lines


# ---------------------------------------------------------------------------- embeddings


def compute_embeddings(run: Run, text: str, ids: list[int], args: argparse.Namespace) -> Any:
    from gptlab.inspect import embedding_neighbours, position_matrix

    inspected = ids[-run.model.config.block_size:]
    first = list(dict.fromkeys(inspected))[:NEIGHBOURS_OF]
    neighbours = [embedding_neighbours(run.model, run.tokenizer, i, k=args.k) for i in first]
    return {"neighbours": neighbours, "positions": position_matrix(run.model)}


def render_embeddings(result: dict, run: Run, args: argparse.Namespace,
                      colour: bool) -> list[str]:
    from gptlab.inspect import format_embedding_neighbours

    lines = []
    for neighbours in result["neighbours"]:
        lines += format_embedding_neighbours(neighbours)
    positions = result["positions"]
    T, D = positions.vectors.shape
    if positions.pos_encoding == "rope":
        what = (f"rope adds no vectors to the embeddings; its {T} × {D} rows are the cos and "
                "sin of the angles it rotates q and k by")
    else:
        what = f"{T} × {D}, one vector added to each token's embedding by position"
    lines.append(f"position vectors ({positions.pos_encoding}): {what}")
    others = [p for p in (1, 2, 4, 8, 16, 32, 64) if p < T]
    if others:
        sims = " ".join(f"{p}:{float(positions.similarity[0, p]):.2f}" for p in others)
        lines.append(f"  cosine similarity of position 0 with position {sims}")
    return lines


ComputeView = Callable[["Run", str, list[int], argparse.Namespace], Any]
RenderView = Callable[[Any, "Run", argparse.Namespace, bool], list[str]]
COMPUTE: dict[str, ComputeView] = {
    "attention": compute_attention, "next": compute_next, "tokens": compute_tokens,
    "batches": compute_batches, "embeddings": compute_embeddings,
}
RENDER: dict[str, RenderView] = {
    "attention": render_attention, "next": render_next, "tokens": render_tokens,
    "batches": render_batches, "embeddings": render_embeddings,
}
