"""Training-step throughput: fused vs reference attention, and AdamW variants.

For each shape, one training step (forward + backward + AdamW step) on random tokens is
timed for `fused` and `reference` attention in the same run, both with the fused AdamW
`gptlab train` uses on CPU, and for the seed's own code as the lecture wrote it (seed
001's model classes, read from ../shared/seeds at run time, with its default AdamW;
`--no-seed` leaves it out). With `--nanogpt PATH` (a nanoGPT checkout or its model.py,
loaded at run time; nothing of it is in gptlab) nanoGPT's own model joins, with the same
fused AdamW, next to gptlab's fused model built with nanoGPT's choices (exact GELU, q/k/v
biases, tied lm_head). The table gives the median tokens/s, the model FLOP utilisation
(MFU: 6·N + 12·L·T·C FLOPs per token over the torch.mm peak measured at the start of the
run), how much faster `fused` is than each other contender and how much slower
`reference` is than each (the issue's target: ≥ 1.7x for `fused`). A second
table splits a step at the small shapes into forward+backward and optimizer time for
AdamW's three CPU implementations (for-loop default, foreach, fused).

    PYTHONPATH=src python benchmarks/bench_model.py                 # all three shapes
    PYTHONPATH=src python benchmarks/bench_model.py --shapes small mid --steps 10
    PYTHONPATH=src python benchmarks/bench_model.py --shapes small --nanogpt ../nanoGPT
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.model import GPT, ModelConfig
from gptlab.runtime import keep_freed_memory

# name: (batch, block, n_embd, n_head, n_layer)
SHAPES = {
    "small": (16, 32, 64, 4, 4),  # the seed's lecture model
    "mid": (12, 64, 128, 4, 4),
    "lecture": (64, 256, 384, 6, 6),  # seed 003's large model (10.7M parameters)
}
VOCAB = 65
REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_001 = REPO_ROOT.parent / "shared" / "seeds" / "001_fe01e3c8b57cd5e0.txt"


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Median fp32 GFLOP/s of torch.mm on n×n matrices."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


# gptlab's names for nanoGPT's model choices (its GPTConfig with bias=True)
NANOGPT_CHOICES = {"activation": "gelu_exact", "qkv_bias": True, "tie_weights": True}


def make_model(shape: str, attention: str, **choices) -> GPT:
    _, T, C, nh, L = SHAPES[shape]
    cfg = ModelConfig(
        vocab_size=VOCAB, block_size=T, n_layer=L, n_head=nh, n_embd=C, dropout=0.0,
        attention=attention, **choices,
    )
    torch.manual_seed(0)
    return GPT(cfg)


def make_seed_model(shape: str) -> nn.Module:
    """Seed 001's own model ("Full finished code": Head ... BigramLanguageModel) at `shape`.

    The classes read their sizes from module globals, as in the lecture's script; they are
    executed from the seed's text into a fresh namespace holding just those globals.
    """
    text = SEED_001.read_text(encoding="utf-8")
    start = text.index('class Head(nn.Module):\n    """ one head of self-attention """')
    code = text[start : text.index("    def generate(self, idx, max_new_tokens):", start)]
    B, T, C, nh, L = SHAPES[shape]
    namespace = {"torch": torch, "nn": nn, "F": F, "device": "cpu", "dropout": 0.0,
                 "vocab_size": VOCAB, "block_size": T, "n_embd": C, "n_head": nh, "n_layer": L}
    exec(compile(code, str(SEED_001), "exec"), namespace)  # the benchmark's baseline
    torch.manual_seed(0)
    return namespace["BigramLanguageModel"]()


def find_nanogpt(path: Path) -> Path:
    """The model.py of a nanoGPT checkout (or `path` itself when it is the file)."""
    model_py = path / "model.py" if path.is_dir() else path
    if not model_py.is_file():
        raise SystemExit(f"--nanogpt: no model.py at {model_py}: pass a nanoGPT checkout")
    return model_py


def make_nanogpt_model(shape: str, model_py: Path) -> nn.Module:
    """nanoGPT's own GPT (its model.py) at `shape`, biases on."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", model_py)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, T, C, nh, L = SHAPES[shape]
    config = module.GPTConfig(
        block_size=T, vocab_size=VOCAB, n_layer=L, n_head=nh, n_embd=C, dropout=0.0, bias=True
    )
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count
        return module.GPT(config)


class Trainee:
    """A model, its AdamW and a fixed random batch: `step()` times one training step."""

    compile = False  # main() sets it from --compile

    def __init__(self, shape: str, model: nn.Module, optimizer_kwargs: dict) -> None:
        B, T = SHAPES[shape][:2]
        self.model = model
        # the first step, which compiles, is the warm-up that median_step() leaves out
        self.forward = torch.compile(model) if self.compile else model
        self.tokens = B * T
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, **optimizer_kwargs)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, VOCAB, (B, T), generator=gen)
        self.y = torch.randint(0, VOCAB, (B, T), generator=gen)
        self.fwd_bwd: list[float] = []
        self.optim: list[float] = []

    def step(self) -> None:
        start = time.perf_counter()
        _, loss = self.forward(self.x, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        middle = time.perf_counter()
        self.opt.step()
        self.fwd_bwd.append(middle - start)
        self.optim.append(time.perf_counter() - middle)

    def median_step(self) -> float:
        # the first step is a warm-up
        steps = zip(self.fwd_bwd[1:], self.optim[1:], strict=True)
        return statistics.median(a + b for a, b in steps)


def run_interleaved(trainees: list[Trainee], steps: int) -> None:
    """Alternate the contenders step by step, so load changes hit them alike."""
    for _ in range(steps + 1):
        for trainee in trainees:
            trainee.step()


def attention_table(
    shapes: list[str], steps: dict[str, int], peak: float, seed: bool, nanogpt: Path | None
) -> None:
    print("| shape (B, T, C, nh, L) | params | model | tokens/s | MFU | fused is faster by "
          "| reference is slower by |")
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        # AdamW as the trainer runs it on CPU (fused kernel); the seed's as it wrote it
        fused_adamw = {"fused": True}
        contenders = {
            "fused": Trainee(shape, make_model(shape, "fused"), fused_adamw),
            "reference": Trainee(shape, make_model(shape, "reference"), fused_adamw),
        }
        if seed:
            contenders["seed 001 code, its AdamW"] = Trainee(shape, make_seed_model(shape), {})
        if nanogpt is not None:
            ours = make_model(shape, "fused", **NANOGPT_CHOICES)
            contenders["fused, nanoGPT's choices"] = Trainee(shape, ours, fused_adamw)
            theirs = make_nanogpt_model(shape, nanogpt)
            contenders["nanoGPT model.py, fused AdamW"] = Trainee(shape, theirs, fused_adamw)
        run_interleaved(list(contenders.values()), steps[shape])
        fused, reference = contenders["fused"], contenders["reference"]
        flops_per_token = fused.model.flops_per_token(SHAPES[shape][1])
        for name, trainee in contenders.items():
            rate = trainee.tokens / trainee.median_step()
            mfu = flops_per_token * rate / (peak * 1e9)
            params = sum(p.numel() for p in trainee.model.parameters())
            vs_fused = trainee.median_step() / fused.median_step()
            vs_reference = reference.median_step() / trainee.median_step()
            print(
                f"| {shape} {SHAPES[shape]} | {params:,} | {name} | {rate:,.0f} | {mfu:.0%} "
                f"| {'' if trainee is fused else f'{vs_fused:.2f}x'} "
                f"| {'' if trainee is reference else f'{vs_reference:.2f}x'} |",
                flush=True,
            )


def optimizer_table(shape: str, steps: int) -> None:
    print(f"\nAdamW on CPU at the {shape} shapes, fused attention (medians, interleaved):")
    print("| AdamW | forward+backward ms | optimizer ms | step ms | tokens/s |")
    print("|---|---|---|---|---|")
    variants = [
        ("default (for-loop on CPU)", {}),
        ("foreach=True", {"foreach": True}),
        ("fused=True", {"fused": True}),
    ]
    trainees = [Trainee(shape, make_model(shape, "fused"), kwargs) for _, kwargs in variants]
    run_interleaved(trainees, steps)
    for (name, _), t in zip(variants, trainees, strict=True):
        fb_ms = statistics.median(t.fwd_bwd[1:]) * 1e3
        op_ms = statistics.median(t.optim[1:]) * 1e3
        print(
            f"| {name} | {fb_ms:.1f} | {op_ms:.2f} | {fb_ms + op_ms:.1f} | "
            f"{t.tokens / (fb_ms + op_ms) * 1e3:,.0f} |",
            flush=True,
        )


def profile_table(shape: str, steps: int) -> None:
    """torch.profiler's costliest ops (self CPU time) over `steps` fused training steps."""
    from torch.profiler import ProfilerActivity, profile

    trainee = Trainee(shape, make_model(shape, "fused"), {"fused": True})
    run_interleaved([trainee], 5)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_interleaved([trainee], steps - 1)
    print(f"\ntorch.profiler, {steps} fused training steps at the {shape} shapes "
          "(the profiler adds its own cost to every op):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--steps", type=int, default=10, help="timed steps (small, mid)")
    parser.add_argument("--lecture-steps", type=int, default=3, help="timed steps (lecture)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-optimizer-table", action="store_true")
    parser.add_argument("--no-seed", action="store_true",
                        help="leave out the seed's own model (read from ../shared/seeds)")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc malloc as it is (gptlab train keeps freed memory)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every model (the compiling step is not timed)")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top ops for the fused model's step")
    parser.add_argument("--nanogpt", type=Path, default=None, metavar="PATH",
                        help="a nanoGPT checkout (or its model.py) to time side by side")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    Trainee.compile = args.compile
    nanogpt = find_nanogpt(args.nanogpt) if args.nanogpt else None
    if not args.malloc_default:
        keep_freed_memory()  # as `gptlab train` does
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'torch.compile, ' if args.compile else ''}"
          f"torch.mm 2048² fp32 peak {peak:.0f} GFLOP/s\n")
    steps = {"small": args.steps, "mid": args.steps, "lecture": args.lecture_steps}
    seed = not args.no_seed and SEED_001.is_file()
    if not args.no_seed and not seed:
        print(f"(seed model left out: {SEED_001} not found)\n")
    attention_table(args.shapes, steps, peak, seed, nanogpt)
    if not args.no_optimizer_table:
        optimizer_table("small", args.steps * 3)
    if args.profile:
        profile_table(args.shapes[0], args.steps)


if __name__ == "__main__":
    main()
