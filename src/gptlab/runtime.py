"""Where and how tensors run: device, autocast dtype, RNG state, and the process's malloc.

`train`, `sample`, `eval` and `serve` all start by resolving a --device here; training also
picks its autocast dtype and saves and restores every RNG with a checkpoint (exact resume).
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import sys
from collections.abc import Callable
from typing import Any, Literal, get_args

import numpy as np
import torch

from gptlab.errors import GptlabError

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory (under 1 GiB) for reuse instead of handing it
    back to the kernel; False where it cannot (not Linux/glibc).

    A CPU training step frees and re-allocates the same activation buffers every step; by
    default glibc maps large ones fresh each time and pays the page faults again
    (docs/benchmarks.md, "Training"). It changes the whole process, so only `gptlab train`
    calls it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str) -> str:
    """"auto" -> cuda, then mps, then cpu; anything else is checked to exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise GptlabError(f"--device {device}: CUDA is not available here; use --device cpu")
    if kind == "mps" and not _mps_available():
        raise GptlabError(f"--device {device}: MPS is not available here; use --device cpu")
    if kind not in ("cpu", "cuda", "mps"):
        raise GptlabError(f"--device {device!r} is not one of: auto, cpu, cuda, cuda:N, mps")
    return device


Dtype = Literal["auto", "float32", "bfloat16", "float16"]


def resolve_dtype(dtype: Dtype, device: str) -> torch.dtype:
    """The autocast dtype: "auto" is bfloat16 on CUDA GPUs that support it, else float32."""
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype == "float16" and not device.startswith("cuda"):
        raise GptlabError(
            f"--dtype float16 needs CUDA (device is {device}); use bfloat16 or float32"
        )
    if dtype not in get_args(Dtype):
        raise GptlabError(f"--dtype {dtype!r} is not one of: {', '.join(get_args(Dtype))}")
    return getattr(torch, dtype)


def native_bf16(device: str) -> bool:
    """Whether `device` multiplies bfloat16 matrices natively: CUDA GPUs that support it, and
    CPUs with AVX512-BF16 or AMX. Other CPUs emulate bf16 matmuls, ~17x slower than float32
    ones (docs/benchmarks.md, "Newton-Schulz in float32 off CUDA")."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device != "cpu":
        return False
    return any(getattr(torch.cpu, name, lambda: False)()  # private helpers: may go away
               for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def autocast_factory(
    device: str, dtype: torch.dtype
) -> Callable[[], contextlib.AbstractContextManager]:
    """A zero-argument factory of the autocast context for the forward pass."""
    if dtype == torch.float32:
        return contextlib.nullcontext
    device_type = device.split(":")[0]
    return lambda: torch.autocast(device_type=device_type, dtype=dtype)


def enable_tf32(device: str) -> None:
    """Let float32 matmuls use TF32 tensor cores on CUDA (much faster, ample precision for
    training)."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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
