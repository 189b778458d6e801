"""End to end: HF / nanoGPT weights → gptlab run folder → logits and greedy tokens, and back.

The oracle is `transformers.GPT2LMHeadModel` (for nanoGPT checkpoints, the functional GPT-2
forward in interop_helpers with nanoGPT's exact GELU).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from interop_helpers import (
    greedy_tokens,
    hf_logits,
    nanogpt_checkpoint,
    nanogpt_meta,
    one_thread,
    reference_logits,
    tiny_hf_model,
)

import gptlab.model as model_module
from gptlab import checkpoint, tokenizers
from gptlab.cli import main
from gptlab.errors import GptlabError
from gptlab.interop import runs

transformers = pytest.importorskip("transformers")

BLOCK = 64  # room for a 6-token prompt and 50 greedy tokens without cropping
PROMPT = torch.tensor([[464, 2068, 7586, 21831, 18045, 625], [15496, 11, 995, 0, 50256, 13]])
SEED_TEXT = "Here is an unknown word: Alvazska"
SEED_IDS = [4342, 318, 281, 6439, 1573, 25, 33414, 1031, 82, 4914]  # seed 002, GPT-2 BPE


def gptlab_logits(model, idx):
    """Logits (B, T, V) of a gptlab GPT for every position (targets make it return all)."""
    model.eval()
    with torch.no_grad():
        logits, _ = model(idx, targets=torch.zeros_like(idx))
    return logits


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_model(block_size=BLOCK)


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    hf_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def imported(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "imported"
    assert main(["import", "hf", str(hf_dir), "--out", str(out)]) == 0
    return out


def test_import_hf_matches_transformers(hf_model, imported):
    run = checkpoint.load_run(imported, which="best")
    assert run.model.config.activation == "gelu"
    assert isinstance(run.tokenizer, tokenizers.GPT2Tokenizer)
    torch.testing.assert_close(
        gptlab_logits(run.model, PROMPT), hf_logits(hf_model, PROMPT), atol=1e-5, rtol=0
    )
    expected = greedy_tokens(lambda idx: hf_logits(hf_model, idx), PROMPT, 50)
    got = greedy_tokens(lambda idx: gptlab_logits(run.model, idx), PROMPT, 50)
    assert torch.equal(got, expected)


def test_gptlab_generate_matches_transformers_greedy(hf_model, imported):
    generate = pytest.importorskip("gptlab.generate").generate
    model = checkpoint.load_run(imported).model.eval()
    expected = greedy_tokens(lambda idx: hf_logits(hf_model, idx), PROMPT, 50)
    for row in range(len(PROMPT)):
        with torch.no_grad():
            got = generate(model, PROMPT[row : row + 1], max_new_tokens=50, greedy=True)
        assert torch.equal(got[0], expected[row])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def test_import_hf_pytorch_bin_gives_the_same_run(hf_model, hf_dir, imported, tmp_path):
    src = tmp_path / "bin"
    src.mkdir()
    (src / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    legacy = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    legacy["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(legacy, src / "pytorch_model.bin")
    runs.import_hf(src, tmp_path / "run")
    a = checkpoint.load_run(tmp_path / "run").model.state_dict()
    b = checkpoint.load_run(imported).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_loads_in_transformers_with_equal_outputs(imported, tmp_path):
    out = tmp_path / "hf-out"
    assert main(["export", "hf", str(imported), "--out", str(out)]) == 0
    run = checkpoint.load_run(imported)
    exported = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    torch.testing.assert_close(
        hf_logits(exported, PROMPT), gptlab_logits(run.model, PROMPT), atol=1e-5, rtol=0
    )
    expected = greedy_tokens(lambda idx: gptlab_logits(run.model, idx), PROMPT, 50)
    assert torch.equal(greedy_tokens(lambda idx: hf_logits(exported, idx), PROMPT, 50), expected)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer(SEED_TEXT)["input_ids"] == SEED_IDS == run.tokenizer.encode(SEED_TEXT)


@pytest.mark.parametrize(("activation", "hf_activation", "attention"), [
    ("gelu", "gelu_new", "fused"), ("gelu_exact", "gelu", "fused"),
    ("gelu", "gelu_new", "reference"),  # per-head weights export as GPT-2's c_attn
])
def test_round_trip_gptlab_hf_gptlab_is_bitwise(tmp_path, activation, hf_activation, attention):
    torch.manual_seed(1)
    config = model_module.ModelConfig(
        vocab_size=50257, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
        bias=True, qkv_bias=True, activation=activation, pos_encoding="learned",
        tie_weights=True, attention=attention,
    )
    model = model_module.GPT(config)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param))
    checkpoint.write_run(tmp_path / "orig", model, tokenizers.GPT2Tokenizer())
    runs.export_hf(tmp_path / "orig", tmp_path / "hf")
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["activation_function"] == hf_activation
    runs.import_hf(tmp_path / "hf", tmp_path / "back")
    a = checkpoint.load_run(tmp_path / "orig").model
    b = checkpoint.load_run(tmp_path / "back").model
    assert b.config.to_dict() == {**a.config.to_dict(), "attention": b.config.attention}
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("changes", "listed"),
    [
        (dict(pos_encoding="rope", activation="relu"),
         "pos_encoding='rope' (GPT-2 needs 'learned'); activation='relu'"),
        (dict(bias=False, tie_weights=False),
         "bias=False (GPT-2 needs True); tie_weights=False (GPT-2 needs True)"),
    ],
)
def test_export_of_inexpressible_model_lists_fields(tmp_path, capsys, changes, listed):
    fields = dict(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0,
                  bias=True, qkv_bias=True, activation="gelu", pos_encoding="learned",
                  tie_weights=True)
    fields.update(changes)
    model = model_module.GPT(model_module.ModelConfig(**fields))
    checkpoint.write_run(tmp_path / "run", model, tokenizers.CharTokenizer(list("abc")))
    assert main(["export", "hf", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: this model cannot be exported as GPT-2; incompatible fields: ")
    assert listed in err
    assert not (tmp_path / "hf").exists()


def test_import_nanogpt_char_model(tmp_path, capsys):
    chars = sorted(set("First Citizen:\nBefore we proceed any further, hear me speak.\nAll!?"))
    ckpt = tmp_path / "ckpt.pt"
    weights = nanogpt_checkpoint(ckpt, vocab_size=len(chars), compiled=True)
    nanogpt_meta(tmp_path / "meta.pkl", chars)
    out = tmp_path / "run"
    argv = ["import", "nanogpt", str(ckpt), "--meta", str(tmp_path / "meta.pkl"), "--out", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    run = checkpoint.load_run(out)
    text = "hear me, All"
    ids = [chars.index(c) for c in text]
    assert run.tokenizer.encode(text) == ids
    assert run.tokenizer.decode(ids) == text
    idx = torch.tensor([ids])
    expected = reference_logits(weights, 2, idx, approximate="none")
    torch.testing.assert_close(gptlab_logits(run.model, idx), expected, atol=1e-5, rtol=0)


def test_nanogpt_import_exports_to_transformers_exactly(tmp_path):
    """nanoGPT's exact GELU survives import and export: transformers' "gelu" is erf GELU."""
    ckpt = tmp_path / "ckpt.pt"
    weights = nanogpt_checkpoint(ckpt, vocab_size=50257)
    runs.import_nanogpt(ckpt, tmp_path / "run")
    assert checkpoint.load_run(tmp_path / "run").model.config.activation == "gelu_exact"
    runs.export_hf(tmp_path / "run", tmp_path / "hf")
    exported = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert exported.config.activation_function == "gelu"
    idx = PROMPT[:, :5]
    expected = reference_logits(weights, 2, idx, approximate="none")
    torch.testing.assert_close(hf_logits(exported, idx), expected, atol=1e-5, rtol=0)


def test_import_nanogpt_without_bias(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    weights = nanogpt_checkpoint(ckpt, vocab_size=50304, bias=False)
    runs.import_nanogpt(ckpt, tmp_path / "run")  # vocab >= 50257: GPT-2 tokenizer
    run = checkpoint.load_run(tmp_path / "run")
    assert isinstance(run.tokenizer, tokenizers.GPT2Tokenizer)
    idx = PROMPT[:, :5]
    expected = reference_logits(weights, 2, idx, approximate="none")
    torch.testing.assert_close(gptlab_logits(run.model, idx), expected, atol=1e-5, rtol=0)


def test_import_nanogpt_char_model_needs_meta(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    nanogpt_checkpoint(ckpt, vocab_size=65)
    assert main(["import", "nanogpt", str(ckpt), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "vocab_size 65, smaller than GPT-2's 50257" in err
    assert "`gptlab import nanogpt CKPT --meta meta.pkl`" in err
    nanogpt_meta(tmp_path / "meta.pkl", list("abc"))
    with pytest.raises(GptlabError, match="has 3 characters but the checkpoint's vocab_size is 65"):
        runs.import_nanogpt(ckpt, tmp_path / "run", meta_path=tmp_path / "meta.pkl")
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "meta.pkl"]


def test_out_must_be_new(imported, hf_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["import", "hf", str(hf_dir), "--out", str(tmp_path / "taken")]) == 1
    assert "already exists; choose a new folder or remove it" in capsys.readouterr().err
    assert os.listdir(tmp_path / "taken") == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    runs.export_hf(imported, tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]


def test_load_pretrained_for_finetuning(hf_model, hf_dir, imported, tmp_path):
    from_run = runs.load_pretrained(imported, dropout=0.1)
    from_hf = runs.load_pretrained(hf_dir, block_size=16)
    assert (from_run.kind, from_hf.kind) == ("run", "hf")
    assert from_run.model.training and from_run.model.config.dropout == 0.1
    assert from_hf.model.config.block_size == 16
    assert from_hf.model.transformer.wpe.weight.shape == (16, 16)
    idx = PROMPT[:, :6]
    torch.testing.assert_close(gptlab_logits(from_hf.model, idx), hf_logits(hf_model, idx),
                               atol=1e-5, rtol=0)
    with pytest.raises(GptlabError, match="block_size 128 is longer than the pretrained"):
        runs.load_pretrained(hf_dir, block_size=128)
    ckpt = tmp_path / "ckpt.pt"
    nanogpt_checkpoint(ckpt, vocab_size=50257)
    assert runs.load_pretrained(ckpt).kind == "nanogpt"


def test_import_hf_by_name_from_the_cache(hf_dir, tmp_path, monkeypatch, capsys):
    snapshot = tmp_path / "hf-home" / "hub" / "models--gpt2" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).symlink_to(hf_dir / name)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.chdir(tmp_path)  # no folder named gpt2 here: the name is looked up
    assert main(["import", "hf", "gpt2", "--out", "run"]) == 0
    assert capsys.readouterr().out.strip() == "run"
    assert checkpoint.load_run(tmp_path / "run").config["data"]["imported_from"] == str(snapshot)
