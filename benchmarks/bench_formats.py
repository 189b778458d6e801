"""`gptlab prepare` from record files (#15): JSONL and Parquet against the same text as .txt.

Documents are Tiny Shakespeare's paragraphs (split at blank lines), shuffled with a fixed
seed and repeated until the input reaches --mb MiB of text. The same documents, in the same
order, are written three ways into a temporary folder: one .txt (documents separated by a
blank line), a JSONL file (`{"text": ...}` per line) and a Parquet file (one `text` column,
row groups of 65,536 documents). Each is prepared once per tokenizer in a fresh subprocess,
which reports seconds, peak RSS (`ru_maxrss` of the process and of its largest child) and
the seconds from calling `prepare` to its first progress-bar output on stderr. With gpt2,
a ceiling row times tiktoken's `encode_ordinary_batch` over the same documents on every
core, in this process (the documents already in memory: no reading, no writing).

    python benchmarks/bench_formats.py --mb 256 --kinds gpt2           # throughput
    python benchmarks/bench_formats.py --mb 10240 --kinds char --formats jsonl,parquet  # RSS
    python benchmarks/bench_formats.py --mb 256 --formats txt,jsonl --repeat 3 \
        --baseline-src /tmp/old/src --no-ceiling   # before/after, interleaved

With --repeat, the runs are interleaved (every tree and format once, then again) and each
row shows the median seconds and the range; "vs txt" compares medians of the same tree.
"CPU s" is the median CPU time of all the run's processes: on a shared machine whose
neighbours steal cycles it varies less than wall time, and with every core busy the
throughput ratio follows it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

CHILD = """
import json, resource, sys, time
from gptlab.data import prepare
sys.stderr.write("START\\n"); sys.stderr.flush()
start = time.perf_counter()
meta = prepare(sys.argv[1], sys.argv[2], tokenizer=sys.argv[3], progress=True)
seconds = time.perf_counter() - start
usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
peak_kb = max(u.ru_maxrss for u in usage)  # KiB on Linux
cpu_s = sum(u.ru_utime + u.ru_stime for u in usage)  # all processes: robust to CPU steal
print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "tokens": meta["total_tokens"],
                  "documents": meta.get("documents"), "cpu_s": cpu_s}))
"""


def documents(source: Path, seed: int = 1337) -> list[str]:
    paragraphs = [p for p in source.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    random.Random(seed).shuffle(paragraphs)
    return paragraphs


def repeated(docs: list[str], target_bytes: int) -> Iterator[str]:
    """The documents over and over until about `target_bytes` of UTF-8 text."""
    total = 0
    while True:
        for doc in docs:
            yield doc
            total += len(doc.encode("utf-8"))
            if total >= target_bytes:
                return


def write_inputs(docs: list[str], tmp: Path, target_bytes: int, formats: list[str]) -> dict:
    paths = {}
    if "txt" in formats:
        paths["txt"] = tmp / "docs.txt"
        with open(paths["txt"], "w", encoding="utf-8") as f:
            for doc in repeated(docs, target_bytes):
                f.write(doc + "\n\n")
    if "jsonl" in formats:
        paths["jsonl"] = tmp / "docs.jsonl"
        with open(paths["jsonl"], "w", encoding="utf-8") as f:
            for doc in repeated(docs, target_bytes):
                f.write(json.dumps({"text": doc}) + "\n")
    if "parquet" in formats:
        import pyarrow as pa
        import pyarrow.parquet as pq

        paths["parquet"] = tmp / "docs.parquet"
        schema = pa.schema([("text", pa.string())])
        with pq.ParquetWriter(paths["parquet"], schema) as writer:
            batch: list[str] = []
            for doc in repeated(docs, target_bytes):
                batch.append(doc)
                if len(batch) == 65536:
                    writer.write_table(pa.table({"text": batch}, schema=schema))
                    batch = []
            if batch:
                writer.write_table(pa.table({"text": batch}, schema=schema))
    return paths


def run_prepare(path: Path, out: Path, kind: str, src: Path = REPO_ROOT / "src") -> dict:
    """Prepare `path` in a subprocess importing gptlab from `src`; adds `first_progress_s`
    (START marker → next output)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(out), kind],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first: dict[str, float] = {}

    def watch() -> None:
        started = None
        while chunk := proc.stderr.read1(4096):
            if started is None and b"START\n" in chunk:
                started = time.perf_counter()
                chunk = chunk.split(b"START\n", 1)[1]
            if started is not None and chunk.strip() and "t" not in first:
                first["t"] = time.perf_counter() - started

    watcher = threading.Thread(target=watch)
    watcher.start()
    stdout = proc.stdout.read().decode()
    proc.wait()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"prepare of {path} failed (exit {proc.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["first_progress_s"] = first.get("t", float("nan"))
    return result


def tiktoken_ceiling(docs: list[str], target_bytes: int) -> float:
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from gptlab.tokenizers.gpt2 import gpt2_encoding  # tiktoken's Encoding, from local files

    enc = gpt2_encoding()
    batch = list(repeated(docs, target_bytes))
    start = time.perf_counter()
    enc.encode_ordinary_batch(batch, num_threads=os.cpu_count() or 1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--mb", type=int, default=256, help="MiB of text per input")
    parser.add_argument("--kinds", default="gpt2", help="tokenizers, comma-separated")
    parser.add_argument("--formats", default="txt,jsonl,parquet")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, interleaved")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="also run prepare importing gptlab from this src folder")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip the tiktoken ceiling row")
    args = parser.parse_args()
    if not args.input.is_file():
        raise SystemExit(f"error: {args.input} is missing: pass --input FILE")
    formats, kinds = args.formats.split(","), args.kinds.split(",")
    docs, target = documents(args.input), args.mb * 2**20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        paths = write_inputs(docs, tmp, target, formats)
        sizes = {f: p.stat().st_size / 2**20 for f, p in paths.items()}
        print(f"{args.mb} MiB of text, {len(docs)} distinct documents repeated; inputs written "
              f"in {time.perf_counter() - start:.0f} s: "
              + ", ".join(f"{f} {mb:,.0f} MiB" for f, mb in sizes.items()))
        trees = {"": REPO_ROOT / "src"}
        if args.baseline_src:
            trees = {" (baseline)": args.baseline_src, **trees}
        print("| tokenizer | format | seconds | text MiB/s | vs txt | CPU s | vs txt (CPU) "
              "| tokens | documents | peak RSS MiB | first progress s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind in kinds:
            runs: dict[tuple[str, str], list[dict]] = {}
            for _ in range(args.repeat):
                for tree, src in trees.items():
                    for fmt, path in paths.items():
                        out = tmp / f"out-{kind}-{fmt}"
                        runs.setdefault((tree, fmt), []).append(run_prepare(path, out, kind, src))
                        shutil.rmtree(out, ignore_errors=True)
            for tree in trees:
                base = base_cpu = None
                for fmt in paths:
                    rs = runs[tree, fmt]
                    seconds = sorted(r["seconds"] for r in rs)
                    median = seconds[len(seconds) // 2]
                    cpu = sorted(r["cpu_s"] for r in rs)[len(rs) // 2]
                    rate = args.mb / median
                    base = rate if fmt == "txt" else base
                    base_cpu = cpu if fmt == "txt" else base_cpu
                    ratio = f"{rate / base:.2f}x" if base else ""
                    cpu_ratio = f"{base_cpu / cpu:.2f}x" if base_cpu else ""
                    shown = f"{median:.1f}" if len(rs) == 1 else (
                        f"{median:.1f} ({seconds[0]:.1f}-{seconds[-1]:.1f})")
                    r = rs[0]
                    print(f"| {kind} | {fmt}{tree} | {shown} | {rate:.1f} | {ratio} | "
                          f"{cpu:.1f} | {cpu_ratio} | {r['tokens']:,} | {r['documents'] or ''} | "
                          f"{max(x['peak_mb'] for x in rs):.0f} | "
                          f"{max(x['first_progress_s'] for x in rs):.2f} |", flush=True)
            if kind == "gpt2" and not args.no_ceiling:
                seconds = tiktoken_ceiling(docs, target)
                print(f"| gpt2 | tiktoken encode_ordinary_batch, {os.cpu_count()} threads, "
                      f"in memory (ceiling) | {seconds:.1f} | {args.mb / seconds:.1f} | | | | | | "
                      "| |")


if __name__ == "__main__":
    main()
