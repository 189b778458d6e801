"""Causal multi-head self-attention, two implementations with the same state dict.

- `CausalSelfAttention` ("fused"): one matmul for q, k, v of all heads and
  `torch.nn.functional.scaled_dot_product_attention`; the fast default.
- `MultiHeadAttention` ("reference"; also named `ReferenceSelfAttention`): the lecture's
  (seed 001) `Head` modules, each with its own `key`, `query` and `value` Linear and a
  `tril` mask, run side by side, concatenated and projected.

One deliberate difference from the seed: the seed scales the affinities by C**-0.5 with
C = n_embd; scaled dot-product attention (Vaswani et al. 2017, §3.2.1) scales by
1/√hs, the head size, and so do we (and so does the fused kernel).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.model.cache import KVCache, SlotKVCache
from gptlab.model.config import ModelConfig
from gptlab.model.norm import NORM_EPS
from gptlab.model.positional import RotaryEmbedding

QKV = ("query", "key", "value")  # the order of c_attn's three row blocks (GPT-2's)


def normed_qk(q: Tensor, k: Tensor, qk_norm: bool) -> tuple[Tensor, Tensor]:
    """With `qk_norm`, each head's query and key vectors (..., hs) divided by their RMS.

    QK-norm (Henry et al. 2020; Dehghani et al. 2023): with unit-RMS q and k the logit
    q·k/√hs lies in [-√hs, √hs], so no logit can grow until the softmax saturates and its
    gradient vanishes — which lets a higher learning rate train. No parameters (as in
    modded-nanoGPT); applied before rope, which preserves the norms anyway.
    """
    if not qk_norm:
        return q, k
    hs = q.shape[-1]
    return F.rms_norm(q, (hs,), eps=NORM_EPS), F.rms_norm(k, (hs,), eps=NORM_EPS)


def _rotate_qk(
    q: Tensor, k: Tensor, rope: RotaryEmbedding | None, kv_cache: KVCache | SlotKVCache | None
) -> tuple[Tensor, Tensor]:
    """Rotate q and k (..., T, hs) for their absolute positions; unchanged without rope."""
    if rope is None:
        return q, k
    if isinstance(kv_cache, SlotKVCache):  # each row at its own positions
        assert kv_cache.cos_sin is not None
        cos, sin = kv_cache.cos_sin  # (B, T, hs/2) each
        if q.dim() == 4:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hs/2): the same for all heads
        return rope.rotate(q, cos, sin), rope.rotate(k, cos, sin)
    start = kv_cache.pos if kv_cache is not None else 0  # absolute position of token 0
    cos, sin = rope.cos_sin(start, q.shape[-2])  # (T, hs/2) each
    return rope.rotate(q, cos, sin), rope.rotate(k, cos, sin)


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
        self.qk_norm = config.qk_norm
        self.layer_idx = layer_idx

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding | None = None,
        kv_cache: KVCache | SlotKVCache | None = None,
    ) -> Tensor:
        """(B, T, C) → (B, T, C). With `kv_cache`, x holds only the new tokens."""
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 × (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        q, k = normed_qk(q, k, self.qk_norm)
        q, k = _rotate_qk(q, k, rope, kv_cache)  # (B, nh, T, hs) each
        if isinstance(kv_cache, SlotKVCache):
            k, v = kv_cache.write(self.layer_idx, k, v)  # (B, nh, cap, hs)
            y = kv_cache.attend(q, k, v, hs**-0.5)  # (B, nh, T, hs)
            y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
            return self.resid_dropout(self.c_proj(y))
        mask, is_causal = None, T > 1
        if kv_cache is not None:
            k, v = kv_cache.write(self.layer_idx, k, v)  # (B, nh, L, hs)
            L = k.shape[2]
            if T == 1:
                is_causal = False  # the newest token sees every cached one
            elif L > T:
                # queries are the last T of L positions: query i sees keys ≤ L - T + i
                mask = torch.ones(T, L, dtype=torch.bool, device=x.device).tril(L - T)  # (T, L)
                is_causal = False
        dropout_p = self.dropout if self.training else 0.0
        y = scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> Tensor:
    """`F.scaled_dot_product_attention`, run in float32 when it is given bfloat16 tensors on
    a CPU for training (under `--dtype bfloat16` autocast): torch's CPU flash-attention
    backward in bfloat16 took 4.6x its float32 time, while the Linears around it run ~6x
    faster in bfloat16 on a CPU with AMX (docs/benchmarks.md, "bf16 on a CPU")."""
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and q.requires_grad:
        with torch.autocast("cpu", enabled=False):
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class Head(nn.Module):
    """One head of causal self-attention: seed 001's `Head`, plus rope and the KV cache.

    `index` is the head's slot in layer `layer_idx` of the KV cache.
    """

    def __init__(self, config: ModelConfig, index: int = 0, layer_idx: int = 0) -> None:
        super().__init__()
        C, hs, T = config.n_embd, config.head_size, config.block_size
        self.key = nn.Linear(C, hs, bias=config.qkv_bias)
        self.query = nn.Linear(C, hs, bias=config.qkv_bias)
        self.value = nn.Linear(C, hs, bias=config.qkv_bias)
        # not persistent: the mask is rebuilt from block_size, so checkpoints hold weights only
        self.register_buffer("tril", torch.tril(torch.ones(T, T)), persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.head_size = hs
        self.qk_norm = config.qk_norm
        self.index = index
        self.layer_idx = layer_idx

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding | None = None,
        kv_cache: KVCache | SlotKVCache | None = None,
    ) -> Tensor:
        """(B, T, C) → this head's output (B, T, hs). With `kv_cache`, x holds only the
        new tokens, and they attend to the cached ones too."""
        B, T, C = x.shape
        k = self.key(x)  # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        # the seed computes v after the softmax; the cache stores k and v together
        v = self.value(x)  # (B, T, hs)
        q, k = normed_qk(q, k, self.qk_norm)
        q, k = _rotate_qk(q, k, rope, kv_cache)  # (B, T, hs) each
        if isinstance(kv_cache, SlotKVCache):
            k, v = kv_cache.write(self.layer_idx, k, v, head=self.index)  # (B, cap, hs) each
            return kv_cache.attend(q, k, v, self.head_size**-0.5)  # (B, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.write(self.layer_idx, k, v, head=self.index)  # (B, L, hs) each
        L = k.shape[1]  # keys to attend to: L == T without a cache
        # compute attention scores ("affinities")
        wei = q @ k.transpose(-2, -1) * self.head_size**-0.5  # (B, T, hs) @ (B, hs, L) -> (B, T, L)
        # the queries are the last T of the L positions, so they take the mask's last T rows
        wei = wei.masked_fill(self.tril[L - T : L, :L] == 0, float("-inf"))  # (B, T, L)
        wei = F.softmax(wei, dim=-1)  # (B, T, L)
        wei = self.dropout(wei)
        # perform the weighted aggregation of the values
        out = wei @ v  # (B, T, L) @ (B, L, hs) -> (B, T, hs)
        return out


class MultiHeadAttention(nn.Module):
    """Multiple heads of self-attention in parallel (seed 001's `MultiHeadAttention`).

    The seed's `proj` is stored as `c_proj` (GPT-2's key), and the heads' query/key/value
    weights are saved and loaded as GPT-2's fused `c_attn` (`fuse_head_weights`), so a
    checkpoint of this module loads into `CausalSelfAttention` and back.
    """

    def __init__(self, config: ModelConfig, layer_idx: int = 0) -> None:
        super().__init__()
        C = config.n_embd
        self.heads = nn.ModuleList(Head(config, i, layer_idx) for i in range(config.n_head))
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.qk_norm = config.qk_norm  # each head applies it; `gptlab inspect` reads it here
        self.register_state_dict_post_hook(_fuse_on_save)
        self.register_load_state_dict_pre_hook(_split_on_load)

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding | None = None,
        kv_cache: KVCache | SlotKVCache | None = None,
    ) -> Tensor:
        """(B, T, C) → (B, T, C). With `kv_cache`, x holds only the new tokens."""
        # nh heads' (B, T, hs) side by side -> (B, T, nh·hs) = (B, T, C)
        out = torch.cat([h(x, rope, kv_cache) for h in self.heads], dim=-1)
        out = self.dropout(self.c_proj(out))  # (B, T, C)
        return out


ReferenceSelfAttention = MultiHeadAttention  # the public name `attention="reference"` had


def fuse_head_weights(state: dict[str, Any], prefix: str, n_head: int) -> None:
    """In place: replace the per-head entries under `prefix` by GPT-2's fused `c_attn`.

    `{prefix}heads.{i}.{query,key,value}.{weight,bias}` become `{prefix}c_attn.weight`
    (3C, C): the query rows of heads 0..nh-1, then their key rows, then their value rows
    (`c_attn.bias` (3C,) likewise). `c_attn` takes the first head entry's place, so the keys
    come out in the fused module's order. Any dict keyed like a state dict works (gradients).
    """
    fused: dict[str, Any] = {}
    consumed: set[str] = set()
    for name in ("weight", "bias"):
        parts = [f"{prefix}heads.{i}.{part}.{name}" for part in QKV for i in range(n_head)]
        if parts[0] in state:
            # nh × (hs, C) per part -> (3C, C); biases nh × (hs,) -> (3C,)
            fused[f"{prefix}c_attn.{name}"] = torch.cat([state[k] for k in parts], dim=0)
            consumed.update(parts)
    if not fused:
        return
    items = list(state.items())
    state.clear()
    for key, value in items:
        if key in consumed:
            state.update(fused)  # at the first head entry; a no-op after it
            fused = {}
        else:
            state[key] = value


def split_head_weights(state: dict[str, Any], prefix: str, n_head: int) -> None:
    """In place: the inverse of `fuse_head_weights`. Without `{prefix}c_attn.*` entries
    (a state dict already in per-head layout) nothing changes."""
    for name in ("weight", "bias"):
        fused = state.pop(f"{prefix}c_attn.{name}", None)  # (3C, C) or (3C,)
        if fused is None:
            continue
        for block, part in zip(fused.chunk(3, dim=0), QKV, strict=True):  # (C, C) each
            for i, rows in enumerate(block.chunk(n_head, dim=0)):  # (hs, C) each
                state[f"{prefix}heads.{i}.{part}.{name}"] = rows


def _fuse_on_save(module: MultiHeadAttention, state: dict, prefix: str, _meta: Any) -> None:
    fuse_head_weights(state, prefix, len(module.heads))


def _split_on_load(module: MultiHeadAttention, state: dict, prefix: str, *_args: Any) -> None:
    split_head_weights(state, prefix, len(module.heads))
