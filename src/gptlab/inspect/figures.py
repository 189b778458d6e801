"""PNG figures of the inspect views (matplotlib, the `plot` extra), beside the library.

Each function takes a result of `gptlab.inspect` and a path, draws with the Agg backend
(no display needed) and writes the PNG atomically, so a failure leaves no partial file:

- `attention_figure(maps, labels, path)`: seed 001's `wei` as a grid of heatmaps, layers
  × heads, the `tril` mask visible as the empty upper triangle.
- `surprisal_figure(table, path)`: the text as boxes coloured by how surprised the model
  was by each token (bits), with a colour bar.
- `positions_figure(matrix, path)`: the position vectors as an image and their
  cosine-similarity matrix.

matplotlib is imported inside the functions: `import gptlab.inspect.figures` is cheap and
works without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.errors import GptlabError
from gptlab.files import atomic_write
from gptlab.inspect.attention import AttentionMaps
from gptlab.inspect.embeddings import PositionMatrix
from gptlab.inspect.predictions import NextTokenTable

# Above this many tokens, per-token tick labels overlap: label every n-th only.
MAX_LABELLED_TOKENS = 40
DPI = 110


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; GptlabError naming the extra when absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GptlabError(
            "figures need matplotlib: pip install 'gptlab[plot]' (or pip install matplotlib)"
        ) from None
    return plt


def label_text(piece: str) -> str:
    """A token piece as a one-line axis label: newlines and tabs escaped (repr without the
    quotes), spaces as `␣`, and `$` escaped so matplotlib does not read it as maths."""
    return repr(piece)[1:-1].replace(" ", "\u2423").replace("$", r"\$")


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    plt = pyplot()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        plt.close(fig)
    return path


def _token_ticks(ax: Any, labels: Sequence[str]) -> None:
    """Label both axes with the tokens; beyond MAX_LABELLED_TOKENS, every n-th position."""
    T = len(labels)
    step = 1 if T <= MAX_LABELLED_TOKENS else -(-T // MAX_LABELLED_TOKENS)
    ticks = list(range(0, T, step))
    if step == 1:
        names = [label_text(label) for label in labels]
    else:
        names = [str(t) for t in ticks]
    ax.set_xticks(ticks, names, rotation=90, fontsize=6, fontfamily="monospace")
    ax.set_yticks(ticks, names, fontsize=6, fontfamily="monospace")


def attention_figure(
    maps: AttentionMaps, labels: Sequence[str] | None, path: str | os.PathLike[str]
) -> Path:
    """A grid of heatmaps, one per layer (rows) and head (columns): maps.weights[l, h] with
    queries down and keys across, so row i is how much token i takes from each token j ≤ i.

    Args:
        maps: from `attention_maps`.
        labels: the T token pieces for the axes (None: positions).
        path: the PNG to write.

    Returns:
        path.
    """
    plt = pyplot()
    n_layer, n_head, T, _ = maps.weights.shape
    labels = list(labels) if labels is not None else [str(t) for t in range(T)]
    if len(labels) != T:
        raise GptlabError(f"{len(labels)} labels for {T} tokens: give one label per token")
    side = 2.2 + 0.09 * min(T, 64)
    fig, axes = plt.subplots(n_layer, n_head, figsize=(side * n_head, side * n_layer),
                             squeeze=False)
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer][head]
            wei = maps.weights[layer, head].numpy().copy()  # (T, T)
            wei[np.triu_indices(T, k=1)] = np.nan  # the masked future: left blank
            ax.imshow(wei, cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {head}", fontsize=8)
            _token_ticks(ax, labels)
    fig.suptitle("attention weights (wei): row = query token, column = key token")
    fig.tight_layout()
    return _save(fig, path)


def _token_colours(table: NextTokenTable) -> list[float | None]:
    """Surprisal of each token as the model met it: token t is coloured by row t-1's
    surprisal_bits (the first token was never predicted: None)."""
    return [None] + [r.surprisal_bits for r in table.rows[:-1]]


def _layout(table: NextTokenTable, line_chars: int) -> list[tuple[float, int, str, Any]]:
    """(x, line, label, bits) of each token box: x in character widths, a new line when
    the next box would pass `line_chars` or after a token holding a newline."""
    placed, x, line = [], 0.0, 0
    for row, bits in zip(table.rows, _token_colours(table), strict=True):
        text = label_text(row.piece) or " "
        if x and x + len(text) > line_chars:
            x, line = 0.0, line + 1
        placed.append((x, line, text, bits))
        x += len(text) + 0.6  # the gap that keeps neighbouring boxes apart
        if "\n" in row.piece:
            x, line = 0.0, line + 1
    return placed


def surprisal_figure(
    table: NextTokenTable, path: str | os.PathLike[str], line_chars: int = 64
) -> Path:
    """The inspected text as boxes, one per token, coloured by its surprisal in bits
    (-log2 p given the tokens before it; grey: the first token, which nothing predicts).

    Args:
        table: from `next_token_table`.
        path: the PNG to write.
        line_chars: characters per drawn line before wrapping.

    Returns:
        path.
    """
    plt = pyplot()
    from matplotlib import cm, colors

    placed = _layout(table, line_chars)
    known = [bits for *_, bits in placed if bits is not None]
    norm = colors.Normalize(vmin=0.0, vmax=max(known + [1.0]))
    cmap = plt.get_cmap("magma_r")
    n_lines = placed[-1][1] + 1
    text_h, bar_h, title_h = 0.3 * n_lines + 0.2, 0.9, 0.45  # inches
    height = text_h + bar_h + title_h
    fig = plt.figure(figsize=(0.11 * line_chars + 0.6, height))
    ax = fig.add_axes((0.02, bar_h / height, 0.96, text_h / height))
    for x, line, text, bits in placed:
        face = (0.85, 0.85, 0.85) if bits is None else cmap(norm(bits))
        ink = "white" if bits is not None and norm(bits) > 0.55 else "black"
        ax.text(x, -line, text, fontfamily="monospace", fontsize=9, va="center", color=ink,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": face, "edgecolor": "none"})
    ax.set_xlim(-0.5, line_chars + 0.5)
    ax.set_ylim(-n_lines + 0.4, 0.6)
    ax.axis("off")
    bar = fig.add_axes((0.2, 0.55 / height, 0.6, 0.12 / height))
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=bar, orientation="horizontal",
                 label="surprisal in bits: -log2 p(token | the tokens before it)")
    mean = table.mean_surprisal_bits
    fig.suptitle("how surprised the model is by each token"
                 + ("" if mean is None else f" (mean {mean:.2f} bits)"), y=1 - 0.12 / height)
    return _save(fig, path)


def positions_figure(matrix: PositionMatrix, path: str | os.PathLike[str]) -> Path:
    """Two panels: the (block_size, D) position vectors as an image, and their
    (block_size, block_size) cosine similarity (nearby positions alike: a bright diagonal).

    Args:
        matrix: from `position_matrix`.
        path: the PNG to write.

    Returns:
        path.
    """
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    image = left.imshow(matrix.vectors.numpy(), aspect="auto", cmap="RdBu_r")
    left.set_title(f"position vectors ({matrix.pos_encoding})")
    left.set_xlabel("dimension")
    left.set_ylabel("position")
    fig.colorbar(image, ax=left)
    sim = right.imshow(matrix.similarity.numpy(), cmap="viridis", vmin=-1.0, vmax=1.0)
    right.set_title("cosine similarity of positions")
    right.set_xlabel("position")
    right.set_ylabel("position")
    fig.colorbar(sim, ax=right)
    fig.tight_layout()
    return _save(fig, path)
