"""Generation throughput: the KV-cache engine against the seed's recompute-everything loop.

Model: the lecture's 10.7M-parameter configuration (vocab 65, block 256, 6 layers, 6 heads,
384 channels), random weights, batch 1, a 1-token prompt, sampling with a fixed seed. For
each positional encoding, in one run and interleaved (seed loop, engine, seed loop, ...):
- `short`: 255 new tokens (prompt + output fit the 256-token window);
- `long`: 1,000 new tokens (the window slides), for the seed loop, the exact engine
  (KV cache inside the window, recompute once it slides) and the approximate engine
  (`exact=False`, what `gptlab sample --no-exact` and the server's `"exact": false` run:
  rolling cache for rope, half-window restart for learned/sinusoidal).
The seed loop runs under torch.no_grad() (the seed's runs with autograd on, slower still).

    PYTHONPATH=src python benchmarks/bench_generate.py --threads 1
    PYTHONPATH=src python benchmarks/bench_generate.py --threads 1 --long-tokens 0  # short only
    PYTHONPATH=src python benchmarks/bench_generate.py --threads 1 --no-exact  # long only
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptlab.generate import generate
from gptlab.model import GPT, ModelConfig


def lecture_model(pos_encoding: str) -> GPT:
    cfg = ModelConfig(
        vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2,
        pos_encoding=pos_encoding,
    )
    torch.manual_seed(0)
    return GPT(cfg).eval()


@torch.no_grad()
def seed_loop(model: GPT, idx: torch.Tensor, max_new_tokens: int, seed: int) -> torch.Tensor:
    """Seed 001's generate(): crop to block_size, full forward, sample the last position."""
    gen = torch.Generator().manual_seed(seed)
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block_size:])
        probs = F.softmax(logits[:, -1, :], dim=-1)  # (B, V)
        idx_next = torch.multinomial(probs, num_samples=1, generator=gen)  # (B, 1)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_case(model: GPT, n_new: int, reps: int, approximate: bool) -> dict[str, float]:
    """Median seconds per contender; also checks the exact engine matches the seed loop."""
    prompt = torch.zeros(1, 1, dtype=torch.long)
    contenders: dict[str, Callable[[], torch.Tensor]] = {
        "seed loop": lambda: seed_loop(model, prompt, n_new, seed=0),
        "KV cache, exact": lambda: generate(model, prompt, n_new, seed=0),
    }
    if approximate:
        contenders["KV cache, exact=False"] = lambda: generate(
            model, prompt, n_new, seed=0, exact=False
        )
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(reps):
        for name, fn in contenders.items():
            seconds, outputs[name] = timed(fn)
            times[name].append(seconds)
    same = torch.equal(outputs["seed loop"], outputs["KV cache, exact"])
    assert same, "the exact engine must reproduce the seed loop token for token"
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pos", nargs="+", default=["learned", "sinusoidal", "rope"])
    parser.add_argument("--short-tokens", type=int, default=255)
    parser.add_argument("--long-tokens", type=int, default=1000, help="0 skips the long case")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the short case")
    parser.add_argument("--long-reps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-exact", action="store_true",
                        help="only the long case, where --no-exact differs from the exact "
                             "engine (inside the window the two are the same)")
    args = parser.parse_args()
    if args.no_exact and not args.long_tokens:
        parser.error("--no-exact times the long case: give --long-tokens > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 1, "
          "1-token prompt, seeded sampling; median seconds\n")
    print("| pos_encoding | new tokens | method | tokens/s | speed-up vs seed loop |")
    print("|---|---|---|---|---|")
    for pos in args.pos:
        model = lecture_model(pos)
        cases = [] if args.no_exact else [(args.short_tokens, args.reps, False)]
        if args.long_tokens:
            cases.append((args.long_tokens, args.long_reps, True))
        for n_new, reps, approximate in cases:
            result = bench_case(model, n_new, reps, approximate)
            base = result["seed loop"]
            for name, seconds in result.items():
                print(
                    f"| {pos} | {n_new} | {name} | {n_new / seconds:,.0f} | "
                    f"{base / seconds:.1f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
