"""Causal multi-head self-attention, two implementations with identical parameters.

Both hold `c_attn` (nn.Linear(C, 3C): rows are the queries of heads 0..nh-1, then the
keys, then the values, as in GPT-2) and `c_proj` (nn.Linear(C, C)), so a state dict saved
from one loads into the other.

- `CausalSelfAttention` ("fused"): one matmul for q, k, v of all heads and
  `torch.nn.functional.scaled_dot_product_attention`; the fast default.
- `ReferenceSelfAttention` ("reference"): the lecture's per-head `Head` modules (seed 001)
  that build the affinities q·kᵀ/√hs, mask the future with an explicit `tril`, softmax and
  aggregate the values, then concatenate the heads. Each head reads its own rows of
  `c_attn`, which is exactly the lecture's separate key/query/value Linear layers.

One deliberate difference from the seed: the seed scales the affinities by C**-0.5 with
C = n_embd; scaled dot-product attention (Vaswani et al. 2017, §3.2.1) scales by
1/√hs, the head size, and so do we (and so does the fused kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.model.cache import KVCache
from gptlab.model.config import ModelConfig
from gptlab.model.positional import RotaryEmbedding


def _rope_cos_sin(
    rope: RotaryEmbedding | None, kv_cache: KVCache | None, length: int
) -> tuple[Tensor, Tensor] | None:
    if rope is None:
        return None
    start = kv_cache.pos if kv_cache is not None else 0  # absolute position of token 0
    return rope.cos_sin(start, length)


class CausalSelfAttention(nn.Module):
    """Fused multi-head causal self-attention (one q/k/v matmul, SDPA kernel)."""

    def __init__(self, config: ModelConfig, layer_idx: int = 0) -> None:
        super().__init__()
        C = config.n_embd
        self.c_attn = nn.Linear(C, 3 * C, bias=config.qkv_bias)
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.layer_idx = layer_idx

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        """(B, T, C) → (B, T, C). With `kv_cache`, x holds only the new tokens."""
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 × (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        cos_sin = _rope_cos_sin(rope, kv_cache, T)
        if cos_sin is not None:
            q = RotaryEmbedding.rotate(q, *cos_sin)
            k = RotaryEmbedding.rotate(k, *cos_sin)
        mask, is_causal = None, T > 1
        if kv_cache is not None:
            k, v = kv_cache.write(self.layer_idx, k, v)  # (B, nh, L, hs)
            L = k.shape[2]
            if T == 1:
                is_causal = False  # the newest token sees every cached one
            elif L > T:
                # queries are the last T of L positions: query i sees keys ≤ L - T + i
                mask = torch.ones(T, L, dtype=torch.bool, device=x.device).tril(L - T)
                is_causal = False
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Head(nn.Module):
    """One head of causal self-attention, as in the lecture; its weights live in c_attn."""

    def __init__(self, index: int, head_size: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.index = index
        self.head_size = head_size
        self.register_buffer(
            "tril", torch.tril(torch.ones(block_size, block_size)), persistent=False
        )
        self.dropout = nn.Dropout(dropout)

    def project(self, x: Tensor, c_attn: nn.Linear) -> tuple[Tensor, Tensor, Tensor]:
        """This head's query, key and value of x (B, T, C), each (B, T, hs)."""
        C, hs, i = x.shape[-1], self.head_size, self.index
        rows = [slice(part * C + i * hs, part * C + (i + 1) * hs) for part in range(3)]
        bias = c_attn.bias
        return tuple(
            F.linear(x, c_attn.weight[r], None if bias is None else bias[r]) for r in rows
        )

    def forward(
        self,
        x: Tensor,
        c_attn: nn.Linear,
        layer_idx: int,
        rope: RotaryEmbedding | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        """(B, T, C) → this head's output (B, T, hs)."""
        T = x.shape[1]
        q, k, v = self.project(x, c_attn)  # (B, T, hs) each
        cos_sin = _rope_cos_sin(rope, kv_cache, T)
        if cos_sin is not None:
            q = RotaryEmbedding.rotate(q, *cos_sin)
            k = RotaryEmbedding.rotate(k, *cos_sin)
        if kv_cache is not None:
            k, v = kv_cache.write(layer_idx, k, v, head=self.index)  # (B, L, hs)
        L = k.shape[1]
        # affinities: (B, T, hs) @ (B, hs, L) -> (B, T, L)
        wei = q @ k.transpose(-2, -1) * self.head_size**-0.5
        # queries are the last T of the L positions (L == T without a cache)
        wei = wei.masked_fill(self.tril[L - T : L, :L] == 0, float("-inf"))  # (B, T, L)
        wei = F.softmax(wei, dim=-1)
        wei = self.dropout(wei)
        return wei @ v  # (B, T, L) @ (B, L, hs) -> (B, T, hs)


class ReferenceSelfAttention(nn.Module):
    """The lecture's multi-head attention: per-head modules, concatenated, projected."""

    def __init__(self, config: ModelConfig, layer_idx: int = 0) -> None:
        super().__init__()
        C = config.n_embd
        self.c_attn = nn.Linear(C, 3 * C, bias=config.qkv_bias)
        self.heads = nn.ModuleList(
            Head(i, config.head_size, config.block_size, config.dropout)
            for i in range(config.n_head)
        )
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.layer_idx = layer_idx

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        """(B, T, C) → (B, T, C). With `kv_cache`, x holds only the new tokens."""
        out = torch.cat(
            [h(x, self.c_attn, self.layer_idx, rope, kv_cache) for h in self.heads], dim=-1
        )  # (B, T, C)
        return self.resid_dropout(self.c_proj(out))


def make_attention(config: ModelConfig, layer_idx: int = 0) -> nn.Module:
    """The attention module that `config.attention` names."""
    if config.attention == "fused":
        return CausalSelfAttention(config, layer_idx)
    return ReferenceSelfAttention(config, layer_idx)
