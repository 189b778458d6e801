"""`gptlab verify`: check every file of a run folder or a dataset folder."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from gptlab.cli.options import add_option, new_command

DESCRIPTION = """\
Check every file of a run folder (config.json, tokenizer.json, the weights, each
state/step-N/ checkpoint, the run's own data/) or a dataset folder (meta.json,
tokenizer.json, train.bin, val.bin) against the checksums gptlab recorded when it wrote
them (checksums.json in each folder), and what can be checked inside: token ids below the
vocabulary size, the tokenizer against meta.json and config.json, each weights header.

One line per file: ok, corrupt, missing, no checksum (written by an older gptlab) or
inconsistent (files that disagree). Exit status 0 when nothing is wrong ("no checksum"
counts as wrong only with --strict), else 1.

examples:
  gptlab verify runs/quick
  gptlab verify data/shakespeare-char --json
"""


def add_parser(subparsers) -> None:
    p = new_command(subparsers, "verify", help="check a run or dataset folder for corruption",
                    description=DESCRIPTION)
    p.add_argument("path", type=Path, metavar="PATH", help="a run folder or a dataset folder")
    add_option(p, "json", action="store_true",
               help='print one JSON object: {"path", "kind", "ok", "files": [{"path", '
                    '"status", "detail"}, ...]}')
    add_option(p, "strict", action="store_true",
               help="also fail on files without a checksum")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gptlab.verify import all_ok, verify_folder

    kind, checks = verify_folder(args.path)
    ok = all_ok(checks, strict=args.strict)
    if args.json:
        print(json.dumps({"path": str(args.path), "kind": kind, "ok": ok,
                          "files": [c.as_dict() for c in checks]}, indent=2))
        return 0 if ok else 1
    width = max(len(c.status) for c in checks)
    for c in checks:
        print(f"{c.status:<{width}}  {c.path}" + (f"  ({c.detail})" if c.detail else ""))
    counts = Counter(c.status for c in checks)
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    print(f"{args.path} ({kind}): {summary}: " + ("all well" if ok else "NOT all well"))
    return 0 if ok else 1
