"""The KV cache at the model level: cached forward passes equal the full forward pass."""

from __future__ import annotations

import pytest
import torch

from gptlab.errors import GptlabError
from gptlab.model import GPT, ModelConfig


def tiny_model(**overrides) -> GPT:
    fields = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)
    fields.update(overrides)
    torch.manual_seed(0)
    return GPT(ModelConfig(**fields)).eval()


@pytest.mark.parametrize("attention", ["fused", "reference"])
@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope"])
def test_chunked_cached_forward_equals_full_forward(attention, pos_encoding):
    model = tiny_model(attention=attention, pos_encoding=pos_encoding, qkv_bias=True)
    idx = torch.randint(0, 23, (3, 16), generator=torch.Generator().manual_seed(0))
    cache = model.new_kv_cache(3)
    with torch.no_grad():
        full, _ = model(idx)
        parts = []
        for start, end in [(0, 5), (5, 6), (6, 11), (11, 12), (12, 16)]:  # prefill, 1, chunk
            logits, _ = model(idx[:, start:end], kv_cache=cache)
            parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.pos == 16


def test_last_only_returns_the_last_position():
    model = tiny_model()
    idx = torch.randint(0, 23, (2, 9))
    with torch.no_grad():
        full, _ = model(idx)
        last, _ = model(idx, last_only=True)
    torch.testing.assert_close(last, full[:, -1:])
    with pytest.raises(GptlabError, match="last_only=True computes no loss"):
        model(idx, idx, last_only=True)


def test_full_linear_cache_is_a_clear_error():
    model = tiny_model()
    cache = model.new_kv_cache(1)
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
        with pytest.raises(GptlabError, match=r"KV cache full: 16 \+ 1 tokens exceed its 16"):
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


def test_rolling_cache_takes_one_token_per_step_once_full():
    model = tiny_model(pos_encoding="rope")
    cache = model.new_kv_cache(1, rolling=True)
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
        for _ in range(20):  # wraps around the 16 slots
            logits, _ = model(torch.ones(1, 1, dtype=torch.long), kv_cache=cache)
        assert cache.pos == 36 and torch.isfinite(logits).all()
        with pytest.raises(GptlabError, match="takes one token per step, got 2"):
            model(torch.ones(1, 2, dtype=torch.long), kv_cache=cache)
