"""The GPT and its parts: golden parameter count, state-dict keys, maths pinned by tests."""

from __future__ import annotations

import math

import pytest
import torch

from gptlab.errors import GptlabError
from gptlab.model import GPT, BigramLanguageModel, ModelConfig
from gptlab.model.positional import RotaryEmbedding, rope_angle, sinusoidal_table

LECTURE = dict(
    vocab_size=65, block_size=32, n_layer=4, n_head=4, n_embd=64, dropout=0.0, bias=True,
    qkv_bias=False, activation="relu", pos_encoding="learned", tie_weights=False,
)
POS_ENCODINGS = ["learned", "sinusoidal", "rope"]



def tiny_config(**overrides) -> ModelConfig:
    """The tests' tiny model: 2 layers, 2 heads, 16 channels, block 16."""
    fields = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)
    fields.update(overrides)
    return ModelConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**overrides)).eval()


@pytest.mark.parametrize("attention", ["reference", "fused"])
def test_lecture_model_has_the_seeds_209729_parameters(attention):
    model = GPT(ModelConfig(**LECTURE, attention=attention))
    assert model.num_parameters() == 209_729
    assert "209,729" in model.summary()


def test_state_dict_keys_are_gpt2_names():
    model = GPT(ModelConfig(**LECTURE))
    keys = list(model.state_dict())
    block0 = [k[len("transformer.h.0.") :] for k in keys if k.startswith("transformer.h.0.")]
    assert block0 == [
        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_proj.weight",
        "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias",
    ]
    others = [k for k in keys if not k.startswith("transformer.h.")]
    assert others == [
        "transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
        "transformer.ln_f.bias", "lm_head.weight", "lm_head.bias",
    ]
    assert model.state_dict()["transformer.h.3.mlp.c_fc.weight"].shape == (256, 64)
    assert model.state_dict()["transformer.h.3.attn.c_attn.weight"].shape == (192, 64)


def test_gpt2_style_config_keys_and_tied_head():
    cfg = tiny_config(qkv_bias=True, activation="gelu", tie_weights=True, attention="reference")
    model = GPT(cfg)
    sd = model.state_dict()
    assert "transformer.h.1.attn.c_attn.bias" in sd
    assert "lm_head.weight" in sd and "lm_head.bias" not in sd
    assert model.lm_head.weight is model.transformer.wte.weight
    # the tied matrix is counted once
    untied = GPT(tiny_config(qkv_bias=True, activation="gelu"))
    assert untied.num_parameters() - model.num_parameters() == 23 * 16 + 23


def test_no_bias_means_no_bias_tensors_anywhere():
    sd = GPT(tiny_config(bias=False, pos_encoding="rope")).state_dict()
    assert not [k for k in sd if k.endswith(".bias")]
    assert "transformer.wpe.weight" not in sd  # rope and sinusoidal have no table


@pytest.mark.parametrize("attention", ["fused", "reference"])
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_causality_changing_token_t_never_changes_earlier_logits(attention, pos_encoding):
    model = tiny_model(attention=attention, pos_encoding=pos_encoding)
    idx = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before, _ = model(idx)
        for t in (0, 7, 15):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 5) % 23
            after, _ = model(changed)
            torch.testing.assert_close(after[:, :t], before[:, :t], atol=0, rtol=0)
            assert not torch.allclose(after[:, t], before[:, t])  # the change is visible


def test_sinusoidal_table_matches_the_closed_formula():
    T, C = 10, 8
    table = sinusoidal_table(T, C)
    for t in range(T):
        for i in range(C // 2):
            angle = t / 10000 ** (2 * i / C)
            assert table[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-7)
            assert table[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-7)
    # seed 000's loop, T=10, C=4: even columns agree exactly with its sin(t / 10000^(c/C))
    seed = sinusoidal_table(10, 4)
    assert seed[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 4)), abs=1e-7)


def test_sinusoidal_model_adds_the_table_to_the_embeddings():
    model = tiny_model(pos_encoding="sinusoidal")
    pos = model.absolute_positions(0, 16, torch.device("cpu"))
    torch.testing.assert_close(pos, sinusoidal_table(16, 16))
    assert not any("sinusoidal" in k for k in model.state_dict())


def test_rope_rotation_matches_the_closed_angle_and_is_relative():
    hs = 8
    rope = RotaryEmbedding(hs, block_size=16)
    cos, sin = rope.cos_sin(5, 1)
    for j in range(hs // 2):
        assert cos[0, j].item() == pytest.approx(math.cos(rope_angle(5, j, hs)), abs=1e-6)
        assert sin[0, j].item() == pytest.approx(math.sin(rope_angle(5, j, hs)), abs=1e-6)
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, hs, generator=gen), torch.randn(1, hs, generator=gen)

    def score(m: int, n: int) -> float:
        qm = RotaryEmbedding.rotate(q, *rope.cos_sin(m, 1))
        kn = RotaryEmbedding.rotate(k, *rope.cos_sin(n, 1))
        return (qm * kn).sum().item()

    # q·k depends on m - n only, also past the table (positions ≥ block_size)
    assert score(9, 4) == pytest.approx(score(5, 0), abs=1e-5)
    assert score(1003, 998) == pytest.approx(score(5, 0), abs=1e-4)
    assert score(9, 4) != pytest.approx(score(9, 5), abs=1e-3)


def test_bigram_loss_at_init_is_near_ln_vocab():
    torch.manual_seed(0)
    model = BigramLanguageModel(65)
    idx = torch.randint(0, 65, (16, 32))
    targets = torch.randint(0, 65, (16, 32))
    logits, loss = model(idx, targets)
    assert logits.shape == (16, 32, 65)
    assert loss.item() == pytest.approx(math.log(65), abs=0.02)
    assert model.num_parameters() == 65 * 65
    assert model(idx)[1] is None


def test_bigram_learns_the_bigram_table():
    torch.manual_seed(0)
    model = BigramLanguageModel(5)
    idx = torch.tensor([[0, 1, 2, 3, 4] * 4])
    targets = torch.roll(idx, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.3)
    for _ in range(100):
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_tiny_model_overfits_one_batch(pos_encoding):
    model = tiny_model(pos_encoding=pos_encoding).train()
    gen = torch.Generator().manual_seed(4)
    idx = torch.randint(0, 23, (4, 16), generator=gen)
    targets = torch.randint(0, 23, (4, 16), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, first = model(idx, targets)
    for _ in range(150):
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first.item() == pytest.approx(math.log(23), abs=0.2)
    assert loss.item() < 0.05


def test_ignore_index_drops_targets_from_the_mean():
    model = tiny_model()
    idx = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(5))
    targets = idx.roll(-1, dims=1)
    masked = targets.clone()
    masked[:, 8:] = -1
    logits, loss = model(idx, masked, ignore_index=-1)
    expected = torch.nn.functional.cross_entropy(
        logits[:, :8].reshape(-1, 23), targets[:, :8].reshape(-1)
    )
    torch.testing.assert_close(loss, expected)


def test_forward_errors_name_the_problem():
    model = tiny_model()
    with pytest.raises(GptlabError, match=r"sequence length 17 exceeds block_size=16: crop"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(GptlabError, match=r"idx must be a \(B, T\) tensor"):
        model(torch.zeros(16, dtype=torch.long))
    with pytest.raises(GptlabError, match="do not match idx"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(GptlabError, match="needs a ModelConfig"):
        GPT({"vocab_size": 3})


def test_gpt2_init_scales_the_residual_projections():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=500, n_layer=8, n_head=4, n_embd=256, block_size=64))
    std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.02)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.transformer.h[0].mlp.c_fc.bias.abs().max().item() == 0.0


def test_dropout_is_active_only_in_training():
    model = tiny_model(dropout=0.5)
    idx = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], model(idx)[0])
        model.train()
        assert not torch.allclose(model(idx)[0], model(idx)[0])


def test_num_parameters_non_embedding_and_flops():
    model = GPT(ModelConfig(**LECTURE))
    assert model.num_parameters(non_embedding=True) == 209_729 - 65 * 64 - 32 * 64
    tied = GPT(tiny_config(tie_weights=True, pos_encoding="rope"))
    assert tied.num_parameters(non_embedding=True) == tied.num_parameters()
    n = model.num_parameters(non_embedding=True)
    assert model.flops_per_token() == 6 * n + 12 * 4 * 32 * 64


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        ("relu", torch.relu),
        ("gelu", lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
        ("gelu_exact", lambda x: 0.5 * x * (1 + torch.erf(x / 2**0.5))),
    ],
)
def test_mlp_activation_is_the_named_function(activation, expected):
    from gptlab.model.feedforward import MLP

    mlp = MLP(tiny_config(activation=activation))
    x = torch.linspace(-4, 4, 64)
    torch.testing.assert_close(mlp.act(x), expected(x))
