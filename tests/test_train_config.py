"""TrainConfig, presets, TOML files, precedence, LR schedule and parameter groups."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gptlab.errors import ConfigError
from gptlab.model import GPT, ModelConfig
from gptlab.train.config import (
    PRESETS,
    TrainConfig,
    load_config_file,
    parse_text,
    resolve_config,
    resolve_resume_config,
)
from gptlab.train.optim import (
    BatchedMuon,
    MuonAdamW,
    configure_optimizer,
    get_lr,
    muon_matrices,
    newton_schulz,
    newton_schulz_dtype,
    param_groups,
)


def test_nanogpt_field_names_exist():
    names = set(TrainConfig.__dataclass_fields__)
    assert {"batch_size", "max_iters", "eval_interval", "eval_iters", "learning_rate", "min_lr",
            "warmup_iters", "lr_decay_iters", "weight_decay", "beta1", "beta2", "grad_clip",
            "gradient_accumulation_steps", "seed", "device", "compile"} <= names


def test_lecture_small_is_the_seed_model():
    """Seed 001 prints 0.209729 M parameters for its model on the 65-character vocab."""
    _, model_settings, train = resolve_config("lecture-small")
    model = GPT(ModelConfig(vocab_size=65, **model_settings))
    assert sum(p.numel() for p in model.parameters()) == 209_729
    assert (train.batch_size, train.max_iters, train.eval_interval, train.eval_iters) == (
        16, 5000, 100, 200)
    assert train.learning_rate == 1e-3 and not train.decay_lr


def test_lecture_preset_matches_seed_003():
    _, m, t = resolve_config("lecture")
    assert (m["block_size"], m["n_embd"], m["n_head"], m["n_layer"], m["dropout"]) == (
        256, 384, 6, 6, 0.2)
    assert (t.batch_size, t.learning_rate) == (64, 3e-4)


def test_every_preset_resolves_and_has_provenance():
    for name, preset in PRESETS.items():
        resolved, model, train = resolve_config(name)
        assert resolved == name and preset.source and preset.description
        ModelConfig(vocab_size=65, **model)
        assert isinstance(train, TrainConfig)


def test_precedence_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "lecture-small"\nmax_iters = 300\n'
                    "[model]\nn_layer = 2\n[train]\nlearning_rate = 5e-4\n")
    name, model, train = resolve_config(None, path, {"learning_rate": 2e-4})
    assert name == "lecture-small"
    assert model["n_layer"] == 2 and model["n_embd"] == 64  # file, then preset
    assert train.max_iters == 300  # file over preset
    assert train.learning_rate == 2e-4  # flag over file
    assert train.batch_size == 16  # preset
    name, _, train = resolve_config("cpu-quick", path, {})
    assert name == "cpu-quick" and train.max_iters == 300  # --preset wins over the file's


def test_default_preset_is_cpu_quick():
    name, model, train = resolve_config()
    assert name == "cpu-quick"
    assert train == TrainConfig(**PRESETS["cpu-quick"].train)


def test_unknown_setting_suggests_the_right_name(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("max_iter = 10\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'max_iter' \(did you mean 'max_iters'"):
        load_config_file(path)


def test_wrong_type_in_file_is_an_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('learning_rate = "fast"\n')
    with pytest.raises(ConfigError, match="learning_rate='fast' must be of type float") as err:
        load_config_file(path)
    assert str(err.value).startswith(f"{path}: ")  # which file holds the bad value
    path.write_text("bogus_key = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'bogus_key' \\(`gptlab train --help`"):
        load_config_file(path)
    path.write_text("n_layer = 2.5\n")
    with pytest.raises(ConfigError, match="n_layer=2.5 must be of type int"):
        load_config_file(path)


def test_invalid_toml_and_missing_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("max_iters = = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "absent.toml")


def test_config_folder_names_the_problem_and_the_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config_file(tmp_path)
    assert str(err.value) == (f"--config {tmp_path} is a folder: pass a TOML file of settings "
                              "(lines such as `n_layer = 4`, flat or in [model] / [train] tables)")
    (tmp_path / "config.json").write_text("{}")  # a run folder
    with pytest.raises(ConfigError, match=f"--config {tmp_path} is a run folder, but --config "
                       f"takes a TOML file of settings: continue that run with --out {tmp_path} "
                       f"--resume, or start from its weights with --init-from {tmp_path}"):
        load_config_file(tmp_path)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'lecture-smal' \\(did you mean"):
        resolve_config("lecture-smal")


@pytest.mark.parametrize(
    ("tp", "text", "value"),
    [(int, "50", 50), (int, "1e3", 1000), (float, "1e-3", 1e-3), (bool, "false", False),
     (bool, "True", True), (int | None, "none", None), (str, "cpu", "cpu")],
)
def test_parse_text(tp, text, value):
    assert parse_text(tp, text, "x") == value


def test_parse_text_errors():
    with pytest.raises(ConfigError, match="--max-iters='ten' is not an integer"):
        parse_text(int, "ten", "max_iters")
    with pytest.raises(ConfigError, match="--compile='maybe' is not true or false"):
        parse_text(bool, "maybe", "compile")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("batch_size", 0, "batch_size=0 must be at least 1"),
     ("beta2", 1.0, r"beta2=1.0 must be in \[0, 1\)"),
     ("min_lr", 1.0, "min_lr=1.0 is above learning_rate"),
     ("dtype", "int8", "dtype='int8' is not one of"),
     ("optimizer", "sgd", "optimizer='sgd' is not one of: adamw, muon"),
     ("tokenizer", "sp", "tokenizer='sp' is not one of: char, word, gpt2, bpe")],
)
def test_train_config_validation(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_train_config_dict_round_trip():
    config = TrainConfig(max_iters=7, lr_decay_iters=5)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown train setting 'max_iter'"):
        TrainConfig.from_dict({"max_iter": 3})


def test_lr_schedule_warmup_cosine_floor():
    c = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110,
                    max_iters=200)
    assert get_lr(0, c) == pytest.approx(0.1)
    assert get_lr(9, c) == pytest.approx(1.0)
    assert get_lr(10, c) == pytest.approx(1.0)
    assert get_lr(60, c) == pytest.approx(0.55)  # halfway down the cosine
    assert get_lr(110, c) == pytest.approx(0.1)
    assert get_lr(150, c) == 0.1
    lrs = [get_lr(i, c) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    constant = TrainConfig(learning_rate=3e-4, decay_lr=False)
    assert {get_lr(i, constant) for i in (0, 50, 10_000)} == {3e-4}
    # default decay horizon is max_iters
    d = TrainConfig(learning_rate=1.0, min_lr=0.0, warmup_iters=0, max_iters=100)
    assert get_lr(50, d) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_lr_schedule_wsd_holds_then_cools_down_linearly():
    c = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, max_iters=110,
                    lr_schedule="wsd")
    assert c.decay_start == 90  # the last 20% of the 100 steps after warmup
    assert get_lr(9, c) == pytest.approx(1.0)
    assert {get_lr(i, c) for i in range(10, 91)} == {1.0}  # stable: exactly learning_rate
    assert get_lr(100, c) == pytest.approx(0.55)  # halfway down the line
    assert get_lr(110, c) == 0.1 and get_lr(500, c) == 0.1
    # the stable phase does not depend on the run's length: a longer run agrees up to it
    longer = dataclasses.replace(c, max_iters=1000)
    assert [get_lr(i, longer) for i in range(91)] == [get_lr(i, c) for i in range(91)]
    pinned = dataclasses.replace(c, lr_decay_start=50)
    assert get_lr(49, pinned) == 1.0 and get_lr(80, pinned) == pytest.approx(0.55)


@pytest.mark.parametrize(("fields", "message"), [
    (dict(lr_decay_start=50), "lr_decay_start is the wsd schedule's: add --lr-schedule wsd"),
    (dict(lr_schedule="wsd", lr_decay_start=5, warmup_iters=10),
     "lr_decay_start=5 must lie between warmup_iters=10 and the decay's end"),
    (dict(lr_schedule="wsd", lr_decay_start=300, max_iters=200),
     "lr_decay_start=300 must lie between"),
    (dict(lr_schedule="linear"), "lr_schedule='linear' is not one of: cosine, wsd"),
])
def test_wsd_settings_are_checked(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**fields)


def _tiny_gpt(**kw) -> GPT:
    return GPT(ModelConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16, **kw))


def test_weight_decay_only_on_matrices():
    model = _tiny_gpt(tie_weights=True)
    decay, no_decay = param_groups(model, TrainConfig())
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert embeddings & {id(p) for p in decay["params"]}
    decay2, no_decay2 = param_groups(model, TrainConfig(decay_embeddings=False))
    assert not embeddings & {id(p) for p in decay2["params"]}
    assert embeddings <= {id(p) for p in no_decay2["params"]}


def test_configure_optimizer_uses_betas():
    opt = configure_optimizer(_tiny_gpt(), TrainConfig(beta1=0.8, beta2=0.95))
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)


@pytest.mark.parametrize("attention", ["fused", "reference"])
def test_muon_takes_the_block_matrices_and_adamw_the_rest(attention):
    model = _tiny_gpt(tie_weights=False, bias=True, attention=attention)
    opt = configure_optimizer(model, TrainConfig(optimizer="muon", weight_decay=0.05))
    assert isinstance(opt, MuonAdamW)
    muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.adamw.param_groups for p in g["params"]}
    blocks = {id(m.weight) for m in model.transformer.h.modules()
              if isinstance(m, torch.nn.Linear)}
    assert muon == blocks == {id(p) for p in muon_matrices(model)}
    assert not muon & adamw and len(muon | adamw) == len(list(model.parameters()))
    assert id(model.lm_head.weight) in adamw and id(model.transformer.wte.weight) in adamw
    assert opt.param_groups == opt.adamw.param_groups + opt.muon.param_groups
    assert opt.muon.param_groups[0]["weight_decay"] == 0.05
    assert opt.muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"


def test_muon_adamw_steps_as_its_two_halves():
    """Same updates as torch's Muon and AdamW run side by side; lr set on param_groups."""
    config = TrainConfig(optimizer="muon", learning_rate=0.01)
    model = _tiny_gpt()
    twin = _tiny_gpt()
    twin.load_state_dict(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = configure_optimizer(model, config, "cpu")
    twin_blocks = {id(p) for p in muon_matrices(twin)}
    twin_muon = BatchedMuon(muon_matrices(twin), lr=0.004, weight_decay=0.1,
                            adjust_lr_fn="match_rms_adamw")
    twin_adamw = torch.optim.AdamW(
        [{**g, "params": [p for p in g["params"] if id(p) not in twin_blocks]}
         for g in param_groups(twin, config)], lr=0.004, betas=(0.9, 0.99), fused=True)
    for group in opt.param_groups:
        group["lr"] = 0.004
    idx = torch.randint(0, 17, (3, 8), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        for m, optimizers in ((model, [opt]), (twin, [twin_adamw, twin_muon])):
            m(idx, idx)[1].backward()
            for o in optimizers:
                o.step()
                o.zero_grad(set_to_none=True)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    after = model.state_dict()
    for name in ("transformer.h.0.mlp.c_fc.weight", "transformer.wte.weight"):  # Muon, AdamW
        assert not torch.equal(after[name], before[name]), name


def test_muon_adamw_state_dict_round_trip():
    model = _tiny_gpt()
    opt = configure_optimizer(model, TrainConfig(optimizer="muon"))
    idx = torch.randint(0, 17, (2, 8))
    model(idx, idx)[1].backward()
    opt.step()
    state = opt.state_dict()
    again = configure_optimizer(model, TrainConfig(optimizer="muon"))
    again.load_state_dict(state)
    for p in muon_matrices(model):
        assert torch.equal(again.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])
    for group in again.param_groups:  # the schedule still reaches both halves after loading
        group["lr"] = 0.123
    assert {g["lr"] for o in (again.adamw, again.muon) for g in o.param_groups} == {0.123}
    with pytest.raises(ValueError, match="not a Muon"):
        again.load_state_dict(configure_optimizer(model, TrainConfig()).state_dict())


def test_muon_needs_a_recent_torch_and_a_gpt(monkeypatch):
    from gptlab.model import BigramLanguageModel

    with pytest.raises(ConfigError, match="needs a GPT model"):
        configure_optimizer(BigramLanguageModel(5), TrainConfig(optimizer="muon"))
    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(ConfigError, match="needs PyTorch 2.9 or later"):
        configure_optimizer(_tiny_gpt(), TrainConfig(optimizer="muon"))


@pytest.mark.parametrize("shape", [(48, 16), (16, 64), (32, 32)])
def test_newton_schulz_keeps_singular_vectors_and_caps_singular_values(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    out = newton_schulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7)
    assert out.shape == g.shape and out.dtype == torch.float32
    # g = U S V^T and out = U f(S) V^T  <=>  g^T out = V S f(S) V^T is symmetric, PSD
    sym = g.mT @ out
    assert torch.allclose(sym, sym.mT, atol=1e-4)
    assert torch.linalg.eigvalsh(sym).min() > -1e-4
    singular = torch.linalg.svdvals(out)
    assert singular.max() < 1.21
    if shape[0] != shape[1]:  # a rectangular Gaussian is well conditioned
        assert singular.min() > 0.5


@pytest.mark.parametrize("ns_dtype", [torch.float32, torch.bfloat16])
def test_batched_muon_is_torch_muon(ns_dtype):
    """Same momentum, and updates equal to torch's bf16 Muon within bf16 precision, with
    same-shaped matrices orthogonalised together (the two 24x8 ones here)."""
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(24, 8, generator=gen), torch.randn(8, 40, generator=gen),
               torch.randn(24, 8, generator=gen)]
    grads = [[torch.randn(w.shape, generator=gen) for w in weights] for _ in range(3)]
    ours = [torch.nn.Parameter(w.clone()) for w in weights]
    theirs = [torch.nn.Parameter(w.clone()) for w in weights]
    kw = dict(lr=0.1, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    opts = BatchedMuon(ours, ns_dtype=ns_dtype, **kw), torch.optim.Muon(theirs, **kw)
    for step_grads in grads:
        for params, opt in zip((ours, theirs), opts, strict=True):
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b, w in zip(ours, theirs, weights, strict=True):
        assert torch.equal(opts[0].state[a]["momentum_buffer"],
                           opts[1].state[b]["momentum_buffer"])
        moved_a, moved_b = a.detach() - w, b.detach() - w
        assert moved_a.abs().max() > 0.05  # the steps are far larger than the tolerance
        torch.testing.assert_close(moved_a, moved_b, atol=0.02 * moved_b.abs().max().item(),
                                   rtol=0)
    assert opts[0].state_dict()["param_groups"] == opts[1].state_dict()["param_groups"]


@pytest.mark.parametrize("shape", [(3, 48, 16), (2, 16, 64), (1, 32, 32)])
def test_newton_schulz_of_a_stack_is_each_matrix_on_its_own(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    coefficients = (3.4445, -4.775, 2.0315)
    stacked = newton_schulz(g, coefficients, 5, 1e-7)
    assert stacked.shape == g.shape
    for one, alone in zip(stacked, g, strict=True):
        torch.testing.assert_close(one, newton_schulz(alone, coefficients, 5, 1e-7),
                                   atol=1e-5, rtol=0)
    halves = newton_schulz(g, coefficients, 5, 1e-7, torch.bfloat16)
    assert halves.dtype == torch.bfloat16
    torch.testing.assert_close(halves.float(), stacked, atol=0.05, rtol=0)


@pytest.mark.parametrize("flags, expected", [
    ({"_is_avx512_bf16_supported": True, "_is_amx_tile_supported": False}, torch.bfloat16),
    ({"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": True}, torch.bfloat16),
    ({"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}, torch.float32),
])
def test_newton_schulz_runs_in_bfloat16_only_where_the_cpu_multiplies_it(
        monkeypatch, flags, expected):
    for name, value in flags.items():
        monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)
    assert newton_schulz_dtype("cpu") == expected
    assert BatchedMuon([torch.nn.Parameter(torch.ones(2, 2))], lr=0.1).ns_dtype == expected
    assert newton_schulz_dtype("cuda") == torch.bfloat16
    assert newton_schulz_dtype("mps") == torch.float32


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("learning_rate", math.nan, "learning_rate=nan must be a finite number >= 0"),
     ("grad_clip", math.inf, "grad_clip=inf must be a finite number >= 0"),
     ("weight_decay", -0.1, "weight_decay=-0.1 must be a finite number >= 0"),
     ("seed", 2**70, "must be in \\[0, 2\\*\\*63\\)"),
     ("seed", -1, "seed=-1 must be in")],
)
def test_non_finite_or_out_of_range_numbers_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_cpu_quick_and_speedrun_share_nanogpts_model_but_depth():
    quick, speedrun = PRESETS["cpu-quick"].model, PRESETS["speedrun"].model
    assert (quick["n_layer"], speedrun["n_layer"]) == (4, 3)
    assert {k: v for k, v in quick.items() if k != "n_layer"} == \
        {k: v for k, v in speedrun.items() if k != "n_layer"}
    assert quick["activation"] == "gelu_exact" and quick["tie_weights"] is True


def _saved_run(tmp_path, train=None):
    import json

    run = tmp_path / "run"
    run.mkdir()
    model = dict(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    doc = {"model": model, "train": TrainConfig(max_iters=4, **(train or {})).to_dict()}
    (run / "config.json").write_text(json.dumps(doc))
    return run


def test_resume_config_keeps_the_saved_settings_under_the_flags(tmp_path):
    run = _saved_run(tmp_path, {"optimizer": "muon"})
    model, train = resolve_resume_config(run, {"max_iters": 8, "dropout": 0.1})
    assert model["n_layer"] == 2 and model["dropout"] == 0.1
    assert train.max_iters == 8 and train.optimizer == "muon"
    model, train = resolve_resume_config(run, {"n_layer": 2, "optimizer": "muon"})  # unchanged
    assert model["n_layer"] == 2 and train.max_iters == 4


@pytest.mark.parametrize(
    ("overrides", "preset", "config_path", "message"),
    [({}, "lecture", None, "drop --preset and --config"),
     ({}, None, "x.toml", "drop --preset and --config"),
     ({"n_layer": 3}, None, None, "--n-layer cannot change when resuming"),
     ({"optimizer": "muon"}, None, None, "--optimizer cannot change when resuming"),
     ({"max_iter": 3}, None, None, "unknown setting 'max_iter'")],
)
def test_resume_config_refuses_what_the_checkpoint_cannot_follow(tmp_path, overrides, preset,
                                                                 config_path, message):
    run = _saved_run(tmp_path)
    with pytest.raises(ConfigError, match=message):
        resolve_resume_config(run, overrides, preset, config_path)
