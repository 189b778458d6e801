"""gptlab.files: atomic writes, JSON, the one safe `torch.load`, file modes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from gptlab import files
from gptlab.errors import GptlabError


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "f.txt"
    files.atomic_write_text(path, "old")

    def broken(tmp):
        tmp.write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        files.atomic_write(path, broken)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_atomic_writers_replace_the_file_with_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        files.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
        files.atomic_copy(tmp_path / "a.bin", tmp_path / "b.bin")
        files.atomic_link_or_copy(tmp_path / "a.bin", tmp_path / "c.bin")
        files.write_json(tmp_path / "d.json", {"b": 1, "a": [1, 2]})
    finally:
        os.umask(old)
    for name in ("a.bin", "b.bin", "c.bin"):
        assert (tmp_path / name).read_bytes() == b"\x00\x01"
    for name in ("a.bin", "b.bin", "c.bin", "d.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name
    assert (tmp_path / "d.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin", "c.bin", "d.json"]


def test_read_json_names_a_missing_or_malformed_file(tmp_path):
    path = tmp_path / "x.json"
    with pytest.raises(GptlabError, match="x.json not found"):
        files.read_json(path)
    path.write_text("{not json")
    with pytest.raises(GptlabError, match="x.json is not valid JSON"):
        files.read_json(path)
    files.write_json(path, {"k": "é"})
    assert files.read_json(path) == {"k": "é"}


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_torch_load_reads_tensors_and_plain_data(tmp_path):
    path = tmp_path / "s.pt"
    torch.save({"step": 3, "w": torch.arange(4), "rng": (1, [2.5, "x"])}, path)
    state = files.safe_torch_load(path)
    assert state["step"] == 3 and state["rng"] == (1, [2.5, "x"])
    assert torch.equal(state["w"], torch.arange(4))


def test_safe_torch_load_never_runs_pickled_code(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"x": _RunsCode(marker)}, path)
    with pytest.raises(GptlabError) as info:
        files.safe_torch_load(path, refused_fix="Re-save it")
    message = str(info.value)
    assert message.startswith(f"{path} could not be read safely")
    assert "refusing to load posix.system" in message or "refusing to load os.system" in message
    assert message.endswith("gptlab never runs pickled code. Re-save it")
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04 not really a zip"])
def test_safe_torch_load_names_a_corrupt_file_in_one_line(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(GptlabError) as info:
        files.safe_torch_load(path, what="checkpoint", corrupt_fix="download it again")
    message = str(info.value)
    assert message.startswith(f"{path} could not be read safely (")
    assert message.endswith("truncated or corrupt checkpoint; download it again")
    assert "\n" not in message


def test_safe_torch_load_of_a_truncated_or_missing_file(tmp_path):
    path = tmp_path / "t.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(GptlabError, match="t.pt could not be read safely .*truncated or corrupt"):
        files.safe_torch_load(path)
    with pytest.raises(GptlabError, match="nope.pt could not be read"):
        files.safe_torch_load(tmp_path / "nope.pt")


def test_safe_torch_load_allows_listed_data_classes(tmp_path):
    path = tmp_path / "np.pt"
    torch.save({"loss": np.float64(1.5)}, path)
    with pytest.raises(GptlabError, match="gptlab never runs pickled code"):
        files.safe_torch_load(path)
    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray.scalar, np.dtype, type(np.dtype("float64"))]
    assert files.safe_torch_load(path, allowed_globals=allowed)["loss"] == 1.5
