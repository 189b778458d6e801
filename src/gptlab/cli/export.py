"""`gptlab export hf RUN_DIR --out DIR`: a run folder → a Hugging Face GPT-2 folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from gptlab.cli.options import add_which_option, new_command_with_kinds, report_written

DESCRIPTION = """\
Write a gptlab model in another tool's format.

  gptlab export hf runs/mine --out hf-mine
  python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('hf-mine')"

Only models with GPT-2's architecture can be exported: learned positions, GELU, biases
everywhere, tied head. Anything else is refused with the list of incompatible fields.
"""


def add_parser(subparsers) -> None:
    kinds = new_command_with_kinds(
        subparsers, "export", help="export a run as a Hugging Face GPT-2 folder",
        description=DESCRIPTION, out_help="folder to create",
        kinds={"hf": ("config.json + model.safetensors for transformers.GPT2LMHeadModel", run_hf)},
    )
    kinds["hf"].add_argument("run_dir", type=Path, help="gptlab run folder")
    add_which_option(kinds["hf"], help="which weights of the run to export")


def run_hf(args: argparse.Namespace) -> int:
    from gptlab.interop.runs import export_hf

    out_dir = export_hf(args.run_dir, args.out, which=args.which)
    return report_written(f"exported {args.run_dir} ({args.which}) to {out_dir}", out_dir)
