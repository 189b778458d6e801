"""Training-loop pieces against the seed's way of doing them, side by side.

Rows (medians of --repeats runs, random data, CPU):
- evaluation: seed 001's estimate_loss (one forward per batch of B) vs gptlab's stacked
  batches (the same batches, up to 16k tokens per forward);
- one training step: the lecture model with per-head ("reference") attention vs fused
  attention; optionally torch.compile'd (--compile; includes no compile time).

    python benchmarks/bench_train.py [--preset lecture-small] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gptlab.model import GPT, ModelConfig
from gptlab.train.config import resolve_config
from gptlab.train.evaluate import estimate_loss


class _Batches:
    def __init__(self, B: int, T: int, V: int):
        self.B, self.T, self.V = B, T, V
        self.g = torch.Generator().manual_seed(0)

    def get_batch(self):
        x = torch.randint(0, self.V, (self.B, self.T), generator=self.g)
        return x, torch.roll(x, -1, dims=1)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_eval(model, B, T, V, eval_iters, repeats):
    def seed_way():
        estimate_loss(model, lambda s: _Batches(B, T, V), eval_iters, tokens_per_forward=1)

    def stacked():
        estimate_loss(model, lambda s: _Batches(B, T, V), eval_iters)

    seed_way()
    return _median_time(seed_way, repeats), _median_time(stacked, repeats)


def bench_steps(model, B, T, V, steps, repeats):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = _Batches(B, T, V)

    def run():
        for _ in range(steps):
            x, y = batches.get_batch()
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run()  # warm-up (and compilation)
    return _median_time(run, repeats) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lecture-small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-iters", type=int, default=100)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    _, settings, config = resolve_config(args.preset)
    V, B, T = 65, config.batch_size, settings["block_size"]
    print(f"preset {args.preset}: B={B}, T={T}, torch threads {torch.get_num_threads()}, "
          f"medians of {args.repeats}")
    print(f"{'what':44s} {'baseline':>10s} {'gptlab':>10s} {'speed-up':>9s}")

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=V, **{**settings, "attention": "reference"}))
    seed_t, ours_t = bench_eval(model, B, T, V, args.eval_iters, args.repeats)
    print(f"{f'estimate_loss, 2 x {args.eval_iters} batches (s)':44s} {seed_t:10.3f} "
          f"{ours_t:10.3f} {seed_t / ours_t:8.2f}x")

    ref = bench_steps(model, B, T, V, args.steps, args.repeats)
    fused_model = GPT(ModelConfig(vocab_size=V, **{**settings, "attention": "fused"}))
    fused = bench_steps(fused_model, B, T, V, args.steps, args.repeats)
    print(f"{'train step, reference vs fused attn (ms)':44s} {ref * 1e3:10.1f} "
          f"{fused * 1e3:10.1f} {ref / fused:8.2f}x")
    if args.compile:
        compiled = bench_steps(torch.compile(model), B, T, V, args.steps, args.repeats)
        print(f"{'train step, eager vs torch.compile (ms)':44s} {ref * 1e3:10.1f} "
              f"{compiled * 1e3:10.1f} {ref / compiled:8.2f}x")


if __name__ == "__main__":
    main()
