"""What batch-invariant decoding costs on this machine: the row-count classes of F.linear
and of `x @ Wᵀ` on a transposed copy (which counts give a row the same bits), and the time
of one decode step's Linears of the `lecture` model (25 matrices, cycled so the weights
come from memory, as in a real step) for both products and for `gptlab.row_kernel`'s C
product (the multi-row bits for one row; every row where torch's product has no agreeing
row counts) at 1, 2, 16 and 64 rows. `MKL_ENABLE_INSTRUCTIONS=AVX2` shows an AVX2 CPU's
classes.

    python benchmarks/bench_row_invariant.py [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gptlab import row_kernel  # noqa: E402

SHAPES = [(384, 1152), (384, 384), (384, 1536), (1536, 384)]  # per layer; 6 layers
HEAD = (384, 65)


def classes(product, x: torch.Tensor, top: int = 70) -> list[tuple[int, int]]:
    """Runs of row counts m whose rows agree bitwise with the first m rows of m + 1."""
    results = [product(x[:m]) for m in range(1, top + 2)]
    runs = [[1, 1]]
    for m in range(1, top + 1):
        if torch.equal(results[m - 1], results[m][:m]):
            runs[-1][1] = m + 1
        else:
            runs.append([m + 1, m + 1])
    return [tuple(r) for r in runs]


def step_ms(layers, rows: int, how: str, repeats: int = 5, n: int = 50) -> float:
    x = torch.randn(rows, 1536)
    def step():
        for w, w_t, b in layers:
            a = x[:, : w.shape[1]]
            if how == "F.linear":
                F.linear(a, w, b)
            elif how == "kernel":
                row_kernel.product(a.contiguous(), w_t, b, 384)
            else:
                torch.addmm(b, a, w_t)
    for _ in range(10):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            step()
        best = min(best, (time.perf_counter() - start) / n * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch threads {args.threads}; row-count classes (first, last) up to 71 rows")
    for n_in, n_out in [*SHAPES, HEAD]:
        w, b, x = torch.randn(n_out, n_in), torch.randn(n_out), torch.randn(80, n_in)
        w_t = w.t().contiguous()
        plain = classes(lambda a, w=w, b=b: F.linear(a, w, b), x)
        copy = classes(lambda a, w_t=w_t, b=b: torch.addmm(b, a, w_t), x)
        print(f"  {n_in}x{n_out}  F.linear {plain}   x @ Wt {copy}")
    layers = []
    for n_in, n_out in SHAPES * 6 + [HEAD]:
        w = torch.randn(n_out, n_in)
        layers.append((w, w.t().contiguous(), torch.randn(n_out)))
    kernel = row_kernel.load() is not None
    if kernel:
        x = torch.randn(8, 1536)
        agree = [row_kernel.find_block(x[:, :w.shape[1]], w_t, b,
                                       torch.addmm(b, x[:, :w.shape[1]], w_t))
                 for w, w_t, b in layers[:5]]
        print(f"one-row kernel: agrees with x @ Wt (blocks {agree})")
    print("one decode step's Linears, ms (best of 5)")
    print(f"  {'rows':>4} {'F.linear':>9} {'x @ Wt':>8} {'kernel':>8}")
    for rows in (1, 2, 16, 64):
        own = f"{step_ms(layers, rows, 'kernel'):8.2f}" if kernel else ""
        print(f"  {rows:4d} {step_ms(layers, rows, 'F.linear'):9.2f} "
              f"{step_ms(layers, rows, 'x@Wt'):8.2f} {own}")


if __name__ == "__main__":
    main()
