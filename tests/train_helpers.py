"""Shared bits of the training tests: a tiny dataset and tiny-model flags."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

# A 2-layer, 16-channel model on a few hundred characters: each step takes milliseconds.
TINY_FLAGS = [
    "--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
    "--batch-size", "4", "--eval-iters", "2", "--device", "cpu", "--sample-tokens", "0",
    "--no-progress",
]


def make_dataset(text: str, root: Path) -> Path:
    from gptlab.data import prepare

    root.mkdir(parents=True, exist_ok=True)
    src = root / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    prepare(src, root / "data", tokenizer="char")
    return root / "data"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(run_dir: Path) -> list[tuple]:
    """The loss log without wall times: (kind, step, values...) per metrics line."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("time")
        out.append(tuple(sorted(record.items())))
    return out
