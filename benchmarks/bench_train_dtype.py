"""A training step of each `--time` ladder shape in float32 and under bf16 autocast, on CPU.

For each shape (the speedrun preset's model at that size, Muon + AdamW as `--time` trains
it, random tokens): milliseconds per optimizer step, median of --steps after warmup, in

- float32 (what `--dtype auto` is on a CPU);
- bfloat16 autocast with torch's attention kernel in bfloat16 too;
- bfloat16 autocast as gptlab runs it: attention for training in float32
  (`gptlab.model.attention.scaled_dot_product_attention`).

First the GFLOP/s of one Linear-sized product in each dtype. On a CPU with AMX, bf16
matmuls run ~6x float32's; on one without AVX512-BF16 or AMX they
are emulated and bf16 is far slower (there `--time` probes float32 only).

    python benchmarks/bench_train_dtype.py [--shapes 0,1,2,3,4] [--steps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from unittest import mock

import torch
import torch.nn.functional as F

from gptlab.model import GPT, ModelConfig, attention
from gptlab.runtime import native_bf16
from gptlab.train.budget import LADDER
from gptlab.train.config import resolve_config
from gptlab.train.optim import configure_optimizer

VOCAB = 65


def step_ms(shape, model_settings: dict, train, mode: str, steps: int) -> float:
    settings = {**model_settings, "vocab_size": VOCAB, "n_layer": shape.n_layer,
                "n_head": shape.n_head, "n_embd": shape.n_embd, "block_size": shape.block_size}
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_dict(settings))
    optimizer = configure_optimizer(model, train, "cpu")
    x = torch.randint(VOCAB, (shape.batch_size, shape.block_size))
    bf16 = mode != "float32"
    bf16_attention = mock.patch.object(attention, "scaled_dot_product_attention",
                                       F.scaled_dot_product_attention)
    times = []
    with bf16_attention if mode == "bf16-attention" else contextlib.nullcontext():
        for _ in range(steps + 3):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                _, loss = model(x, x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[3:]) * 1e3


def matmul_gflops(dtype: torch.dtype, m: int = 1024, k: int = 192, n: int = 768) -> float:
    """One Linear's product at a ladder shape's size (tokens x channels x 4 channels)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(5):
        a @ b
    t0 = time.perf_counter()
    for _ in range(100):
        a @ b
    return 2 * m * k * n * 100 / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="0,1,2,3,4", help="ladder indices")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    _, model_settings, train = resolve_config("speedrun", None, {})
    modes = ("float32", "bf16-attention", "bfloat16")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16 "
          f"matmuls: {native_bf16('cpu')}; a 1024x192 @ 192x768 product: "
          f"{matmul_gflops(torch.float32):.0f} GFLOP/s in float32, "
          f"{matmul_gflops(torch.bfloat16):.0f} in bfloat16\n")
    print(f"ms per training step, median of {args.steps}:\n")
    print("| shape (layers x channels, block x batch) | float32 | bf16, attention in bf16 "
          "| bf16, attention in float32 (gptlab) | float32 / gptlab bf16 |")
    print("|---|---:|---:|---:|---:|")
    for index in map(int, args.shapes.split(",")):
        shape = LADDER[index]
        ms = {mode: step_ms(shape, model_settings, train, mode, args.steps) for mode in modes}
        print(f"| {shape.n_layer}x{shape.n_embd}, {shape.block_size}x{shape.batch_size} | "
              f"{ms['float32']:.1f} | {ms['bf16-attention']:.1f} | {ms['bfloat16']:.1f} | "
              f"{ms['float32'] / ms['bfloat16']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
