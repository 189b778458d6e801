"""What the trainer needs around the loop: device and precision, RNG state, dataset lookup."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptlab.errors import GptlabError
from gptlab.train.config import TrainConfig

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- device


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the
    kernel (no mmap for blocks under 1 GiB, no trimming under 1 GiB free).

    A CPU training step frees and re-allocates the same activation buffers every step; by
    default glibc maps large ones fresh each time and pays the page faults again. With the
    fused CPU AdamW it took lecture-small from 162 to 134 s here (docs/benchmarks.md,
    "Training"). It changes
    the whole process, so only `gptlab train` calls it. Returns False where it cannot
    (not Linux/glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def resolve_device(device: str) -> str:
    """"auto" -> cuda, then mps, then cpu; anything else is checked to exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise GptlabError(f"--device {device}: CUDA is not available here; use --device cpu")
    if kind == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise GptlabError(f"--device {device}: MPS is not available here; use --device cpu")
    if kind not in ("cpu", "cuda", "mps"):
        raise GptlabError(f"--device {device!r} is not one of: auto, cpu, cuda, cuda:N, mps")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The autocast dtype: "auto" is bfloat16 on CUDA GPUs that support it, else float32."""
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype == "float16" and not device.startswith("cuda"):
        raise GptlabError(
            f"--dtype float16 needs CUDA (device is {device}); use bfloat16 or float32"
        )
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def autocast_factory(
    device: str, dtype: torch.dtype
) -> Callable[[], contextlib.AbstractContextManager]:
    """A zero-argument factory of the autocast context for the forward pass."""
    if dtype == torch.float32:
        return contextlib.nullcontext
    device_type = device.split(":")[0]
    return lambda: torch.autocast(device_type=device_type, dtype=dtype)


def enable_tf32(device: str) -> None:
    """Let float32 matmuls use TF32 tensor cores on CUDA (about 3x faster, ample precision)."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# ---------------------------------------------------------------------------- RNG state


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch and CUDA, as tensors and plain values only."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
        "has_gauss": npst["has_gauss"],
        "gauss": npst["gauss"],
    })
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------- data


def prepared_dataset_dir(config: TrainConfig, run_dir: Path) -> Path:
    """The prepared dataset folder for a config.

    --data is used as is; --input is prepared into RUN_DIR/data (so the run folder is
    self-contained); a built-in --dataset is prepared once into the corpus cache. Both are
    reused while their source is unchanged.
    """
    from gptlab.data import cache_dir, prepare

    if config.data:
        data_dir = Path(config.data).expanduser()
        if not (data_dir / "meta.json").is_file():
            raise GptlabError(
                f"--data {data_dir} is not a prepared dataset (no meta.json): run "
                f"`gptlab prepare --input TEXT --out {data_dir}` first"
            )
        return data_dir
    # fine-tuning encodes the new text with the tokenizer the weights were trained with
    init_tok: Path | None = Path(config.init_from) / "tokenizer.json"
    if config.init_from == "scratch" or not init_tok.is_file():
        init_tok = None
    if config.input:
        source, out = str(Path(config.input).expanduser()), Path(run_dir) / "data"
    elif init_tok is None:
        source = config.dataset
        out = cache_dir() / "datasets" / f"{config.dataset}-{config.tokenizer}"
    else:  # a built-in corpus in another run's tokenizer: not shared through the cache
        source, out = config.dataset, Path(run_dir) / "data"
    log.info("preparing %s (tokenizer: %s) in %s", source, init_tok or config.tokenizer, out)
    prepare(source, out, tokenizer=config.tokenizer, force=True, tokenizer_file=init_tok)
    return out


def data_facts(data_dir: Path, meta: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """The "data" section of a run's config.json, with characters and bytes per val token."""
    from gptlab.data import load_split
    from gptlab.train.evaluate import text_per_token

    chars, nbytes = text_per_token(tokenizer, load_split(data_dir, "val"))
    return {
        "dir": str(Path(data_dir).resolve()),
        "source": meta.get("source"),
        "tokenizer": meta.get("tokenizer"),
        "vocab_size": meta.get("vocab_size"),
        "train_tokens": meta.get("train_tokens"),
        "val_tokens": meta.get("val_tokens"),
        "source_sha256": meta.get("source_sha256"),
        "val_chars_per_token": chars,
        "val_bytes_per_token": nbytes,
    }
