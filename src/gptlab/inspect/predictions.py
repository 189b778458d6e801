"""Next-token predictions: at every position, what the model expected and what came.

Seed 001 trains on exactly this: at position t the logits (B, T, V) become probabilities
by softmax, and the loss is the mean of -ln p(actual next token). Shown per token in bits
(surprisal = -log2 p), its mean over a text is that cross-entropy loss divided by ln 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from gptlab.errors import GptlabError
from gptlab.inspect.plain import (
    Plain,
    as_sequence,
    check_k,
    encode_text,
    evaluating,
    last_block,
    piece,
)
from gptlab.model import GPT
from gptlab.tokenizers import Tokenizer


@dataclass(frozen=True)
class Alternative(Plain):
    """A token the model considered next, with its probability."""

    id: int
    piece: str
    prob: float


@dataclass(frozen=True)
class NextTokenRow(Plain):
    """Position `position` of the inspected tokens.

    Fields:
        position: index among the inspected tokens (0..T-1).
        id, piece: the token at this position.
        next_id, next_piece: the token that actually follows (None at the last position).
        next_prob: the probability the model gave it, softmax(logits[position])[next_id].
        surprisal_bits: -log2(next_prob): 0 when certain, 1 bit per halving.
        top: the k likeliest next tokens, likeliest first.
    """

    position: int
    id: int
    piece: str
    next_id: int | None
    next_piece: str | None
    next_prob: float | None
    surprisal_bits: float | None
    top: tuple[Alternative, ...]


@dataclass(frozen=True)
class NextTokenTable(Plain):
    """One row per inspected token, and the mean surprisal over the tokens that have a
    next token (= the model's cross-entropy loss on the text / ln 2; None for one token).

    `dropped` tokens were cut from the front because the text was longer than block_size.
    """

    rows: tuple[NextTokenRow, ...]
    k: int
    mean_surprisal_bits: float | None
    dropped: int

    @property
    def truncated(self) -> bool:
        """Whether only the last block_size tokens were inspected."""
        return self.dropped > 0


def next_token_table(model: GPT, tokenizer: Tokenizer, text: str, k: int = 5) -> NextTokenTable:
    """Per position of `text`: the token, the next token, its probability and surprisal,
    and the k likeliest alternatives (seed 001's `logits` → `F.softmax` → loss, per token).

    Args:
        model: a GPT.
        tokenizer: the tokenizer the model was trained with.
        text: the text; longer than block_size tokens, its last block_size are inspected.
        k: alternatives per position (at most the vocabulary size).

    Returns:
        NextTokenTable with T rows, T = min(tokens in text, block_size).

    Raises:
        GptlabError: empty text, k < 1, a character outside a char vocabulary, or a
            tokenizer with ids the model does not have.
    """
    check_k(k)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise GptlabError(
            f"the {tokenizer.name} tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{model.config.vocab_size}: use the run's own tokenizer.json"
        )
    all_ids = as_sequence(encode_text(tokenizer, text), model.config.vocab_size)
    ids, dropped = last_block(all_ids, model.config.block_size)
    with evaluating(model) as device:
        logits, _ = model(ids[None].to(device))  # (1, T, V)
    logits = logits[0].float().cpu()  # (T, V)
    probs = F.softmax(logits, dim=-1)  # (T, V)
    surprisal = -F.log_softmax(logits, dim=-1) / math.log(2)  # (T, V), bits
    rows = _rows(tokenizer, ids.tolist(), probs, surprisal, k)
    known = [r.surprisal_bits for r in rows if r.surprisal_bits is not None]
    mean = sum(known) / len(known) if known else None
    return NextTokenTable(rows=tuple(rows), k=k, mean_surprisal_bits=mean, dropped=dropped)


def _rows(
    tokenizer: Tokenizer, ids: list[int], probs: Tensor, surprisal: Tensor, k: int
) -> list[NextTokenRow]:
    """One NextTokenRow per id, from probabilities and surprisals of shape (T, V)."""
    top = probs[:, : tokenizer.vocab_size].topk(min(k, tokenizer.vocab_size), dim=-1)
    rows = []
    for t, token_id in enumerate(ids):
        nxt = ids[t + 1] if t + 1 < len(ids) else None
        alternatives = tuple(
            Alternative(id=int(i), piece=piece(tokenizer, int(i)), prob=float(p))
            for p, i in zip(top.values[t], top.indices[t], strict=True)
        )
        rows.append(
            NextTokenRow(
                position=t,
                id=token_id,
                piece=piece(tokenizer, token_id),
                next_id=nxt,
                next_piece=None if nxt is None else piece(tokenizer, nxt),
                next_prob=None if nxt is None else float(probs[t, nxt]),
                surprisal_bits=None if nxt is None else float(surprisal[t, nxt]),
                top=alternatives,
            )
        )
    return rows


def format_next_token_table(table: NextTokenTable, width: int = 12) -> list[str]:
    """Aligned text lines: `pos  token  next  p(next)  bits  top-k`, then the mean."""
    lines = []
    if table.truncated:
        lines.append(f"(the first {table.dropped} tokens are cut: the model reads block_size)")
    lines.append(f"{'pos':>4}  {'token':<{width}}  {'next':<{width}}  {'p(next)':>7}  "
                 f"{'bits':>6}  top {table.k}")
    for r in table.rows:
        nxt = "" if r.next_piece is None else _clip(repr(r.next_piece), width)
        prob = "" if r.next_prob is None else f"{r.next_prob:.4f}"
        bits = "" if r.surprisal_bits is None else f"{r.surprisal_bits:.2f}"
        top = " ".join(f"{a.piece!r}:{a.prob:.2f}" for a in r.top)
        lines.append(f"{r.position:>4}  {_clip(repr(r.piece), width):<{width}}  "
                     f"{nxt:<{width}}  {prob:>7}  {bits:>6}  {top}")
    if table.mean_surprisal_bits is not None:
        lines.append(f"mean surprisal: {table.mean_surprisal_bits:.4f} bits/token")
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
