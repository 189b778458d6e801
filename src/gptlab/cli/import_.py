"""`gptlab import hf|nanogpt SOURCE --out RUN_DIR`: other tools' GPT-2 weights → a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from gptlab.cli.options import add_option, new_command_with_kinds, report_written

DESCRIPTION = """\
Turn weights trained elsewhere into a gptlab run folder, ready for `gptlab sample`,
`gptlab eval` and fine-tuning with `gptlab train --init-from RUN_DIR`. Nothing pickled is
ever executed, and nothing is written to --out unless the import succeeds.

  gptlab import hf gpt2 --out runs/gpt2                 # from the Hugging Face cache, offline
  gptlab import hf ./my-gpt2-folder --out runs/mine     # config.json + model.safetensors
  gptlab import nanogpt out-shakespeare-char/ckpt.pt \\
      --meta data/shakespeare_char/meta.pkl --out runs/nanogpt-char
"""


def add_parser(subparsers) -> None:
    kinds = new_command_with_kinds(
        subparsers, "import", help="import a Hugging Face GPT-2 or nanoGPT checkpoint",
        description=DESCRIPTION, out_help="run folder to create",
        kinds={
            "hf": ("a Hugging Face GPT-2 folder, or gpt2/gpt2-medium/... from the HF cache",
                   run_hf),
            "nanogpt": ("a nanoGPT ckpt.pt (and meta.pkl)", run_nanogpt),
        },
    )
    kinds["hf"].add_argument(
        "source", help="folder with config.json + model.safetensors (or pytorch_model.bin), "
        "or gpt2, gpt2-medium, gpt2-large, gpt2-xl (looked up in the HF cache, offline)",
    )
    kinds["nanogpt"].add_argument("ckpt", type=Path, help="nanoGPT's out_dir/ckpt.pt")
    add_option(
        kinds["nanogpt"], "meta", type=Path, default=None,
        help="the dataset's meta.pkl, for char-level models (read as plain data only); "
        "without it the GPT-2 tokenizer is used",
    )


def run_hf(args: argparse.Namespace) -> int:
    from gptlab.interop.runs import import_hf

    out_dir = import_hf(args.source, args.out)
    return report_written(f"imported {args.source} into {out_dir}", out_dir)


def run_nanogpt(args: argparse.Namespace) -> int:
    from gptlab.interop.runs import import_nanogpt

    out_dir = import_nanogpt(args.ckpt, args.out, meta_path=args.meta)
    return report_written(f"imported {args.ckpt} into {out_dir}", out_dir)
