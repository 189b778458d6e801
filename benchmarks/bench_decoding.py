"""The server's batch in process: `DecodingEngine` with B one-row requests (what `gptlab
serve` runs for B streaming clients) against one request of B rows (`generate` with a
batch, the in-process ceiling), tokens/s, the `lecture` preset's model with random
weights, batch-invariant (the server's default), one torch thread (the server's on 2
cores). With --baseline-src (the src/ folder of another checkout) the same is measured
with that code, in the same run, each tree in its own process, alternating.

    python benchmarks/bench_decoding.py --baseline-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = """
import json, sys, time, torch
from gptlab.decoding import DecodingEngine
from gptlab.model import GPT, ModelConfig
from gptlab.sampling import SamplingConfig
from gptlab.train.config import PRESETS
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
model = GPT(ModelConfig(**{**PRESETS["lecture"].model, "vocab_size": 100})).eval()
tokens = int(sys.argv[2])
prompt = torch.randint(0, 100, (1, 17), generator=torch.Generator().manual_seed(0))

def run(rows, one_request):
    engine = DecodingEngine(model, rows)
    if one_request:
        config = SamplingConfig(temperature=1.0, seed=0, num_samples=rows)
        requests = [engine.add(prompt.expand(rows, -1), tokens, config)]
    else:
        requests = [engine.add(prompt, tokens, SamplingConfig(temperature=1.0, seed=i))
                    for i in range(rows)]
    start = time.perf_counter()
    while not all(r.done for r in requests):
        engine.step()
    return rows * tokens / (time.perf_counter() - start)

out = {}
for rows in map(int, sys.argv[3:]):
    run(rows, False)  # warm-up: allocations, row plans
    out[rows] = [run(rows, False), run(rows, True)]
print(json.dumps(out))
"""


def rates(src: Path, threads: int, tokens: int, sizes: list[int]) -> dict[int, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(threads), str(tokens),
                          *map(str, sizes)], env=env, capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(out.stdout).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16,64", help="rows (clients), comma-separated")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-src", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    trees = [("this", REPO_SRC)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    results: dict[str, list[dict[int, list[float]]]] = {name: [] for name, _ in trees}
    for _ in range(args.repeats):
        for name, src in trees:
            results[name].append(rates(src, args.threads, args.tokens, sizes))
    print("| code | rows | B one-row requests, tokens/s | one B-row request | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, _ in trees:
        for rows in sizes:
            many = [r[rows][0] for r in results[name]]
            one = [r[rows][1] for r in results[name]]
            print(f"| {name} | {rows} | {min(many):,.0f}-{max(many):,.0f} | "
                  f"{min(one):,.0f}-{max(one):,.0f} | {max(many) / max(one):.2f} |")


if __name__ == "__main__":
    main()
