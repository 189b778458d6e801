"""AdamW against Muon on a preset's model, and Muon's Newton-Schulz: bf16 or float32, batched.

Rows (medians over --steps interleaved steps, random tokens, CPU):
- one training step with `--optimizer adamw` and with `--optimizer muon` (gptlab's
  `configure_optimizer`): forward + backward (with gradient clipping) and optimizer time;
- the Newton-Schulz iteration over every matrix Muon trains in that model: torch's own
  (`torch.optim.Muon` runs it in bfloat16, one matrix at a time) against gptlab's
  `newton_schulz` one matrix at a time in float32, and over each stack of same-shaped
  matrices (what `BatchedMuon` does) in float32 and in bfloat16. The muon row above
  uses the dtype `newton_schulz_dtype("cpu")` picks on this CPU (printed).

To see what a CPU without bf16 instructions pays, restrict this one to AVX2:

    python benchmarks/bench_optim.py [--preset speedrun] [--steps 150] [--profile]
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \\
        python benchmarks/bench_optim.py
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from gptlab.model import GPT, ModelConfig
from gptlab.runtime import keep_freed_memory
from gptlab.train.config import resolve_config
from gptlab.train.optim import (
    configure_optimizer,
    muon_matrices,
    newton_schulz,
    newton_schulz_dtype,
)

VOCAB = 65
NS = ((3.4445, -4.775, 2.0315), 5, 1e-7)  # torch.optim.Muon's coefficients, steps, eps


class Contender:
    """A model, its optimizer and one fixed batch; `step()` times fwd+bwd and the update."""

    def __init__(self, model_settings: dict, train, optimizer: str) -> None:
        torch.manual_seed(0)
        self.model = GPT(ModelConfig.from_dict({**model_settings, "vocab_size": VOCAB}))
        train = dataclasses.replace(train, optimizer=optimizer)
        self.opt = configure_optimizer(self.model, train, "cpu")
        self.clip = train.grad_clip
        gen = torch.Generator().manual_seed(0)
        shape = (train.batch_size, self.model.config.block_size)
        self.x = torch.randint(0, VOCAB, shape, generator=gen)
        self.y = torch.randint(0, VOCAB, shape, generator=gen)
        self.fwd_bwd: list[float] = []
        self.update: list[float] = []

    def step(self) -> None:
        t0 = time.perf_counter()
        _, loss = self.model(self.x, self.y)
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        t1 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.fwd_bwd.append(t1 - t0)
        self.update.append(time.perf_counter() - t1)


def ms(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="speedrun")
    parser.add_argument("--steps", type=int, default=150, help="timed steps per optimizer")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top ops over 20 AdamW steps")
    args = parser.parse_args()
    keep_freed_memory()  # as `gptlab train` runs
    _, model_settings, train = resolve_config(args.preset, None, {})
    warmup = max(1, args.steps // 10)

    contenders = {name: Contender(model_settings, train, name) for name in ("adamw", "muon")}
    for _ in range(args.steps + warmup):
        for c in contenders.values():
            c.step()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset "
          f"{args.preset}, {args.steps} interleaved steps each; Muon's Newton-Schulz in "
          f"{newton_schulz_dtype('cpu')} on this CPU\n")
    print("| optimizer | forward + backward ms | optimizer ms | step ms |")
    print("|---|---|---|---|")
    for name, c in contenders.items():
        fb, up = ms(c.fwd_bwd, warmup), ms(c.update, warmup)
        print(f"| {name} | {fb:.1f} | {up:.1f} | {fb + up:.1f} |")

    matrices = [p.detach().clone() for p in muon_matrices(contenders["muon"].model)]
    stacks: dict[torch.Size, list[torch.Tensor]] = {}
    for g in matrices:
        stacks.setdefault(g.shape, []).append(g)
    torch_ns = torch.optim._muon._zeropower_via_newtonschulz  # torch's, in bfloat16
    ways = {
        "torch (bfloat16), one at a time": lambda: [torch_ns(g, *NS) for g in matrices],
        "gptlab (float32), one at a time": lambda: [newton_schulz(g, *NS) for g in matrices],
        "gptlab (float32), same-shaped stacked":
            lambda: [newton_schulz(torch.stack(s), *NS) for s in stacks.values()],
        "gptlab (bfloat16), same-shaped stacked":
            lambda: [newton_schulz(torch.stack(s), *NS, torch.bfloat16) for s in stacks.values()],
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(30):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"\nNewton-Schulz over the {len(matrices)} matrices Muon trains, median of 25:\n")
    print("| iteration | ms per optimizer step |")
    print("|---|---|")
    for name, t in times.items():
        print(f"| {name} | {ms(t, 5):.1f} |")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        adamw = contenders["adamw"]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                adamw.step()
        print()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
