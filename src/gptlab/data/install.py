"""Where a prepared dataset goes: the `--out` checks, the build folder and the install.

A dataset is built in a temporary folder beside `out` and renamed into place only once
it is complete, so a failure or an interrupt leaves nothing behind, and an old dataset in
`out` is replaced in one rename (it is moved aside first, then deleted).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptlab.data.dataset import META_FILE, is_intact, load_meta
from gptlab.errors import ConfigError, GptlabError
from gptlab.files import set_normal_mode


def output_dir(out: str | os.PathLike) -> Path:
    """`--out` as a Path; the current folder or one above it is refused (install replaces it)."""
    out = Path(out).expanduser()
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ConfigError(
            f"--out {out} is the current folder or one above it: name a folder to create, "
            "e.g. --out data"
        )
    return out


def existing_dataset(
    out: Path, options: dict[str, Any], source_sha256: str, force: bool
) -> dict[str, Any] | None:
    """The meta of an up-to-date dataset in `out` (same source bytes and options), or None
    when there is none to keep; raise if `out` holds something else and not `force`."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise GptlabError(f"--out {out} is a file: pass a folder path for the dataset")
    if not (out / META_FILE).is_file():
        if any(out.iterdir()):
            raise GptlabError(
                f"--out {out} is not empty and holds no gptlab dataset: pass another --out"
            )
        return None
    try:
        meta = load_meta(out)
    except GptlabError:
        if force:
            return None
        raise GptlabError(
            f"--out {out} holds a damaged dataset ({META_FILE} is unreadable): add --force to "
            "rebuild it"
        ) from None
    if meta.get("source_sha256") == source_sha256 and meta.get("options") == options:
        return meta if is_intact(out) else None  # damaged: rebuilding it loses nothing
    if force:
        return None
    raise GptlabError(
        f"--out {out} holds a different dataset ({meta.get('tokenizer')} tokens of "
        f"{meta.get('source')}): pass another --out, or --force to replace it"
    )


@contextlib.contextmanager
def build_folder(out: Path) -> Iterator[Path]:
    """A new temporary folder beside `out` to build the dataset in, deleted on exit."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install(tmp: Path, out: Path) -> None:
    """Move the finished folder `tmp` to `out`, replacing an old dataset or empty folder."""
    # mkdtemp/mkstemp create private (0700/0600) entries; give the dataset normal modes.
    set_normal_mode(tmp, directory=True)
    for path in tmp.iterdir():
        set_normal_mode(path)
    if not out.exists():
        os.replace(tmp, out)
        return
    trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.replace(out, trash / "old")
    os.replace(tmp, out)
    shutil.rmtree(trash, ignore_errors=True)
