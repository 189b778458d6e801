"""The trainer end to end on a tiny model: exact resume, NaN stop, signals, run folders."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptlab import checkpoint as ckpt
from gptlab.cli import main
from gptlab.model import GPT
from gptlab.train import TrainConfig, Trainer, TrainingDiverged

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import TINY_FLAGS, losses, make_dataset, same_tensors, weights  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_text) -> Path:
    return make_dataset(tiny_text, tmp_path_factory.mktemp("ds"))


def _train(data_dir: Path, out: Path, *flags: str) -> int:
    return main(["train", "--data", str(data_dir), "--out", str(out), *TINY_FLAGS, *flags])


def test_run_folder_holds_everything(data_dir, tmp_path):
    run = tmp_path / "run"
    assert _train(data_dir, run, "--max-iters", "6", "--eval-interval", "3") == 0
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors", "best.safetensors",
            "metrics.jsonl", "state"} <= names
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["n_layer"] == 2 and config["train"]["max_iters"] == 6
    assert config["data"]["vocab_size"] == config["model"]["vocab_size"]
    assert config["gptlab_version"]
    assert (run / "tokenizer.json").read_bytes() == (data_dir / "tokenizer.json").read_bytes()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 3, 6]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    last = records[-1]
    assert last["val_ppl"] == pytest.approx(math.exp(last["val_loss"]))
    # char tokens: one character = one byte here, so bits per char = bits per byte
    assert last["val_bpc"] == pytest.approx(last["val_loss"] / math.log(2))
    assert sorted(p.name for p in (run / "state").iterdir()) == ["step-00000003",
                                                                "step-00000006"]
    loaded = ckpt.load_run(run, which="latest")
    assert isinstance(loaded.model, GPT) and not loaded.model.training
    assert same_tensors(weights(run / "model.safetensors"),
                        weights(run / "state" / "step-00000006" / "model.safetensors"))


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_exact(data_dir, tmp_path, optimizer):
    """N steps in one go == N/2 steps, then --resume to N: same weights, same loss log."""
    common = ["--lr-decay-iters", "8", "--warmup-iters", "2", "--eval-interval", "2",
              "--dropout", "0.1", "--gradient-accumulation-steps", "2",
              "--optimizer", optimizer]
    full, split = tmp_path / "full", tmp_path / "split"
    assert _train(data_dir, full, "--max-iters", "8", *common) == 0
    assert _train(data_dir, split, "--max-iters", "4", *common) == 0
    assert main(["train", "--out", str(split), "--resume", "--max-iters", "8",
                 "--no-progress"]) == 0
    assert same_tensors(weights(full / "model.safetensors"), weights(split / "model.safetensors"))
    assert same_tensors(weights(full / "best.safetensors"), weights(split / "best.safetensors"))
    assert losses(full) == losses(split)
    saved = json.loads((split / "config.json").read_text())["train"]
    assert saved["max_iters"] == 8 and saved["optimizer"] == optimizer


def test_resume_of_a_finished_run_says_so(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(data_dir, run, "--max-iters", "4", "--batch-size", "2") == 0
    before = weights(run / "model.safetensors")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--no-progress",
                 "--sample-tokens", "20"]) == 0
    out, err = capsys.readouterr()
    assert out == ""  # no sample: nothing was trained
    assert f"{run} is already at step 4 (max_iters 4): nothing to train" in err
    assert "--max-iters N, N > 4" in err
    assert same_tensors(before, weights(run / "model.safetensors"))
    # a lower --max-iters on a no-op resume does not rewrite the run's saved setting
    assert main(["train", "--out", str(run), "--resume", "--max-iters", "1",
                 "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["max_iters"] == 4
    assert main(["train", "--out", str(run), "--resume", "--max-iters", "6",
                 "--no-progress", "--sample-tokens", "0"]) == 0
    block_size = json.loads((run / "config.json").read_text())["model"]["block_size"]
    # only this call's two steps are counted, not the run's six
    assert f"{2 * 2 * block_size:,} tokens in" in capsys.readouterr().err


def test_resume_drops_metrics_past_the_checkpoint(data_dir, tmp_path):
    run = tmp_path / "run"
    assert _train(data_dir, run, "--max-iters", "4", "--eval-interval", "2") == 0
    before = losses(run)
    with open(run / "metrics.jsonl", "a") as f:  # as if killed after step 4's checkpoint
        f.write(json.dumps({"kind": "train", "step": 5, "loss": 9.9, "time": 1}) + "\n")
    assert main(["train", "--out", str(run), "--resume", "--max-iters", "4",
                 "--no-progress"]) == 0
    assert losses(run) == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path, monkeypatch,
                                                      capsys):
    run = tmp_path / "run"
    real_forward = GPT.forward
    calls = {"train": 0}

    def forward(self, idx, targets=None, **kw):
        logits, loss = real_forward(self, idx, targets, **kw)
        if self.training:
            calls["train"] += 1
            if calls["train"] >= 6:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)
    assert _train(data_dir, run, "--max-iters", "10", "--eval-interval", "4") == 1
    err = capsys.readouterr().err
    assert "error: loss is nan at step 6: training stopped; the last good checkpoint " \
           "(step-00000004) is kept" in err
    assert ckpt.latest_checkpoint_dir(run).name == "step-00000004"
    assert same_tensors(weights(run / "model.safetensors"),
                        weights(run / "state" / "step-00000004" / "model.safetensors"))


def test_trainer_api_raises_training_diverged(data_dir, tmp_path):
    config = TrainConfig(data=str(data_dir), max_iters=3, eval_interval=10, eval_iters=1,
                         batch_size=2, learning_rate=1e-3, device="cpu", sample_tokens=0)
    trainer = Trainer(tmp_path / "run", dict(n_layer=1, n_head=1, n_embd=8, block_size=8),
                      config, progress=False)
    with torch.no_grad():
        trainer.raw_model.lm_head.weight.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="at step 1"):
        trainer.run()


def test_sigterm_saves_and_exits_zero(data_dir, tmp_path, subprocess_env, gptlab_cmd):
    run = tmp_path / "run"
    cmd = [*gptlab_cmd, "train", "--data", str(data_dir), "--out", str(run), *TINY_FLAGS,
           "--max-iters", "1000000", "--eval-interval", "100000"]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == ""
    step = ckpt.latest_checkpoint_dir(run)
    assert step is not None and int(step.name.split("-")[1]) >= 4
    assert f"Resume with: gptlab train --out {run} --resume" in err
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert max(r["step"] for r in records) == int(step.name.split("-")[1])


def test_existing_run_folder_needs_resume(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    assert _train(data_dir, run, "--max-iters", "2") == 1
    assert "already holds files: add --resume" in capsys.readouterr().err


def test_resume_errors(data_dir, tmp_path, capsys):
    assert main(["train", "--resume"]) == 1
    assert "--resume needs --out RUN_DIR" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "none")]) == 1
    assert "does not exist" in capsys.readouterr().err
    run = tmp_path / "run"
    assert _train(data_dir, run, "--max-iters", "2") == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--n-layer", "3"]) == 1
    assert "error: --n-layer cannot change when resuming" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run), "--preset", "lecture"]) == 1
    assert "drop --preset and --config" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run), "--optimizer", "muon"]) == 1
    assert "error: --optimizer cannot change when resuming" in capsys.readouterr().err


def test_resume_with_another_tokenizer_is_refused(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(data_dir, run, "--max-iters", "2") == 0
    other = make_dataset("completely different alphabet xyz 0123\n" * 40, tmp_path / "o")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--data", str(other)]) == 1
    assert "differs from the dataset's tokenizer" in capsys.readouterr().err


def test_corrupt_latest_checkpoint_gives_clear_error(data_dir, tmp_path, capsys):
    """Every step folder damaged: no intact checkpoint to fall back to (one damaged folder
    falls back to the one before it: tests/test_integrity.py)."""
    run = tmp_path / "run"
    assert _train(data_dir, run, "--max-iters", "2") == 0
    for step_dir in ckpt.step_dirs(run):
        path = step_dir / "model.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--max-iters", "4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors" in err and "Traceback" not in err


def test_bad_flag_value_is_one_line_error(capsys):
    assert main(["train", "--max-iters", "many"]) == 1
    assert capsys.readouterr().err == "error: --max-iters='many' is not an integer\n"


def test_underscore_and_dash_flags_and_config_file(data_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_iters = 50\neval_interval = 2\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(data_dir), "--out", str(run),
                 *TINY_FLAGS, "--max_iters=2", "--n_embd=8"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["max_iters"] == 2 and config["train"]["eval_interval"] == 2
    assert config["model"]["n_embd"] == 8


def test_list_presets(capsys):
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    for name in ("lecture-small", "lecture", "cpu-quick", "finetune"):
        assert f"{name}\n" in out


def test_init_from_fine_tunes_existing_weights(data_dir, tmp_path):
    base = tmp_path / "base"
    assert _train(data_dir, base, "--max-iters", "2") == 0
    tuned = tmp_path / "tuned"
    assert main(["train", "--preset", "finetune", "--init-from", str(base), "--data",
                 str(data_dir), "--out", str(tuned), "--max-iters", "2", "--eval-iters", "1",
                 "--batch-size", "2", "--device", "cpu", "--sample-tokens", "0",
                 "--no-progress"]) == 0
    config = json.loads((tuned / "config.json").read_text())
    assert config["model"]["n_embd"] == 16 and config["model"]["dropout"] == 0.1
    first_eval = json.loads((tuned / "metrics.jsonl").read_text().splitlines()[0])
    base_last = json.loads((base / "metrics.jsonl").read_text().splitlines()[-1])
    assert first_eval["step"] == 0
    assert first_eval["val_loss"] == pytest.approx(base_last["val_loss"], abs=0.05)


def test_init_from_with_input_encodes_new_text_with_the_runs_tokenizer(tiny_text, tmp_path):
    """The README's fine-tune command: a char run, new text with fewer distinct characters."""
    base_data = make_dataset(tiny_text, tmp_path / "base-src")
    base = tmp_path / "base"
    assert _train(base_data, base, "--max-iters", "2") == 0
    new_text = tmp_path / "new.txt"
    new_text.write_text("speak, speak.\n" * 40, encoding="utf-8")
    tuned = tmp_path / "tuned"
    assert main(["train", "--preset", "finetune", "--init-from", str(base), "--input",
                 str(new_text), "--out", str(tuned), *TINY_FLAGS, "--max-iters", "2"]) == 0
    assert (tuned / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    assert (tuned / "data" / "tokenizer.json").read_bytes() == (
        base / "tokenizer.json").read_bytes()


def test_init_from_with_data_in_another_tokenizer_names_the_fix(tiny_text, tmp_path, capsys):
    base = tmp_path / "base"
    assert _train(make_dataset(tiny_text, tmp_path / "a"), base, "--max-iters", "2") == 0
    other = make_dataset("completely different words\n" * 30, tmp_path / "b")
    code = main(["train", "--preset", "finetune", "--init-from", str(base), "--data",
                 str(other), "--out", str(tmp_path / "tuned"), *TINY_FLAGS, "--max-iters", "2"])
    assert code != 0
    err = capsys.readouterr().err
    assert f"gptlab prepare --tokenizer-file {base / 'tokenizer.json'}" in err


def test_failed_setup_leaves_no_half_written_run(tiny_text, tmp_path, capsys):
    """A new run that fails before its first checkpoint is undone: the command can be rerun."""
    short = tmp_path / "short.txt"
    short.write_text("too short, really\n" * 2, encoding="utf-8")  # val: 4 tokens < block 16
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), *TINY_FLAGS, "--max-iters", "2"]
    assert main([*argv, "--input", str(short)]) == 1
    assert "too few for block_size 16" in capsys.readouterr().err
    assert not run.exists()  # it held data/, config.json and tokenizer.json by then
    run.mkdir()  # an empty folder given as --out stays, emptied
    assert main([*argv, "--input", str(short)]) == 1
    assert run.is_dir() and not any(run.iterdir())
    short.write_text(tiny_text, encoding="utf-8")
    assert main([*argv, "--input", str(short)]) == 0
    assert (run / "model.safetensors").is_file()


def test_dataset_with_another_datasets_tokenizer_is_refused(tiny_text, tmp_path, capsys):
    data = make_dataset(tiny_text, tmp_path / "a")
    other = make_dataset("only four chars\n" * 10, tmp_path / "b")
    (data / "tokenizer.json").write_bytes((other / "tokenizer.json").read_bytes())
    assert _train(data, tmp_path / "run", "--max-iters", "1") == 1
    assert "the folder mixes two datasets" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
