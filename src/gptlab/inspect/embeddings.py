"""Token and position embeddings: nearest tokens by cosine similarity, and position vectors.

Seed 002 (§3) builds a token embedding table (`torch.nn.Embedding(vocab_size, output_dim)`)
and an absolute position table added to it; seed 000 derives the sinusoidal encodings.
These views show what a trained model's tables hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gptlab.checks import is_int
from gptlab.errors import GptlabError
from gptlab.inspect.plain import Plain, check_k, check_text, piece
from gptlab.model import GPT
from gptlab.tokenizers import Tokenizer


@dataclass(frozen=True)
class Neighbour(Plain):
    """One near token: its id, its text and the cosine similarity of its embedding row."""

    id: int
    piece: str
    similarity: float


@dataclass(frozen=True)
class EmbeddingNeighbours(Plain):
    """The k tokens whose rows of `transformer.wte.weight` point most nearly the same way
    as `piece`'s (the token itself left out), most similar first."""

    id: int
    piece: str
    neighbours: tuple[Neighbour, ...]


def embedding_neighbours(
    model: GPT, tokenizer: Tokenizer, token: str | int, k: int = 10
) -> EmbeddingNeighbours:
    """The k nearest tokens to `token` by cosine similarity of the token embeddings.

    Seed 002's token embedding layer, after training: rows of `transformer.wte.weight`
    (V, C) compared as cos(a, b) = a·b / (|a| |b|).

    Args:
        model: a GPT.
        tokenizer: the model's tokenizer (ids beyond its vocabulary, padding rows of a
            model whose vocab_size was rounded up, are never neighbours).
        token: one token, as its text (" the" for GPT-2, "e" for char, a special token's
            name) or its id.
        k: how many neighbours (at most the vocabulary size - 1).

    Returns:
        EmbeddingNeighbours with min(k, V - 1) rows, most similar first.

    Raises:
        GptlabError: k < 1, or `token` is not one token of the vocabulary.
    """
    check_k(k)
    vocab = min(tokenizer.vocab_size, model.config.vocab_size)
    token_id = token_id_of(tokenizer, token, vocab)
    table = model.transformer.wte.weight.detach().float()[:vocab]  # (V, C)
    unit = F.normalize(table, dim=1)  # (V, C), rows of length 1
    similarity = unit @ unit[token_id]  # (V, C) @ (C,) -> (V,)
    similarity[token_id] = float("-inf")  # not its own neighbour
    top = similarity.topk(min(k, vocab - 1))
    neighbours = tuple(
        Neighbour(id=int(i), piece=piece(tokenizer, int(i)), similarity=float(s))
        for s, i in zip(top.values, top.indices, strict=True)
    )
    return EmbeddingNeighbours(id=token_id, piece=piece(tokenizer, token_id), neighbours=neighbours)


def token_id_of(tokenizer: Tokenizer, token: str | int, vocab: int) -> int:
    """The id of one token given as an id or as its text; GptlabError when it is not one
    token of the vocabulary (several tokens, or an unknown word that became `<|unk|>`)."""
    if is_int(token):
        if not 0 <= token < vocab:
            raise GptlabError(f"token id {token} is outside the vocabulary (0..{vocab - 1})")
        return token
    check_text(token)
    if token in tokenizer.special_tokens:
        return tokenizer.special_tokens[token]
    ids = tokenizer.encode(token)
    specials = set(tokenizer.special_tokens.values())
    if len(ids) != 1 or ids[0] in specials or ids[0] >= vocab:
        pieces = [piece(tokenizer, i) for i in ids]
        raise GptlabError(
            f"{token!r} is not a token of the {tokenizer.name} vocabulary (it encodes to "
            f"{pieces}): give one token, e.g. {pieces[0]!r}"
        )
    return ids[0]


@dataclass(frozen=True, eq=False)
class PositionMatrix(Plain):
    """A model's position vectors and how alike they are.

    Fields:
        pos_encoding: "learned", "sinusoidal" or "rope".
        vectors: (block_size, D). learned: `transformer.wpe.weight` (D = n_embd);
            sinusoidal: the fixed table added to the embeddings (D = n_embd); rope adds
            nothing to the embeddings, so its rows are the rotations it applies to q and k,
            [cos(t·θ_j) for j, then sin(t·θ_j) for j] (D = head_size).
        similarity: (block_size, block_size) cosine similarity of every pair of rows.
    """

    pos_encoding: Literal["learned", "sinusoidal", "rope"]
    vectors: Tensor
    similarity: Tensor


def position_matrix(model: GPT) -> PositionMatrix:
    """The (block_size, D) position vectors of a GPT and their (block_size, block_size)
    pairwise cosine similarity: seed 002's absolute position embedding (learned), seed 000's
    sinusoidal encodings, or rope's rotation angles (see `PositionMatrix`)."""
    kind = model.config.pos_encoding
    if kind == "learned":
        vectors = model.transformer.wpe.weight  # (block_size, C)
    elif kind == "sinusoidal":
        vectors = model.sinusoidal.table  # (block_size, C)
    else:
        vectors = torch.cat([model.rope.cos_table, model.rope.sin_table], dim=1)  # (T, hs)
    vectors = vectors.detach().float().clone()
    unit = F.normalize(vectors, dim=1)  # (block_size, D)
    return PositionMatrix(pos_encoding=kind, vectors=vectors, similarity=unit @ unit.T)


def format_embedding_neighbours(result: EmbeddingNeighbours) -> list[str]:
    """`nearest to 'e' (id 43):` then one `  0.8123  'a' (39)` line per neighbour."""
    lines = [f"nearest to {result.piece!r} (id {result.id}):"]
    lines += [f"  {n.similarity:7.4f}  {n.piece!r} ({n.id})" for n in result.neighbours]
    return lines
