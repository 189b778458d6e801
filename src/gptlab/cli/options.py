"""What the subcommand modules of `gptlab.cli` share: parser construction and options.

Each module defines `add_parser(subparsers) -> None`, which creates its subcommand with
`new_command(...)` and sets `func=run`, where `run(args: argparse.Namespace) -> int`.
Modules stay thin: they parse, call library functions and print (results on stdout,
progress and messages on stderr). The table `gptlab.cli.COMMANDS` lists them in help order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the description's line breaks."""


def new_command(subparsers: Any, name: str, help: str, description: str | None = None):
    """Add a subcommand whose --help lists every option with its default."""
    return subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )


def new_command_with_kinds(subparsers: Any, name: str, help: str, description: str):
    """Add a subcommand whose first argument is a KIND (`gptlab import hf ...`); returns the
    subparsers to add each kind to with `new_kind`."""
    parser = new_command(subparsers, name, help=help, description=description)
    return parser.add_subparsers(dest="kind", metavar="KIND", required=True)


def new_kind(kinds: Any, name: str, help: str, run: Any, out_help: str):
    """Add a KIND that writes the folder given as `--out` and runs `run(args)`."""
    parser = new_command(kinds, name, help=help)
    add_option(parser, "out", type=Path, required=True, help=out_help)
    parser.set_defaults(func=run)
    return parser


def report_written(message: str, path: Path) -> int:
    """Say what was written (stderr) and print its path alone (stdout, for scripts); 0."""
    print(message, file=sys.stderr)
    print(path)
    return 0


def add_option(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add `--some-name`, also accepted as `--some_name` (users coming from nanoGPT type that).

    `name` is the field name with underscores, e.g. "max_iters"; the value lands in
    `args.max_iters`.
    """
    dashed = "--" + name.replace("_", "-")
    flags = [dashed] if "_" not in name else [dashed, "--" + name]
    parser.add_argument(*flags, dest=name, **kwargs)
