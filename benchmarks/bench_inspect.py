"""Latency of the playground's Inspect view: `POST /v1/inspect` on the lecture's model.

The 10.7M-parameter `lecture` shape (vocab 65, block 256, 6 layers, 6 heads, 384
channels; random weights: timings do not depend on them) inspects a 256-token text of
Tiny Shakespeare (char tokenizer). Timed, medians of `--reps`: a plain forward pass (the
baseline), the library calls the endpoint makes (`token_table` + `next_token_table` +
`attention_maps`), and the whole endpoint through Starlette's TestClient (validation, the
model worker, JSON of 6 × 6 × 256 × 256 weights). The issue's target: under 1 s.

    PYTHONPATH=src python benchmarks/bench_inspect.py
    PYTHONPATH=src python benchmarks/bench_inspect.py --threads 2 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from starlette.testclient import TestClient

from gptlab.inspect import attention_maps, next_token_table, token_table
from gptlab.model import GPT, ModelConfig
from gptlab.serve.app import create_app
from gptlab.serve.engine import ModelEngine
from gptlab.tokenizers import CharTokenizer

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def median_s(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up: first-call allocations and lazy imports
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = CORPUS.read_text(encoding="utf-8") if CORPUS.is_file() else None
    tokenizer = CharTokenizer.from_text(corpus or "abcdefghijklmnopqrstuvwxyz ,.:\n")
    text = (corpus or "the quick brown fox jumps over the lazy dog.\n" * 10)[: args.tokens]
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
    model = GPT(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.tensor([tokenizer.encode(text)])  # (1, T)
    client = TestClient(create_app(ModelEngine(model, tokenizer, "lecture")))

    def forward() -> None:
        with torch.no_grad():
            model(ids)

    def library() -> None:
        table = token_table(tokenizer, text)
        next_token_table(model, tokenizer, text, k=5)
        attention_maps(model, table.ids)

    def endpoint() -> None:
        r = client.post("/v1/inspect", json={"text": text})
        assert r.status_code == 200, r.text

    size_mb = len(client.post("/v1/inspect", json={"text": text}).content) / 1e6
    rows = [("plain forward pass (baseline)", median_s(forward, args.reps)),
            ("library: tokens + next + attention", median_s(library, args.reps)),
            (f"POST /v1/inspect, TestClient ({size_mb:.1f} MB JSON)",
             median_s(endpoint, args.reps))]
    print(f"lecture shape: {n_params / 1e6:.1f}M parameters, T = {ids.shape[1]}, "
          f"{args.threads} threads, medians of {args.reps}")
    print("| step | median s | x forward |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / rows[0][1]:.1f} |")


if __name__ == "__main__":
    main()
