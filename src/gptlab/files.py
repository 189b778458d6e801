"""File helpers every layer shares: atomic writes, JSON, one safe `torch.load`, file modes,
and one-line errors for writes that fail (`WriteError`: a full disk, a read-only or failing
file system, no permission).

This module is the bottom layer: it imports nothing from gptlab but `gptlab.errors`, and
torch only inside `safe_torch_load`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
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
    one, never a partial write; when `write` raises, `path` is untouched and the temporary
    file is gone.

    Raises:
        WriteError: the write failed for a reason outside gptlab (a full disk, a read-only
            or failing file system, no permission; see `failed_write_errno`).
        GptlabError: `path` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise GptlabError(f"cannot write {user_path(path)}: it is a folder; pass a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _as_write_error(exc, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    failure = None
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        set_normal_mode(tmp)
        os.replace(tmp, path)
    except Exception as exc:
        code = failed_write_errno(exc)
        if code == 0 and _free_bytes(path.parent) < _NEARLY_FULL:
            code = errno.ENOSPC  # the library kept no errno; a full disk is the usual cause
        tmp.unlink(missing_ok=True)
        if code is None:
            raise
        failure = exc if isinstance(exc, WriteError) else (code, _first_line(exc))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if isinstance(failure, WriteError):
        raise failure
    if failure is not None:
        # Raised out here: until the except block ends, its traceback keeps the failed
        # writer (torch's holds the file open) and the space of the deleted file.
        raise WriteError(path, failure[0], detail=failure[1])
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


def open_append(path: str | os.PathLike[str]) -> int:
    """Open `path` for appending (created with the normal mode); returns the descriptor."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _as_write_error(exc, path) from None


def append_bytes(fd: int, data: bytes, path: str | os.PathLike[str]) -> None:
    """Append `data` to the file open as `fd` (see `open_append`) whole or not at all.

    A write that fails part way is cut off again, so a log never ends in a torn record,
    and raised as a `WriteError` naming `path`.
    """
    start = os.fstat(fd).st_size
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise _as_write_error(exc, path) from None


# ---------------------------------------------------------------------------- write errors

# errno → (what happened, the fix): the ways a write fails for reasons outside gptlab.
_WRITE_FAILURES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free some space, or write somewhere else"),
    errno.EROFS: ("read-only file system", "write somewhere else"),
    errno.EIO: ("input/output error (a failing disk or a lost network mount)",
                "check the disk, or write somewhere else"),
    errno.EACCES: ("permission denied", "check who owns the folder and its permissions, "
                   "or write somewhere else"),
    errno.EPERM: ("operation not permitted", "check who owns the folder and its "
                  "permissions, or write somewhere else"),
    errno.EFBIG: ("file too large for this file system", "write somewhere else"),
}
if hasattr(errno, "EDQUOT"):  # not on every platform
    _WRITE_FAILURES[errno.EDQUOT] = ("disk quota exceeded",
                                     "free some space in your quota, or write somewhere else")
# Only writes end with these; EIO, EACCES and EPERM also come from reading a file.
_WRITE_ONLY = frozenset(_WRITE_FAILURES) - {errno.EIO, errno.EACCES, errno.EPERM}
_NEARLY_FULL = 1 << 20  # bytes free below which an errno-less failed write is a full disk
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors (Rust) names an errno
# torch.save (C++) and ndarray.tofile (C stdio) report a failed write without its errno.
_ERRNO_LESS_FAILURE = re.compile(
    r"PytorchStreamWriter failed writing|unexpected pos \d+ vs \d+|file write failed"
    r"|\d+ requested and \d+ written"
)
# The temporary names gptlab writes under before a rename: atomic_write's and
# save_checkpoint's `.NAME.XXXXXXXX.tmp`, a dataset's `.NAME.tmp-XXXX` build folder and
# `.NAME.old-XXXX` trash, an import's `.NAME.partial-PID`.
_TEMPORARY_NAME = re.compile(r"\.(.+)\.(?:\w{8}\.tmp|tmp-\w+|old-\w+|partial-\d+)")


def user_path(path: str | os.PathLike[str]) -> Path:
    """`path` with each temporary folder or file name replaced by the name it will have:
    `run/state/.step-00000020.k2j4x9ab.tmp/model.safetensors` → `run/state/step-00000020/
    model.safetensors`, the path a user knows."""
    parts = [m.group(1) if (m := _TEMPORARY_NAME.fullmatch(part)) else part
             for part in Path(path).parts]
    return Path(*parts)


def _free_space(folder: Path) -> tuple[int, Path]:
    """(free bytes, folder) on the file system of `folder` or of its nearest existing parent
    (a temporary folder is gone by the time a failed write is reported)."""
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free, candidate
    return 0, folder


def _free_bytes(folder: Path) -> int:
    return _free_space(folder)[0]


def format_bytes(n: int) -> str:
    """`1536` → `1.5 KiB`; `0` → `0 B`."""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


def failed_write_errno(exc: BaseException) -> int | None:
    """The errno of a write that failed for a reason outside gptlab, 0 when the library that
    wrote kept none, or None when `exc` is something else (a bug, bad data, an interrupt).

    Recognised: an OSError with one of `_WRITE_FAILURES`' errnos; safetensors' SafetensorError
    ("... No space left on device (os error 28)"); torch.save's and ndarray.tofile's errno-less
    failed writes; a WriteError.
    """
    if isinstance(exc, WriteError):
        return exc.errno
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno if exc.errno in _WRITE_FAILURES else None
    if type(exc).__name__ == "SafetensorError":  # not imported: this is the bottom layer
        match = _RUST_OS_ERROR.search(text)
        code = int(match.group(1)) if match else None
        return code if code in _WRITE_FAILURES else None
    if isinstance(exc, (OSError, RuntimeError)) and _ERRNO_LESS_FAILURE.search(text):
        return 0
    return None


class WriteError(GptlabError):
    """A write that failed for a reason outside gptlab, as one line: the path, what
    happened, the free space, what is still intact (`intact`, added by the caller that
    knows it, e.g. "the last complete checkpoint is step 10") and the fix.

    Attributes:
        path: the file as the user knows it (temporary names replaced, `user_path`).
        errno: the errno (0: unknown), e.g. errno.ENOSPC.
        free: free bytes on that file system when the error was raised.
    """

    def __init__(self, path: str | os.PathLike[str], code: int, intact: str = "",
                 detail: str = ""):
        self.path = user_path(path)
        self.errno = code
        self.intact = intact
        self.detail = detail
        self.free, folder = _free_space(Path(path).parent)
        what, fix = _WRITE_FAILURES.get(code, (f"the write failed ({detail})",
                                               "check the disk, or write somewhere else"))
        where = user_path(folder) if str(folder) != "." else "this folder"
        message = f"cannot write {self.path}: {what} ({format_bytes(self.free)} free in {where})"
        message += f"; {intact}" if intact else ""
        super().__init__(f"{message}. {fix[0].upper()}{fix[1:]}")

    def with_intact(self, intact: str) -> WriteError:
        """This error with `intact` said (an error that already says what is intact, from a
        caller closer to the write, keeps its own)."""
        if self.intact or not intact:
            return self
        return WriteError(self.path, self.errno, intact, self.detail)

    def __reduce__(self):  # picklable, for errors raised in worker processes
        return (WriteError, (self.path, self.errno, self.intact, self.detail))


def _as_write_error(exc: BaseException, path: str | os.PathLike[str],
                    code: int | None = None) -> BaseException:
    """`exc` as a WriteError naming `path` when it is a failed write, else `exc` itself."""
    code = failed_write_errno(exc) if code is None else code
    if isinstance(exc, WriteError) or code is None:
        return exc
    return WriteError(path, code, detail=_first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


@contextlib.contextmanager
def write_errors(target: str | os.PathLike[str],
                 intact: str | Callable[[], str] = "") -> Iterator[None]:
    """Report a failed write inside the block as one WriteError that says what is intact.

    A WriteError raised inside gets `intact` (a callable is asked only then); so does an
    OSError or safetensors error of a failed write, named by its file: always for the
    errnos only writes give (ENOSPC, EDQUOT, EROFS, EFBIG), and for EIO / EACCES / EPERM
    when the file is `target` or lies under it (reading an input can fail with those too).
    """
    try:
        yield
    except Exception as exc:
        code = failed_write_errno(exc)
        if code is None:
            raise
        if not isinstance(exc, WriteError):
            filename = getattr(exc, "filename", None)
            inside = filename is not None and user_path(filename).resolve().is_relative_to(
                user_path(target).resolve())
            if code not in _WRITE_ONLY and not inside:
                raise
            exc = _as_write_error(exc, filename or target, code)
        raise exc.with_intact(intact() if callable(intact) else intact) from None


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
