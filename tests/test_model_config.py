"""ModelConfig: validation messages and the JSON round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptlab.errors import ConfigError, GptlabError
from gptlab.model import ModelConfig


def test_defaults_are_the_lecture_large_model():
    cfg = ModelConfig(vocab_size=65)
    assert (cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (256, 6, 6, 384)
    assert (cfg.activation, cfg.pos_encoding, cfg.attention) == ("relu", "learned", "fused")
    assert cfg.head_size == 64


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_embd": 30, "n_head": 4}, "n_embd=30 is not divisible by n_head=4"),
        ({"n_layer": 0}, "n_layer must be a positive integer, got 0"),
        ({"vocab_size": -1}, "vocab_size must be a positive integer, got -1"),
        ({"block_size": 2.5}, "block_size must be a positive integer, got 2.5"),
        ({"n_head": True}, "n_head must be a positive integer, got True"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": "0.1"}, "dropout must be a number"),
        ({"bias": "yes"}, "bias must be true or false, got 'yes'"),
        ({"activation": "swish"}, "activation must be one of 'relu', 'gelu', 'gelu_exact', "
                                  "'relu2', 'swiglu', got 'swish'"),
        ({"norm": "batchnorm"}, "norm must be one of 'layernorm', 'rmsnorm', got 'batchnorm'"),
        ({"qk_norm": 1}, "qk_norm must be true or false, got 1"),
        ({"pos_encoding": "alibi"}, "pos_encoding must be one of 'learned', 'sinusoidal', 'rope'"),
        ({"attention": "flash"}, "attention must be one of 'fused', 'reference', got 'flash'"),
        ({"pos_encoding": "rope", "n_embd": 12, "n_head": 4}, "rope' needs an even head size"),
    ],
)
def test_invalid_configs_name_the_field(overrides, message):
    fields = dict(vocab_size=65, n_embd=64, n_head=4)
    fields.update(overrides)
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)


def test_config_error_is_a_gptlab_error_and_a_value_error():
    with pytest.raises(GptlabError) as info:
        ModelConfig(vocab_size=0)
    assert isinstance(info.value, ValueError)


@given(
    n_head=st.integers(1, 4),
    head_size=st.sampled_from([2, 4, 8]),
    n_layer=st.integers(1, 3),
    dropout=st.floats(0.0, 0.9),
    bias=st.booleans(),
    qkv_bias=st.booleans(),
    tie=st.booleans(),
    activation=st.sampled_from(["relu", "gelu", "gelu_exact", "relu2", "swiglu"]),
    pos=st.sampled_from(["learned", "sinusoidal", "rope"]),
    attention=st.sampled_from(["fused", "reference"]),
    norm=st.sampled_from(["layernorm", "rmsnorm"]),
    qk_norm=st.booleans(),
)
def test_to_dict_from_dict_round_trips_through_json(
    n_head, head_size, n_layer, dropout, bias, qkv_bias, tie, activation, pos, attention, norm,
    qk_norm,
):
    cfg = ModelConfig(
        vocab_size=50, block_size=8, n_layer=n_layer, n_head=n_head, n_embd=n_head * head_size,
        dropout=dropout, bias=bias, qkv_bias=qkv_bias, activation=activation,
        pos_encoding=pos, tie_weights=tie, attention=attention, norm=norm, qk_norm=qk_norm,
    )
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_from_dict_rejects_unknown_and_missing_keys():
    d = ModelConfig(vocab_size=65).to_dict()
    with pytest.raises(ConfigError, match=r"unknown model config key\(s\) 'n_embed': valid keys"):
        ModelConfig.from_dict({**d, "n_embed": 3})
    del d["vocab_size"]
    with pytest.raises(ConfigError, match="lacks 'vocab_size'"):
        ModelConfig.from_dict(d)
    with pytest.raises(ConfigError, match="must be a mapping"):
        ModelConfig.from_dict([1, 2])


def test_dropout_integer_zero_is_stored_as_float():
    assert ModelConfig(vocab_size=3, dropout=0).dropout == 0.0


def test_choices_come_from_the_literals():
    import typing

    from gptlab.model import config as model_config

    hints = typing.get_type_hints(ModelConfig)
    assert model_config.ACTIVATIONS == typing.get_args(hints["activation"])
    assert model_config.ACTIVATIONS == ("relu", "gelu", "gelu_exact", "relu2", "swiglu")
    assert model_config.NORMS == typing.get_args(hints["norm"]) == ("layernorm", "rmsnorm")
    assert model_config.POS_ENCODINGS == typing.get_args(hints["pos_encoding"])
    assert model_config.POS_ENCODINGS == ("learned", "sinusoidal", "rope")
    assert model_config.ATTENTIONS == typing.get_args(hints["attention"]) == ("fused", "reference")


def test_every_field_carries_its_help():
    import dataclasses

    for f in dataclasses.fields(ModelConfig):
        assert f.metadata.get("help", "").startswith("model: "), f.name
    assert ModelConfig(vocab_size=5).block_size == 256  # defaults survive the field() wrapping
