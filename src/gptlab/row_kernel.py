"""A matmul whose rows round the same whatever the others: a small C kernel.

Why: batched decoding keeps a request's tokens the same alone or under load by running
each Linear as `x @ Wᵀ` on a transposed copy (`gptlab.row_invariant`), whose rows agree
bitwise for every row count from 2 up on an AVX-512 CPU. Two gaps remain, and this kernel
fills both:
- One row goes to a matrix-vector routine that rounds differently, so a request alone
  paid for a 2-row product (1.2-1.4x a 1-row one). The multi-row rounding turned out
  simple (torch 2.13, MKL, AVX-512: docs/benchmarks.md): each output is the bias (or 0)
  plus, for each block of 384 inputs, one chain of fused multiply-adds over the block.
  `row_kernel.c` computes exactly that, for one row at the 1-row routine's speed.
- Other CPUs: with MKL's AVX2 code (`MKL_ENABLE_INSTRUCTIONS=AVX2`) a row's bits change
  with its place in a 6-row tile, and only 64-row products agree, or none. There the
  kernel runs every row below 64, or every row: each output's chain never depends on the
  other rows, so invariance holds by construction (at 1.2-1.6x MKL's time from 2 rows on
  on AVX-512, ~2x built for AVX2, from 16 rows).

The kernel is compiled with the machine's C compiler (`$CC`, else `cc`) the first time a
process needs it (~0.2 s) and loaded with ctypes; `row_invariant.row_plan` uses it for one
row only after checking it against the multi-row product on random data. Without a
compiler one row is padded to two, and a shape without an agreeing range is padded to 64
rows (with a warning).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from importlib import resources

import torch
from torch import Tensor

BLOCKS = (384, 256, 512, 128, 192, 320, 768, 1024)  # candidate block sizes, likeliest first
# -march=native: the CPU's vector FMA (the .so lives one process, on this machine); the
# later sets are for compilers that lack an option
_FLAGS = (("-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno"),
          ("-O3", "-march=native", "-fno-math-errno"), ("-O3", "-fno-math-errno"))

logger = logging.getLogger(__name__)
_kernel: list = []  # [the loaded function, or None]: compiled once per process
_lock = threading.Lock()


def load():
    """The compiled `row_product` function, or None when it cannot be built here (no C
    compiler, a failed build, a temp folder that is full or does not allow loading)."""
    with _lock:
        if not _kernel:
            try:
                _kernel.append(_compile())
            except (OSError, subprocess.SubprocessError) as exc:
                logger.debug("row_kernel.c not built (%s): few rows are padded", exc)
                _kernel.append(None)
        return _kernel[0]


def _compile():
    command = shlex.split(os.environ.get("CC", "cc")) or ["cc"]  # $CC may carry options
    compiler = shutil.which(command[0])
    if compiler is None:
        logger.debug("no C compiler: few rows are padded for row-invariant products")
        return None
    source = resources.files("gptlab").joinpath("row_kernel.c").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="gptlab-kernel-") as folder:
        c_file, library = os.path.join(folder, "row_kernel.c"), os.path.join(folder, "k.so")
        with open(c_file, "w", encoding="utf-8") as f:
            f.write(source)
        for flags in _FLAGS:
            result = subprocess.run([compiler, *command[1:], *flags, "-shared", "-fPIC",
                                     c_file, "-o", library],
                                    capture_output=True, timeout=120, check=False)
            if result.returncode == 0:
                function = ctypes.CDLL(library).rows_product  # loaded: the file may go
                break
        else:
            logger.debug("the C compiler could not build row_kernel.c: %s",
                         result.stderr.decode(errors="replace").strip()[:200])
            return None
    function.restype = None
    pointer, count = ctypes.c_void_p, ctypes.c_int64
    function.argtypes = [pointer, count, pointer, pointer, pointer, pointer, count, count,
                         count]
    return function


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the kernel can run tensors of this device and dtype here (CPU float32, a
    compiler that built it)."""
    return device.type == "cpu" and dtype == torch.float32 and load() is not None


def product(rows: Tensor, weight_t: Tensor, bias: Tensor | None, block: int) -> Tensor:
    """(R, in) @ (in, out) (+ bias) → (R, out), each row rounded the same whatever the
    others (see row_kernel.c), on contiguous CPU float32 tensors; `load()` must have
    returned the kernel. ctypes releases the GIL during the call."""
    n_in, n_out = weight_t.shape
    out = torch.empty(rows.shape[0] + 1, n_out, dtype=torch.float32)  # the last: scratch
    _kernel[0](rows.data_ptr(), rows.shape[0], weight_t.data_ptr(),
               None if bias is None else bias.data_ptr(), out.data_ptr(), out[-1].data_ptr(),
               n_in, n_out, block)
    return out[:-1]


def find_block(rows: Tensor, weight_t: Tensor, bias: Tensor | None,
               expected: Tensor) -> int | None:
    """The block size (of BLOCKS) at which the kernel gives each of `rows` (R, in) the
    bits of `expected` (R, out), their multi-row product; None when none does, or the
    kernel is missing, or the tensors are not CPU float32."""
    if not available(weight_t.device, weight_t.dtype):
        return None
    rows, weight_t = rows.contiguous(), weight_t.contiguous()
    bias = None if bias is None else bias.contiguous()
    for block in BLOCKS:
        if all(torch.equal(product(rows[i : i + 1], weight_t, bias, block),
                           expected[i : i + 1]) for i in range(rows.shape[0])):
            return block
    return None
