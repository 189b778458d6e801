"""Failed writes (a full disk, a read-only file system, no permission) are one line.

Each write site gptlab has — checkpoint weights, trainer state, best.safetensors,
metrics.jsonl, config.json, tokenizer.json, the dataset's .bin files and meta.json, an
export, an import — is made to fail with ENOSPC at the lowest call it writes with; the
command must then exit 1 with one line naming the file, "no space left on device", the free
space and what is still intact, and leave no temporary file behind. Where the test can
mount a 3 MiB tmpfs (root on Linux) the disk really fills up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

from gptlab import checkpoint as ckpt
from gptlab import files
from gptlab.cli import main
from gptlab.data import encode
from gptlab.files import WriteError
from gptlab.model import GPT, ModelConfig
from gptlab.tokenizers import CharTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from interop_helpers import nanogpt_checkpoint, nanogpt_meta  # noqa: E402
from train_helpers import TINY_FLAGS, make_dataset  # noqa: E402

NO_SPACE = "no space left on device"
RUST_ENOSPC = "Error while serializing: I/O error: No space left on device (os error 28)"


def enospc(code: int = errno.ENOSPC, filename: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), filename)


def one_error_line(capsys) -> str:
    """The command's error: one line, the last on stderr, and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and err.rstrip("\n").endswith(lines[0]), err
    return lines[0]


def hidden_entries(root: Path) -> list[Path]:
    """Temporary files and folders under `root`: gptlab's are all named `.NAME...`."""
    return [p for p in root.rglob(".*")]


def assert_free_space_named(line: str) -> None:
    assert " free in " in line and ("B free" in line), line


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_text) -> Path:
    return make_dataset(tiny_text, tmp_path_factory.mktemp("data"))


def train_argv(data_dir: Path, run_dir: Path, max_iters: int = 2) -> list[str]:
    return ["train", "--data", str(data_dir), "--out", str(run_dir), *TINY_FLAGS,
            "--max-iters", str(max_iters), "--eval-interval", "1"]


# ------------------------------------------------------------------ files: the bottom layer


def test_user_path_names_the_final_name_of_temporary_files():
    assert files.user_path("r/state/.step-00000020.k2j4x9_b.tmp/model.safetensors") == Path(
        "r/state/step-00000020/model.safetensors")
    assert files.user_path(".data.tmp-abc_12/val.bin") == Path("data/val.bin")
    assert files.user_path("x/.hf.partial-1234/config.json") == Path("x/hf/config.json")
    assert files.user_path("x/.config.json.abcdefgh.tmp") == Path("x/config.json")
    assert files.user_path("x/.hidden/y.txt") == Path("x/.hidden/y.txt")


def test_format_bytes():
    assert [files.format_bytes(n) for n in (0, 1023, 1536, 3 << 20, 5 << 40)] == [
        "0 B", "1023 B", "1.5 KiB", "3.0 MiB", "5.0 TiB"]


@pytest.mark.parametrize(("exc", "expected"), [
    (enospc(), errno.ENOSPC),
    (enospc(errno.EROFS), errno.EROFS),
    (enospc(errno.EIO), errno.EIO),
    (PermissionError(errno.EACCES, "Permission denied"), errno.EACCES),
    (SafetensorError(RUST_ENOSPC), errno.ENOSPC),
    (SafetensorError("Error while serializing: I/O error: Read-only file system (os error 30)"),
     errno.EROFS),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 0),
    (OSError("1048576 requested and 786432 written"), 0),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), None),
    (SafetensorError("Error while deserializing header: HeaderTooLarge"), None),
    (RuntimeError("CUDA out of memory"), None),
    (ValueError("bad"), None),
])
def test_failed_write_errno_recognises_each_library(exc, expected):
    assert files.failed_write_errno(exc) == expected


def test_atomic_write_turns_a_full_disk_into_a_write_error(tmp_path):
    files.atomic_write_text(tmp_path / "f.txt", "old")

    def fills_the_disk(tmp: Path) -> None:
        tmp.write_text("partial")
        raise SafetensorError(RUST_ENOSPC)

    with pytest.raises(WriteError) as info:
        files.atomic_write(tmp_path / "f.txt", fills_the_disk)
    message = str(info.value)
    assert message.startswith(f"cannot write {tmp_path / 'f.txt'}: {NO_SPACE} (")
    assert f"free in {tmp_path})" in message and "Free some space" in message
    assert info.value.errno == errno.ENOSPC and info.value.free > 0
    assert os.listdir(tmp_path) == ["f.txt"] and (tmp_path / "f.txt").read_text() == "old"
    assert pickle.loads(pickle.dumps(info.value)).args == info.value.args


def test_an_errno_less_torch_failure_on_a_full_disk_is_no_space(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_free_space", lambda folder: (0, folder))

    def torch_fails(tmp: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5 vs 3")

    with pytest.raises(WriteError, match=f"cannot write .*trainer.pt: {NO_SPACE} \\(0 B free"):
        files.atomic_write(tmp_path / "trainer.pt", torch_fails)
    assert os.listdir(tmp_path) == []


def test_an_errno_less_failure_with_room_left_says_what_failed(tmp_path):
    def tofile_fails(tmp: Path) -> None:
        raise OSError("1048576 requested and 786432 written")

    with pytest.raises(WriteError, match="the write failed \\(1048576 requested and 786432"):
        files.atomic_write(tmp_path / "x.bin", tofile_fails)


def test_other_errors_pass_through_atomic_write_unchanged(tmp_path):
    def broken(tmp: Path) -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        files.atomic_write(tmp_path / "x", broken)
    assert os.listdir(tmp_path) == []


def test_atomic_write_to_a_folder_names_it(tmp_path):
    with pytest.raises(files.GptlabError, match=f"cannot write {tmp_path}: it is a folder"):
        files.atomic_write_text(tmp_path, "x")


def test_append_bytes_leaves_no_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    fd = files.open_append(path)
    files.append_bytes(fd, b'{"a": 1}\n', path)
    real_write = os.write

    def half_then_full(fd_: int, data) -> int:
        real_write(fd_, bytes(data[:3]))
        raise enospc()

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError, match=f"cannot write {path}: {NO_SPACE}"):
        files.append_bytes(fd, b'{"a": 2}\n', path)
    monkeypatch.undo()
    os.close(fd)
    assert path.read_bytes() == b'{"a": 1}\n'


def test_write_errors_adds_what_is_intact_and_leaves_reads_alone(tmp_path):
    with pytest.raises(WriteError, match="; the old one is intact\\. Write somewhere else$"):
        with files.write_errors(tmp_path, "the old one is intact"):
            raise enospc(errno.EROFS, str(tmp_path / "out.bin"))
    # EACCES on a file outside the target is a read of an input, not a failed write
    with pytest.raises(PermissionError):
        with files.write_errors(tmp_path / "out", "x"):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "in.txt"))
    with pytest.raises(WriteError, match="permission denied"):
        with files.write_errors(tmp_path / "out", "x"):
            raise PermissionError(errno.EACCES, "Permission denied",
                                  str(tmp_path / ".out.tmp-ab12" / "val.bin"))


# ------------------------------------------------------------------ training: each write site


@contextlib.contextmanager
def failing(monkeypatch, owner, name: str, when: Callable[..., bool],
            exc: Callable[[], BaseException]) -> Iterator[None]:
    """Make `owner.name(...)` raise `exc()` whenever `when(*args)` is true."""
    real = getattr(owner, name)

    def fake(*args, **kwargs):
        if when(*args, **kwargs):
            raise exc()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, fake)
    yield


def _in_step(step: int, path) -> bool:
    path = path.name if hasattr(path, "write") else path  # torch.save may get an open file
    return Path(path).parent.name.startswith(f".step-{step:08d}.")


def _dst_named(prefix: str) -> Callable[..., bool]:
    return lambda src, dst, *a, **k: Path(dst).name.startswith(f".{prefix}.")


@contextlib.contextmanager
def _failing_many(monkeypatch, patches) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for owner, name, when in patches:
            stack.enter_context(failing(monkeypatch, owner, name, when, enospc))
        yield


# site → (patch(monkeypatch), the file named, the step the last complete checkpoint has)
TRAIN_SITES: dict[str, tuple[Callable, str, int | None]] = {
    "checkpoint weights": (
        lambda mp: failing(mp, safetensors.torch, "serialize_file",
                           lambda tensors, filename, **kw: _in_step(1, filename),
                           lambda: SafetensorError(RUST_ENOSPC)),
        "state/step-00000001/model.safetensors", 0),
    "trainer state": (
        lambda mp: failing(mp, torch, "save", lambda obj, f, *a, **k: _in_step(1, f),
                           enospc),
        "state/step-00000001/trainer.pt", 0),
    "best.safetensors": (  # a hard link where it can, else a copy: both fail
        lambda mp: _failing_many(mp, [(os, "link", _dst_named("best.safetensors")),
                                      (shutil, "copyfile", _dst_named("best.safetensors"))]),
        "best.safetensors", 0),
    "metrics.jsonl": (
        lambda mp: failing(mp, os, "write",
                           lambda fd, data: bytes(data[:26]) == b'{"kind": "eval", "step": 1',
                           enospc),
        "metrics.jsonl", 0),
    "config.json": (
        lambda mp: failing(mp, Path, "write_text", lambda self, *a, **k:
                           self.name.startswith(".config.json."), enospc),
        "config.json", None),
    "tokenizer.json": (
        lambda mp: failing(mp, shutil, "copyfile", _dst_named("tokenizer.json"), enospc),
        "tokenizer.json", None),
}


@pytest.mark.parametrize("site", list(TRAIN_SITES))
def test_train_write_site_fails_in_one_line(site, data_dir, tmp_path, monkeypatch, capsys):
    patch, named, intact_step = TRAIN_SITES[site]
    run = tmp_path / "run"
    with patch(monkeypatch):
        assert main(train_argv(data_dir, run)) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot write {run / named}: {NO_SPACE} ("), line
    assert_free_space_named(line)
    assert hidden_entries(tmp_path) == []
    if intact_step is None:
        assert "no checkpoint was written yet" in line
        assert not run.exists()  # a new run that failed before its first checkpoint
        return
    last = run / "state" / f"step-{intact_step:08d}"
    assert f"the last complete checkpoint is step {intact_step} ({last})" in line
    assert f"`gptlab train --out {run} --resume`" in line
    assert ckpt.latest_checkpoint_dir(run) == last
    assert ckpt.load_run(run, which="latest").model is not None
    for record in (json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()):
        assert record["step"] <= 1  # every line whole


def test_a_read_only_run_folder_is_one_line(data_dir, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    with failing(monkeypatch, Path, "write_text",
                 lambda self, *a, **k: self.name.startswith(".config.json."),
                 lambda: enospc(errno.EROFS)):
        assert main(train_argv(data_dir, run)) == 1
    line = one_error_line(capsys)
    assert f"cannot write {run / 'config.json'}: read-only file system" in line
    assert line.endswith("Write somewhere else")


def test_no_permission_is_one_line(data_dir, tmp_path, monkeypatch, capsys):
    import tempfile

    run = tmp_path / "run"

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: denied(*a, **k)
                        if k.get("prefix") == ".config.json." else real(*a, **k))
    assert main(train_argv(data_dir, run)) == 1
    line = one_error_line(capsys)
    assert f"cannot write {run / 'config.json'}: permission denied" in line
    assert "Check who owns the folder and its permissions" in line


# ------------------------------------------------------------------ prepare


class _FullFile:
    """A file object whose every write fails as on a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise enospc()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


PREPARE_SITES: dict[str, Callable] = {
    "train.bin (all tokens)": lambda mp: mp.setattr(
        encode, "open", lambda path, mode="r", *a, **k: _FullFile(open(path, mode, *a, **k)),
        raising=False),
    "val.bin": lambda mp: failing(mp, shutil, "copyfileobj", lambda *a, **k: True, enospc),
    "tokenizer.json": lambda mp: failing(mp, Path, "write_bytes", lambda self, *a, **k:
                                         self.name.startswith(".tokenizer.json."), enospc),
    "meta.json": lambda mp: failing(mp, Path, "write_text", lambda self, *a, **k:
                                    self.name.startswith(".meta.json."), enospc),
}


def _prepare_argv(src: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "--input", str(src), "--out", str(out), "--no-progress", *extra]


@pytest.mark.parametrize("site", list(PREPARE_SITES))
def test_prepare_write_site_fails_in_one_line(site, tiny_text, tmp_path, monkeypatch, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text(tiny_text)
    out = tmp_path / "data"
    with contextlib.ExitStack() as stack:
        patched = PREPARE_SITES[site](monkeypatch)
        if patched is not None:
            stack.enter_context(patched)
        assert main(_prepare_argv(src, out)) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot write {out}") and NO_SPACE in line, line
    assert_free_space_named(line)
    assert f"nothing was written to {out}" in line
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt"]


def test_prepare_over_a_dataset_keeps_it(tiny_text, tmp_path, monkeypatch, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text(tiny_text)
    out = tmp_path / "data"
    assert main(_prepare_argv(src, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    with failing(monkeypatch, Path, "write_text",
                 lambda self, *a, **k: self.name.startswith(".meta.json."), enospc):
        assert main(_prepare_argv(src, out, "--force", "--tokenizer", "word")) == 1
    line = one_error_line(capsys)
    assert f"the dataset already in {out} is unchanged" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert hidden_entries(tmp_path) == []


# ------------------------------------------------------------------ export and import


def _gpt2_like_run(path: Path, gpt2_vocab: bool = False) -> Path:
    from gptlab.tokenizers import GPT2Tokenizer

    config = ModelConfig(vocab_size=50257 if gpt2_vocab else 3, block_size=8, n_layer=1,
                         n_head=2, n_embd=16, dropout=0.0, bias=True, qkv_bias=True,
                         activation="gelu", pos_encoding="learned", tie_weights=True)
    tokenizer = GPT2Tokenizer() if gpt2_vocab else CharTokenizer(list("abc"))
    return ckpt.write_run(path, GPT(config), tokenizer)


def _safetensors_full(monkeypatch):
    return failing(monkeypatch, safetensors.torch, "serialize_file", lambda *a, **k: True,
                   lambda: SafetensorError(RUST_ENOSPC))


def _assert_nothing_written(capsys, out: Path, named: str) -> None:
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot write {out / named}: {NO_SPACE} ("), line
    assert_free_space_named(line)
    assert f"nothing was written to {out}" in line
    assert not out.exists() and hidden_entries(out.parent) == []


def test_export_hf_on_a_full_disk(tmp_path, monkeypatch, capsys):
    run = _gpt2_like_run(tmp_path / "run")
    out = tmp_path / "exported" / "hf"
    with _safetensors_full(monkeypatch):
        assert main(["export", "hf", str(run), "--out", str(out)]) == 1
    _assert_nothing_written(capsys, out, "model.safetensors")


def test_export_hf_config_on_a_full_disk(tmp_path, monkeypatch, capsys):
    run = _gpt2_like_run(tmp_path / "run")
    out = tmp_path / "exported" / "hf"
    with failing(monkeypatch, Path, "write_text",
                 lambda self, *a, **k: self.name.startswith(".config.json."), enospc):
        assert main(["export", "hf", str(run), "--out", str(out)]) == 1
    _assert_nothing_written(capsys, out, "config.json")


def test_import_hf_on_a_full_disk(tmp_path, monkeypatch, capsys):
    run = _gpt2_like_run(tmp_path / "run", gpt2_vocab=True)
    assert main(["export", "hf", str(run), "--out", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    out = tmp_path / "imported"
    with _safetensors_full(monkeypatch):
        assert main(["import", "hf", str(tmp_path / "hf"), "--out", str(out)]) == 1
    _assert_nothing_written(capsys, out, "model.safetensors")


def test_import_nanogpt_on_a_full_disk(tmp_path, monkeypatch, capsys):
    chars = sorted(set("First Citizen:\nBefore we proceed any further!?"))
    nanogpt_checkpoint(tmp_path / "ckpt.pt", vocab_size=len(chars))
    nanogpt_meta(tmp_path / "meta.pkl", chars)
    out = tmp_path / "runs" / "imported"
    with _safetensors_full(monkeypatch):
        assert main(["import", "nanogpt", str(tmp_path / "ckpt.pt"), "--meta",
                     str(tmp_path / "meta.pkl"), "--out", str(out)]) == 1
    _assert_nothing_written(capsys, out, "model.safetensors")


# ------------------------------------------------------------------ a real full disk


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 3 MiB tmpfs at tmp_path/disk (root on Linux only; skipped elsewhere)."""
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_train_onto_a_full_disk(small_disk, data_dir, capsys):
    """A 2-layer, 96-channel model: its first checkpoint (weights, optimizer not yet
    stepped) fits in 3 MiB, the second (with Adam's moments) does not."""
    run = small_disk / "run"
    argv = train_argv(data_dir, run, max_iters=3)
    argv[argv.index("--n-embd") + 1] = "96"
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot write {run}/state/step-00000001/"), line
    assert NO_SPACE in line and " free in " in line
    assert f"the last complete checkpoint is step 0 ({run}/state/step-00000000)" in line
    assert hidden_entries(small_disk) == []
    loaded = ckpt.load_run(run, which="latest")
    assert loaded.model.config.n_embd == 96
    assert ckpt.load_checkpoint(run, loaded.model)["step"] == 0


def test_prepare_onto_a_full_disk(small_disk, tmp_path, capsys):
    src = tmp_path / "big.txt"
    line = "".join(chr(97 + (i * 7) % 26) for i in range(99)) + "\n"
    src.write_text(line * 40_000)  # 4 MB of text: 8 MB of uint16 ids
    out = small_disk / "data"
    assert main(_prepare_argv(src, out)) == 1
    message = one_error_line(capsys)
    assert message.startswith(f"error: cannot write {out}") and NO_SPACE in message, message
    assert f"nothing was written to {out}" in message
    assert os.listdir(small_disk) == []
