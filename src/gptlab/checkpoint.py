"""Run folders and checkpoints: weights in safetensors, metadata in JSON, atomic writes.

A run folder (RUN_DIR) holds everything `gptlab sample`, `gptlab eval` and a resumed
`gptlab train` need. Its layout is a public contract (interop and the HTTP server build on
it):

    RUN_DIR/
      config.json          {"model": ModelConfig.to_dict(), "train": TrainConfig dict ({} for
                           imported weights), "data": {...dataset facts...},
                           "gptlab_version": "0.1.0"}
      tokenizer.json       the tokenizer (a copy of the dataset's tokenizer.json)
      model.safetensors    latest weights
      best.safetensors     weights with the best validation loss so far
      metrics.jsonl        one JSON object per line (see gptlab.train.evaluate)
      checksums.json       size and xxh3_128 checksum of tokenizer.json and the weights
      state/step-00000100/ one resumable checkpoint per kept step (the last K):
        model.safetensors    the weights at that step
        trainer.pt           optimizer state, step, RNG states (python, numpy, torch, cuda),
                             batch sampler state; read with torch.load(weights_only=True)
        checksums.json       size and checksum of both
      state/step-00000200.corrupt/  a step folder that failed verification, set aside by a
                           resume that fell back to the one before (see `load_checkpoint`)

Every file is written atomically (`gptlab.files.atomic_write`) and a step folder appears
under its final name only once complete, so a process killed at any moment leaves the
previous checkpoint intact. Loading never runs code from a file (`safe_torch_load`), and a
foreign, corrupt or truncated file, or a tokenizer that does not fit, is a `GptlabError`.

Every load checks the files it reads against their folder's checksums.json
(`gptlab.integrity`): a file whose bytes changed since it was written is a
`CorruptFileError` naming it and the way out; config.json and metrics.jsonl are not listed
(gptlab rewrites them as a run goes on; config.json is validated whenever it is read).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from gptlab import __version__
from gptlab.checks import is_int
from gptlab.errors import GptlabError
from gptlab.files import (
    atomic_link_or_copy,
    fsync_dir,
    read_json,
    safe_torch_load,
    set_normal_mode,
    write_json,
)
from gptlab.integrity import (
    CorruptFileError,
    Entry,
    checked_write,
    record_files,
    verify_file,
    write_manifest,
)

if TYPE_CHECKING:
    from gptlab.model import GPT, ModelConfig
    from gptlab.tokenizers import Tokenizer

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
LATEST_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"
METRICS_FILE = "metrics.jsonl"
STATE_DIR = "state"
TRAINER_STATE_FILE = "trainer.pt"
_STEP_PREFIX = "step-"
CORRUPT_SUFFIX = ".corrupt"  # a step folder set aside by a resume that fell back
SKIPPED_EVENT = "skipped_corrupt_checkpoint"  # its metrics.jsonl "event"

Which = Literal["best", "latest"]
WHICH_WEIGHTS: tuple[str, ...] = get_args(Which)


# ---------------------------------------------------------------------------- weights


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module  # DDP
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile
        else:
            return model


def save_weights(
    path: Path, model: torch.nn.Module, metadata: dict[str, str] | None = None,
    record: bool = False,
) -> Entry:
    """Write the model's weights to a safetensors file atomically (tied weights stored once).

    Returns its size and checksum (`gptlab.integrity.file_digest`); with `record` they also
    go into the folder's checksums.json.
    """
    meta = {"format": "pt", "gptlab_version": __version__, **(metadata or {})}
    return checked_write(Path(path), lambda tmp: save_model(_unwrap(model), str(tmp),
                                                            metadata=meta), record=record)


def read_weights_metadata(path: Path) -> dict[str, str]:
    """The metadata header of a safetensors file; a foreign or corrupt file is a GptlabError."""
    path = Path(path)
    if not path.is_file():
        raise GptlabError(f"{path} not found: train a model first or check the run folder")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise GptlabError(
            f"{path} is not a readable safetensors file ({exc}): it is corrupt, truncated "
            "or not a gptlab checkpoint"
        ) from None


_DAMAGED_FIX = ("it changed after gptlab wrote it (a bad disk, copy or transfer): use another "
                "copy, or `gptlab verify` the folder to see what is intact")


def load_weights(
    path: Path, model: torch.nn.Module, device: str | torch.device = "cpu", fix: str = ""
):
    """Load a safetensors file into `model` (strict: same parameter names and shapes).

    A missing, corrupt or truncated file (checked against its folder's checksums.json when
    listed there), or another model's weights, is a GptlabError; a `CorruptFileError`
    ends with `fix`.
    """
    path = Path(path)
    read_weights_metadata(path)  # checks the header before touching the model
    verify_file(path, fix or _DAMAGED_FIX)
    try:
        load_model(_unwrap(model), str(path), strict=True, device=str(device))
    except (SafetensorError, OSError) as exc:
        raise GptlabError(f"{path} could not be read ({exc}): the file is corrupt") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise GptlabError(
            f"{path} does not fit this model's configuration ({first}); check that "
            f"{CONFIG_FILE} belongs to these weights"
        ) from None


# ---------------------------------------------------------------------------- checkpoints


def step_dirs(run_dir: Path) -> list[Path]:
    """Complete step folders under RUN_DIR/state, oldest first."""
    state = Path(run_dir) / STATE_DIR
    if not state.is_dir():
        return []
    found = []
    for p in state.iterdir():
        if p.is_dir() and p.name.startswith(_STEP_PREFIX) and p.name[len(_STEP_PREFIX):].isdigit():
            found.append((int(p.name[len(_STEP_PREFIX):]), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint_dir(run_dir: Path) -> Path | None:
    """The newest complete step folder of a run, or None when it has none."""
    dirs = step_dirs(run_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep_last: int = 2,
    is_best: bool = False,
) -> Path:
    """Save a resumable checkpoint in RUN_DIR/state/step-NNNNNNNN, update model.safetensors
    and return the new step folder.

    Args:
        model: the model (DDP / compiled wrappers are unwrapped).
        optimizer: its state is stored with the trainer state (None: weights only).
        state: trainer state; must hold "step" (int); may hold tensors, numbers, strings,
            lists, tuples and dicts (whatever `torch.load(weights_only=True)` accepts).
        keep_last: how many step folders to keep (older ones go once the new one is done).
        is_best: also write best.safetensors.
    """
    if keep_last < 1:
        raise GptlabError(f"keep_last={keep_last} must be at least 1")
    run_dir = Path(run_dir)
    step = int(state["step"])
    state_root = run_dir / STATE_DIR
    state_root.mkdir(parents=True, exist_ok=True)
    final = state_root / f"{_STEP_PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=state_root))
    try:
        files = {LATEST_WEIGHTS: save_weights(tmp / LATEST_WEIGHTS, model, {"step": str(step)})}
        payload = dict(state)
        if optimizer is not None:
            payload["optimizer"] = optimizer.state_dict()
        files[TRAINER_STATE_FILE] = checked_write(
            tmp / TRAINER_STATE_FILE, lambda f: torch.save(payload, f), record=False, stream=True)
        write_manifest(tmp, files)
        set_normal_mode(tmp, directory=True)
        if final.exists():  # re-saving the same step (e.g. interrupted right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(state_root)
    weights = files[LATEST_WEIGHTS]  # the run folder's copies are links to these bytes
    record_files(run_dir, {LATEST_WEIGHTS: weights, **({BEST_WEIGHTS: weights} if is_best else {})},
                 keep_previous=True)
    atomic_link_or_copy(final / LATEST_WEIGHTS, run_dir / LATEST_WEIGHTS)
    if is_best:
        atomic_link_or_copy(final / LATEST_WEIGHTS, run_dir / BEST_WEIGHTS)
    for old in step_dirs(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in state_root.glob(f".{_STEP_PREFIX}*.tmp"):  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    log.debug("saved checkpoint %s", final)
    return final


def load_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    device: str | torch.device = "cpu",
    on_skip: Callable[[Path, CorruptFileError], None] | None = None,
) -> dict[str, Any]:
    """Restore the newest intact checkpoint of RUN_DIR into `model` (and `optimizer`).

    A step folder whose files fail their checksums, are missing or cannot be read is
    skipped with a one-line warning (and `on_skip(step_dir, error)`), and the one before it
    is tried: keep_last >= 2 keeps one. Nothing is loaded into `model` or `optimizer`
    before a folder's files are verified. Returns the trainer state saved with it ("step",
    RNG states, sampler state, ...), without the optimizer entry.

    Raises:
        CorruptFileError: no step folder is intact.
        GptlabError: no checkpoint at all, or one that does not fit this model or optimizer.
    """
    found = step_dirs(run_dir)
    if not found:
        raise GptlabError(
            f"{run_dir} has no checkpoint under {STATE_DIR}/ to resume from; "
            "start a new run without --resume"
        )
    damaged: list[CorruptFileError] = []
    for step_dir in reversed(found):
        try:
            return _load_step_dir(step_dir, model, optimizer, device)
        except CorruptFileError as exc:
            damaged.append(exc)
            if step_dir != found[0]:
                log.warning("%s: skipping %s, resuming from the checkpoint before it",
                            exc, step_dir.name)
            if on_skip is not None:
                on_skip(step_dir, exc)
    older = f" (the {len(damaged) - 1} older ones too)" if len(damaged) > 1 else ""
    raise CorruptFileError(
        f"{run_dir} has no intact checkpoint to resume from: {damaged[0]}{older}; start a new "
        f"run without --resume (`gptlab verify {run_dir}` lists what is intact)",
        damaged[0].path)


def _load_step_dir(
    step_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
    device: str | torch.device,
) -> dict[str, Any]:
    """Verify one step folder, then load it (see `load_checkpoint`)."""
    weights, state_path = step_dir / LATEST_WEIGHTS, step_dir / TRAINER_STATE_FILE
    for path in (weights, state_path):
        if not path.is_file():
            raise CorruptFileError(f"{path} is missing: the checkpoint is incomplete", path)
    # An unreadable file is reported as what it is, before its checksum is looked at.
    try:
        read_weights_metadata(weights)
    except GptlabError as exc:
        raise CorruptFileError(str(exc), weights) from None
    try:
        state = safe_torch_load(state_path, what="trainer state", map_location=device)
    except GptlabError as exc:
        raise CorruptFileError(str(exc), state_path) from None
    verify_file(state_path)  # the weights are verified by load_weights, before loading
    if not isinstance(state, dict) or not is_int(state.get("step")):
        raise GptlabError(f"{state_path} is not a gptlab trainer state (no 'step')")
    load_weights(weights, model, device)
    opt_state = state.pop("optimizer", None)
    if optimizer is not None:
        if opt_state is None:
            raise GptlabError(f"{state_path} holds no optimizer state: cannot resume exactly")
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise GptlabError(
                f"{state_path}: the optimizer state does not fit this model ({exc})"
            ) from None
    return state


def set_aside_corrupt(
    run_dir: Path, step_dir: Path, error: GptlabError, step: int
) -> dict[str, Any]:
    """Rename a step folder that `load_checkpoint` skipped to step-N.corrupt, out of the way
    of later resumes and of keep_last's pruning; returns the metrics.jsonl line recording it:

        {"kind": "event", "event": "skipped_corrupt_checkpoint", "step": 100 (resumed at),
         "skipped_step": 200, "file": "state/step-00000200/model.safetensors",
         "moved_to": "state/step-00000200.corrupt", "reason": "..."}
    """
    run_dir, step_dir = Path(run_dir), Path(step_dir)
    target = step_dir.with_name(step_dir.name + CORRUPT_SUFFIX)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(step_dir, target)
    file = getattr(error, "path", step_dir)
    log.debug("set %s aside as %s", step_dir, target.name)
    return {"kind": "event", "event": SKIPPED_EVENT, "step": int(step),
            "skipped_step": int(step_dir.name[len(_STEP_PREFIX):]),
            "file": _relative(file, run_dir), "moved_to": _relative(target, run_dir),
            "reason": str(error)}


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------- run folders


@dataclass
class Run:
    """A loaded run folder: `model` (in eval mode), its `tokenizer` and the `config` dict."""

    model: GPT
    tokenizer: Tokenizer
    config: dict[str, Any]
    run_dir: Path
    weights_path: Path


def run_config_dict(
    model_config: ModelConfig | dict[str, Any],
    train_config: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config.json document of a run."""
    model_dict = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    return {
        "model": model_dict,
        "train": dict(train_config or {}),
        "data": dict(data or {}),
        "gptlab_version": __version__,
    }


def write_tokenizer(run_dir: Path, tokenizer: Tokenizer | str | os.PathLike[str]) -> None:
    """Store the tokenizer as RUN_DIR/tokenizer.json (from a tokenizer object or a file),
    with its checksum in RUN_DIR/checksums.json."""
    dst = Path(run_dir) / TOKENIZER_FILE
    if isinstance(tokenizer, (str, os.PathLike)):
        src = Path(tokenizer)
        if src.resolve() == dst.resolve():
            record_files(dst.parent, [dst.name], keep_previous=True)
        else:
            checked_write(dst, lambda tmp: shutil.copyfile(src, tmp))
    else:
        checked_write(dst, lambda tmp: tokenizer.save(tmp))


def write_run(
    run_dir: Path,
    model: torch.nn.Module,
    tokenizer: Tokenizer | str | os.PathLike[str],
    train_config: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> Path:
    """Create (or refresh) a run folder from a model and a tokenizer, e.g. imported weights.

    Writes config.json, tokenizer.json, model.safetensors and best.safetensors (the same
    weights) and their checksums, so `load_run`, `gptlab sample` and `gptlab eval` work on it.

    Args:
        model: a `gptlab.model.GPT` (its `.config` is saved).
        tokenizer: a tokenizer object with `save(path)`, or the path of a tokenizer.json.
        train_config: TrainConfig as a dict, if any.
        data: dataset facts to record (e.g. {"name": "shakespeare", "tokenizer": "char"}).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plain = _unwrap(model)
    write_json(run_dir / CONFIG_FILE, run_config_dict(plain.config, train_config, data))
    write_tokenizer(run_dir, tokenizer)
    weights = save_weights(run_dir / LATEST_WEIGHTS, plain, record=True)
    record_files(run_dir, {BEST_WEIGHTS: weights}, keep_previous=True)
    atomic_link_or_copy(run_dir / LATEST_WEIGHTS, run_dir / BEST_WEIGHTS)
    return run_dir


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/config.json, checked to have a "model" section."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise GptlabError(f"{run_dir} is a file, not a run folder: pass the run's folder")
    if not run_dir.is_dir():
        raise GptlabError(f"run folder {run_dir} does not exist: train with --out {run_dir} first")
    if not (run_dir / CONFIG_FILE).is_file():
        raise GptlabError(f"{run_dir / CONFIG_FILE} not found: is this a gptlab run folder?")
    config = read_json(run_dir / CONFIG_FILE)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise GptlabError(f"{run_dir / CONFIG_FILE} has no 'model' section: not a gptlab run")
    return config


def model_from_config(model_dict: dict[str, Any], where: Path | str) -> GPT:
    """A new `GPT` (fresh weights) from a ModelConfig dict; errors name `where`."""
    from gptlab.model import GPT, ModelConfig

    try:
        config = ModelConfig.from_dict(model_dict)
    except GptlabError as exc:
        raise GptlabError(f"{where}: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise GptlabError(f"{where}: invalid model configuration ({exc})") from None
    return GPT(config)


def load_run(
    run_dir: Path,
    which: Which = "best",
    device: str | torch.device = "cpu",
) -> Run:
    """Load a run folder's model (eval mode, on `device`), tokenizer and config.

    `which` is "best" (best.safetensors, falling back to the latest weights when the run
    has no evaluation yet) or "latest" (model.safetensors). The weights and tokenizer are
    verified against RUN_DIR/checksums.json: a corrupt file is a `CorruptFileError` that
    names the other weights (`--which`) as the way out.
    """
    from gptlab.tokenizers import load_tokenizer

    if which not in WHICH_WEIGHTS:
        raise GptlabError(f"which={which!r} is not one of: {', '.join(WHICH_WEIGHTS)}")
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model = model_from_config(config["model"], run_dir / CONFIG_FILE)
    weights = run_dir / (BEST_WEIGHTS if which == "best" else LATEST_WEIGHTS)
    if which == "best" and not weights.exists():
        weights = run_dir / LATEST_WEIGHTS
    other = "latest" if weights.name == BEST_WEIGHTS else "best"
    load_weights(weights, model, device, fix=(
        f"load the {other} weights instead with --which {other} (`gptlab serve`: --checkpoint "
        f"{other}); `gptlab verify {run_dir}` lists what is intact"))
    model.to(device).eval()
    tok_path = run_dir / TOKENIZER_FILE
    if not tok_path.is_file():
        raise GptlabError(f"{tok_path} not found: the run folder is incomplete")
    verify_file(tok_path, "copy it again from the dataset the run was trained on (config.json "
                "names its folder as data.dir)")
    tokenizer = load_tokenizer(tok_path)
    vocab_size = model.config.vocab_size
    if tokenizer.vocab_size > vocab_size:  # it would produce ids the model has no row for
        raise GptlabError(
            f"{tok_path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
            f"vocab_size is {vocab_size}; the tokenizer does not belong to this model"
        )
    return Run(model=model, tokenizer=tokenizer, config=config, run_dir=run_dir,
               weights_path=weights)


def intact_checkpoint_note(run_dir: Path) -> str:
    """What a failed write leaves of a run, for its WriteError."""
    last = latest_checkpoint_dir(run_dir)
    if last is None:
        return "no checkpoint was written yet"
    step = int(last.name.removeprefix("step-"))
    return (f"the last complete checkpoint is step {step} ({last}): continue from it with "
            f"`gptlab train --out {run_dir} --resume` once there is room")
