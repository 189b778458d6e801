"""`gptlab sample / eval / plot` on a tiny trained run, write_run/load_run, quick start."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from gptlab import checkpoint as ckpt
from gptlab.cli import main
from gptlab.errors import GptlabError
from gptlab.generate import generate
from gptlab.model import GPT, ModelConfig
from gptlab.tokenizers import load_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import TINY_FLAGS, make_dataset, same_tensors, weights  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_text) -> Path:
    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(tiny_text, root)
    run = root / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TINY_FLAGS,
                 "--max-iters", "20", "--eval-interval", "10", "--learning-rate", "1e-2"]) == 0
    return run


@pytest.mark.parametrize("command", ["train", "sample", "eval", "plot"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: gptlab {command}" in capsys.readouterr().out


def test_train_help_shows_each_settings_help_and_choices(capsys):
    """Help texts come from the config fields, choices from their Literal types."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--optimizer {adamw,muon}", "--tokenizer {char,word,gpt2,bpe}",
                 "--dtype {auto,float32,bfloat16,float16}", "--attention {fused,reference}",
                 "model: context length in tokens [64]", "optimizer steps to train for [2000]"):
        assert text in out


def test_sample_streams_prompt_and_continuation(run_dir, capsys):
    args = ["sample", str(run_dir), "--prompt", "First", "--max-new-tokens", "30",
            "--seed", "3", "--top-k", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("First") and out.endswith("\n")
    run = ckpt.load_run(run_dir)
    ids = run.tokenizer.encode("First")
    expected = generate(run.model, torch.tensor([ids]), 30, top_k=5, seed=3)
    assert out == run.tokenizer.decode(expected[0].tolist()) + "\n"
    assert main(args) == 0
    assert capsys.readouterr().out == out  # same seed, same text


def test_sample_many_separated_by_dashes(run_dir, capsys):
    assert main(["sample", str(run_dir), "--prompt", "All:", "--max-new-tokens", "10",
                 "--num-samples", "3", "--seed", "1", "--which", "latest"]) == 0
    captured = capsys.readouterr()
    samples = captured.out.split("---\n")
    assert len(samples) == 3 and all(s.startswith("All:") for s in samples)
    assert "---" not in captured.err


def test_sample_greedy_is_deterministic(run_dir, capsys):
    main(["sample", str(run_dir), "--greedy", "--max-new-tokens", "15"])
    first = capsys.readouterr().out
    main(["sample", str(run_dir), "--temperature", "0", "--max-new-tokens", "15"])
    assert capsys.readouterr().out == first


def test_sample_exact_flag_reaches_generation_past_the_window(run_dir, capsys):
    # block_size 16, 60 new tokens: the window slides. --exact (the default) is the seed's
    # recompute loop; --no-exact is generate(exact=False), here the half-window restart.
    run = ckpt.load_run(run_dir)
    ids = run.tokenizer.encode("All:")
    texts = {}
    for flag, exact in (("--exact", True), ("--no-exact", False)):
        assert main(["sample", str(run_dir), "--prompt", "All:", "--max-new-tokens", "60",
                     "--seed", "2", "--temperature", "0.5", flag]) == 0
        texts[exact] = capsys.readouterr().out
        expected = generate(run.model, torch.tensor([ids]), 60, seed=2, temperature=0.5,
                            exact=exact)
        assert texts[exact] == run.tokenizer.decode(expected[0].tolist()) + "\n"
    recompute = generate(run.model, torch.tensor([ids]), 60, seed=2, temperature=0.5,
                         use_cache=False)
    assert texts[True] == run.tokenizer.decode(recompute[0].tolist()) + "\n"
    assert texts[False] != texts[True]


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--top-p", "1.5"], "--top-p 1.5 must be in (0, 1]"),
     (["--num-samples", "0"], "--num-samples 0 must be >= 1"),
     (["--temperature", "-1"], "--temperature -1.0 must be a finite number >= 0"),
     (["--temperature", "nan"], "--temperature nan must be a finite number >= 0"),
     (["--seed", "-1"], "--seed -1 must be in [0, 2**63)"),
     (["--seed", str(2**63 - 2), "--num-samples", "3"],
      f"--seed {2**63 - 2} must be in [0, 2**63)"),
     (["--top-k", "0"], "--top-k 0 must be an integer >= 1 or None")],
)
def test_sample_bad_options(run_dir, capsys, flags, message):
    assert main(["sample", str(run_dir), "--prompt", "ROMEO", *flags]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}" + (
        " (0 means greedy)\n" if "temperature" in message else "\n")
    assert captured.out == ""  # refused before the prompt is echoed


@pytest.mark.parametrize("value", ["0", "-2"])
def test_eval_refuses_no_batches(run_dir, capsys, value):
    assert main(["eval", str(run_dir), "--max-batches", value]) == 1
    err = capsys.readouterr().err
    assert err == f"error: --max-batches {value} must be >= 1 (or left out: all)\n"


def test_sample_missing_run(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nope")]) == 1
    assert "error: run folder" in capsys.readouterr().err


def test_eval_prints_loss_perplexity_bits(run_dir, capsys):
    assert main(["eval", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ppl"] == pytest.approx(math.exp(result["loss"]))
    assert result["bpb"] == pytest.approx(result["loss"] / math.log(2))  # ASCII chars
    assert result["tokens"] > 0
    assert main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"val loss     {result['loss']:.4f}\nperplexity ")
    assert "bits/byte" in out


def test_eval_refuses_another_tokenizer(run_dir, tmp_path, capsys):
    other = make_dataset("zzz yyy 123\n" * 50, tmp_path)
    assert main(["eval", str(run_dir), "--data", str(other)]) == 1
    assert "was tokenized with another tokenizer" in capsys.readouterr().err


def test_plot_writes_png(run_dir, tmp_path, capsys):
    out = tmp_path / "loss.png"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path)]) == 1
    assert "metrics.jsonl not found" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_bytes(bytes(range(256)) * 4)  # not text at all
    assert main(["plot", str(tmp_path)]) == 1
    assert "is not a metrics log (not UTF-8 text at byte 128)" in capsys.readouterr().err


def test_write_run_then_load_run(run_dir, tmp_path):
    """An importer's path: weights + tokenizer -> run folder -> load_run."""
    source = ckpt.load_run(run_dir)
    out = ckpt.write_run(tmp_path / "imported", source.model, run_dir / "tokenizer.json",
                         data={"note": "test"})
    loaded = ckpt.load_run(out, which="best")
    assert same_tensors(loaded.model.state_dict(), source.model.state_dict())
    assert loaded.config["data"] == {"note": "test"} and loaded.config["train"] == {}
    assert same_tensors(weights(out / "best.safetensors"), weights(out / "model.safetensors"))


def test_load_run_rejects_tokenizer_larger_than_vocab(run_dir, tmp_path):
    tok = load_tokenizer(run_dir / "tokenizer.json")
    small = GPT(ModelConfig(vocab_size=tok.vocab_size - 1, block_size=8, n_layer=1,
                            n_head=1, n_embd=8))
    out = ckpt.write_run(tmp_path / "bad", small, run_dir / "tokenizer.json")
    with pytest.raises(GptlabError, match="the tokenizer does not belong to this model"):
        ckpt.load_run(out)


def test_sample_on_corrupt_weights_is_one_line_error(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (bad / name).write_bytes((run_dir / name).read_bytes())
    (bad / "best.safetensors").write_bytes(b"\x00" * 64)
    assert main(["sample", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "best.safetensors" in err


@pytest.mark.slow
def test_quick_start_trains_on_built_in_shakespeare(tmp_path, monkeypatch, shakespeare_path,
                                                   capsys):
    """`gptlab train` with no data flags prepares Shakespeare and trains cpu-quick."""
    from gptlab.data import add_corpus

    monkeypatch.setenv("GPTLAB_CACHE_DIR", str(tmp_path / "cache"))
    add_corpus("shakespeare", shakespeare_path)
    run = tmp_path / "quick"
    assert main(["train", "--out", str(run), "--max-iters", "2", "--eval-iters", "1",
                 "--sample-tokens", "40", "--no-progress"]) == 0
    captured = capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["n_embd"] == 128 and config["model"]["vocab_size"] == 65
    assert config["data"]["train_tokens"] == 1_003_854  # seed 001's 90% split
    assert len(captured.out) >= 40  # the end-of-training sample goes to stdout


def test_a_file_where_a_run_folder_belongs_is_named(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["sample", str(afile)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {afile} is a file, not a run folder: pass the run's folder\n"
    assert main(["train", "--out", str(afile), "--max-iters", "1", "--no-progress"]) == 1
    assert capsys.readouterr().err == f"error: --out {afile} is a file: pass a folder for the run\n"
    assert afile.read_text() == "x"


def test_eval_when_the_runs_dataset_is_gone_names_the_fix(run_dir, tmp_path, capsys):
    import shutil

    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    config["data"]["dir"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    assert main(["eval", str(moved)]) == 1
    err = capsys.readouterr().err
    assert "which is gone: pass --data DIR" in err
    assert f"gptlab prepare --tokenizer-file {moved / 'tokenizer.json'}" in err
