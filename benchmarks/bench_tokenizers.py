"""Tokenizer speed: gptlab against the seeds' baseline, in the same run.

Prints a markdown table:
- char encode of a corpus: gptlab's numpy lookup (`encode_to_array`) vs the seeds'
  `[stoi[c] for c in text]` (alone, and with the `np.array` a prepare step needs);
- gpt2 encode: one thread vs all cores (tiktoken's batch API on exact newline splits);
- bpe (4k vocab, HF tokenizers): training seconds, and encode on one thread vs all cores.

Each figure is the median of --repeats runs. "cores busy" is CPU seconds / wall seconds:
on a shared machine a parallel run shows whether it got the cores at all.

Usage:
    python benchmarks/bench_tokenizers.py [--input ../shared/data/tinyshakespeare.txt]
        [--repeats 5] [--vocab-size 4096]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from gptlab.tokenizers import BPETokenizer, CharTokenizer, GPT2Tokenizer  # noqa: E402
from gptlab.tokenizers.base import resolve_num_threads  # noqa: E402

DEFAULT_INPUT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(base_fn: Callable[[], object], ours_fn: Callable[[], object], repeats: int):
    """Median (wall, CPU) seconds of each function; runs alternate so both see the same load."""
    base, ours = [], []
    for _ in range(repeats):
        base.append(_timed(base_fn))
        ours.append(_timed(ours_fn))

    def medians(runs):
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)

    return medians(base), medians(ours)


def row(what: str, base: str, base_t: tuple, ours: str, ours_t: tuple, mb: float) -> str:
    """A table row; cores busy = CPU seconds / wall seconds (2.0 = two cores fully used)."""
    cells = [what]
    for name, (wall, cpu) in ((base, base_t), (ours, ours_t)):
        cells += [name, f"{wall:.3f} s", f"{mb / wall:.1f}", f"{cpu / wall:.2f}"]
    cells.append(f"{base_t[0] / ours_t[0]:.2f}x")
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| what | baseline | time | MB/s | cores busy "
    "| gptlab | time | MB/s | cores busy | speed-up |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def bench_char(text: str, mb: float, repeats: int) -> list[str]:
    tok = CharTokenizer.from_text(text)
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    assert tok.encode_to_array(text).tolist() == [stoi[c] for c in text]
    encode = lambda: tok.encode_to_array(text)  # noqa: E731
    seed, ours = compare(lambda: [stoi[c] for c in text], encode, repeats)
    # What a prepare step needs from the seed's list: an array to write to disk.
    seed_array, ours2 = compare(
        lambda: np.array([stoi[c] for c in text], dtype=np.uint16), encode, repeats
    )
    return [
        row("char encode", "`[stoi[c] for c in text]`", seed, "`encode_to_array`", ours, mb),
        row("char encode", "same + `np.array(..., uint16)`", seed_array, "`encode_to_array`",
            ours2, mb),
    ]


def bench_parallel(name: str, tok, text: str, mb: float, repeats: int) -> str:
    cores = resolve_num_threads(0)
    assert tok.encode_to_array(text, num_threads=0).tolist() == tok.encode(text)
    one, every = compare(
        lambda: tok.encode_to_array(text, num_threads=1),
        lambda: tok.encode_to_array(text, num_threads=0),
        repeats,
    )
    return row(f"{name} encode", "1 thread", one, f"{cores} threads", every, mb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="UTF-8 corpus")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        print(f"error: {args.input} does not exist: pass --input FILE", file=sys.stderr)
        return 1
    text = args.input.read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    print(
        f"corpus {args.input.name}: {mb:.2f} MB, {len(text):,} characters; "
        f"{resolve_num_threads(0)} usable cores (os.cpu_count()={os.cpu_count()}); "
        f"median of {args.repeats} runs\n"
    )
    print(HEADER)
    print("\n".join(bench_char(text, mb, args.repeats)), flush=True)
    print(bench_parallel("gpt2", GPT2Tokenizer(), text, mb, args.repeats), flush=True)
    train_times = []
    for _ in range(max(1, args.repeats // 2)):
        start = time.perf_counter()
        bpe = BPETokenizer.train(text, vocab_size=args.vocab_size)
        train_times.append(time.perf_counter() - start)
    print(bench_parallel(f"bpe-{bpe.vocab_size}", bpe, text, mb, args.repeats), flush=True)
    n_bpe = len(bpe.encode(text))
    print(
        f"\nBPE training, vocab {bpe.vocab_size} on {args.input.name}: "
        f"{statistics.median(train_times):.2f} s (median of {len(train_times)}); "
        f"{n_bpe:,} tokens, {n_bpe / len(text):.3f} tokens per character"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
