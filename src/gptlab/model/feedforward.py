"""The position-wise feed-forward network of a transformer block."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.model.config import ModelConfig


class SquaredReLU(nn.Module):
    """relu(x)², Primer's activation (So et al. 2021, §4): cheap, and in their search and
    in modded-nanoGPT's it beats GELU at the same width."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


class SwiGLU(nn.Module):
    """silu(a) · b, Shazeer 2020's gated unit: (..., 2H) → (..., H).

    The first half of the input is the gate a, the second the value b (both come out of
    one Linear, `c_fc`, so the block keeps GPT-2's two matmul names).
    """

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=-1)  # (..., H) each
        return F.silu(a) * b


def mlp_hidden_size(config: ModelConfig) -> int:
    """The hidden width H: 4C (Vaswani et al.'s d_ff = 4·d_model); for SwiGLU 2/3 of
    that, rounded up to a multiple of 8, so its three C×H matrices hold as many weights
    as the two C×4C ones (Shazeer 2020, §2). C=128 → 344."""
    if config.activation == "swiglu":
        return 8 * math.ceil(8 * config.n_embd / 3 / 8)
    return 4 * config.n_embd


class MLP(nn.Module):
    """Linear C→H, non-linearity, linear H→C, dropout (seed 001's `FeedFoward`, H = 4C).

    "gelu" is the tanh approximation GPT-2 uses (HF's "gelu_new"), so GPT-2 weights
    reproduce its outputs; "gelu_exact" is the erf form nanoGPT trains with
    (`nn.GELU()`), for its checkpoints. "relu2" is `SquaredReLU`; "swiglu" makes `c_fc`
    twice as wide (gate and value, C→2H) and H = `mlp_hidden_size`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        C, H = config.n_embd, mlp_hidden_size(config)
        gated = config.activation == "swiglu"
        self.c_fc = nn.Linear(C, 2 * H if gated else H, bias=config.bias)
        self.act: nn.Module = {
            "gelu": lambda: nn.GELU(approximate="tanh"),
            "gelu_exact": lambda: nn.GELU(),
            "relu": lambda: nn.ReLU(),
            "relu2": lambda: SquaredReLU(),
            "swiglu": lambda: SwiGLU(),
        }[config.activation]()
        self.c_proj = nn.Linear(H, C, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) → (B, T, C)."""
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # via (B, T, H)


FeedForward = MLP  # seed 003's name for it (the lecture, seed 001, spells it `FeedFoward`)
