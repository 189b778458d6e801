"""Positional encodings: sinusoidal (added to the embeddings) and rotary (applied to q, k).

The learned encoding is a plain `nn.Embedding(block_size, n_embd)` owned by the GPT
(`transformer.wpe`, as in GPT-2), so it is not repeated here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(n_positions: int, n_embd: int, base: float = 10000.0) -> Tensor:
    """The fixed encodings of "Attention is all you need" (Vaswani et al. 2017, §3.5).

    PE[t, 2i] = sin(t / base^(2i/C)) and PE[t, 2i+1] = cos(t / base^(2i/C)).
    Seed 000's loop computes the even columns the same way but uses the exponent (2i+1)/C
    for the odd (cosine) columns; we follow the paper so each sin/cos pair shares one
    frequency, which is what makes PE[t+k] a rotation of PE[t].

    Returns a float32 (T, C) table, T = n_positions and C = n_embd (even).
    """
    assert n_embd % 2 == 0, "sinusoidal encodings need an even n_embd"
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (T, 1)
    two_i = torch.arange(0, n_embd, 2, dtype=torch.float64)  # (C/2,)
    angle = position / base ** (two_i / n_embd)  # (T, C/2)
    table = torch.empty(n_positions, n_embd, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Adds no parameters: a (block_size, C) table kept as a non-persistent buffer."""

    def __init__(self, block_size: int, n_embd: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(block_size, n_embd), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """(T,) integer positions → (T, C) encodings."""
        return self.table[positions]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021, "RoFormer").

    Each pair of channels (j, j + hs/2) of a query or key at position t is rotated by the
    angle t·θ_j with θ_j = base^(-2j/hs) (the "rotate half" layout of GPT-NeoX/LLaMA).
    A query at position m and a key at position n then score q·k as a function of m - n
    only, which is why cached keys stay valid when the window slides.
    No parameters; angles for any position are computed on the fly (cheap next to the
    matmuls), with a cached table for positions below block_size.
    """

    def __init__(self, head_size: int, block_size: int, base: float = 10000.0) -> None:
        super().__init__()
        assert head_size % 2 == 0, "rope needs an even head size"
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)  # (hs/2,)
        cos, sin = self._angles(torch.arange(block_size))
        self.register_buffer("cos_table", cos, persistent=False)  # (block_size, hs/2)
        self.register_buffer("sin_table", sin, persistent=False)

    def _angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        # float64 for the product so large positions (rolling caches) keep their precision
        angle = positions.double()[:, None] * self.inv_freq.double()[None, :]  # (T, hs/2)
        return angle.cos().float(), angle.sin().float()

    def cos_sin(self, start: int, length: int) -> tuple[Tensor, Tensor]:
        """cos and sin of the angles for positions start..start+length-1, each (T, hs/2)."""
        if start + length <= self.cos_table.shape[0]:
            return self.cos_table[start : start + length], self.sin_table[start : start + length]
        positions = torch.arange(start, start + length, device=self.inv_freq.device)
        return self._angles(positions)

    def cos_sin_at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin for any integer positions (B, T) → (B, T, hs/2) each.

        Positions in the table are looked up; those past it are computed one at a time (a
        vectorised cos can round an element differently from a scalar one, and a row's
        angles must not depend on what else is in the tensor).
        """
        size = self.cos_table.shape[0]
        cos = self.cos_table[positions.clamp(max=size - 1)]  # (B, T, hs/2)
        sin = self.sin_table[positions.clamp(max=size - 1)]
        past = (positions >= size).nonzero().tolist()  # usually none
        for index in map(tuple, past):
            cos[index], sin[index] = (t[0] for t in self.cos_sin(int(positions[index]), 1))
        return cos, sin

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate x (..., T, hs) by the angles whose cos/sin are (T, hs/2)."""
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]  # (..., T, hs/2) each
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def rope_angle(position: int, pair: int, head_size: int, base: float = 10000.0) -> float:
    """The closed-form rotation angle t·base^(-2j/hs) of channel pair j (for tests/docs)."""
    return position * math.pow(base, -2.0 * pair / head_size)
