"""The bigram baseline: each token reads the next token's logits from a lookup table."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.checks import is_int
from gptlab.errors import GptlabError


class BigramLanguageModel(nn.Module):
    """Seed 001's first model: a (V, V) table whose row i holds the logits after token i.

    The table starts at N(0, 0.02²) rather than the seed's N(0, 1) (nn.Embedding's
    default): near-uniform predictions give an initial loss of about ln(V), the loss of
    knowing nothing, where the seed's init starts higher because confident random guesses
    cost extra. The model only ever looks at the last token, so its context size is 1.
    """

    context_size = 1

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        if not is_int(vocab_size) or vocab_size <= 0:
            raise GptlabError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)
        nn.init.normal_(self.token_embedding_table.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, ignore_index: int = -100
    ) -> tuple[Tensor, Tensor | None]:
        """(B, T) ids → logits (B, T, V) and the mean cross-entropy (None without targets)."""
        if idx.dim() != 2:
            raise GptlabError(f"idx must be a (B, T) tensor of token ids, got {tuple(idx.shape)}")
        logits = self.token_embedding_table(idx)  # (B, T, V)
        if targets is None:
            return logits, None
        if targets.shape != idx.shape:
            raise GptlabError(
                f"targets of shape {tuple(targets.shape)} do not match idx of shape "
                f"{tuple(idx.shape)}: pass one next-token id per input token"
            )
        V = logits.size(-1)
        # flatten positions for cross_entropy: (B, T, V) -> (B·T, V), targets (B·T,)
        loss = F.cross_entropy(logits.view(-1, V), targets.reshape(-1), ignore_index=ignore_index)
        return logits, loss

    def num_parameters(self, non_embedding: bool = False) -> int:
        """V² (the table is both embedding and output, so non_embedding changes nothing)."""
        return sum(p.numel() for p in self.parameters())

    def summary(self) -> str:
        """A one-line description with the parameter count."""
        n = self.num_parameters()
        V = self.vocab_size
        return f"BigramLanguageModel: vocab {V}, table {V}x{V} = {n:,} parameters"
