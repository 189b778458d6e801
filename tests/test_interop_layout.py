"""Weight-layout conversion and file reading, checked against `transformers` and nanoGPT's format.

These tests need no gptlab model: they convert state dicts and compare an independent
functional GPT-2 forward (tests/interop_helpers.py) with Hugging Face's logits.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from interop_helpers import (
    TINY,
    hf_logits,
    nanogpt_checkpoint,
    nanogpt_meta,
    one_thread,
    reference_logits,
    tiny_hf_model,
)

from gptlab.errors import GptlabError
from gptlab.interop import hf, layout, nanogpt

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


IDX = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5]])


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_model(vocab_size=64)


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    hf_model.save_pretrained(path)
    return path


def test_hf_state_dict_maps_to_gptlab_layout_with_equal_logits(hf_model):
    state = layout.hf_to_gptlab(hf_model.state_dict())
    # Shape: Conv1D (C, 3C) became Linear (3C, C).
    assert state["transformer.h.0.attn.c_attn.weight"].shape == (48, 16)
    assert state["transformer.h.1.mlp.c_proj.weight"].shape == (16, 64)
    expected = hf_logits(hf_model, IDX)
    got = reference_logits(state, TINY["n_head"], IDX)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_conversion_round_trip_is_bitwise(hf_model):
    hf_state = {k: v for k, v in hf_model.state_dict().items() if k != "lm_head.weight"}
    state = layout.hf_to_gptlab(hf_state)
    back = layout.gptlab_to_hf(state, tie_weights=True)
    assert back.keys() == hf_state.keys()
    for key, tensor in hf_state.items():
        assert torch.equal(back[key], tensor), key
        assert back[key].is_contiguous()


def test_bare_gpt2model_keys_and_mask_buffers_are_accepted(hf_model):
    bare = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    bare["h.0.attn.bias"] = torch.ones(1, 1, 32, 32)
    bare["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    state = layout.hf_to_gptlab(bare)
    assert "transformer.h.0.attn.bias" not in state
    assert "transformer.h.0.attn.c_attn.bias" in state
    assert "lm_head.weight" in state


def test_read_hf_dir_safetensors(hf_model, hf_dir):
    fields, state = hf.read_hf_dir(hf_dir)
    assert fields == {
        "vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16,
        "dropout": 0.0, "bias": True, "qkv_bias": True, "activation": "gelu",
        "pos_encoding": "learned", "tie_weights": True,
    }
    assert "lm_head.weight" not in state
    got = reference_logits(state, 2, IDX)
    torch.testing.assert_close(got, hf_logits(hf_model, IDX), atol=1e-5, rtol=0)


def test_read_hf_dir_pytorch_bin_like_the_hub_file(hf_model, hf_dir, tmp_path):
    """The hub's pytorch_model.bin: bare keys, mask buffers, and a tied lm_head copy."""
    (tmp_path / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    legacy = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    for i in range(2):
        legacy[f"h.{i}.attn.bias"] = torch.tril(torch.ones(32, 32)).view(1, 1, 32, 32)
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    _, state = hf.read_hf_dir(tmp_path)
    _, expected = hf.read_hf_dir(hf_dir)
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)


def test_fp16_weights_are_read_as_float32(hf_model, hf_dir, tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    half = {k: v.half().contiguous() for k, v in hf_model.state_dict().items()
            if k != "lm_head.weight"}
    save_file(half, str(tmp_path / "model.safetensors"))
    _, state = hf.read_hf_dir(tmp_path)
    assert {t.dtype for t in state.values()} == {torch.float32}


def _copy_dir(src, dst, config_edit=None):
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    if config_edit:
        config_edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    return dst


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(model_type="llama"),
         "has model_type 'llama'; gptlab imports only GPT-2 checkpoints"),
        (lambda c: c.update(activation_function="silu", n_inner=99),
         "cannot reproduce exactly: activation_function='silu', n_inner=99"),
        (lambda c: c.update(n_layer=3),
         "does not match its config: missing weights transformer.h.2.ln_1.weight"),
        (lambda c: c.update(n_layer=1),
         "unexpected weights transformer.h.1."),
        (lambda c: c.update(vocab_size=65),
         "shape mismatch transformer.wte.weight (64, 16) != (65, 16)"),
    ],
)
def test_bad_hf_config_is_refused(hf_dir, tmp_path, edit, message):
    bad = _copy_dir(hf_dir, tmp_path / "bad", edit)
    with pytest.raises(GptlabError) as info:
        hf.read_hf_dir(bad)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_truncated_weights_are_refused(hf_dir, tmp_path):
    bad = _copy_dir(hf_dir, tmp_path / "bad")
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GptlabError, match="truncated or corrupt safetensors file"):
        hf.read_hf_dir(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(GptlabError, match="has no weights file"):
        hf.read_hf_dir(bad)
    (bad / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(GptlabError, match="truncated or corrupt file"):
        hf.read_hf_dir(bad)
    (bad / "config.json").unlink()
    with pytest.raises(GptlabError, match="has no config.json"):
        hf.read_hf_dir(bad)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_pytorch_bin_is_not_run(hf_dir, tmp_path):
    bad = _copy_dir(hf_dir, tmp_path / "bad")
    (bad / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"wte.weight": torch.zeros(2), "x": _RunsCode(marker)}, bad / "pytorch_model.bin")
    with pytest.raises(GptlabError, match="gptlab never runs pickled code"):
        hf.read_hf_dir(bad)
    assert not marker.exists()


def test_hf_cache_lookup_by_name_offline(hf_dir, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--openai-community--gpt2"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).symlink_to(hf_dir / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf.resolve_hf_source("gpt2") == snapshot
    assert hf.resolve_hf_source(str(hf_dir)) == hf_dir
    not_cached = "gpt2-xl is not in the Hugging Face cache .*`hf download openai-community/gpt2-xl"
    with pytest.raises(GptlabError, match=not_cached):
        hf.resolve_hf_source("gpt2-xl")
    with pytest.raises(GptlabError, match="'nope' is not a folder, nor one of the GPT-2 names"):
        hf.resolve_hf_source("nope")


def test_export_config_lists_every_incompatible_field():
    fields = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                  bias=False, qkv_bias=False, activation="relu", pos_encoding="rope",
                  tie_weights=False, attention="fused")
    with pytest.raises(GptlabError) as info:
        hf.hf_config_from_model_fields(fields, gpt2_tokenizer=False)
    assert str(info.value) == (
        "this model cannot be exported as GPT-2; incompatible fields: "
        "pos_encoding='rope' (GPT-2 needs 'learned'); bias=False (GPT-2 needs True); "
        "qkv_bias=False (GPT-2 needs True); tie_weights=False (GPT-2 needs True); "
        "activation='relu' (GPT-2 needs 'gelu' or 'gelu_exact')"
    )


def test_export_config_loads_in_transformers(hf_dir):
    fields, _ = hf.read_hf_dir(hf_dir)
    config = hf.hf_config_from_model_fields(fields, gpt2_tokenizer=False)
    hf_config = transformers.GPT2Config(**config)
    assert (hf_config.n_positions, hf_config.n_embd, hf_config.activation_function) == (
        32, 16, "gelu_new")
    assert hf.model_fields_from_hf_config(config, "x") == fields


# ----------------------------------------------------------------------------- nanoGPT


@pytest.mark.parametrize(("bias", "compiled"), [(True, False), (False, True)])
def test_nanogpt_checkpoint_reads_with_its_weights(tmp_path, bias, compiled):
    path = tmp_path / "ckpt.pt"
    weights = nanogpt_checkpoint(path, bias=bias, compiled=compiled, with_mask_buffers=True)
    fields, state = nanogpt.read_nanogpt_checkpoint(path)
    assert fields == dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=16,
                          dropout=0.0, bias=bias, qkv_bias=bias, activation="gelu_exact",
                          pos_encoding="learned", tie_weights=True)
    weights.pop("lm_head.weight")
    assert state.keys() == weights.keys()
    assert all(torch.equal(state[k], weights[k]) for k in state)


def test_nanogpt_checkpoint_errors(tmp_path):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(GptlabError, match="does not exist; pass nanoGPT's out_dir/ckpt.pt"):
        nanogpt.read_nanogpt_checkpoint(path)
    torch.save({"model": {}}, path)
    with pytest.raises(GptlabError, match="needs the keys 'model_args' and 'model'"):
        nanogpt.read_nanogpt_checkpoint(path)
    nanogpt_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GptlabError, match="truncated or corrupt checkpoint"):
        nanogpt.read_nanogpt_checkpoint(path)
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "model_args": {}, "config": _RunsCode(marker)}, path)
    with pytest.raises(GptlabError, match="gptlab never runs pickled code"):
        nanogpt.read_nanogpt_checkpoint(path)
    assert not marker.exists()


def test_nanogpt_checkpoint_with_numpy_scalar_loads(tmp_path):
    import numpy as np

    path = tmp_path / "ckpt.pt"
    nanogpt_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["best_val_loss"] = np.float64(1.47)
    torch.save(ckpt, path)
    fields, _ = nanogpt.read_nanogpt_checkpoint(path)
    assert fields["vocab_size"] == 65


def test_nanogpt_meta_round_trip(tmp_path):
    chars = sorted(set("First Citizen:\nBefore we proceed any further, hear me speak.\n"))
    nanogpt_meta(tmp_path / "meta.pkl", chars)
    assert nanogpt.read_nanogpt_meta(tmp_path / "meta.pkl") == chars


def test_malicious_meta_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": 1, "itos": {0: "a"}, "x": _RunsCode(marker)}))
    with pytest.raises(GptlabError, match=r"not a plain-data meta.pkl \(refusing to load "):
        nanogpt.read_nanogpt_meta(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ([1, 2], "needs the keys vocab_size and itos"),
        ({"vocab_size": 3, "itos": {0: "a", 1: "b"}}, "itos must map every id"),
        ({"vocab_size": 2, "itos": {0: "a", 1: "a"}}, "itos must map every id"),
        ({"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 1, "b": 0}},
         "stoi is not the inverse of itos"),
    ],
)
def test_inconsistent_meta_is_refused(tmp_path, meta, message):
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps(meta))
    with pytest.raises(GptlabError, match=message):
        nanogpt.read_nanogpt_meta(path)
    path.write_bytes(pickle.dumps(meta)[:5])
    with pytest.raises(GptlabError, match="truncated or corrupt pickle|needs the keys"):
        nanogpt.read_nanogpt_meta(path)


def test_size_fields_read_both_formats_and_name_a_missing_size():
    hf_config = {"vocab_size": 64, "n_positions": 32, "n_layer": 2, "n_head": 2, "n_embd": 16}
    sizes = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=16)
    assert layout.size_fields(hf_config, "c.json", block_size_key="n_positions") == sizes
    assert layout.size_fields(sizes, "ckpt.pt") == sizes
    del hf_config["n_positions"]
    with pytest.raises(GptlabError, match=r"c.json lacks a valid GPT-2 size field \('n_positions'"):
        layout.size_fields(hf_config, "c.json", block_size_key="n_positions")
