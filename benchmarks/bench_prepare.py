"""Benchmark `gptlab prepare`: speed against the seed's approach, and peak memory on 1 GB.

Default mode: char-level preparation of Tiny Shakespeare, gptlab's `prepare` (scan, numpy
lookup-table encoding, train.bin/val.bin on disk) against seed 001's
`torch.tensor([stoi[c] for c in text])` plus its 90/10 split, in the same run. Both must
give the same ids. Reports median seconds, MB/s and the speedup.

`--big`: writes a ~1 GB file by repeating Tiny Shakespeare into a temporary folder and
prepares it once per tokenizer (char, gpt2) in a fresh subprocess, reporting its peak RSS
(`ru_maxrss` of the process, plus the largest worker process's when it has any) next to
the file size. A kind `gpt2@1` runs pinned to one core (`sched_setaffinity`), so gptlab
uses one thread and no worker processes: `--big-mb 64 --kinds gpt2@1,gpt2` compares one
core with all of them.

    python benchmarks/bench_prepare.py [--repeat 5]
    python benchmarks/bench_prepare.py --big [--big-mb 1024] [--kinds char,gpt2]
    python benchmarks/bench_prepare.py --big --big-mb 64 --kinds gpt2@1,gpt2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
DEFAULT_INPUT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

CHILD = """
import json, os, resource, sys, time
from gptlab.data import prepare
if int(sys.argv[4]):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(sys.argv[4])])
start = time.perf_counter()
meta = prepare(sys.argv[1], sys.argv[2], tokenizer=sys.argv[3])
seconds = time.perf_counter() - start
peak_kb = sum(resource.getrusage(who).ru_maxrss  # KiB on Linux
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "tokens": meta["total_tokens"]}))
"""


def seed_prepare(path: Path):
    """Seed 001, verbatim apart from names: read, build stoi, encode, tensor, 90/10 split."""
    import torch

    with open(path, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    encode = lambda s: [stoi[c] for c in s]  # noqa: E731 (the seed's spelling)
    data = torch.tensor(encode(text), dtype=torch.long)
    n = int(0.9 * len(data))
    return data[:n], data[n:]


def gptlab_prepare(path: Path, out: Path):
    from gptlab.data import load_split, prepare

    prepare(path, out, tokenizer="char")
    return load_split(out, "train"), load_split(out, "val")


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_speed(path: Path, repeat: int) -> None:
    mb = path.stat().st_size / 1e6
    seed_s, (seed_train, seed_val) = timed(lambda: seed_prepare(path), repeat)
    with tempfile.TemporaryDirectory() as tmp:
        outs = iter(Path(tmp) / f"run{i}" for i in range(repeat))
        ours_s, (train, val) = timed(lambda: gptlab_prepare(path, next(outs)), repeat)
        assert (train.tolist(), val.tolist()) == (seed_train.tolist(), seed_val.tolist())
    print(f"char prepare of {path.name} ({mb:.2f} MB), median of {repeat} runs; same ids")
    print("| method | seconds | MB/s | speedup |\n|---|---:|---:|---:|")
    rows = [
        ("seed: [stoi[c] for c in text] + torch.tensor", seed_s),
        ("gptlab prepare (scan, encode, write .bin)", ours_s),
    ]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {mb / seconds:.1f} | {seed_s / seconds:.1f}x |")


def write_big_file(source: Path, dest: Path, target_mb: int) -> int:
    data = source.read_bytes()
    copies = max(1, round(target_mb * 2**20 / len(data)))
    with open(dest, "wb") as f:
        for _ in range(copies):
            f.write(data)
    return dest.stat().st_size


def run_big(path: Path, target_mb: int, kinds: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.txt"
        size = write_big_file(path, big, target_mb)
        mb = size / 2**20
        print(f"prepare of a {mb:.0f} MiB file ({path.name} repeated), one run each")
        print("| tokenizer | seconds | MiB/s | tokens | peak RSS (MiB) | RSS / file |")
        print("|---|---:|---:|---:|---:|---:|")
        for spec in kinds:
            kind, _, cores = spec.partition("@")
            out = Path(tmp) / f"out-{kind}-{cores or 'all'}"
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(big), str(out), kind, cores or "0"],
                env=env, capture_output=True, text=True, check=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {spec} | {r['seconds']:.1f} | {mb / r['seconds']:.1f} | {r['tokens']:,} | "
                  f"{r['peak_mb']:.0f} | {r['peak_mb'] / mb:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="corpus file")
    parser.add_argument("--repeat", type=int, default=5, help="runs per method (median)")
    parser.add_argument("--big", action="store_true", help="peak-RSS run on a large file")
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the large file (MiB)")
    parser.add_argument("--kinds", default="char,gpt2", help="tokenizers for --big")
    args = parser.parse_args()
    if not args.input.is_file():
        sys.exit(f"error: {args.input} is missing: pass --input FILE")
    if args.big:
        run_big(args.input, args.big_mb, args.kinds.split(","))
    else:
        run_speed(args.input, args.repeat)


if __name__ == "__main__":
    main()
