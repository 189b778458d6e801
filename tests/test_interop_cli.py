"""`gptlab import` / `gptlab export`: help and error messages; nothing is written on failure."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from interop_helpers import nanogpt_checkpoint, one_thread, tiny_hf_model

from gptlab.cli import main

pytest.importorskip("transformers")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    tiny_hf_model(vocab_size=64).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["import", "--help"], "gptlab import hf gpt2 --out runs/gpt2"),
        (["import", "hf", "--help"], "gpt2, gpt2-medium, gpt2-large, gpt2-xl"),
        (["import", "nanogpt", "--help"], "--meta META"),
        (["export", "--help"], "incompatible fields"),
        (["export", "hf", "--help"], "--which {best,latest}"),
    ],
)
def test_help(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert expected in capsys.readouterr().out


def test_kind_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main(["import"])
    assert info.value.code == 2
    assert "the following arguments are required: KIND" in capsys.readouterr().err


def _fails(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _edit_config(hf_dir, dst, **changes):
    dst.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    return dst


def test_import_hf_other_model_type(hf_dir, tmp_path, capsys):
    src = _edit_config(hf_dir, tmp_path / "llama", model_type="llama")
    out = tmp_path / "run"
    err = _fails(capsys, ["import", "hf", str(src), "--out", str(out)])
    assert "has model_type 'llama'; gptlab imports only GPT-2 checkpoints" in err
    assert not out.exists()
    assert os.listdir(tmp_path) == ["llama"]


def test_import_hf_truncated_and_mismatched_weights(hf_dir, tmp_path, capsys):
    src = _edit_config(hf_dir, tmp_path / "src", n_embd=32)
    out = tmp_path / "run"
    err = _fails(capsys, ["import", "hf", str(src), "--out", str(out)])
    assert "shape mismatch transformer.wte.weight (64, 16) != (64, 32)" in err
    data = (hf_dir / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[:1000])
    err = _fails(capsys, ["import", "hf", str(src), "--out", str(out)])
    assert "truncated or corrupt safetensors file" in err
    (src / "model.safetensors").unlink()
    err = _fails(capsys, ["import", "hf", str(src), "--out", str(out)])
    assert "has no weights file" in err
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_import_hf_unknown_name(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    err = _fails(capsys, ["import", "hf", "gpt2-medium", "--out", str(tmp_path / "run")])
    assert "gpt2-medium is not in the Hugging Face cache" in err
    assert "hf download openai-community/gpt2-medium" in err
    assert not (tmp_path / "run").exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_import_nanogpt_refuses_pickled_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt.pt"
    nanogpt_checkpoint(ckpt)
    meta = tmp_path / "meta.pkl"
    meta.write_bytes(pickle.dumps({"vocab_size": 65, "itos": _RunsCode(marker)}))
    out = tmp_path / "run"
    err = _fails(capsys, ["import", "nanogpt", str(ckpt), "--meta", str(meta), "--out", str(out)])
    assert "is not a plain-data meta.pkl (refusing to load posix.system)" in err
    bad_ckpt = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_args": {}, "x": _RunsCode(marker)}, bad_ckpt)
    err = _fails(capsys, ["import", "nanogpt", str(bad_ckpt), "--out", str(out)])
    assert "gptlab never runs pickled code" in err
    assert not marker.exists()
    assert not out.exists()


def test_import_nanogpt_missing_checkpoint(tmp_path, capsys):
    err = _fails(capsys, ["import", "nanogpt", str(tmp_path / "ckpt.pt"), "--out",
                          str(tmp_path / "run")])
    assert "ckpt.pt does not exist; pass nanoGPT's out_dir/ckpt.pt" in err


def test_import_nanogpt_of_a_folder_says_what_it_lacks(tmp_path, capsys):
    out = tmp_path / "run"
    err = _fails(capsys, ["import", "nanogpt", str(tmp_path), "--out", str(out)])
    assert err == (f"error: {tmp_path} is a folder without a ckpt.pt: pass the ckpt.pt that "
                   "nanoGPT's train.py wrote in its out_dir\n")
    nanogpt_checkpoint(tmp_path / "ckpt.pt")
    err = _fails(capsys, ["import", "nanogpt", str(tmp_path), "--out", str(out)])
    assert err == (f"error: {tmp_path} is nanoGPT's out_dir: pass the checkpoint in it, "
                   f"{tmp_path / 'ckpt.pt'}\n")
    assert not out.exists()
