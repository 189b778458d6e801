"""`gptlab sample`: stream text from a trained run."""

from __future__ import annotations

import argparse
import sys

from gptlab.commands import add_option, new_command

DESCRIPTION = """\
Generate text from a run folder, streaming it to stdout as it is produced. stdout carries
only the text (prompt plus continuation), with samples separated by a line `---`;
messages go to stderr, so the output can be piped.

examples:
  gptlab sample runs/quick --prompt "ROMEO:" --max-new-tokens 300
  gptlab sample runs/quick --num-samples 3 --temperature 0.8 --top-k 50 --seed 1
"""


def add_parser(subparsers) -> None:
    p = new_command(subparsers, "sample", help="generate text from a trained run",
                    description=DESCRIPTION)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by gptlab train")
    add_option(p, "prompt", default="", help="text to continue ('' starts from a newline)")
    add_option(p, "max_new_tokens", type=int, default=500, help="tokens to generate per sample")
    add_option(p, "temperature", type=float, default=1.0,
               help="softmax temperature (0: greedy)")
    add_option(p, "top_k", type=int, default=None, help="keep only the k likeliest tokens")
    add_option(p, "top_p", type=float, default=None, help="nucleus sampling threshold in (0, 1]")
    add_option(p, "greedy", action="store_true", help="always take the likeliest token")
    add_option(p, "seed", type=int, default=None, help="seed for reproducible samples")
    add_option(p, "num_samples", type=int, default=1, help="how many samples")
    add_option(p, "which", choices=("best", "latest"), default="best",
               help="best.safetensors or the latest weights")
    add_option(p, "device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from gptlab.errors import ConfigError

    if args.max_new_tokens < 0:
        raise ConfigError(f"--max-new-tokens {args.max_new_tokens} must be >= 0")
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples {args.num_samples} must be >= 1")
    if not 0 <= args.temperature < float("inf"):  # also refuses nan
        raise ConfigError(
            f"--temperature {args.temperature} must be a finite number >= 0 (0 means greedy)"
        )
    if args.seed is not None and not 0 <= args.seed < 2**63 - args.num_samples:
        raise ConfigError(f"--seed {args.seed} must be in [0, 2**63)")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k} must be >= 1")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p {args.top_p} must be in (0, 1]")


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    if prompt:
        ids = tokenizer.encode(prompt)
        if ids:
            return ids
    eot = getattr(tokenizer, "eot_id", None)
    if eot is not None and not prompt:
        return [eot]
    from gptlab.errors import GptlabError

    try:
        return tokenizer.encode("\n") or [0]
    except GptlabError:
        return [0]


def stream_sample(run, args: argparse.Namespace, seed: int | None, out=None) -> None:
    """Write prompt + continuation to `out` (default stdout) as tokens arrive."""
    import torch

    out = out or sys.stdout
    from gptlab.generate import stream

    tok = run.tokenizer
    ids = _prompt_ids(tok, args.prompt)
    device = next(run.model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, t)
    out.write(args.prompt)
    out.flush()
    prefix = tok.decode(ids)
    new: list[int] = []
    written = 0
    for token in stream(run.model, idx, args.max_new_tokens, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, seed=seed):
        new.append(int(token.item()))
        text = tok.decode(ids + new)[len(prefix):]
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            continue
        out.write(text[written:])
        out.flush()
        written = len(text)
    text = tok.decode(ids + new)[len(prefix):]
    out.write(text[written:] + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    from gptlab.checkpoint import load_run
    from gptlab.train.runtime import resolve_device

    _check(args)
    run_ = load_run(args.run_dir, which=args.which, device=resolve_device(args.device))
    for i in range(args.num_samples):
        if i:
            sys.stdout.write("---\n")
        seed = None if args.seed is None else args.seed + i
        stream_sample(run_, args, seed)
    return 0
