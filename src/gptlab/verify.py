"""Whole folders checked: what `gptlab verify` reports for a run folder or a dataset folder.

Every file gets one `gptlab.integrity.FileCheck`: first its bytes against its folder's
checksums.json ("ok", "corrupt", "missing" or "no checksum"), then what can be checked inside
a file whose checksum did not already fail: token ids below the vocabulary size in
train.bin / val.bin, the tokenizer's vocabulary against meta.json or the run's config, each
safetensors header, the trainer state of a step folder without checksums. A problem found
inside makes the file "corrupt"; files that disagree with each other are "inconsistent".
A run folder's own dataset (RUN_DIR/data, written by `gptlab train --input`) is checked too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gptlab import checkpoint as ckpt
from gptlab.data.dataset import DATASET_FILES, META_FILE, SPLIT_FILES, load_meta, load_split
from gptlab.errors import GptlabError
from gptlab.files import safe_torch_load
from gptlab.integrity import MANIFEST_FILE, FileCheck, Status, check_file, read_manifest

_TOKENS_PER_CHUNK = 1 << 24  # ids read at a time for the max: bounded memory on any dataset
_BROKEN = ("corrupt", "missing")


def verify_folder(path: str | Path) -> tuple[str, list[FileCheck]]:
    """("run" | "dataset" | "folder", one check per file) for a run folder, a dataset folder
    or any folder with a checksums.json (a step folder); paths are relative to `path`."""
    path = Path(path)
    if not path.is_dir():
        raise GptlabError(f"{path} is not a folder: pass a run folder or a dataset folder")
    if (path / ckpt.CONFIG_FILE).is_file():
        return "run", check_run(path)
    if (path / META_FILE).is_file():
        return "dataset", check_dataset(path)
    if (path / MANIFEST_FILE).is_file():
        return "folder", _check_listed(path, [], "")
    raise GptlabError(
        f"{path} is neither a run folder (no {ckpt.CONFIG_FILE}) nor a dataset folder (no "
        f"{META_FILE}): pass the folder `gptlab train --out` or `gptlab prepare --out` wrote"
    )


def all_ok(checks: list[FileCheck], strict: bool = False) -> bool:
    """Whether nothing is wrong ("no checksum" counts as wrong only when `strict`)."""
    allowed = {"ok"} if strict else {"ok", "no checksum"}
    return all(c.status in allowed for c in checks)


def _check(root: Path, name: str, prefix: str) -> FileCheck:
    """check_file, with the path relative to the folder checked and a missing file named."""
    result = check_file(root / name)
    result.path = prefix + name
    if not (root / name).exists() and result.status == "no checksum":
        result.status, result.detail = "missing", "expected here"
    return result


def _inside(result: FileCheck, test: Callable[[], Any], status: Status = "corrupt") -> Any:
    """Run `test` on a file whose checksum did not fail; a GptlabError from it marks the
    file `status`. Returns what `test` returned (None when skipped or failed)."""
    if result.status in _BROKEN:
        return None
    try:
        return test()
    except GptlabError as exc:
        result.status = status
        result.detail = "; ".join(filter(None, (result.detail, str(exc))))
        return None


def _check_listed(root: Path, seen: list[FileCheck], prefix: str) -> list[FileCheck]:
    """Checks of the files a folder's manifest lists beyond those in `seen`."""
    try:
        listed = read_manifest(root) or {}
    except GptlabError:
        listed = {}  # the checks in `seen` already say the manifest is corrupt
    names = {c.path for c in seen}
    return seen + [_check(root, n, prefix) for n in sorted(listed) if prefix + n not in names]


# ---------------------------------------------------------------------------- datasets


def check_dataset(data_dir: Path, prefix: str = "") -> list[FileCheck]:
    """One check per file of a dataset folder (meta.json, tokenizer.json, train/val.bin)."""
    from gptlab.tokenizers import load_tokenizer

    data_dir = Path(data_dir)
    order = (META_FILE, ckpt.TOKENIZER_FILE, *SPLIT_FILES.values())
    assert set(order) == set(DATASET_FILES)
    checks = {name: _check(data_dir, name, prefix) for name in order}
    meta = _inside(checks[META_FILE], lambda: load_meta(data_dir)) or {}
    vocab_size = meta.get("vocab_size")
    tok_check = checks[ckpt.TOKENIZER_FILE]
    tok = _inside(tok_check, lambda: load_tokenizer(data_dir / ckpt.TOKENIZER_FILE))
    if tok is not None and vocab_size is not None and tok.vocab_size != vocab_size:
        _mismatch(tok_check, f"{tok.vocab_size} tokens, but {META_FILE} says {vocab_size}")
    for split, name in SPLIT_FILES.items():
        tokens = _inside(checks[name], lambda split=split: load_split(data_dir, split))
        if tokens is not None and isinstance(vocab_size, int):
            _inside(checks[name], lambda tokens=tokens: check_token_ids(tokens, vocab_size))
    return _check_listed(data_dir, list(checks.values()), prefix)


def check_token_ids(tokens: np.ndarray, vocab_size: int) -> None:
    """Raise a GptlabError unless every id in `tokens` (n_tokens,) is < vocab_size; the max
    is taken over chunks, so a memmap of any size is read with bounded memory."""
    top = max((int(tokens[i:i + _TOKENS_PER_CHUNK].max())
               for i in range(0, len(tokens), _TOKENS_PER_CHUNK)), default=-1)
    if top >= vocab_size:
        raise GptlabError(f"token id {top} is not below vocab_size {vocab_size}")


def _mismatch(result: FileCheck, why: str) -> None:
    def fail() -> None:
        raise GptlabError(why)

    _inside(result, fail, status="inconsistent")


# ---------------------------------------------------------------------------- runs


def check_run(run_dir: Path) -> list[FileCheck]:
    """One check per file of a run folder, its step folders and its own dataset."""
    from gptlab.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    config_check = FileCheck(ckpt.CONFIG_FILE, "ok", "no checksum by design: resume rewrites it")
    config = _inside(config_check, lambda: ckpt.read_run_config(run_dir)) or {}
    model = _inside(config_check, lambda: _model_config(config["model"])) if config else None
    checks = [config_check, _check(run_dir, ckpt.TOKENIZER_FILE, "")]
    tok = _inside(checks[1], lambda: load_tokenizer(run_dir / ckpt.TOKENIZER_FILE))
    if tok is not None and model is not None and tok.vocab_size > model.vocab_size:
        _mismatch(checks[1], f"{tok.vocab_size} tokens, more than the model's vocab_size "
                  f"{model.vocab_size} in {ckpt.CONFIG_FILE}")
    data_vocab = config.get("data", {}).get("vocab_size") if isinstance(config, dict) else None
    if tok is not None and isinstance(data_vocab, int) and tok.vocab_size != data_vocab:
        _mismatch(checks[1], f"{tok.vocab_size} tokens, but {ckpt.CONFIG_FILE} records a "
                  f"dataset of {data_vocab}")
    for name in (ckpt.LATEST_WEIGHTS, ckpt.BEST_WEIGHTS):
        checks.append(_check(run_dir, name, ""))
        _inside(checks[-1], lambda name=name: ckpt.read_weights_metadata(run_dir / name))
    checks = _check_listed(run_dir, checks, "")
    for step_dir in ckpt.step_dirs(run_dir):
        checks += _check_step_dir(step_dir, f"{ckpt.STATE_DIR}/{step_dir.name}/")
    if (run_dir / "data" / META_FILE).is_file():
        checks += check_dataset(run_dir / "data", prefix="data/")
    return checks


def _model_config(fields: dict[str, Any]) -> Any:
    from gptlab.model import ModelConfig

    try:
        return ModelConfig.from_dict(fields)
    except (TypeError, ValueError, KeyError) as exc:
        raise GptlabError(f"invalid model configuration ({exc})") from None


def _check_step_dir(step_dir: Path, prefix: str) -> list[FileCheck]:
    weights = _check(step_dir, ckpt.LATEST_WEIGHTS, prefix)
    _inside(weights, lambda: ckpt.read_weights_metadata(step_dir / ckpt.LATEST_WEIGHTS))
    state = _check(step_dir, ckpt.TRAINER_STATE_FILE, prefix)
    if state.status == "no checksum":  # nothing else vouches for it: it must at least parse
        _inside(state, lambda: safe_torch_load(step_dir / ckpt.TRAINER_STATE_FILE,
                                               what="trainer state"))
    return _check_listed(step_dir, [weights, state], prefix)
