"""`gptlab serve RUN_DIR`: an OpenAI-compatible completions API and a browser playground."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gptlab.cli.options import add_option, add_which_option, new_command
from gptlab.errors import GptlabError

DESCRIPTION = """\
Serve a trained run over HTTP: POST /v1/completions (OpenAI-compatible, with streaming),
GET /v1/models, GET /health, and a playground page at /. Stop with Ctrl-C or SIGTERM.

example:
  gptlab serve runs/shakespeare-char --port 8000
  curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
       -d '{"prompt": "ROMEO:", "max_tokens": 100, "seed": 1}'
"""


def add_parser(subparsers) -> None:
    parser = new_command(subparsers, "serve", help="serve a trained run over HTTP (OpenAI API)",
                         description=DESCRIPTION)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run folder")
    add_option(parser, "host", default="127.0.0.1",
               help="address to listen on (0.0.0.0 exposes the server to your network)")
    add_option(parser, "port", type=int, default=8000, help="TCP port (0: any free port)")
    add_option(parser, "api_key", default=None,
               help="require `Authorization: Bearer KEY` on /v1/*; when left out, "
                    "$GPTLAB_API_KEY is used if set (keeps the key out of `ps`)")
    add_option(parser, "max_tokens_limit", type=int, default=1024,
               help="the largest max_tokens a request may ask for")
    from gptlab.serve.engine import DEFAULT_ROWS  # imports torch, as add_which_option does

    add_option(parser, "max_concurrency", type=int, default=DEFAULT_ROWS,
               help="requests served at once, further ones get 429; also the rows decoded "
                    "together (a request's n choices wait for free rows), whose KV cache "
                    "is allocated at start-up")
    add_option(parser, "batch_invariant", action=argparse.BooleanOptionalAction, default=True,
               help="decode with row-invariant matmuls so that a completion's text never "
                    "depends on what else runs (default); --no-batch-invariant runs the "
                    "model as it is: no transposed copy of the weights (and, without a C "
                    "compiler, one stream alone ~1.2x faster on CPU), but a completion's "
                    "last bits, and so now and then a token, vary with the load")
    add_option(parser, "threads", type=int, default=0,
               help="torch threads for the model on CPU (default 0: all cores but one, at "
                    "least 1, so that the event loop keeps a core of its own)")
    add_which_option(parser, help="which checkpoint of the run to serve", name="checkpoint")
    add_option(parser, "device", default="cpu", help="torch device, e.g. cpu, cuda, mps")
    add_option(parser, "drain_s", type=float, default=10.0,
               help="on SIGTERM, seconds running completions may go on before they are ended")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Raise GptlabError naming the first bad option."""
    if not 0 <= args.port <= 65535:
        raise GptlabError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_tokens_limit < 1:
        raise GptlabError(f"--max-tokens-limit must be at least 1, got {args.max_tokens_limit}")
    if args.max_concurrency < 1:
        raise GptlabError(f"--max-concurrency must be at least 1, got {args.max_concurrency}")
    if not 0 <= args.drain_s <= 20:
        raise GptlabError(f"--drain-s must be between 0 and 20, got {args.drain_s}")
    if args.threads < 0:
        raise GptlabError(f"--threads must be 0 (all cores but one) or more, got {args.threads}")
    if args.api_key is not None and not args.api_key.strip():
        raise GptlabError("--api-key is empty: give a key, or leave the option out")
    if not args.run_dir.is_dir():
        raise GptlabError(f"run folder not found: {args.run_dir} (train one with `gptlab train`)")


def serve_threads(requested: int) -> int:
    """The torch threads for serving: `requested`, or with 0 all cores but one (at least 1)."""
    from gptlab.tokenizers.base import resolve_num_threads

    return requested or max(1, resolve_num_threads(0) - 1)


def model_threads(requested: int) -> int:
    """Set torch's intra-op threads for serving (`serve_threads`). The event loop and
    the clients need a core: when torch's threads take them all, a thread of its team is
    preempted in the middle of a step and the others spin waiting for it (one stream on
    2 cores: 116 tokens/s with 2 threads, 195 with 1; see docs/benchmarks.md)."""
    import torch

    threads = serve_threads(requested)
    torch.set_num_threads(threads)
    return threads


def run(args: argparse.Namespace) -> int:
    check_args(args)
    try:
        from gptlab.serve.app import ServerSettings, create_app
        from gptlab.serve.server import run_server
    except ImportError as exc:
        raise GptlabError(
            f"gptlab serve needs the serve extra ({exc.name} is missing): "
            "pip install 'gptlab[serve]'"
        ) from None
    from gptlab.runtime import resolve_device
    from gptlab.serve.engine import ModelEngine

    device = resolve_device(args.device)  # a bad --device is named, not blamed on the weights
    torch_threads = model_threads(args.threads)
    engine = ModelEngine.from_run_dir(args.run_dir, which=args.checkpoint, device=device)
    engine.batch_invariant = args.batch_invariant
    api_key = args.api_key if args.api_key is not None else os.environ.get("GPTLAB_API_KEY")
    settings = ServerSettings(api_key=api_key or None, max_tokens_limit=args.max_tokens_limit,
                              max_concurrency=args.max_concurrency, drain_s=args.drain_s)
    app = create_app(engine, settings)

    def ready(url: str) -> None:
        auth = "API key required" if settings.api_key else "no API key"
        if engine.kv_cache_bytes is not None:
            auth += (f"; KV cache {engine.kv_cache_bytes / 2**20:.1f} MiB for "
                     f"{settings.max_concurrency} completions at once")
            if engine.weight_copy_bytes:
                auth += (f", {engine.weight_copy_bytes / 2**20:.1f} MiB of transposed weights "
                         "(batch-invariant decoding)")
            if engine.min_rows > 1:  # see README, "Install": a C compiler
                auth += (f", a lone stream decoded as {engine.min_rows} rows "
                         "(gptlab/row_kernel.c not built or not exact here)")
        auth += f"; {torch_threads} torch thread{'s' if torch_threads > 1 else ''}"
        print(f"serving {engine.model_id} on {url} ({auth}); playground: {url}/ ; "
              f"API: {url}/v1 ; Ctrl-C to stop", file=sys.stderr, flush=True)

    try:
        run_server(app, args.host, args.port, on_ready=ready)
    except KeyboardInterrupt:  # uvicorn re-raises the SIGTERM / Ctrl-C it stopped on
        pass
    print("server stopped", file=sys.stderr)
    return 0
