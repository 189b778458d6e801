"""`gptlab plot`: a PNG of a run's train and validation loss."""

from __future__ import annotations

import argparse

from gptlab.cli.options import add_option, new_command


def add_parser(subparsers) -> None:
    p = new_command(subparsers, "plot", help="plot a run's loss curves to a PNG",
                    description="Write a PNG of train and val loss against steps and tokens "
                    "from RUN_DIR/metrics.jsonl (needs matplotlib: pip install 'gptlab[plot]').")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by gptlab train")
    add_option(p, "out", default=None, metavar="PNG", help="output file (None: RUN_DIR/loss.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gptlab.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0
