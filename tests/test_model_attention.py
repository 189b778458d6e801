"""Attention: the lecture's Head, fused == reference, and checkpoints that move between them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlab.checkpoint import load_weights, save_weights
from gptlab.model import GPT, ModelConfig
from gptlab.model.attention import (
    Head,
    MultiHeadAttention,
    ReferenceSelfAttention,
    fuse_head_weights,
    split_head_weights,
)

POS_ENCODINGS = ["learned", "sinusoidal", "rope"]
TINY = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(**{**TINY, **overrides})).eval()


def twin(model: GPT, attention: str) -> GPT:
    """A model like `model` with the other attention and, through its state dict, the same
    weights (the two inits draw differently, so equal seeds do not give equal weights)."""
    other = GPT(ModelConfig(**{**model.config.to_dict(), "attention": attention})).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    return other


def ids(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 23, (B, T), generator=torch.Generator().manual_seed(seed))


def test_head_forward_is_the_seeds_formula():
    """Seed 001's Head, computed by hand from the head's own key/query/value weights."""
    config = ModelConfig(**TINY, qkv_bias=True)
    torch.manual_seed(3)
    head = Head(config).eval()
    for p in head.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(2, 7, 16)
    B, T, C = x.shape
    hs = config.head_size
    k = x @ head.key.weight.T + head.key.bias  # (B, T, hs)
    q = x @ head.query.weight.T + head.query.bias  # (B, T, hs)
    wei = q @ k.transpose(-2, -1) * hs**-0.5  # (B, T, T)
    wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))
    wei = F.softmax(wei, dim=-1)
    v = x @ head.value.weight.T + head.value.bias  # (B, T, hs)
    expected = wei @ v  # (B, T, hs)
    with torch.no_grad():
        torch.testing.assert_close(head(x), expected, atol=1e-6, rtol=1e-5)
    assert [n for n, _ in head.named_parameters()] == [
        "key.weight", "key.bias", "query.weight", "query.bias", "value.weight", "value.bias",
    ]
    assert head.key.weight.shape == (hs, C) and head.tril.shape == (16, 16)


def test_multi_head_attention_concatenates_heads_then_projects():
    config = ModelConfig(**TINY)
    torch.manual_seed(4)
    mha = MultiHeadAttention(config).eval()
    assert ReferenceSelfAttention is MultiHeadAttention
    x = torch.randn(3, 9, 16)
    with torch.no_grad():
        heads = torch.cat([h(x) for h in mha.heads], dim=-1)  # (B, T, C)
        torch.testing.assert_close(mha(x), mha.c_proj(heads), atol=0, rtol=0)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_reference_saves_gpt2_keys_in_the_fused_order(qkv_bias):
    fused = tiny_model(qkv_bias=qkv_bias)
    reference = tiny_model(qkv_bias=qkv_bias, attention="reference")
    ref_sd, fused_sd = reference.state_dict(), fused.state_dict()
    assert list(ref_sd) == list(fused_sd)
    assert {k: v.shape for k, v in ref_sd.items()} == {k: v.shape for k, v in fused_sd.items()}
    assert ("transformer.h.1.attn.c_attn.bias" in ref_sd) == qkv_bias
    assert ref_sd["transformer.h.1.attn.c_attn.weight"].shape == (48, 16)
    # the parameters themselves are per head
    names = [n for n, _ in reference.named_parameters()]
    assert "transformer.h.0.attn.heads.1.key.weight" in names
    assert not [n for n in names if "c_attn" in n]


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_c_attn_rows_are_query_then_key_then_value_of_each_head(qkv_bias):
    fused = tiny_model(qkv_bias=qkv_bias)
    reference = twin(fused, "reference")
    C, hs = 16, 8
    c_attn = fused.transformer.h[1].attn.c_attn
    for part, name in enumerate(("query", "key", "value")):
        for i, head in enumerate(reference.transformer.h[1].attn.heads):
            rows = slice(part * C + i * hs, part * C + (i + 1) * hs)
            linear = getattr(head, name)
            assert torch.equal(linear.weight, c_attn.weight[rows])
            if qkv_bias:
                assert torch.equal(linear.bias, c_attn.bias[rows])
    # and back: the reference state dict is the fused one, tensor for tensor
    for key, tensor in reference.state_dict().items():
        assert torch.equal(tensor, fused.state_dict()[key]), key


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_fused_and_reference_give_the_same_logits(pos_encoding, qkv_bias):
    fused = tiny_model(pos_encoding=pos_encoding, qkv_bias=qkv_bias, activation="gelu")
    reference = twin(fused, "reference")  # strict load, fused -> reference
    idx = ids(3, 16)
    with torch.no_grad():
        a, _ = fused(idx)
        b, _ = reference(idx)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and the other way round: a reference model's weights load strictly into a fused one
    other = tiny_model(seed=9, pos_encoding=pos_encoding, qkv_bias=qkv_bias, activation="gelu")
    reference.load_state_dict(other.state_dict(), strict=True)  # new weights into reference
    fused.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fused(idx)[0], reference(idx)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused(idx)[0], other(idx)[0], atol=0, rtol=0)


def test_fused_and_reference_give_the_same_gradients():
    fused = tiny_model(pos_encoding="rope", qkv_bias=True)
    reference = twin(fused, "reference")
    gen = torch.Generator().manual_seed(8)
    idx, targets = torch.randint(0, 23, (2, 2, 16), generator=gen)
    for model in (fused, reference):
        model(idx, targets)[1].backward()
    grads = {name: p.grad for name, p in reference.named_parameters()}
    for i in range(reference.config.n_layer):  # the heads' gradients in c_attn's layout
        fuse_head_weights(grads, f"transformer.h.{i}.attn.", reference.config.n_head)
    fused_grads = {name: p.grad for name, p in fused.named_parameters()}
    assert list(grads) == list(fused_grads)
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, grads[name], atol=1e-5, rtol=1e-4)


def test_split_undoes_fuse_and_leaves_per_head_dicts_alone():
    reference = tiny_model(qkv_bias=True, attention="reference")
    per_head = {n: p.detach() for n, p in reference.named_parameters()}
    fused = dict(per_head)
    fuse_head_weights(fused, "transformer.h.0.attn.", 2)
    fuse_head_weights(fused, "transformer.h.1.attn.", 2)
    assert "transformer.h.0.attn.c_attn.weight" in fused
    back = dict(fused)
    for i in (0, 1):
        split_head_weights(back, f"transformer.h.{i}.attn.", 2)
    assert set(back) == set(per_head)
    assert all(torch.equal(back[k], per_head[k]) for k in per_head)
    unchanged = dict(per_head)
    split_head_weights(unchanged, "transformer.h.0.attn.", 2)
    assert unchanged.keys() == per_head.keys()
    # a per-head state dict also loads strictly
    twin_model = tiny_model(seed=5, qkv_bias=True, attention="reference")
    twin_model.load_state_dict(per_head, strict=True)


@pytest.mark.parametrize("src_attention", ["fused", "reference"])
def test_safetensors_checkpoints_move_between_attentions(tmp_path, src_attention):
    dst_attention = "reference" if src_attention == "fused" else "fused"
    src = tiny_model(qkv_bias=True, tie_weights=True, attention=src_attention)
    path = tmp_path / "model.safetensors"
    save_weights(path, src)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "transformer.h.0.attn.c_attn.weight" in keys
    assert not [k for k in keys if ".heads." in k]
    dst = tiny_model(seed=7, qkv_bias=True, tie_weights=True, attention=dst_attention)
    load_weights(path, dst)
    idx = ids(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(dst(idx)[0], src(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_kv_cached_reference_greedy_equals_uncached(pos_encoding):
    model = tiny_model(pos_encoding=pos_encoding, attention="reference", qkv_bias=True)
    idx = ids(2, 4)
    cache = model.new_kv_cache(2)
    with torch.no_grad():
        logits, _ = model(idx, kv_cache=cache, last_only=True)
        cached = idx
        for _ in range(12):  # up to the full window
            nxt = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            cached = torch.cat((cached, nxt), dim=1)
            logits, _ = model(nxt, kv_cache=cache, last_only=True)
        plain = idx
        for _ in range(12):
            nxt = model(plain, last_only=True)[0][:, -1].argmax(-1, keepdim=True)
            plain = torch.cat((plain, nxt), dim=1)
    assert torch.equal(cached, plain)
    assert cache.pos == 16


def test_rolling_cache_reference_equals_fused_past_the_window():
    fused = tiny_model(pos_encoding="rope", qkv_bias=True)
    reference = twin(fused, "reference")
    out = {}
    with torch.no_grad():
        for name, model in (("fused", fused), ("reference", reference)):
            cache = model.new_kv_cache(2, rolling=True)
            steps = [model(ids(2, 10), kv_cache=cache)[0][:, -1]]
            for t in range(20):  # wraps around the 16 slots
                steps.append(model(ids(2, 1, seed=t), kv_cache=cache)[0][:, -1])
            out[name] = torch.stack(steps)
    torch.testing.assert_close(out["reference"], out["fused"], atol=1e-5, rtol=1e-5)


def test_cpu_bf16_training_attention_runs_in_float32():
    """Under bf16 autocast on a CPU, attention for training is float32 SDPA on the upcast
    tensors (torch's bf16 CPU flash-attention backward is ~4.6x slower), cast back; without
    gradients (inference) it is bf16 SDPA, as before."""
    from gptlab.model.attention import scaled_dot_product_attention

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 9, 8, generator=gen).bfloat16() for _ in range(3))
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                              is_causal=True).bfloat16()
    leaf = q.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = scaled_dot_product_attention(leaf, k, v, is_causal=True)
    assert y.dtype == torch.bfloat16 and torch.equal(y, expected)
    y.float().sum().backward()
    assert leaf.grad.dtype == torch.bfloat16 and leaf.grad.abs().sum() > 0
    plain = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(scaled_dot_product_attention(q, k, v, is_causal=True), plain)
