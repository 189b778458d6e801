"""`gptlab eval`: validation loss, perplexity and bits per byte of a trained run."""

from __future__ import annotations

import argparse
import json
from typing import get_args

from gptlab.cli.options import add_option, add_which_option, new_command
from gptlab.data.dataset import Split

DESCRIPTION = """\
Evaluate a run folder on a dataset split in non-overlapping windows of the model's block
size, and print loss (nats/token), perplexity, bits per character and bits per byte.
The dataset is the one the run was trained on, or --data DIR (it must use the run's
tokenizer).

examples:
  gptlab eval runs/quick
  gptlab eval runs/quick --data data/other-char --split train --max-batches 50
"""


def add_parser(subparsers) -> None:
    p = new_command(subparsers, "eval", help="evaluate a run: loss, perplexity, bits per byte",
                    description=DESCRIPTION)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by gptlab train")
    add_option(p, "data", default=None, metavar="DIR",
               help="prepared dataset folder (None: the run's own dataset)")
    add_option(p, "split", choices=get_args(Split), default="val", help="which split")
    add_which_option(p, help="which weights")
    add_option(p, "batch_size", type=int, default=32, help="windows per forward pass")
    add_option(p, "max_batches", type=int, default=None,
               help="stop after this many batches (None: the whole split)")
    add_option(p, "device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_option(p, "json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gptlab.train.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, data_dir=args.data, split=args.split,
                          which=args.which, batch_size=args.batch_size,
                          max_batches=args.max_batches, device=args.device)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.split} loss     {result['loss']:.4f}")
    print(f"perplexity   {result['ppl']:.3f}")
    print(f"bits/char    {result['bpc']:.4f}")
    print(f"bits/byte    {result['bpb']:.4f}")
    print(f"tokens       {result['tokens']}")
    return 0
