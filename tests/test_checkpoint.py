"""Checkpoints: safetensors weights, trainer state, run folders, safe loading.

The atomic writes and the safe `torch.load` they use are tested in test_files.py.
"""

from __future__ import annotations

import os

import pytest
import torch

from gptlab import checkpoint as ckpt
from gptlab.errors import GptlabError


class Tiny(torch.nn.Module):
    """Embedding + linear head with tied weights, like GPT's wte / lm_head."""

    def __init__(self, vocab: int = 11, dim: int = 4):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, dim)
        self.ln = torch.nn.LayerNorm(dim)
        self.lm_head = torch.nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight


def _train_a_bit(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int = 3) -> None:
    for _ in range(steps):
        idx = torch.randint(0, 11, (2, 5))
        loss = model.lm_head(model.ln(model.wte(idx))).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weights_round_trip_keeps_tied_weights(tmp_path):
    torch.manual_seed(0)
    model, other = Tiny(), Tiny()
    ckpt.save_weights(tmp_path / "w.safetensors", model, {"step": "7"})
    ckpt.load_weights(tmp_path / "w.safetensors", other)
    assert _same_weights(model, other)
    assert other.lm_head.weight is other.wte.weight
    assert ckpt.read_weights_metadata(tmp_path / "w.safetensors")["step"] == "7"
    assert list(tmp_path.iterdir()) == [tmp_path / "w.safetensors"]  # no temp files left


def test_checkpoint_round_trip_restores_optimizer_and_state(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train_a_bit(model, opt)
    state = {"step": 3, "rng": {"torch": torch.get_rng_state()}, "note": ("a", 1, None)}
    step_dir = ckpt.save_checkpoint(tmp_path, model, opt, state, keep_last=2, is_best=True)
    assert step_dir == tmp_path / "state" / "step-00000003"
    assert (tmp_path / "model.safetensors").is_file()
    assert (tmp_path / "best.safetensors").is_file()

    model2 = Tiny()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    loaded = ckpt.load_checkpoint(tmp_path, model2, opt2)
    assert loaded["step"] == 3 and loaded["note"] == ("a", 1, None)
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    assert _same_weights(model, model2)
    # Same optimizer state: one more identical step gives identical weights.
    torch.manual_seed(5)
    _train_a_bit(model, opt, 1)
    torch.manual_seed(5)
    _train_a_bit(model2, opt2, 1)
    assert _same_weights(model, model2)


def test_keep_last_prunes_old_step_folders(tmp_path):
    model = Tiny()
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(tmp_path, model, None, {"step": step}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert names == ["step-00000030", "step-00000040"]
    assert ckpt.latest_checkpoint_dir(tmp_path).name == "step-00000040"


def test_half_written_step_folder_is_ignored(tmp_path):
    """A process killed mid-save leaves a temp folder; the previous checkpoint is used."""
    model = Tiny()
    ckpt.save_checkpoint(tmp_path, model, None, {"step": 5})
    (tmp_path / "state" / ".step-00000010.abc.tmp").mkdir()
    assert ckpt.latest_checkpoint_dir(tmp_path).name == "step-00000005"
    assert ckpt.load_checkpoint(tmp_path, Tiny())["step"] == 5


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\x08" + b"\0" * 7])
def test_corrupt_weights_give_clear_error(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(GptlabError, match="model.safetensors is not a readable safetensors"):
        ckpt.load_weights(path, Tiny())


def test_truncated_weights_give_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(path, Tiny())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(GptlabError, match="w.safetensors"):
        ckpt.load_weights(path, Tiny())


def test_weights_of_another_model_give_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(path, Tiny(vocab=11))
    with pytest.raises(GptlabError, match="does not fit this model's configuration"):
        ckpt.load_weights(path, Tiny(vocab=12))


def test_trainer_state_with_pickled_code_is_refused(tmp_path):
    """torch.load(weights_only=True): a file that would run code on load is rejected."""
    ckpt.save_checkpoint(tmp_path, Tiny(), None, {"step": 1})
    state_file = tmp_path / "state" / "step-00000001" / "trainer.pt"
    torch.save({"step": 1, "evil": os.system}, state_file)  # a global: not weights-only
    with pytest.raises(GptlabError, match="could not be read safely"):
        ckpt.load_checkpoint(tmp_path, Tiny())


def test_garbage_trainer_state_gives_clear_error(tmp_path):
    ckpt.save_checkpoint(tmp_path, Tiny(), None, {"step": 1})
    (tmp_path / "state" / "step-00000001" / "trainer.pt").write_bytes(b"garbage")
    with pytest.raises(GptlabError, match="trainer.pt could not be read safely"):
        ckpt.load_checkpoint(tmp_path, Tiny())


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(GptlabError, match="has no checkpoint under state/"):
        ckpt.load_checkpoint(tmp_path, Tiny())


def test_missing_optimizer_state_is_an_error_when_resuming(tmp_path):
    ckpt.save_checkpoint(tmp_path, Tiny(), None, {"step": 1})
    model = Tiny()
    with pytest.raises(GptlabError, match="holds no optimizer state"):
        ckpt.load_checkpoint(tmp_path, model, torch.optim.AdamW(model.parameters()))


def test_bad_config_json_is_an_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(GptlabError, match="config.json is not valid JSON"):
        ckpt.read_run_config(tmp_path)
    (tmp_path / "config.json").write_text('{"train": {}}')
    with pytest.raises(GptlabError, match="has no 'model' section"):
        ckpt.read_run_config(tmp_path)
    with pytest.raises(GptlabError, match="does not exist"):
        ckpt.read_run_config(tmp_path / "nope")


def test_saved_files_get_the_umask_mode_not_mkstemps_private_one(tmp_path, tiny_text):
    from gptlab.tokenizers import CharTokenizer

    old = os.umask(0o027)
    try:
        torch.manual_seed(0)
        model = Tiny()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        step_dir = ckpt.save_checkpoint(tmp_path, model, opt, {"step": 1}, keep_last=1)
        CharTokenizer.from_text(tiny_text).save(tmp_path / "tokenizer.json")
    finally:
        os.umask(old)
    for path in (tmp_path / "model.safetensors", tmp_path / "tokenizer.json",
                 step_dir / ckpt.TRAINER_STATE_FILE):
        assert path.stat().st_mode & 0o777 == 0o640, path
    assert step_dir.stat().st_mode & 0o777 == 0o750
