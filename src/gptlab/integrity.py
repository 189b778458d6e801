"""Checksums on write, verification on read: one mechanism for every file gptlab trusts.

Each folder that holds files gptlab reads back later (a run folder, each step folder
`state/step-N/`, a dataset folder) keeps a manifest, `checksums.json`, that lists them:

    {"format": "gptlab-checksums", "algorithm": "xxh3_128",
     "files": {"model.safetensors": {"size": 43185928, "xxh3_128": "5d1c...e0"}, ...},
     "manifest_xxh3_128": "9a0f...31"}

Design choices:
- xxh3_128 (the `xxhash` package): the fastest of the hashes measured for this
  (docs/benchmarks.md, "Integrity (#17)"), so every load can afford to check every byte.
  It catches accidental damage (a bad disk, a bad copy, a truncated transfer), not
  tampering: loading never runs code from a file whatever its checksum says.
- A manifest beside the files, not inside them: one mechanism for safetensors, torch's zip
  files, raw `.bin` token files and JSON alike; each file stays byte for byte what other
  tools expect; and no file has to hold the checksum of itself.
- The manifest checks itself (`manifest_xxh3_128` covers the rest of it), so a flipped bit
  in it reports the manifest, not a healthy file, as corrupt.
- Replacing a listed file records the new digest before the rename and keeps the old one
  accepted (`record_files(..., keep_previous=True)`): a process killed between the two
  steps, or a reader that races a writer, sees either version pass, never a false alarm.
- A file that no manifest lists (written by an older gptlab) is read unchecked, with a
  debug-level note: existing runs and datasets keep working.

Bottom layer: imports only `gptlab.errors` and `gptlab.files`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import xxhash

from gptlab.errors import GptlabError
from gptlab.files import atomic_write, write_json

log = logging.getLogger(__name__)

ALGORITHM = "xxh3_128"
MANIFEST_FILE = "checksums.json"
MANIFEST_FORMAT = "gptlab-checksums"
_SELF_KEY = f"manifest_{ALGORITHM}"
_CHUNK = 1 << 20  # read size while hashing: big enough to keep the hash busy, cache-sized

Status = Literal["ok", "corrupt", "missing", "no checksum", "inconsistent"]
Entry = dict[str, Any]  # {"size": int, ALGORITHM: hex str} (+ "previous": [Entry])


class CorruptFileError(GptlabError):
    """A file (or a manifest) whose bytes differ from what gptlab wrote, or that is gone.

    `path` is the file; the message names it, says it is corrupt and gives the way out.
    """

    def __init__(self, message: str, path: str | os.PathLike[str]):
        super().__init__(message)
        self.path = Path(path)


@dataclass
class FileCheck:
    """One line of `gptlab verify`: a file's path, its status and why."""

    path: str
    status: Status
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


# ---------------------------------------------------------------------------- digests


def file_digest(path: str | os.PathLike[str]) -> Entry:
    """{"size": bytes, "xxh3_128": hex digest} of a file, read in 1 MiB chunks."""
    hasher = xxhash.xxh3_128()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
            size += n
    return {"size": size, ALGORITHM: hasher.hexdigest()}


class _HashingFile:
    """A binary file that hashes every byte written to it (what `torch.save` needs)."""

    def __init__(self, f: BinaryIO):
        self.f, self.hasher, self.size = f, xxhash.xxh3_128(), 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self.f.write(data)

    @property
    def name(self) -> str:
        return self.f.name

    def flush(self) -> None:
        self.f.flush()


def checked_write(
    path: str | os.PathLike[str], write: Callable[[Any], None], record: bool = True,
    stream: bool = False,
) -> Entry:
    """`gptlab.files.atomic_write(path, write)` that also returns the written file's digest.

    `write` gets the temporary file's path, and the digest is read back from it; with
    `stream`, it gets a binary file object instead (for `torch.save`), and the digest comes
    from the bytes on their way, without reading the file again. With `record`, the digest
    goes into the folder's manifest (the old one kept accepted) before the rename.
    """
    path = Path(path)
    digest: Entry = {}

    def write_and_digest(tmp: Path) -> None:
        if stream:
            with open(tmp, "wb") as f:
                hashing = _HashingFile(f)
                write(hashing)
            digest.update({"size": hashing.size, ALGORITHM: hashing.hasher.hexdigest()})
        else:
            write(tmp)
            digest.update(file_digest(tmp))
        if record:
            record_files(path.parent, {path.name: digest}, keep_previous=True)

    atomic_write(path, write_and_digest)
    return digest


# ---------------------------------------------------------------------------- manifests


def _self_digest(doc: dict[str, Any]) -> str:
    body = {k: doc.get(k) for k in ("format", "algorithm", "files")}
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True).encode("utf-8"))


def read_manifest(dir_path: str | os.PathLike[str]) -> dict[str, Entry] | None:
    """The files a folder's manifest lists ({name: entry}), or None when it has none.

    Raises:
        CorruptFileError: the manifest is unreadable or fails its own checksum.
    """
    path = Path(dir_path) / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        doc = json.loads(raw.decode("utf-8"))
        ok = (isinstance(doc, dict) and doc.get("format") == MANIFEST_FORMAT
              and isinstance(doc.get("files"), dict) and doc.get(_SELF_KEY) == _self_digest(doc))
    except (UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise CorruptFileError(
            f"{path} is corrupt (it fails its own checksum), so the files it lists cannot be "
            f"checked: run `gptlab verify {Path(dir_path)}`, or delete {MANIFEST_FILE} to "
            "read them unchecked", path)
    if doc.get("algorithm") != ALGORITHM:  # a newer gptlab's manifest: nothing to check with
        log.debug("%s uses %s, not %s: not checked", path, doc.get("algorithm"), ALGORITHM)
        return None
    return doc["files"]


def write_manifest(dir_path: str | os.PathLike[str], files: dict[str, Entry]) -> None:
    """Write a folder's manifest listing exactly `files` ({name: entry}), atomically."""
    doc: dict[str, Any] = {"format": MANIFEST_FORMAT, "algorithm": ALGORITHM,
                           "files": dict(sorted(files.items()))}
    doc[_SELF_KEY] = _self_digest(doc)
    write_json(Path(dir_path) / MANIFEST_FILE, doc)


def record_files(dir_path: str | os.PathLike[str], files: dict[str, Entry | None] | Iterable[str],
                 keep_previous: bool = False) -> None:
    """Add (or replace, or with None remove) entries of a folder's manifest.

    `files` maps names to entries, or lists names to digest now. With `keep_previous`, a
    replaced entry stays accepted until the next change (see the module docstring).
    """
    dir_path = Path(dir_path)
    if not isinstance(files, dict):
        files = {name: file_digest(dir_path / name) for name in files}
    try:
        listed = dict(read_manifest(dir_path) or {})
    except CorruptFileError:
        listed = {}  # rewritten from what is known now; the other entries are lost
        log.warning("%s was corrupt: rewriting it", dir_path / MANIFEST_FILE)
    for name, entry in files.items():
        old = listed.pop(name, None)
        if entry is None:
            continue
        entry = {k: v for k, v in entry.items() if k != "previous"}
        if keep_previous and old and not _matches(old, entry):
            entry["previous"] = [{k: v for k, v in old.items() if k != "previous"}]
        listed[name] = entry
    write_manifest(dir_path, listed)


# ---------------------------------------------------------------------------- checks


def _matches(entry: Entry, digest: Entry) -> bool:
    return any(e.get("size") == digest["size"] and e.get(ALGORITHM) == digest[ALGORITHM]
               for e in (entry, *entry.get("previous", ())))


def check_file(path: str | os.PathLike[str]) -> FileCheck:
    """The status of one file against its folder's manifest (never raises for the file).

    "ok": its digest matches; "corrupt": it does not, or the manifest is corrupt;
    "missing": listed but absent; "no checksum": not listed, or no manifest (whether the
    file exists or not: its reader says what is wrong with an absent one).
    """
    path = Path(path)
    try:
        listed = read_manifest(path.parent)
    except CorruptFileError:
        return FileCheck(str(path), "corrupt", f"{MANIFEST_FILE} beside it is corrupt")
    entry = (listed or {}).get(path.name)
    if entry is None:
        return FileCheck(str(path), "no checksum",
                         f"not listed in {MANIFEST_FILE}" if listed else f"no {MANIFEST_FILE}")
    if not path.is_file():
        return FileCheck(str(path), "missing", f"listed in {MANIFEST_FILE} but absent")
    digest = file_digest(path)
    if _matches(entry, digest):
        return FileCheck(str(path), "ok")
    fresh = (read_manifest(path.parent) or {}).get(path.name)  # a writer may have replaced it
    if fresh is not None and _matches(fresh, digest):
        return FileCheck(str(path), "ok")
    if digest["size"] != entry.get("size"):
        why = f"{digest['size']} bytes where {entry.get('size')} were written: truncated or padded"
    else:
        why = f"its {ALGORITHM} checksum differs from the one recorded when it was written"
    return FileCheck(str(path), "corrupt", why)


def verify_file(path: str | os.PathLike[str], fix: str = "") -> bool:
    """Check one file before reading it: True when its checksum matched, False when none
    was recorded (an older gptlab wrote it; noted at debug level).

    Raises:
        CorruptFileError: corrupt, or listed but missing (the message ends with `fix`), or
            the folder's manifest is corrupt.
    """
    read_manifest(Path(path).parent)  # a corrupt manifest is named as such, with its own fix
    result = check_file(path)
    if result.status == "ok":
        return True
    if result.status == "no checksum":
        log.debug("%s has no checksum (%s): read unchecked", path, result.detail)
        return False
    what = "is missing" if result.status == "missing" else "is corrupt"
    raise CorruptFileError(f"{path} {what} ({result.detail})" + (f": {fix}" if fix else ""),
                           path)
