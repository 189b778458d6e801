"""Checksums on write, verification on read, resume fallback and `gptlab verify` (#17).

The bit-flip properties are seeded random loops: one bit at a random offset of a file,
detected by the reader gptlab uses for that file, 100 out of 100 times.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
from pathlib import Path

import pytest

from gptlab import checkpoint as ckpt
from gptlab import integrity
from gptlab.cli import main
from gptlab.data.dataset import verify_dataset
from gptlab.errors import GptlabError
from gptlab.integrity import MANIFEST_FILE, CorruptFileError, check_file, record_files

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import TINY_FLAGS, make_dataset, same_tensors, weights  # noqa: E402

TRIES = 100
STEPS = ["--max-iters", "4", "--eval-interval", "2", "--keep-last", "2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_text) -> Path:
    return make_dataset(tiny_text, tmp_path_factory.mktemp("ds"))


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> Path:
    """A tiny run with step folders at steps 2 and 4 (never modified: tests copy it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--data", str(data_dir), "--out", str(run), *TINY_FLAGS, *STEPS]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run (a copy: the hard links become separate files)."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def data(data_dir, tmp_path) -> Path:
    return Path(shutil.copytree(data_dir, tmp_path / "data"))


def flip_bit(path: Path, rng: random.Random) -> tuple[int, int]:
    """Flip one random bit of `path` in place; returns (offset, bit) to flip it back."""
    offset, bit = rng.randrange(path.stat().st_size), rng.randrange(8)
    flip_at(path, offset, bit)
    return offset, bit


def flip_at(path: Path, offset: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def _tiny_model(run: Path):
    return ckpt.model_from_config(ckpt.read_run_config(run)["model"], run)


def _only_newest_step(run: Path) -> Path:
    *older, newest = ckpt.step_dirs(run)
    for step_dir in older:
        shutil.rmtree(step_dir)
    return newest


# ---------------------------------------------------------------------------- manifests


def test_every_trusted_file_is_listed_with_its_digest(run, data_dir):
    listed = integrity.read_manifest(run)
    assert sorted(listed) == ["best.safetensors", "model.safetensors", "tokenizer.json"]
    for step_dir in ckpt.step_dirs(run):
        assert sorted(integrity.read_manifest(step_dir)) == ["model.safetensors", "trainer.pt"]
    assert sorted(integrity.read_manifest(data_dir)) == [
        "meta.json", "tokenizer.json", "train.bin", "val.bin"]
    doc = json.loads((run / MANIFEST_FILE).read_text())
    assert doc["format"] == "gptlab-checksums" and doc["algorithm"] == "xxh3_128"
    entry = doc["files"]["model.safetensors"]
    assert entry["size"] == (run / "model.safetensors").stat().st_size
    assert entry["xxh3_128"] == integrity.file_digest(run / "model.safetensors")["xxh3_128"]
    assert len(entry["xxh3_128"]) == 32


def test_a_replaced_file_keeps_its_previous_digest_accepted_once(tmp_path):
    """Record before rename: a process killed in between leaves either version passing."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    record_files(tmp_path, ["f.bin"])
    new = {"size": 3, "xxh3_128": integrity.file_digest(path)["xxh3_128"][::-1]}
    record_files(tmp_path, {"f.bin": new}, keep_previous=True)
    assert check_file(path).status == "ok"  # the old bytes: still accepted
    integrity.checked_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert check_file(path).status == "ok"
    path.write_bytes(b"old")  # two versions back: no longer accepted
    assert check_file(path).status == "corrupt"


def test_a_truncated_file_is_named_with_its_sizes(run):
    path = run / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CorruptFileError, match=r"tokenizer.json is corrupt \(\d+ bytes where "
                       r"\d+ were written: truncated or padded\)"):
        integrity.verify_file(path)


# ---------------------------------------------------------------------------- bit flips


def _readers(run: Path, data: Path):
    """kind → (file to flip, the load gptlab does on it), each raising on damage."""
    from gptlab.train.config import TrainConfig
    from gptlab.train.data import load_training_data
    from gptlab.train.distributed import DistInfo

    step_dir = _only_newest_step(run)
    model = _tiny_model(run)

    def resume() -> None:  # reads (and verifies) trainer.pt whether or not it is applied
        ckpt.load_checkpoint(run, model)

    def train_start() -> None:
        load_training_data(TrainConfig(data=str(data)), run, DistInfo())

    return {
        "weights": (step_dir / "model.safetensors", resume),
        "trainer.pt": (step_dir / "trainer.pt", resume),
        "step checksums.json": (step_dir / MANIFEST_FILE, resume),
        "best.safetensors": (run / "best.safetensors", lambda: ckpt.load_run(run)),
        "run tokenizer.json": (run / "tokenizer.json", lambda: ckpt.load_run(run)),
        "train.bin": (data / "train.bin", train_start),
        "val.bin": (data / "val.bin", train_start),
        "tokenizer.json": (data / "tokenizer.json", train_start),
        "meta.json": (data / "meta.json", train_start),
        "dataset checksums.json": (data / MANIFEST_FILE, train_start),
    }


@pytest.mark.parametrize("kind", [
    "weights", "trainer.pt", "step checksums.json", "best.safetensors", "run tokenizer.json",
    "train.bin", "val.bin", "tokenizer.json", "meta.json", "dataset checksums.json",
])
def test_one_flipped_bit_is_detected_every_time(run, data, kind):
    path, load = _readers(run, data)[kind]
    load()  # intact: loads
    rng = random.Random(f"gptlab-17-{kind}")
    detected = 0
    for _ in range(TRIES):
        offset, bit = flip_bit(path, rng)
        try:
            load()
        except GptlabError as exc:
            detected += 1
            assert "Traceback" not in str(exc) and "\n" not in str(exc)
        flip_at(path, offset, bit)  # back to intact
    assert detected == TRIES, f"{kind}: {detected}/{TRIES} flips detected"
    load()


def test_a_flip_in_tensor_data_is_reported_as_corrupt_with_the_fix(run):
    """The issue's case: safetensors' own header checks pass, the checksum does not."""
    path = run / "best.safetensors"
    flip_at(path, path.stat().st_size - 7, 3)  # inside the last tensor's bytes
    with pytest.raises(CorruptFileError, match=r"best.safetensors is corrupt \(its xxh3_128 "
                       r"checksum differs.*--which latest.*--checkpoint latest"):
        ckpt.load_run(run)
    assert ckpt.load_run(run, which="latest").weights_path.name == "model.safetensors"


# ---------------------------------------------------------------------------- fallback


def _resume(run: Path, max_iters: int = 6) -> int:
    return main(["train", "--out", str(run), "--resume", "--max-iters", str(max_iters),
                 "--no-progress"])


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.pt"])
def test_resume_falls_back_to_the_previous_intact_step_folder(
    run, data_dir, tmp_path, caplog, name
):
    flip_bit(run / "state" / "step-00000004" / name, random.Random(name))
    with caplog.at_level(logging.WARNING):
        assert _resume(run) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"step-00000004/{name} is corrupt" in warnings[0]
    assert "resuming from the checkpoint before it" in warnings[0]
    # from step 2 to 6: bitwise what a run that was never damaged ends with
    full = tmp_path / "full"
    assert main(["train", "--data", str(data_dir), "--out", str(full), *TINY_FLAGS,
                 "--max-iters", "6", "--eval-interval", "2"]) == 0
    assert same_tensors(weights(full / "model.safetensors"), weights(run / "model.safetensors"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in records if r["kind"] == "event"]
    assert len(events) == 1 and events[0]["event"] == "skipped_corrupt_checkpoint"
    assert events[0]["step"] == 2 and events[0]["skipped_step"] == 4
    assert events[0]["file"] == f"state/step-00000004/{name}"
    assert events[0]["moved_to"] == "state/step-00000004.corrupt"
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 2, 4, 6]
    assert (run / "state" / "step-00000004.corrupt" / name).is_file()
    assert [p.name for p in ckpt.step_dirs(run)] == ["step-00000004", "step-00000006"]
    assert main(["verify", str(run)]) == 0  # the new step-4 is intact
    assert main(["plot", str(run)]) == 0  # readers of metrics.jsonl pass the event line by


def test_resume_with_no_intact_checkpoint_is_one_clear_line(run, capsys):
    for step_dir in ckpt.step_dirs(run):
        flip_bit(step_dir / "trainer.pt", random.Random(step_dir.name))
    capsys.readouterr()
    assert _resume(run) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "has no intact checkpoint to resume from" in err
    assert "step-00000004/trainer.pt is corrupt" in err and "the 1 older ones too" in err


# ---------------------------------------------------------------------------- older files


def _strip_checksums(folder: Path) -> None:
    for manifest in folder.rglob(MANIFEST_FILE):
        manifest.unlink()


def test_folders_without_checksums_still_load(run, data, caplog):
    _strip_checksums(run)
    _strip_checksums(data)
    with caplog.at_level(logging.DEBUG, logger="gptlab.integrity"):
        loaded = ckpt.load_run(run)
        verify_dataset(data)
    assert loaded.weights_path.name == "best.safetensors"
    notes = [r for r in caplog.records if "has no checksum" in r.getMessage()]
    assert notes and all(r.levelno == logging.DEBUG for r in notes)
    model = _tiny_model(run)
    assert ckpt.load_checkpoint(run, model)["step"] == 4
    assert _resume(run) == 0  # and the resumed run writes checksums again
    assert check_file(run / "model.safetensors").status == "ok"


# ---------------------------------------------------------------------------- gptlab verify


def _verify(capsys, *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["verify", *args])
    return code, capsys.readouterr().out.splitlines()


def test_verify_a_good_run_and_dataset(run, data, capsys):
    code, lines = _verify(capsys, str(run))
    assert code == 0
    assert [line.split()[:2] for line in lines[:4]] == [
        ["ok", "config.json"], ["ok", "tokenizer.json"], ["ok", "model.safetensors"],
        ["ok", "best.safetensors"]]
    assert any(line.split()[:2] == ["ok", "state/step-00000002/trainer.pt"] for line in lines)
    assert lines[-1].endswith("8 ok: all well")
    code, lines = _verify(capsys, str(data), "--json")
    doc = json.loads("\n".join(lines))
    assert code == 0 and doc["ok"] and doc["kind"] == "dataset"
    assert [(f["path"], f["status"]) for f in doc["files"]] == [
        ("meta.json", "ok"), ("tokenizer.json", "ok"), ("train.bin", "ok"), ("val.bin", "ok")]


def test_verify_names_corrupt_and_missing_files(run, capsys):
    flip_bit(run / "best.safetensors", random.Random(1))
    (run / "state" / "step-00000002" / "trainer.pt").unlink()
    code, lines = _verify(capsys, str(run))
    assert code == 1 and lines[-1].endswith("NOT all well")
    by_path = {line.split()[1]: line.split()[0] for line in lines[:-1]}
    assert by_path["best.safetensors"] == "corrupt"
    assert by_path["state/step-00000002/trainer.pt"] == "missing"
    assert by_path["model.safetensors"] == "ok"
    code, lines = _verify(capsys, str(run), "--json")
    doc = json.loads("\n".join(lines))
    assert code == 1 and doc["ok"] is False and doc["kind"] == "run"
    assert {f["path"]: f["status"] for f in doc["files"]}["best.safetensors"] == "corrupt"


def test_verify_a_pre_checksum_folder_checks_what_it_can(data, capsys):
    _strip_checksums(data)
    code, lines = _verify(capsys, str(data))
    assert code == 0 and all(line.startswith("no checksum") for line in lines[:-1])
    assert _verify(capsys, str(data), "--strict")[0] == 1
    # an id past the vocabulary, which no checksum can vouch against now
    import numpy as np

    tokens = np.fromfile(data / "train.bin", dtype="<u2")
    tokens[7] = 60_000
    tokens.tofile(data / "train.bin")
    code, lines = _verify(capsys, str(data))
    train = next(line for line in lines if " train.bin" in line)
    assert code == 1 and train.startswith("corrupt")
    assert "token id 60000 is not below vocab_size" in train


def test_verify_finds_files_that_disagree(run, data, tmp_path, capsys):
    other = make_dataset("only four chars\n" * 10, tmp_path / "other")
    shutil.copyfile(other / "tokenizer.json", data / "tokenizer.json")
    record_files(data, ["tokenizer.json"])  # checksums agree: the files do not
    code, lines = _verify(capsys, str(data))
    assert code == 1
    line = next(line for line in lines if " tokenizer.json" in line)
    assert line.startswith("inconsistent") and "but meta.json says" in line
    code, lines = _verify(capsys, str(run / "state"))
    assert code == 1  # not a run or dataset folder: one error line on stderr


def test_verify_on_a_file_or_unknown_folder_is_an_error(run, tmp_path, capsys):
    assert main(["verify", str(run / "config.json")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["verify", str(tmp_path / "empty")]) == 1
    assert "neither a run folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------- commands


def test_sample_and_eval_on_a_corrupt_best_name_which_latest(run, capsys):
    flip_bit(run / "best.safetensors", random.Random(2))
    for command in (["sample", str(run), "--max-new-tokens", "3"], ["eval", str(run)]):
        capsys.readouterr()
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        assert "best.safetensors is corrupt" in err and "--which latest" in err
    assert main(["sample", str(run), "--max-new-tokens", "3", "--which", "latest"]) == 0
    from gptlab.serve.engine import ModelEngine

    with pytest.raises(CorruptFileError, match="--checkpoint latest"):
        ModelEngine.from_run_dir(run)


def test_training_on_a_corrupt_dataset_names_the_fix(data, tmp_path, capsys):
    flip_bit(data / "val.bin", random.Random(3))
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), *TINY_FLAGS,
                 "--max-iters", "1"]) == 1
    err = capsys.readouterr().err
    assert "val.bin is corrupt" in err and "--force" in err and err.count("\n") == 1


def test_prepare_rebuilds_a_corrupt_copy_of_the_same_dataset(tiny_text, tmp_path):
    from gptlab.data import prepare

    src = tmp_path / "in.txt"
    src.write_text(tiny_text, encoding="utf-8")
    prepare(src, tmp_path / "ds")
    good = (tmp_path / "ds" / "train.bin").read_bytes()
    flip_bit(tmp_path / "ds" / "train.bin", random.Random(4))
    prepare(src, tmp_path / "ds")
    assert (tmp_path / "ds" / "train.bin").read_bytes() == good
    verify_dataset(tmp_path / "ds")


def test_init_from_a_corrupt_run_is_refused(run, data_dir, tmp_path, capsys):
    flip_bit(run / "best.safetensors", random.Random(5))
    capsys.readouterr()
    assert main(["train", "--data", str(data_dir), "--out", str(tmp_path / "ft"),
                 "--init-from", str(run), "--max-iters", "1", "--device", "cpu",
                 "--no-progress", "--sample-tokens", "0"]) == 1
    assert "best.safetensors is corrupt" in capsys.readouterr().err
