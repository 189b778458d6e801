"""Where prepare's text comes from: files, folders, globs, and named corpora in a cache.

A named corpus (`shakespeare`) is downloaded once into the cache folder (`cache_dir`) and
checked against the SHA-256 recorded here; once cached, nothing touches the network.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gptlab.errors import GptlabError
from gptlab.files import atomic_copy

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "GPTLAB_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/gptlab")
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class NamedCorpus:
    """A public corpus gptlab knows by name: where to get it and what its bytes hash to."""

    name: str
    url: str
    sha256: str
    size: int  # bytes
    filename: str
    description: str


NAMED_CORPORA: dict[str, NamedCorpus] = {
    "shakespeare": NamedCorpus(
        name="shakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394,
        filename="tinyshakespeare.txt",
        description="Tiny Shakespeare (char-rnn), 1,115,394 characters",
    ),
}


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The corpus cache folder: `override`, else $GPTLAB_CACHE_DIR, else ~/.cache/gptlab."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_CACHE_DIR.expanduser()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _named(name: str) -> NamedCorpus:
    if name not in NAMED_CORPORA:
        known = ", ".join(sorted(NAMED_CORPORA))
        raise GptlabError(f"unknown corpus {name!r}: known corpora are {known}")
    return NAMED_CORPORA[name]


def cached_corpus_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where the named corpus lives (or would live) in the cache."""
    return cache_dir(cache) / "corpora" / _named(name).filename


def is_cached(name: str, cache: str | os.PathLike | None = None) -> bool:
    """True when the named corpus is in the cache with the right size (hash checked on use)."""
    path = cached_corpus_path(name, cache)
    return path.is_file() and path.stat().st_size == _named(name).size


def _copy_verified(corpus: NamedCorpus, src: Path, dest: Path, what: str) -> None:
    """Copy `src` to `dest` atomically if its SHA-256 matches `corpus`; else GptlabError."""
    actual = file_sha256(src)
    if actual != corpus.sha256:
        raise GptlabError(
            f"{what} has SHA-256 {actual}, expected {corpus.sha256} for corpus "
            f"{corpus.name!r}: pass the original file ({corpus.url})"
        )
    atomic_copy(src, dest)


def download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Fetch `url` into `dest` with urllib (tests replace this function to stay offline)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f, _HASH_BLOCK)


def fetch_corpus(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Return the path of the named corpus in the cache, downloading it on first use.

    `name` is a key of NAMED_CORPORA, e.g. "shakespeare"; `cache` overrides `cache_dir()`.

    Raises:
        GptlabError: unknown name, failed download, or a file whose hash does not match.
    """
    corpus = _named(name)
    path = cached_corpus_path(name, cache)
    if is_cached(name, cache):
        if file_sha256(path) != corpus.sha256:
            raise GptlabError(
                f"cached corpus {path} is corrupt (SHA-256 mismatch): delete it, or replace "
                f"it with `gptlab corpus add {name} FILE`"
            )
        return path
    logger.info("downloading corpus %r from %s", name, corpus.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as tmp:
        partial = Path(tmp) / corpus.filename
        try:
            download(corpus.url, partial)
        except (OSError, ValueError) as exc:  # URLError is an OSError
            raise GptlabError(
                f"could not download corpus {name!r} from {corpus.url} ({exc}): pass --input "
                f"FILE, or put a local copy in the cache with `gptlab corpus add {name} FILE`"
            ) from exc
        _copy_verified(corpus, partial, path, f"the download from {corpus.url}")
    return path


def add_corpus(name: str, file: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """Verify a local copy of a named corpus and put it in the cache; returns the cached path."""
    corpus = _named(name)
    src = Path(file)
    if not src.is_file():
        raise GptlabError(f"{src} is not a file: pass the local copy of corpus {name!r}")
    dest = cached_corpus_path(name, cache)
    _copy_verified(corpus, src, dest, str(src))
    return dest


def list_corpora(cache: str | os.PathLike | None = None) -> list[dict[str, object]]:
    """One row per named corpus: name, description, cached (bool), path, url."""
    return [
        {
            "name": c.name,
            "description": c.description,
            "cached": is_cached(c.name, cache),
            "path": str(cached_corpus_path(c.name, cache)),
            "url": c.url,
        }
        for c in NAMED_CORPORA.values()
    ]


def _folder_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files under `folder`, recursively, in sorted order; a folder
    written by `datasets.save_to_disk` contributes its Arrow shards only."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "state.json" in names and "dataset_info.json" in names:
            files += _saved_dataset_shards(Path(root))
            continue
        files += [Path(root) / n for n in sorted(names)
                  if not n.startswith(".") and n != "dataset_dict.json"]
    return [f for f in files if f.is_file()]


def _saved_dataset_shards(folder: Path) -> list[Path]:
    """The Arrow files a `datasets.save_to_disk` folder lists in its state.json, in order."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        return [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GptlabError(
            f"{folder}/state.json is not a readable `datasets` state file ({exc!r}): pass the "
            "folder's data-*.arrow files instead"
        ) from None


def _resolve_one(spec: str, cache: str | os.PathLike | None) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = _folder_files(path)
        if not files:
            raise GptlabError(f"folder {path} holds no files: pass a folder of text files")
        return files
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            raise GptlabError(f"pattern {spec!r} matches no files: check the --input glob")
        return files
    if spec in NAMED_CORPORA:
        return [fetch_corpus(spec, cache)]
    known = ", ".join(sorted(NAMED_CORPORA))
    raise GptlabError(
        f"input {spec!r} not found: pass a file, folder, glob or a named corpus ({known})"
    )


def resolve_sources(
    inputs: str | os.PathLike | list[str | os.PathLike], cache: str | os.PathLike | None = None
) -> list[Path]:
    """Turn --input values (files, folders, globs, corpus names) into a list of files.

    A folder contributes its non-hidden files recursively in sorted order; a glob its
    matches in sorted order; a corpus name its cached file (downloaded on first use).
    Each file is one document.
    """
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not specs:
        raise GptlabError("no input given: pass --input FILE_OR_FOLDER_OR_GLOB_OR_NAME")
    files: list[Path] = []
    for spec in specs:
        files += _resolve_one(os.fspath(spec), cache)
    return files
