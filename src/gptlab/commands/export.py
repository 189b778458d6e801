"""`gptlab export hf RUN_DIR --out DIR`: a run folder → a Hugging Face GPT-2 folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gptlab.commands import add_option, new_command

DESCRIPTION = """\
Write a gptlab model in another tool's format.

  gptlab export hf runs/mine --out hf-mine
  python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('hf-mine')"

Only models with GPT-2's architecture can be exported: learned positions, GELU, biases
everywhere, tied head. Anything else is refused with the list of incompatible fields.
"""


def add_parser(subparsers) -> None:
    parser = new_command(
        subparsers, "export", help="export a run as a Hugging Face GPT-2 folder",
        description=DESCRIPTION,
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    hf_parser = new_command(
        kinds, "hf", help="config.json + model.safetensors for transformers.GPT2LMHeadModel",
    )
    hf_parser.add_argument("run_dir", type=Path, help="gptlab run folder")
    add_option(hf_parser, "out", type=Path, required=True, help="folder to create")
    add_option(
        hf_parser, "which", choices=("best", "latest"), default="best",
        help="which weights of the run to export",
    )
    hf_parser.set_defaults(func=run_hf)


def run_hf(args: argparse.Namespace) -> int:
    from gptlab.interop.runs import export_hf

    out_dir = export_hf(args.run_dir, args.out, which=args.which)
    print(f"exported {args.run_dir} ({args.which}) to {out_dir}", file=sys.stderr)
    print(out_dir)
    return 0
