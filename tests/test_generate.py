"""Generation: KV cache equals recompute, sampling rules, stop tokens, streaming, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlab.errors import GptlabError
from gptlab.generate import SamplingConfig, SamplingError, generate, sample_next_token, stream
from gptlab.model import GPT, BigramLanguageModel, ModelConfig

V = 23
POS_ENCODINGS = ["learned", "sinusoidal", "rope"]


def tiny_model(seed: int = 0, **overrides) -> GPT:
    """2 layers, 2 heads, 16 channels, block 16; larger-than-default init so that greedy
    decoding does not collapse onto one token (which would make equality tests weak)."""
    fields = dict(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16)
    fields.update(overrides)
    torch.manual_seed(seed)
    model = GPT(ModelConfig(**{**fields, "attention": "fused"}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    if fields.get("attention", "fused") != "fused":  # the same weights for either attention
        other = GPT(ModelConfig(**fields))
        other.load_state_dict(model.state_dict(), strict=True)
        model = other
    return model.eval()


def prompt(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def seed_loop(model, idx, max_new_tokens, block_size, generator=None, greedy=False):
    """The seed's generate loop (seed 001), with an optional private generator."""
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block_size:])
        logits = logits[:, -1, :]  # (B, V)
        if greedy:
            idx_next = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


@pytest.mark.parametrize("attention", ["fused", "reference"])
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_kv_cache_greedy_equals_recompute_within_and_past_the_window(attention, pos_encoding):
    model = tiny_model(attention=attention, pos_encoding=pos_encoding)
    seen: set[int] = set()
    for T in (1, 5, 16, 21):  # inside the window, exactly full, longer than block_size
        idx = prompt(2, T)
        cached = generate(model, idx, 30, greedy=True)
        plain = generate(model, idx, 30, greedy=True, use_cache=False)
        with torch.no_grad():
            expected = seed_loop(model, idx, 30, 16, greedy=True)
        assert torch.equal(cached, plain)
        assert torch.equal(plain, expected)
        assert cached.shape == (2, T + 30)
        seen.update(cached[:, T:].flatten().tolist())
    assert len(seen) > 4  # real sequences, not one repeated token


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_kv_cache_seeded_sampling_equals_the_seed_loop(pos_encoding):
    model = tiny_model(pos_encoding=pos_encoding)
    idx = prompt(3, 4)
    cached = generate(model, idx, 40, seed=7)
    plain = generate(model, idx, 40, seed=7, use_cache=False)
    with torch.no_grad():
        expected = seed_loop(model, idx, 40, 16, generator=torch.Generator().manual_seed(7))
    assert torch.equal(cached, plain)
    assert torch.equal(cached, expected)
    # filters too: same draws with and without the cache
    a = generate(model, idx, 40, seed=3, temperature=0.8, top_k=5, top_p=0.9)
    b = generate(model, idx, 40, seed=3, temperature=0.8, top_k=5, top_p=0.9, use_cache=False)
    assert torch.equal(a, b)


def test_seed_is_reproducible_and_leaves_the_global_rng_alone():
    model = tiny_model()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = generate(model, prompt(1, 3), 20, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = generate(model, prompt(1, 3), 20, seed=5)
    c = generate(model, prompt(1, 3), 20, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_generation_equals_row_by_row():
    model = tiny_model()
    idx = prompt(3, 6)
    batch = generate(model, idx, 25, greedy=True)
    for row in range(3):
        single = generate(model, idx[row : row + 1], 25, greedy=True)
        assert torch.equal(batch[row : row + 1], single)
    repeated = generate(model, idx[:1], 5, greedy=True, num_samples=4)
    assert repeated.shape == (4, 11) and torch.equal(repeated[0], repeated[3])


def test_rope_rolling_cache_matches_the_cropped_loop_for_one_layer():
    # With one layer, keys depend on their own token only, and RoPE keys are position-free
    # up to a rotation: the rolling cache is then the cropped recompute, past the window.
    model = tiny_model(pos_encoding="rope", n_layer=1)
    idx = prompt(2, 3)
    rolling = generate(model, idx, 50, greedy=True, exact=False)
    exact = generate(model, idx, 50, greedy=True, use_cache=False)
    assert torch.equal(rolling, exact)


def test_rope_rolling_cache_is_sliding_window_attention_for_deep_models():
    # Within the window the rolling cache is exact; past it, layer-2 keys remember tokens
    # that left the window, so (as documented) it is not the cropped recompute.
    model = tiny_model(pos_encoding="rope", n_layer=2)
    idx = prompt(4, 3)
    rolling = generate(model, idx, 60, greedy=True, exact=False)
    exact = generate(model, idx, 60, greedy=True)
    assert torch.equal(rolling[:, :17], exact[:, :17])
    assert not torch.equal(rolling, exact)


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal"])
def test_restart_mode_equals_its_documented_recompute(pos_encoding):
    model = tiny_model(pos_encoding=pos_encoding)
    idx = prompt(2, 20)  # longer than the window
    fast = generate(model, idx, 40, greedy=True, exact=False)
    seq, start = idx, 20 - 16
    with torch.no_grad():
        for _ in range(40):
            if seq.shape[1] - start > 16:
                start = seq.shape[1] - 8  # re-run the last half window
            logits, _ = model(seq[:, start:])
            seq = torch.cat((seq, logits[:, -1:].argmax(-1)), dim=1)
    assert torch.equal(fast, seq)


def test_rolling_cache_needs_rope():
    with pytest.raises(GptlabError, match="rolling KV cache needs pos_encoding='rope'"):
        tiny_model().new_kv_cache(1, rolling=True)


def test_stop_tokens_finish_rows_and_pad_with_the_stop_token():
    model = tiny_model()
    idx = prompt(2, 4, seed=3)
    free = generate(model, idx, 30, greedy=True)
    stop = free[0, 4 + 5].item()  # row 0's sixth new token
    out = generate(model, idx, 30, greedy=True, stop_tokens=[stop])
    row0 = out[0, 4:].tolist()
    first = row0.index(stop)
    assert row0[: first + 1] == free[0, 4 : 4 + first + 1].tolist()
    assert set(row0[first:]) == {stop}
    if stop in free[1, 4:].tolist():  # both rows stop: generation ends early
        assert out.shape[1] < 34
    else:
        assert out.shape[1] == 34 and torch.equal(out[1], free[1])
    # all rows stop after their first token: exactly one step
    both = generate(model, idx, 30, greedy=True, stop_tokens=free[:, 4].tolist())
    assert both.shape == (2, 5)


def test_stream_yields_the_new_tokens_of_generate():
    model = tiny_model()
    idx = prompt(2, 3)
    steps = list(stream(model, idx, 12, seed=9, top_k=4))
    assert len(steps) == 12 and all(s.shape == (2,) for s in steps)
    full = generate(model, idx, 12, seed=9, top_k=4)
    assert torch.equal(torch.stack(steps, dim=1), full[:, 3:])


def test_stream_checks_arguments_before_the_first_step():
    with pytest.raises(GptlabError, match=r"top_p must be in \(0, 1\], got 0"):
        stream(tiny_model(), [1, 2], 5, top_p=0)


def test_empty_prompt_starts_from_the_start_token():
    model = tiny_model()
    out = generate(model, torch.zeros(2, 0, dtype=torch.long), 5, greedy=True)
    assert out.shape == (2, 6) and out[:, 0].tolist() == [0, 0]
    out = generate(model, [], 5, greedy=True, start_token=7)
    assert out.shape == (1, 6) and out[0, 0].item() == 7
    assert torch.equal(out, generate(model, [7], 5, greedy=True))


def test_temperature_zero_and_top_k_one_are_greedy_and_top_k_is_clamped():
    model = tiny_model()
    idx = prompt(2, 5)
    greedy = generate(model, idx, 15, greedy=True)
    assert torch.equal(generate(model, idx, 15, temperature=0), greedy)
    assert torch.equal(generate(model, idx, 15, top_k=1, seed=2), greedy)
    clamped = generate(model, idx, 15, top_k=10_000, seed=2)
    assert torch.equal(clamped, generate(model, idx, 15, seed=2))


def test_sample_next_token_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    top2 = sample_next_token(logits, top_k=2, generator=gen)
    assert set(top2.tolist()) == {0, 1}
    nucleus = sample_next_token(logits, top_p=0.8, generator=gen)  # 0.5 + 0.3 reaches 0.8
    assert set(nucleus.tolist()) == {0, 1}
    nucleus = sample_next_token(logits, top_p=0.81, generator=gen)
    assert set(nucleus.tolist()) == {0, 1, 2}
    assert set(sample_next_token(logits, top_p=0.1, generator=gen).tolist()) == {0}
    # frequencies follow the probabilities
    counts = torch.bincount(sample_next_token(logits, generator=gen), minlength=4) / 2000
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.04, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
        ({"temperature": -0.5},
         r"temperature must be a finite number >= 0 \(0 means greedy\), got -0.5"),
        ({"top_k": 0}, "top_k must be an integer >= 1 or None, got 0"),
        ({"max_new_tokens": -1}, "max_new_tokens must be an integer >= 0, got -1"),
        ({"stop_tokens": [99]}, r"stop token=99 is outside the vocabulary 0..22"),
        ({"idx": [[1, 50]]}, r"prompt token id 50 is outside the vocabulary 0..22"),
        ({"idx": torch.ones(1, 3)}, "prompt ids must be integers"),
        ({"idx": [], "start_token": 23}, r"start_token=23 is outside the vocabulary"),
        ({"num_samples": 0}, "num_samples must be an integer >= 1, got 0"),
        ({"idx": [[1, 2], [3]]}, "prompt must be a list of token ids or of equal-length rows"),
    ],
)
def test_bad_generation_arguments_are_clear_errors(kwargs, message):
    args = {"idx": [1, 2, 3], "max_new_tokens": 4, **kwargs}
    with pytest.raises(GptlabError, match=message):
        generate(tiny_model(), **args)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"temperature": float("inf")}, "temperature", "must be a finite number >= 0"),
        ({"temperature": float("nan")}, "temperature", "must be a finite number >= 0"),
        ({"temperature": True}, "temperature", "must be a finite number >= 0"),
        ({"top_k": 2.0}, "top_k", "must be an integer >= 1 or None, got 2.0"),
        ({"top_p": float("nan")}, "top_p", r"must be in \(0, 1\], got nan"),
        ({"seed": -1}, "seed", r"seed must be in \[0, 2\*\*63\), got -1"),
        ({"seed": 2**63}, "seed", r"must be in \[0, 2\*\*63\)"),
        ({"seed": "7"}, "seed", "seed must be an integer or None, got '7'"),
        ({"greedy": 1}, "greedy", "greedy must be True or False, got 1"),
        ({"exact": None}, "exact", "exact must be True or False, got None"),
        ({"stop_tokens": 5}, "stop_tokens", "must be an iterable of token ids, got 5"),
        ({"stop_tokens": [1, -2]}, "stop_tokens", r"must be token ids \(integers >= 0\), got -2"),
        ({"start_token": True}, "start_token", "start_token must be a token id"),
        ({"num_samples": 1.0}, "num_samples", "num_samples must be an integer >= 1, got 1.0"),
    ],
)
def test_sampling_config_names_the_bad_field(fields, field, message):
    with pytest.raises(SamplingError, match=message) as info:
        SamplingConfig(**fields)
    assert info.value.field == field and isinstance(info.value, GptlabError)
    assert str(info.value) == f"{field} {info.value.rule}, got {info.value.value!r}"


def test_a_sampling_config_equals_the_same_keywords_and_keywords_override_it():
    model = tiny_model()
    idx = prompt(2, 4)
    config = SamplingConfig(temperature=0.8, top_k=5, top_p=0.9, seed=4, stop_tokens=[3])
    assert config.stop_tokens == (3,)  # any iterable, stored as a tuple
    by_keywords = generate(model, idx, 20, temperature=0.8, top_k=5, top_p=0.9, seed=4,
                           stop_tokens=[3])
    assert torch.equal(generate(model, idx, 20, sampling=config), by_keywords)
    steps = list(stream(model, idx, 20, sampling=config))
    assert torch.equal(torch.stack(steps, dim=1), by_keywords[:, 4:])
    overridden = generate(model, idx, 20, sampling=config, seed=5, stop_tokens=())
    assert torch.equal(overridden, generate(model, idx, 20, temperature=0.8, top_k=5,
                                            top_p=0.9, seed=5))
    with pytest.raises(SamplingError, match="top_p must be in"):
        generate(model, idx, 20, sampling=config, top_p=2)


def test_generation_keeps_training_mode_and_ignores_dropout():
    model = tiny_model(dropout=0.5).train()
    a = generate(model, [1, 2], 10, greedy=True)
    b = generate(model, [1, 2], 10, greedy=True, use_cache=False)
    assert model.training and torch.equal(a, b)
    assert torch.is_grad_enabled()


def test_generation_leaves_an_eval_model_alone(monkeypatch):
    model = tiny_model(dropout=0.5).train()
    trained = generate(model, [1, 2], 10, seed=3)
    model.eval()
    calls = []
    monkeypatch.setattr(model, "train", lambda mode=True: calls.append(mode))
    assert torch.equal(generate(model, [1, 2], 10, seed=3), trained)
    assert calls == [] and not model.training


def test_zero_new_tokens_returns_the_prompt():
    assert generate(tiny_model(), [[4, 5]], 0).tolist() == [[4, 5]]


def test_bigram_generates_from_its_last_token():
    torch.manual_seed(0)
    model = BigramLanguageModel(V)
    out = generate(model, torch.zeros(1, 1, dtype=torch.long), 30, seed=1)
    with torch.no_grad():
        expected = seed_loop(model, torch.zeros(1, 1, dtype=torch.long), 30, 10**9,
                             generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, expected)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    vocab=st.integers(1, 40),
    temperature=st.floats(0.0, 3.0),
    top_k=st.one_of(st.none(), st.integers(1, 60)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
)
def test_sampled_ids_are_in_the_vocabulary_and_filters_hold(seed, vocab, temperature, top_k, top_p):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, vocab, generator=gen) * 3
    ids = sample_next_token(logits, temperature, top_k, top_p, generator=gen)
    assert ids.shape == (8,) and ids.dtype == torch.long
    assert ((ids >= 0) & (ids < vocab)).all()
    if top_k is not None:  # every pick is among the row's top_k (ties aside)
        kth = torch.topk(logits, min(top_k, vocab), dim=-1).values[:, -1]
        assert (logits.gather(1, ids[:, None]).squeeze(1) >= kth).all()
