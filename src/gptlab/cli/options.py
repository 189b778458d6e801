"""What the subcommand modules of `gptlab.cli` share: parser construction and options.

Each module defines `add_parser(subparsers) -> None`, which creates its subcommand with
`new_command(...)` and sets `func=run`, where `run(args: argparse.Namespace) -> int`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose "unrecognized arguments" error names the closest option of
    the (sub)command they were given to: `--n-layers` → "did you mean --n-layer?".

    Subcommand parsers are of this class too (argparse makes them with the parent's class),
    but argparse reports unknown options from the top-level `parse_args`, so that is where
    the suggestion is made, against the innermost subcommand chosen.
    """

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = _chosen_parser(self, parsed)
            parser.error(f"unrecognized arguments: {' '.join(extras)}"
                         + suggest_options(extras, parser))
        return parsed


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The innermost subcommand parser that `args` chose (`gptlab import hf` → hf's)."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
                   None)
        name = getattr(args, sub.dest, None) if sub is not None else None
        if name not in getattr(sub, "choices", {}):
            return parser
        parser = sub.choices[name]


def suggest_options(words: list[str], parser: argparse.ArgumentParser) -> str:
    """`" (did you mean --n-layer?)"` for `["--n-layers", "2"]`: the closest long option of
    `parser` (dashed spelling) to each unknown option in `words`, named by the option when
    there are several; "" when none is close."""
    known = [o for o in parser._option_string_actions if o.startswith("--") and "_" not in o]
    flags = [word.split("=", 1)[0] for word in words if word.startswith("--")]
    hints = []
    for flag in flags:
        close = difflib.get_close_matches(flag.replace("_", "-"), known, n=1, cutoff=0.75)
        if close:
            hints.append(f"did you mean {close[0]}?" if len(flags) == 1
                         else f"{flag}: did you mean {close[0]}?")
    return f" ({'; '.join(hints)})" if hints else ""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the description's line breaks."""


def new_command(subparsers: Any, name: str, help: str, description: str | None = None):
    """Add a subcommand whose --help lists every option with its default."""
    return subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )


def new_command_with_kinds(
    subparsers: Any, name: str, help: str, description: str, out_help: str,
    kinds: dict[str, tuple[str, Callable[[argparse.Namespace], int]]],
) -> dict[str, argparse.ArgumentParser]:
    """Add a subcommand whose first argument is a KIND (`gptlab import hf ...`) from `kinds`,
    KIND → (help, run); each writes the folder given as `--out`. Returns the KINDs' parsers."""
    parser = new_command(subparsers, name, help=help, description=description)
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    parsers = {}
    for kind, (kind_help, run) in kinds.items():
        parsers[kind] = new_command(sub, kind, help=kind_help)
        add_option(parsers[kind], "out", type=Path, required=True, help=out_help)
        parsers[kind].set_defaults(func=run)
    return parsers


def report_written(message: str, path: Path) -> int:
    """Say what was written (stderr) and print its path alone (stdout, for scripts); 0."""
    print(message, file=sys.stderr)
    print(path)
    return 0


def add_option(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add `--some-name` (value in `args.some_name`), also accepted as `--some_name` (users
    coming from nanoGPT type that)."""
    dashed = "--" + name.replace("_", "-")
    flags = [dashed] if "_" not in name else [dashed, "--" + name]
    parser.add_argument(*flags, dest=name, **kwargs)


def add_which_option(parser: argparse.ArgumentParser, help: str, name: str = "which") -> None:
    """Add `--which` (or `--NAME`): one of `checkpoint.WHICH_WEIGHTS`, default "best"."""
    from gptlab.checkpoint import WHICH_WEIGHTS  # imports torch: not before it is needed

    add_option(parser, name, choices=WHICH_WEIGHTS, default="best", help=help)


def add_record_options(parser: argparse.ArgumentParser) -> None:
    """--format, --text-field and --skip-bad-records: how prepare and stats read records."""
    from typing import get_args

    from gptlab.data.formats import InputFormat

    add_option(parser, "format", choices=get_args(InputFormat), default="auto",
               help="input format (auto: by extension, checked by content)")
    add_option(parser, "text_field", default=None, metavar="FIELD",
               help="record files: the field or column holding the text, dotted for nested "
               "fields (e.g. meta.body); None: text")
    add_option(parser, "skip_bad_records", action="store_true",
               help="skip (and count) records without a string text field instead of failing")
