"""What checksums cost (#17): candidate hashes, and gptlab's verification against its saves,
loads and datasets.

Rows:
- each candidate hash (hashlib's blake2b and sha256, zlib's crc32, xxhash's xxh3_64 and
  xxh3_128) over a buffer the size of the `lecture` model's weights, and over a file of
  --gib GiB read from the page cache in 1 MiB chunks (the file is read once before timing);
- `save_checkpoint` and `load_checkpoint` of the lecture model (10.8M parameters, AdamW
  state) and, beside each, the time gptlab spends hashing the files they write or read
  (a save reads model.safetensors back and hashes trainer.pt's bytes as they are written;
  a load reads and hashes both);
- `verify_dataset` on a dataset folder whose train.bin is the --gib file, per GiB, and the
  token-id scan `gptlab verify` adds.

    python benchmarks/bench_integrity.py [--gib 1] [--repeat 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gptlab import checkpoint as ckpt
from gptlab import integrity
from gptlab.model import GPT, ModelConfig
from gptlab.train.config import resolve_config

try:
    import xxhash
except ImportError:  # gptlab depends on it; the row is skipped if it is missing anyway
    xxhash = None


def hashers() -> dict[str, Callable[[], object]]:
    """name → a new incremental hasher with update()."""
    found: dict[str, Callable[[], object]] = {
        "blake2b": hashlib.blake2b, "sha256": hashlib.sha256, "crc32 (zlib)": _Crc32,
    }
    if xxhash is not None:
        found["xxh3_64"] = xxhash.xxh3_64
        found["xxh3_128"] = xxhash.xxh3_128
    return found


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up (page cache, allocator)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def hash_file(path: Path, new: Callable[[], object]) -> None:
    hasher, buf = new(), bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])


def lecture_model() -> tuple[GPT, torch.optim.Optimizer]:
    _, settings, _ = resolve_config(preset="lecture")
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_dict({**settings, "vocab_size": 65}))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    for p in model.parameters():  # AdamW's state exists after a first step
        p.grad = torch.zeros_like(p)
    opt.step()
    return model, opt


def bench_hashes(big: Path, weights_bytes: int, repeat: int) -> None:
    buf = os.urandom(weights_bytes)
    gib = big.stat().st_size / (1 << 30)
    print(f"\n| hash | {weights_bytes / 1e6:.1f} MB buffer | GB/s | {gib:g} GiB file "
          "(page cache) | s per GiB |")
    print("|---|---|---|---|---|")
    for name, new in hashers().items():
        def one(new=new) -> None:
            new().update(buf)

        t_buf = median_time(one, repeat)
        t_file = median_time(lambda new=new: hash_file(big, new), max(1, repeat // 2))
        print(f"| {name} | {t_buf * 1e3:.1f} ms | {weights_bytes / t_buf / 1e9:.1f} | "
              f"{t_file:.2f} s | {t_file / gib:.2f} |")


def bench_checkpoint(root: Path, repeat: int) -> int:
    model, opt = lecture_model()
    n_params = sum(p.numel() for p in model.parameters())
    run = root / "run"
    step = [0]

    def save() -> None:
        step[0] += 1
        ckpt.save_checkpoint(run, model, opt, {"step": step[0]}, keep_last=2, is_best=True)

    t_save = median_time(save, repeat)
    step_dir = ckpt.latest_checkpoint_dir(run)
    files = [step_dir / ckpt.LATEST_WEIGHTS, step_dir / ckpt.TRAINER_STATE_FILE]
    state_bytes = files[1].read_bytes()  # save hashes trainer.pt's bytes as torch writes them

    def save_hashing() -> None:
        integrity.file_digest(files[0])  # the weights: read back once written
        xxhash.xxh3_128(state_bytes).hexdigest()

    t_hash = median_time(save_hashing, repeat)
    t_load = median_time(lambda: ckpt.load_checkpoint(run, model, opt), repeat)
    t_verify = median_time(lambda: [integrity.verify_file(f) for f in files], repeat)
    sizes = " + ".join(f"{f.name} {f.stat().st_size / 1e6:.1f} MB" for f in files)
    print(f"\nlecture model: {n_params / 1e6:.1f}M parameters; {sizes}")
    print("\n| operation | total | of which checksums | share |")
    print("|---|---|---|---|")
    print(f"| save_checkpoint | {t_save * 1e3:.0f} ms | {t_hash * 1e3:.1f} ms (hash both files) "
          f"| {t_hash / t_save:.1%} |")
    print(f"| load_checkpoint | {t_load * 1e3:.0f} ms | {t_verify * 1e3:.1f} ms (verify both) "
          f"| {t_verify / t_load:.1%} |")
    return files[0].stat().st_size


def bench_dataset(root: Path, big: Path, repeat: int) -> None:
    from gptlab.data.dataset import verify_dataset
    from gptlab.verify import check_token_ids

    data = root / "data"
    data.mkdir()
    os.link(big, data / "train.bin")
    for name, content in (("val.bin", b"\0\0" * 1024), ("tokenizer.json", b"{}"),
                          ("meta.json", b"{}")):
        (data / name).write_bytes(content)
    integrity.record_files(data, ["train.bin", "val.bin", "tokenizer.json", "meta.json"])
    gib = big.stat().st_size / (1 << 30)
    t_verify = median_time(lambda: verify_dataset(data), max(1, repeat // 2))
    tokens = np.memmap(big, dtype="<u2", mode="r")
    t_ids = median_time(lambda: check_token_ids(tokens, 1 << 16), max(1, repeat // 2))
    print(f"\n| dataset check ({gib:g} GiB train.bin, page cache) | time | s per GiB |")
    print("|---|---|---|")
    print(f"| verify_dataset (training start, eval, prepare's reuse) | {t_verify:.2f} s | "
          f"{t_verify / gib:.2f} |")
    print(f"| token ids < vocab_size (gptlab verify) | {t_ids:.2f} s | {t_ids / gib:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the big file")
    parser.add_argument("--repeat", type=int, default=5, help="timings per row (median)")
    parser.add_argument("--dir", default=None, help="scratch folder (default: the system's)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = Path(tempfile.mkdtemp(prefix="bench-integrity-", dir=args.dir))
    try:
        big = root / "big.bin"
        rng = np.random.default_rng(0)
        with open(big, "wb") as f:
            for _ in range(int(args.gib * 1024)):
                f.write(rng.integers(0, 1 << 16, 1 << 19, dtype=np.uint16).tobytes())
        hash_file(big, hashlib.md5)  # into the page cache
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, xxhash "
              f"{getattr(xxhash, 'VERSION', 'missing')}, scratch {root}")
        weights_bytes = bench_checkpoint(root, args.repeat)
        bench_hashes(big, weights_bytes, args.repeat)
        bench_dataset(root, big, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
