"""The `gptlab` command-line tool: parse, call the library, print.

One module per subcommand lives beside this file (`gptlab/cli/train.py` is `gptlab
train`), with the option helpers they share in `options.py`; `COMMANDS` below is the table
of all of them. User mistakes arrive as `GptlabError` and leave as one line on stderr
with exit status 1; a traceback means a bug in gptlab.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptlab import __version__
from gptlab.cli import (
    corpus,
    export,
    import_,
    inspect,
    plot,
    prepare,
    sample,
    serve,
    stats,
    tokenize,
    train,
    verify,
)
from gptlab.cli import eval as eval_  # as: not to shadow the builtin eval
from gptlab.cli.options import ArgumentParser
from gptlab.errors import GptlabError

# Every subcommand, in `gptlab --help` order: its name → the function that adds its parser.
# The modules import torch & co only inside their functions, so importing them all is cheap.
COMMANDS: dict[str, Callable[[Any], None]] = {
    "prepare": prepare.add_parser,
    "corpus": corpus.add_parser,
    "stats": stats.add_parser,
    "tokenize": tokenize.add_parser,
    "train": train.add_parser,
    "sample": sample.add_parser,
    "eval": eval_.add_parser,
    "plot": plot.add_parser,
    "inspect": inspect.add_parser,
    "import": import_.add_parser,
    "export": export.add_parser,
    "serve": serve.add_parser,
    "verify": verify.add_parser,
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="gptlab",
        description="Train a small GPT language model from scratch on your own text, then use it.",
    )
    parser.add_argument("--version", action="version", version=f"gptlab {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages to stderr"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add_parser in COMMANDS.items():
        add_parser(subparsers)
        assert name in subparsers.choices, f"{add_parser.__module__} does not add {name!r}"
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _describe_os_error(exc: OSError) -> str:
    """One line for a file-system error; a temporary file we were writing is named by the
    folder it was in (`.name.tmp-xyz` says nothing to a user)."""
    if not exc.filename:
        return str(exc.strerror or exc)
    path = Path(str(exc.filename))
    if path.name.startswith(".") and ".tmp" in path.name:
        return f"cannot write in {path.parent}/ ({exc.strerror}): check that folder"
    return f"{exc.strerror or exc}: {exc.filename}"


def main(argv: list[str] | None = None) -> int:
    """Run the tool with `argv` (default: sys.argv[1:]) and return the exit status.

    SIGTERM is handled like Ctrl-C: the command stops, cleans up what it was writing and
    exits 130 (training saves a checkpoint first; its own handler takes over while it runs).
    """
    try:
        parser = build_parser()  # imports torch: slow enough for a Ctrl-C to land here
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args) or 0)
    except GptlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`gptlab sample ... | head`): not an error.
        sys.stderr.close()
        return 0
    except OSError as exc:
        print(f"error: {_describe_os_error(exc)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
