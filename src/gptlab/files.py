"""File helpers every layer shares: atomic writes, JSON, one safe `torch.load`, file modes.

This module is the bottom layer: it imports nothing from gptlab but `gptlab.errors`, and
torch only inside `safe_torch_load`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gptlab.errors import GptlabError


def check_not_binary(path: str | os.PathLike[str], raw: bytes, offset: int = 0) -> None:
    """Refuse bytes that are not UTF-8 text's: a UTF-16 byte order mark (when `raw` starts
    the file, `offset` 0) or a NUL byte, naming the file, the offset and the fix."""
    if offset == 0 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise GptlabError(
            f"{path} is UTF-16 text (it starts with a UTF-16 byte order mark): convert it to "
            f"UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 {path} > converted.txt`"
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise GptlabError(
            f"{path} looks like a binary file (NUL byte at byte offset {offset + nul}): "
            "pass UTF-8 text files only"
        )


def umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def set_normal_mode(path: str | os.PathLike[str], directory: bool = False) -> None:
    """chmod `path` to 0666 (0777 for a folder) minus the umask.

    `tempfile.mkstemp` creates private (0600) files; a dataset, tokenizer or checkpoint
    renamed into place should get the mode any other file the user creates gets.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


# ---------------------------------------------------------------------------- atomic writes


def fsync_dir(dir_path: str | os.PathLike[str]) -> None:
    """Make a rename inside `dir_path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(dir_path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Write `path` via `write(tmp_path)` (a temporary file in its folder), fsync, rename.

    Readers, and a process killed mid-write, see either the old file or the complete new
    one, never a partial write; when `write` raises, `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        set_normal_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a binary file atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Atomically make `dst` a copy of `src`."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Atomically make `dst` a hard link to `src` (a copy where links are not possible)."""

    def write(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    atomic_write(dst, write)


# ---------------------------------------------------------------------------- JSON


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON (keys in their order), atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing or malformed file is a `GptlabError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GptlabError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GptlabError(f"{path} is not valid JSON ({exc}): the file is corrupt") from None


# ---------------------------------------------------------------------------- torch.load

# torch's weights-only unpickler names the global it refused: "... GLOBAL posix.system ...".
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def safe_torch_load(
    path: str | os.PathLike[str],
    *,
    what: str = "file",
    map_location: Any = "cpu",
    allowed_globals: Sequence[Any] = (),
    refused_fix: str = "",
    corrupt_fix: str = "",
) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain data, never pickled code.

    Args:
        what: what the file should be, for the message ("checkpoint", "trainer state").
        allowed_globals: extra classes the unpickler may rebuild (torch.serialization's
            `safe_globals`, e.g. numpy scalar types); they must be data, not code.
        refused_fix: appended to the message when the file asks for code.
        corrupt_fix: appended to the message when the file is truncated or corrupt.

    Raises:
        GptlabError: the file asks for a class or function (nothing is run), or it is
            truncated, corrupt or missing.
    """
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise GptlabError(f"{path} could not be read ({exc.strerror or exc})") from None
    except Exception as exc:  # zip, pickle, EOF and OS errors of many kinds: never a traceback
        refused = _REFUSED_GLOBAL.search(str(exc)) if isinstance(exc, pickle.PickleError) else None
        if refused:
            raise GptlabError(
                f"{path} could not be read safely: it holds pickled objects beyond tensors and "
                f"plain data (refusing to load {refused.group(1)}); gptlab never runs pickled "
                "code" + (f". {refused_fix}" if refused_fix else "")
            ) from None
        raise GptlabError(
            f"{path} could not be read safely ({_first_sentence(exc)}): truncated or corrupt "
            f"{what}" + (f"; {corrupt_fix}" if corrupt_fix else "")
        ) from None


def _first_sentence(exc: BaseException) -> str:
    """`RuntimeError: PytorchStreamReader failed reading zip archive: not a ZIP archive`."""
    text = str(exc).strip().split("\n")[0].split(". ")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
