"""Small file helpers: modes for atomically written files, and telling text from binary.

`tempfile.mkstemp` creates private (0600) files; a dataset, tokenizer or checkpoint renamed
into place should get the mode any other file the user creates gets (0666 minus the umask).
"""

from __future__ import annotations

import os

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
    """chmod `path` to 0666 (0777 for a folder) minus the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())
