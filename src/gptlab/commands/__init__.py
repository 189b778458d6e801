"""One module per `gptlab` subcommand.

Each module defines `add_parser(subparsers) -> None`, which creates its subcommand with
`new_command(...)` and sets `func=run`, where `run(args: argparse.Namespace) -> int`.
Modules stay thin: they parse, call library functions and print (results on stdout,
progress and messages on stderr). `gptlab.cli.COMMAND_MODULES` lists them in help order.
"""

from __future__ import annotations

import argparse
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the description's line breaks."""


def new_command(subparsers: Any, name: str, help: str, description: str | None = None):
    """Add a subcommand whose --help lists every option with its default."""
    return subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )


def add_option(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add `--some-name`, also accepted as `--some_name` (users coming from nanoGPT type that).

    `name` is the field name with underscores, e.g. "max_iters"; the value lands in
    `args.max_iters`.
    """
    dashed = "--" + name.replace("_", "-")
    flags = [dashed] if "_" not in name else [dashed, "--" + name]
    parser.add_argument(*flags, dest=name, **kwargs)
