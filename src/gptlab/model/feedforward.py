"""The position-wise feed-forward network of a transformer block."""

from __future__ import annotations

from torch import Tensor, nn

from gptlab.model.config import ModelConfig


class MLP(nn.Module):
    """Linear C→4C, non-linearity, linear 4C→C, dropout (seed 001's `FeedFoward`).

    The 4x expansion is Vaswani et al.'s d_ff = 4·d_model. "gelu" is the tanh
    approximation GPT-2 uses (HF's "gelu_new"), so GPT-2 weights reproduce its outputs;
    "gelu_exact" is the erf form nanoGPT trains with (`nn.GELU()`), for its checkpoints.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        C = config.n_embd
        self.c_fc = nn.Linear(C, 4 * C, bias=config.bias)
        self.act: nn.Module = {
            "gelu": lambda: nn.GELU(approximate="tanh"),
            "gelu_exact": lambda: nn.GELU(),
            "relu": lambda: nn.ReLU(),
        }[config.activation]()
        self.c_proj = nn.Linear(4 * C, C, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) → (B, T, C)."""
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # via (B, T, 4C)


FeedForward = MLP  # seed 003's name for it (the lecture, seed 001, spells it `FeedFoward`)
