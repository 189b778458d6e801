"""Attention maps: seed 001's `wei` for every layer and head of a trained GPT.

The fused kernel (`scaled_dot_product_attention`) returns no weights, and the model's
forward pass stays as it is. Instead one eval forward pass runs with temporary forward
pre-hooks that keep each block's attention input (ln_1's output); the weights are then
recomputed from that layer's own query and key parameters with the lecture's formula:

    wei = softmax(tril_mask(q @ kᵀ · hs^-0.5))    (seed 001; hs, not C: see model/attention.py)

with q and k rotated first when the model uses rope, exactly as the attention modules do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.errors import GptlabError
from gptlab.inspect.plain import Plain, as_sequence, evaluating, last_block
from gptlab.model import GPT
from gptlab.model.attention import CausalSelfAttention, MultiHeadAttention, normed_qk
from gptlab.model.positional import RotaryEmbedding


@dataclass(frozen=True, eq=False)
class AttentionMaps(Plain):
    """Post-softmax attention weights of one sequence.

    Fields:
        weights: (n_layer, n_head, T, T) float32 on the CPU; weights[l, h, i, j] is how much query
            position i of head h in layer l takes from key position j. Each row sums to 1,
            and every entry above the diagonal (j > i, the future) is exactly 0.
        ids: the T token ids the maps are for.
        dropped: tokens cut from the front because the sequence was longer than
            block_size (the model reads at most block_size; 0 when nothing was cut).
    """

    weights: Tensor
    ids: tuple[int, ...]
    dropped: int

    @property
    def truncated(self) -> bool:
        """Whether only the last block_size tokens were inspected."""
        return self.dropped > 0


def attention_maps(model: GPT, idx: Tensor | Sequence[int]) -> AttentionMaps:
    """Seed 001's `wei` for every layer and head: (n_layer, n_head, T, T) weights.

    Works for `attention="fused"` and `"reference"` and every `pos_encoding`; the model's
    mode (train/eval) is restored and no hook outlives the call.

    Args:
        model: a GPT.
        idx: one sequence of token ids, shape (T,) or (1, T). Longer than block_size: the
            last block_size tokens are inspected and `dropped` says how many were cut.

    Returns:
        AttentionMaps with `weights` of shape (n_layer, n_head, T, T), T ≤ block_size.

    Raises:
        GptlabError: not one sequence, no ids, or an id outside the model's vocabulary.
    """
    ids, dropped = last_block(as_sequence(idx, model.config.vocab_size), model.config.block_size)
    inputs = attention_inputs(model, ids)
    layers = zip(model.transformer.h, inputs, strict=True)
    weights = torch.stack([layer_weights(block.attn, x, model.rope) for block, x in layers])
    # (n_layer, nh, T, T)
    return AttentionMaps(weights=weights.cpu(), ids=tuple(ids.tolist()), dropped=dropped)


def attention_inputs(model: GPT, ids: Tensor) -> list[Tensor]:
    """Each block's attention input (ln_1's output) for one (T,) sequence: n_layer × (T, C)."""
    captured: list[Tensor] = []

    def keep(_module: nn.Module, args: tuple) -> None:
        captured.append(args[0].detach()[0])  # (1, T, C) -> (T, C)

    handles = [block.attn.register_forward_pre_hook(keep) for block in model.transformer.h]
    try:
        with evaluating(model) as device:
            model.hidden_states(ids[None].to(device))
    finally:
        for handle in handles:
            handle.remove()
    assert len(captured) == len(model.transformer.h)
    return captured


def query_key_weights(attn: nn.Module) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """(W_q, b_q, W_k, b_k) of one attention module, each weight (C, C) with head h's rows
    at h·hs..(h+1)·hs (c_attn's layout); the biases (C,) or None (qkv_bias=False)."""
    if isinstance(attn, CausalSelfAttention):
        C = attn.c_attn.in_features
        w, b = attn.c_attn.weight, attn.c_attn.bias  # (3C, C), (3C,) or None
        if b is None:
            return w[:C], None, w[C : 2 * C], None
        return w[:C], b[:C], w[C : 2 * C], b[C : 2 * C]
    if isinstance(attn, MultiHeadAttention):
        heads = attn.heads
        w_q = torch.cat([h.query.weight for h in heads])  # nh × (hs, C) -> (C, C)
        w_k = torch.cat([h.key.weight for h in heads])  # (C, C)
        if heads[0].query.bias is None:
            return w_q, None, w_k, None
        b_q = torch.cat([h.query.bias for h in heads])  # (C,)
        b_k = torch.cat([h.key.bias for h in heads])  # (C,)
        return w_q, b_q, w_k, b_k
    raise TypeError(f"unknown attention module {type(attn).__name__}")


def layer_weights(attn: nn.Module, x: Tensor, rope: RotaryEmbedding | None) -> Tensor:
    """One layer's attention weights (nh, T, T) from its input x (T, C), in float32."""
    T, C = x.shape
    nh = len(attn.heads) if isinstance(attn, MultiHeadAttention) else attn.n_head
    hs = C // nh
    params = query_key_weights(attn)
    w_q, b_q, w_k, b_k = (None if t is None else t.detach().float() for t in params)
    x = x.float()
    q = F.linear(x, w_q, b_q).view(T, nh, hs).transpose(0, 1)  # (T, C) -> (nh, T, hs)
    k = F.linear(x, w_k, b_k).view(T, nh, hs).transpose(0, 1)  # (nh, T, hs)
    q, k = normed_qk(q, k, attn.qk_norm)  # each head's q, k at unit RMS with qk_norm
    if rope is not None:
        cos, sin = rope.cos_sin(0, T)  # (T, hs/2) each
        q = RotaryEmbedding.rotate(q, cos, sin)  # (nh, T, hs)
        k = RotaryEmbedding.rotate(k, cos, sin)  # (nh, T, hs)
    wei = q @ k.transpose(-2, -1) * hs**-0.5  # (nh, T, hs) @ (nh, hs, T) -> (nh, T, T)
    tril = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
    wei = wei.masked_fill(~tril, float("-inf"))  # the future: -inf, so softmax gives 0
    return F.softmax(wei, dim=-1)  # (nh, T, T)


def format_attention_map(
    maps: AttentionMaps, layer: int = 0, head: int = 0, digits: int = 4
) -> list[str]:
    """One head's (T, T) map as the rows seed 001 prints for `wei`, e.g.
    `[1.0000, 0.0000, 0.0000]` then `[0.4762, 0.5238, 0.0000]` ..."""
    n_layer, n_head = maps.weights.shape[:2]
    if not (0 <= layer < n_layer and 0 <= head < n_head):
        raise GptlabError(
            f"layer {layer}, head {head} is not in this model ({n_layer} layers, {n_head} "
            f"heads): pick layer 0..{n_layer - 1} and head 0..{n_head - 1}"
        )
    rows = maps.weights[layer, head].tolist()
    return ["[" + ", ".join(f"{w:.{digits}f}" for w in row) + "]" for row in rows]
