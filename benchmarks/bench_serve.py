"""Load test of `gptlab serve` on loopback.

Default: two runs against a tiny model, each against its own `gptlab serve` process:

1. load: `--clients` concurrent clients each send `--requests` non-streamed completions
   (bounded by `--max-seconds`); the server's --max-concurrency is at least the number of
   clients, so every request should succeed. Reports p50/p95 latency, requests/s, tokens/s
   and the non-2xx count, beside a baseline: the same completions generated in this
   process without HTTP, one after another.
2. over capacity: `--clients` clients fire long completions at once, `--rounds` times, at a
   server allowing `--overload-concurrency`; reports how many got 429 and how fast.

With --streaming: the `lecture` preset's model (random weights), streaming clients at 1,
4, 16 and 64 at once, 128 tokens each: aggregate tokens/s, p50/p95 time to first token
and gap between tokens, beside `generate()` in process at the same batch sizes, with the
clients' prompt in every row (the median of three runs). With
--baseline-src (the src/ folder of another checkout, e.g. one from before batching) each
figure is also measured with that code, in the same run.

    python benchmarks/bench_serve.py                  # builds a tiny run in a temp folder
    python benchmarks/bench_serve.py --run-dir runs/x --clients 50 --requests 200
    python benchmarks/bench_serve.py --streaming --baseline-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
PROMPT = "ROMEO:\nWhat light"


@dataclass
class Results:
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    tokens: int = 0
    wall_s: float = 0.0

    def count(self, predicate) -> int:
        return sum(1 for s in self.statuses if predicate(s))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def env_for(src: Path) -> dict[str, str]:
    """The environment that makes a subprocess import gptlab from `src`."""
    return {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@contextmanager
def server_process(run_dir: Path, *options: str, src: Path = REPO_SRC) -> Iterator[str]:
    """A `gptlab serve` subprocess on a free loopback port; yields its URL."""
    env = env_for(src)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptlab", "serve", str(run_dir), "--port", "0", *options],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stderr.readline()
        if " on http://" not in line:
            raise SystemExit(f"server did not start: {line}{proc.stderr.read()}")
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        # keep draining the server's stderr so it can never block on a full pipe
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


class Connection:
    """One keep-alive HTTP/1.1 connection: a minimal client, so that the load generator
    (sharing the machine's cores with the server) costs little next to the server."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: "
                          f"application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                          + data)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        payload = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection") == "close":
            await self.close()
        return status, json.loads(payload)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def client_loop(url: str, index: int, requests: int, max_tokens: int,
                      deadline: float, results: Results) -> None:
    connection = Connection(url)
    try:
        for i in range(requests):
            if time.monotonic() > deadline:
                return
            body = {"prompt": PROMPT, "max_tokens": max_tokens, "seed": index * requests + i}
            start = time.perf_counter()
            status, answer = await connection.post("/v1/completions", body)
            results.latencies_s.append(time.perf_counter() - start)
            results.statuses.append(status)
            if status == 200:
                results.tokens += answer["usage"]["completion_tokens"]
    finally:
        await connection.close()


async def run_clients(url: str, clients: int, requests: int, max_tokens: int,
                      max_seconds: float) -> Results:
    results = Results()
    deadline = time.monotonic() + max_seconds
    start = time.perf_counter()
    await asyncio.gather(*[client_loop(url, c, requests, max_tokens, deadline, results)
                           for c in range(clients)])
    results.wall_s = time.perf_counter() - start
    return results


def baseline(run_dir: Path, count: int, max_tokens: int) -> Results:
    """The same completions in process, one after another: what the model alone costs."""
    from gptlab.serve.engine import ModelEngine, SamplingParams

    engine = ModelEngine.from_run_dir(run_dir)
    results = Results()
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        completion = engine.complete(PROMPT, SamplingParams(max_tokens=max_tokens, seed=i))
        completion.read()
        results.latencies_s.append(time.perf_counter() - t0)
        results.statuses.append(200)
        results.tokens += completion.completion_tokens
    results.wall_s = time.perf_counter() - start
    return results


def make_tiny_run(out_dir: Path) -> Path:
    """A tiny char-level run with random weights (2 layers, 2 heads, 32 channels, block 64):
    serving costs the same whether or not the weights were trained."""
    import string

    import torch

    from gptlab.checkpoint import write_run
    from gptlab.model import GPT, ModelConfig
    from gptlab.tokenizers import CharTokenizer

    tokenizer = CharTokenizer(sorted(set(string.printable)))
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2,
                         n_embd=32)
    return write_run(out_dir / "tiny-char", GPT(config), tokenizer)


def print_load_table(base: Results, load: Results, clients: int) -> None:
    rows = [("in process (baseline)", base, 1), (f"HTTP, {clients} clients", load, clients)]
    print(f"{'':24} {'requests':>8} {'non-2xx':>7} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'req/s':>8} {'tok/s':>8}")
    for name, r, _ in rows:
        print(f"{name:24} {len(r.statuses):8d} {r.count(lambda s: s >= 300):7d} "
              f"{1000 * percentile(r.latencies_s, 0.5):8.1f} "
              f"{1000 * percentile(r.latencies_s, 0.95):8.1f} "
              f"{len(r.statuses) / r.wall_s:8.1f} {r.tokens / r.wall_s:8.0f}")
    ratio = (load.tokens / load.wall_s) / (base.tokens / base.wall_s)
    print(f"HTTP / baseline tokens/s: {ratio:.2f}   5xx: {load.count(lambda s: s >= 500)}")


async def overload(url: str, clients: int, rounds: int, max_tokens: int) -> Results:
    """`clients` requests at once, `rounds` times, each round on fresh connections."""
    results = Results()
    start = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*[client_loop(url, c, 1, max_tokens, float("inf"), results)
                               for c in range(clients)])
    results.wall_s = time.perf_counter() - start
    return results


def print_overload_table(r: Results, concurrency: int) -> None:
    busy = [t for t, s in zip(r.latencies_s, r.statuses, strict=True) if s == 429]
    ok = [t for t, s in zip(r.latencies_s, r.statuses, strict=True) if s == 200]
    print(f"\nover capacity: --max-concurrency {concurrency}, {len(r.statuses)} requests")
    print(f"{'status':8} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, times in (("200", ok), ("429", busy)):
        print(f"{name:8} {len(times):6d} {1000 * percentile(times, 0.5):8.1f} "
              f"{1000 * percentile(times, 0.95):8.1f} {1000 * max(times, default=0):8.1f}")
    others = r.count(lambda s: s not in (200, 429))
    print(f"other statuses: {others}   429s within 100 ms: "
          f"{sum(t <= 0.1 for t in busy)}/{len(busy)}")


@dataclass
class Streams:
    """Timings of streamed completions: time to first token and the gaps between tokens."""

    first_s: list[float] = field(default_factory=list)
    gaps_s: list[float] = field(default_factory=list)
    tokens: int = 0
    failed: int = 0
    wall_s: float = 0.0


async def stream_one(url: str, body: dict, streams: Streams) -> None:
    """POST one streamed completion on a fresh connection; read its server-sent events."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    data = json.dumps(body).encode()
    start = time.perf_counter()
    writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                 f"application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    if " 200 " not in head.split("\r\n", 1)[0]:
        streams.failed += 1
        writer.close()
        return
    times, buffer = [], b""
    while b"data: [DONE]" not in buffer:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)  # chunked encoding
        if size == 0:
            break
        chunk = await reader.readexactly(size + 2)
        now = time.perf_counter()
        for event in chunk[:-2].split(b"\n\n"):
            if event.startswith(b"data: {"):
                payload = json.loads(event[6:])
                if payload["choices"] and payload["choices"][0]["text"]:
                    times.append(now)
                elif payload.get("usage"):
                    streams.tokens += payload["usage"]["completion_tokens"]
        buffer = chunk
    writer.close()
    if times:
        streams.first_s.append(times[0] - start)
        streams.gaps_s += [b - a for a, b in zip(times, times[1:], strict=False)]


async def stream_clients(url: str, clients: int, requests: int, max_tokens: int) -> Streams:
    """`clients` clients at once, each streaming `requests` completions one after another."""
    streams = Streams()

    async def client(c: int) -> None:
        for i in range(requests):
            body = {"prompt": PROMPT, "max_tokens": max_tokens, "seed": c * requests + i,
                    "stream": True, "stream_options": {"include_usage": True}}
            await stream_one(url, body, streams)

    start = time.perf_counter()
    await asyncio.gather(*[client(c) for c in range(clients)])
    streams.wall_s = time.perf_counter() - start
    return streams


GENERATE_SCRIPT = """
import json, sys, time, torch
from gptlab.checkpoint import load_run
from gptlab.generate import generate
device, threads = sys.argv[3], int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
run, out = load_run(sys.argv[1], device=device), {}
prompt = run.tokenizer.encode(sys.argv[5])  # the server's clients' prompt
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
for B in map(int, sys.argv[6:]):
    idx = torch.tensor([prompt] * B, dtype=torch.long, device=device)
    out[B] = []
    for invariant in (False, True):
        generate(run.model, idx, 8, seed=0, batch_invariant=invariant)
        rates = []
        for _ in range(3):
            sync()
            start = time.perf_counter()
            generate(run.model, idx, int(sys.argv[2]), seed=0, batch_invariant=invariant)
            sync()
            rates.append(B * int(sys.argv[2]) / (time.perf_counter() - start))
        out[B].append(sorted(rates)[1])
print(json.dumps(out))
"""


def generate_rates(src: Path, run_dir: Path, max_tokens: int, sizes: list[int],
                   device: str = "cpu", threads: int = 0) -> dict[int, list[float]]:
    """tokens/s of `generate(model, prompt, max_tokens)` with the code in `src`, the
    prompt being PROMPT (what the streaming clients send) in B rows, with `threads` torch
    threads (0: torch's default): [default, batch_invariant=True] per B, the median of
    three runs."""
    out = subprocess.run([sys.executable, "-c", GENERATE_SCRIPT, str(run_dir), str(max_tokens),
                          device, str(threads), PROMPT, *map(str, sizes)], env=env_for(src),
                         capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(out.stdout).items()}


SHAPES = {  # --shape: random-weight models to serve
    "lecture": None,  # the lecture preset's model (10.7M parameters, block 256)
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, bias=True, qkv_bias=True,
                      tie_weights=True, activation="gelu", pos_encoding="learned"),
}


def make_lecture_run(out_dir: Path, shape: str = "lecture") -> Path:
    """A random-weight model with a char vocabulary: the `lecture` preset's (10.7M
    parameters) or GPT-2 124M's layers (`gpt2-124m`; the vocabulary stays 100 characters,
    so its embedding is 0.08M parameters instead of 38.6M)."""
    import string

    import torch

    from gptlab.checkpoint import write_run
    from gptlab.model import GPT, ModelConfig
    from gptlab.tokenizers import CharTokenizer
    from gptlab.train.config import PRESETS

    tokenizer = CharTokenizer(sorted(set(string.printable)))
    torch.manual_seed(0)
    fields = PRESETS["lecture"].model if SHAPES[shape] is None else SHAPES[shape]
    config = ModelConfig(**{**fields, "vocab_size": tokenizer.vocab_size})
    return write_run(out_dir / f"{shape}-char", GPT(config), tokenizer)


def streaming(args: argparse.Namespace, run_dir: Path) -> None:
    sizes = [int(c) for c in args.stream_clients.split(",")]
    from gptlab.cli.serve import serve_threads

    threads = serve_threads(args.threads)
    this = ["--threads", str(threads)]
    trees = [("this", REPO_SRC, this)]
    if args.no_invariant:
        trees.append(("this, --no-batch-invariant", REPO_SRC, [*this, "--no-batch-invariant"]))
    if args.baseline_src:  # torch's default threads: the baseline has no --threads
        trees.append(("baseline", args.baseline_src, []))
    print(f"{'code':9} {'threads':>7} {'clients':>7} {'tok/s':>8} {'generate':>9} {'ratio':>6} "
          f"{'gen-inv':>8} {'ratio':>6} {'TTFT p50':>9} {'p95':>7} {'gap p50':>8} {'p95':>7} "
          f"{'failed':>6}   (ms)")
    for name, src, options in trees:
        used = threads if "--threads" in options else 0
        with server_process(run_dir, "--max-concurrency", str(max(sizes)), "--max-tokens-limit",
                            str(args.stream_tokens), "--device", args.device, *options,
                            src=src) as url:
            for clients in sizes:
                # the ceiling just before the server's turn: the machine's speed drifts
                ceiling = generate_rates(src, run_dir, args.stream_tokens, [clients],
                                         args.device, used)
                requests = max(1, args.stream_rounds // clients)
                r = asyncio.run(stream_clients(url, clients, requests, args.stream_tokens))
                rate = r.tokens / r.wall_s
                plain, invariant = ceiling[clients]
                print(f"{name:9} {used or 'default':>7} {clients:7d} {rate:8.0f} {plain:9.0f} "
                      f"{rate / plain:6.2f} {invariant:8.0f} {rate / invariant:6.2f} "
                      f"{1000 * percentile(r.first_s, 0.5):9.1f} "
                      f"{1000 * percentile(r.first_s, 0.95):7.1f} "
                      f"{1000 * percentile(r.gaps_s, 0.5):8.1f} "
                      f"{1000 * percentile(r.gaps_s, 0.95):7.1f} {r.failed:6d}", flush=True)
    print("ratio: the server's aggregate tokens/s over generate() with a batch of that many "
          "rows of the clients' prompt, in process, with the server's torch threads; gen-inv: "
          "the same with batch_invariant=True (the server's default numbers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="run to serve (default: a tiny one)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=120, help="load-run time bound")
    parser.add_argument("--baseline-requests", type=int, default=200)
    parser.add_argument("--overload-concurrency", type=int, default=4)
    parser.add_argument("--overload-max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streaming", action="store_true",
                        help="the streaming benchmark on the lecture model instead")
    parser.add_argument("--stream-clients", default="1,4,16,64")
    parser.add_argument("--stream-tokens", type=int, default=128)
    parser.add_argument("--stream-rounds", type=int, default=8,
                        help="completions per size: clients x max(1, rounds // clients)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="lecture",
                        help="--streaming: the random-weight model to serve")
    parser.add_argument("--device", default="cpu", help="--streaming: the server's device")
    parser.add_argument("--threads", type=int, default=0,
                        help="--streaming: the server's --threads (0: all cores but one), "
                             "also used for generate() in process")
    parser.add_argument("--no-invariant", action="store_true",
                        help="also measure this code's server with --no-batch-invariant")
    parser.add_argument("--baseline-src", type=Path,
                        help="src/ of another checkout to measure beside this one")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_SRC))
    with tempfile.TemporaryDirectory(prefix="gptlab-bench-serve-") as tmp:
        if args.streaming:
            streaming(args, args.run_dir or make_lecture_run(Path(tmp), args.shape))
            return
        run_dir = args.run_dir or make_tiny_run(Path(tmp))
        base = baseline(run_dir, args.baseline_requests, args.max_tokens)
        limit = str(max(args.max_tokens, args.overload_max_tokens))
        with server_process(run_dir, "--max-concurrency", str(args.clients + 14),
                            "--max-tokens-limit", limit) as url:
            load = asyncio.run(run_clients(url, args.clients, args.requests, args.max_tokens,
                                           args.max_seconds))
        print_load_table(base, load, args.clients)
        with server_process(run_dir, "--max-concurrency", str(args.overload_concurrency),
                            "--max-tokens-limit", limit) as url:
            over = asyncio.run(overload(url, args.clients, args.rounds,
                                        args.overload_max_tokens))
        print_overload_table(over, args.overload_concurrency)


if __name__ == "__main__":
    main()
