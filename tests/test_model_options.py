"""The model options the time-budget search may use: RMSNorm, squared ReLU, SwiGLU and
QK-norm — each against its formula written out by hand, and each through the KV cache,
the batched decoder, both attentions, checkpoints and the GPT-2 export's refusal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlab.checkpoint import load_weights, save_weights
from gptlab.decoding import DecodingEngine
from gptlab.errors import GptlabError
from gptlab.generate import SamplingConfig, generate
from gptlab.interop.hf import hf_config_from_model_fields
from gptlab.model import GPT, ModelConfig
from gptlab.model.attention import normed_qk
from gptlab.model.feedforward import MLP, SquaredReLU, mlp_hidden_size
from gptlab.model.norm import NORM_EPS, norm_layer

TINY = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)
OPTIONS = [
    dict(norm="rmsnorm"),
    dict(activation="relu2"),
    dict(activation="swiglu"),
    dict(qk_norm=True),
    dict(norm="rmsnorm", activation="swiglu", qk_norm=True, pos_encoding="rope"),
]


def wide_model(seed: int = 0, **overrides) -> GPT:
    """A tiny model with a wide init, so greedy tokens vary (equality tests stay strong)."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    return model.eval()


def test_rmsnorm_is_x_over_its_root_mean_square_times_gamma():
    config = ModelConfig(**TINY, norm="rmsnorm", bias=True)
    norm = norm_layer(config)
    assert [name for name, _ in norm.named_parameters()] == ["weight"]  # no bias, even so
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 16))
    x = torch.randn(3, 5, 16) * 4 + 1
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    # and LayerNorm stays the default: (x - mean)/std, with its bias
    layer = norm_layer(ModelConfig(**TINY))
    assert isinstance(layer, torch.nn.LayerNorm) and layer.bias is not None
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(layer(x), (x - mean) / torch.sqrt(var + NORM_EPS))


def test_every_norm_of_the_model_is_the_chosen_kind():
    model = GPT(ModelConfig(**TINY, norm="rmsnorm"))
    norms = [m for name, m in model.named_modules() if name.split(".")[-1].startswith("ln")]
    assert len(norms) == 2 * 2 + 1
    kinds = {type(m).__name__ for m in norms}
    assert kinds == {"RMSNorm"}
    assert "final RMSNorm (ln_f)" in model.summary()


def test_squared_relu_values():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert SquaredReLU()(x).tolist() == [0.0, 0.0, 0.0, 0.25, 9.0]


def test_swiglu_mlp_is_silu_gate_times_value_and_keeps_the_weight_count():
    config = ModelConfig(**{**TINY, "n_embd": 128, "n_head": 4}, activation="swiglu", bias=False)
    H = mlp_hidden_size(config)
    assert H == 344 and H % 8 == 0
    mlp = MLP(config)
    assert mlp.c_fc.weight.shape == (2 * H, 128) and mlp.c_proj.weight.shape == (128, H)
    plain = MLP(ModelConfig(**{**TINY, "n_embd": 128, "n_head": 4}, bias=False))
    weights = sum(p.numel() for p in mlp.parameters())
    assert abs(weights / sum(p.numel() for p in plain.parameters()) - 1) < 0.01
    x = torch.randn(2, 3, 128)
    gate, value = mlp.c_fc.weight[:H], mlp.c_fc.weight[H:]  # (H, C) each
    expected = (F.silu(x @ gate.T) * (x @ value.T)) @ mlp.c_proj.weight.T
    torch.testing.assert_close(mlp(x), expected, atol=1e-5, rtol=1e-5)


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    q, k = torch.randn(2, 2, 5, 8) * 7, torch.randn(2, 2, 5, 8) * 0.1
    nq, nk = normed_qk(q, k, True)
    torch.testing.assert_close(nq.pow(2).mean(-1), torch.ones(2, 2, 5), atol=1e-4, rtol=0)
    torch.testing.assert_close(nq, q / q.pow(2).mean(-1, keepdim=True).add(NORM_EPS).sqrt())
    assert normed_qk(q, k, False) == (q, k)
    # scaling the query and key rows of c_attn changes nothing with qk_norm, much without
    for qk_norm, same in ((True, True), (False, False)):
        model = wide_model(qk_norm=qk_norm)
        idx = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            before, _ = model(idx)
            for block in model.transformer.h:
                block.attn.c_attn.weight[:32] *= 10  # the q and k rows (2C of 3C)
            after, _ = model(idx)
        assert torch.allclose(before, after, atol=1e-4) == same


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_fused_and_reference_attention_agree(options):
    fused = wide_model(**options)
    reference = GPT(ModelConfig(**{**TINY, **options}, attention="reference")).eval()
    reference.load_state_dict(fused.state_dict(), strict=True)
    idx = torch.randint(0, 23, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(fused(idx)[0], reference(idx)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_kv_cache_and_batched_decoding_equal_recompute(options):
    model = wide_model(**options)
    idx = torch.randint(0, 23, (2, 5), generator=torch.Generator().manual_seed(3))
    cached = generate(model, idx, 20, greedy=True)
    assert torch.equal(cached, generate(model, idx, 20, greedy=True, use_cache=False))
    assert len(set(cached[:, 5:].flatten().tolist())) > 3  # real sequences
    # the batched decoder: a request beside others gives its tokens alone, bitwise
    config = SamplingConfig(temperature=1.0, seed=4)
    alone = DecodingEngine(model, 1)
    busy = DecodingEngine(model, 6)
    mine = alone.add(idx[:1], 12, config)
    for j in range(4):
        busy.add(idx[1:] + j % 2, 12, SamplingConfig(temperature=0.9, seed=j))
    theirs = busy.add(idx[:1], 12, config)
    while not mine.done:
        alone.step()
        busy.step()
    assert torch.equal(mine.seq[:, : mine.t], theirs.seq[:, : theirs.t])


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_weights_round_trip_through_a_checkpoint(tmp_path, options):
    model = wide_model(**options)
    save_weights(tmp_path / "model.safetensors", model)
    loaded = GPT(ModelConfig.from_dict(model.config.to_dict())).eval()
    load_weights(tmp_path / "model.safetensors", loaded)
    idx = torch.randint(0, 23, (1, 16))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], loaded(idx)[0])


def test_an_old_config_without_the_new_fields_loads_as_before():
    fields = ModelConfig(**TINY).to_dict()
    for name in ("norm", "qk_norm"):
        del fields[name]
    config = ModelConfig.from_dict(fields)
    assert (config.norm, config.qk_norm) == ("layernorm", False)


def test_gpt2_export_names_every_option_gpt2_cannot_hold():
    fields = ModelConfig(**TINY, norm="rmsnorm", qk_norm=True, activation="relu2").to_dict()
    fields.update(bias=True, qkv_bias=True, tie_weights=True)
    with pytest.raises(GptlabError) as info:
        hf_config_from_model_fields(fields, gpt2_tokenizer=False)
    message = str(info.value)
    for part in ("norm='rmsnorm' (GPT-2 needs 'layernorm')", "qk_norm=True (GPT-2 needs False)",
                 "activation='relu2'"):
        assert part in message
