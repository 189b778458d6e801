"""File modes for atomically written files.

`tempfile.mkstemp` creates private (0600) files; a dataset, tokenizer or checkpoint renamed
into place should get the mode any other file the user creates gets (0666 minus the umask).
"""

from __future__ import annotations

import os


def umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def set_normal_mode(path: str | os.PathLike[str], directory: bool = False) -> None:
    """chmod `path` to 0666 (0777 for a folder) minus the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())
