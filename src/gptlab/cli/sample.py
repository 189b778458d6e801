"""`gptlab sample`: stream text from a trained run."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from gptlab.cli.options import add_option, add_which_option, new_command
from gptlab.errors import ConfigError, GptlabError

if TYPE_CHECKING:
    from gptlab.checkpoint import Run
    from gptlab.generate import SamplingConfig
    from gptlab.tokenizers import Tokenizer

DESCRIPTION = """\
Generate text from a run folder, streaming it to stdout as it is produced. stdout carries
only the text (prompt plus continuation), with samples separated by a line `---`;
messages go to stderr, so the output can be piped.

examples:
  gptlab sample runs/quick --prompt "ROMEO:" --max-new-tokens 300
  gptlab sample runs/quick --num-samples 3 --temperature 0.8 --top-k 50 --seed 1
  gptlab sample runs/quick --max-new-tokens 2000 --no-exact   # long: cached past block_size
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
    add_option(p, "exact", action=argparse.BooleanOptionalAction, default=True,
               help="past block_size, recompute the window per token as the seed's loop "
                    "does; --no-exact keeps one cached token per step instead (faster; "
                    "rope: sliding-window attention, learned/sinusoidal: restart from the "
                    "last half window)")
    add_option(p, "seed", type=int, default=None, help="seed for reproducible samples")
    add_option(p, "num_samples", type=int, default=1, help="how many samples")
    add_which_option(p, help="best.safetensors or the latest weights")
    add_option(p, "device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def _sampling_config(args: argparse.Namespace) -> SamplingConfig:
    """The first sample's SamplingConfig (sample i uses seed + i); a bad value is a
    ConfigError that names the flag: `--top-p 1.5 must be in (0, 1]`."""
    from dataclasses import replace

    from gptlab.generate import SamplingConfig, SamplingError

    if args.max_new_tokens < 0:
        raise ConfigError(f"--max-new-tokens {args.max_new_tokens} must be >= 0")
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples {args.num_samples} must be >= 1")
    try:
        config = SamplingConfig(temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, greedy=args.greedy, seed=args.seed,
                                exact=args.exact)
        if args.seed is not None:  # the last sample's seed must be valid too
            replace(config, seed=args.seed + args.num_samples - 1)
    except SamplingError as exc:
        flag = "--" + exc.field.replace("_", "-")
        raise ConfigError(f"{flag} {getattr(args, exc.field)} {exc.rule}") from None
    return config


def _prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's ids, or where to start when it has none: <|endoftext|> for an empty
    prompt where the tokenizer has it, else a newline (or id 0)."""
    ids = tokenizer.encode(prompt) if prompt else []
    if ids:
        return ids
    eot = getattr(tokenizer, "eot_id", None)
    if eot is not None and not prompt:
        return [eot]
    try:
        return tokenizer.encode("\n") or [0]
    except GptlabError:
        return [0]


def stream_sample(
    run: Run, prompt: str, max_new_tokens: int, sampling: SamplingConfig, out: TextIO | None = None
) -> None:
    """Write prompt + continuation to `out` (default stdout) as tokens arrive."""
    import torch

    from gptlab.generate import stream

    out = out or sys.stdout
    tok = run.tokenizer
    ids = _prompt_ids(tok, prompt)
    device = next(run.model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, t)
    out.write(prompt)
    out.flush()
    prefix = tok.decode(ids)
    new: list[int] = []
    written = 0
    for token in stream(run.model, idx, max_new_tokens, sampling=sampling):
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
    from dataclasses import replace

    from gptlab.checkpoint import load_run
    from gptlab.runtime import resolve_device

    sampling = _sampling_config(args)
    run_ = load_run(args.run_dir, which=args.which, device=resolve_device(args.device))
    for i in range(args.num_samples):
        if i:
            sys.stdout.write("---\n")
        seed = None if args.seed is None else args.seed + i
        stream_sample(run_, args.prompt, args.max_new_tokens, replace(sampling, seed=seed))
    return 0
