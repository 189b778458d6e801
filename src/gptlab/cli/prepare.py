"""`gptlab prepare`: tokenize text into a dataset folder (train.bin, val.bin, meta.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from gptlab.cli.options import add_option, add_record_options, new_command
from gptlab.data.reading import TextErrors
from gptlab.tokenizers import TokenizerKind

DESCRIPTION = """\
Tokenize text into a dataset folder for `gptlab train`: train.bin and val.bin (raw
little-endian uint16/uint32 token ids), tokenizer.json and meta.json.

--input takes files, folders (all non-hidden files, sorted), globs, or a named corpus
(`shakespeare`, downloaded once into the cache; see `gptlab corpus`). A text file is one
document; JSON Lines (.jsonl), JSON lists (.json), CSV/TSV, Parquet and Arrow files (and
`datasets.save_to_disk` folders) hold one document per record, read from --text-field.
Any of them may be compressed (.gz, .bz2, .xz, .zst). Documents are joined with
<|endoftext|> where the tokenizer has it.

examples:
  gptlab prepare --tokenizer char --input shakespeare --out data/shakespeare-char
  gptlab prepare --tokenizer bpe --vocab-size 4096 --input 'books/*.txt' --out data/books
  gptlab prepare --tokenizer gpt2 --input TinyStories.jsonl.zst --out data/stories
  gptlab prepare --tokenizer gpt2 --input 'fineweb/*.parquet' --text-field text --out data/fw
  gptlab prepare --tokenizer-file runs/char/tokenizer.json --input new.txt --out data/new
"""


def add_parser(subparsers) -> None:
    p = new_command(
        subparsers, "prepare", help="tokenize text into a dataset folder", description=DESCRIPTION
    )
    add_option(p, "tokenizer", choices=get_args(TokenizerKind), default="char",
               help="tokenizer kind")
    add_option(p, "tokenizer_file", default=None, metavar="FILE",
               help="encode with this saved tokenizer instead (e.g. RUN_DIR/tokenizer.json, to "
               "fine-tune that run on new text); its kind replaces --tokenizer")
    add_option(p, "input", nargs="+", required=True, metavar="FILE_OR_DIR_OR_GLOB_OR_NAME",
               help="text source(s)")
    add_option(p, "out", required=True, metavar="DIR", help="dataset folder to create")
    add_option(p, "split", type=float, default=0.9, help="fraction of tokens for train")
    add_option(p, "vocab_size", type=int, default=None,
               help="BPE vocabulary size (bpe only; None: 4096)")
    add_option(p, "clean", default=None, metavar="STEPS",
               help="comma-separated cleaning steps from nfc, nfkc, newlines, lower, seed, strip "
               "(seed 000's recipe: lower,seed,strip); None keeps the text as is")
    add_option(p, "errors", choices=get_args(TextErrors), default="strict",
               help="invalid UTF-8: fail, or replace with U+FFFD")
    add_option(p, "block_size", type=int, default=None,
               help="fail unless both splits hold more than this many tokens")
    add_option(p, "unk", action="store_true",
               help="char: add an <unk> id for characters outside the vocabulary")
    add_option(p, "force", action="store_true", help="replace a different dataset in --out")
    add_option(p, "cache_dir", default=None, metavar="DIR",
               help="corpus cache folder (None: $GPTLAB_CACHE_DIR or ~/.cache/gptlab)")
    add_option(p, "workers", type=int, default=0,
               help="processes encoding a gpt2 input of 16 MiB or more (0: one per core)")
    add_record_options(p)
    add_option(p, "no_progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gptlab.data import prepare
    from gptlab.files import write_errors

    out = Path(args.out).expanduser()
    with write_errors(out, lambda: _intact_dataset(out)):
        meta = prepare(
            args.input, args.out, tokenizer=args.tokenizer, split=args.split,
            vocab_size=args.vocab_size, clean=args.clean, errors=args.errors,
            block_size=args.block_size, unk=args.unk, force=args.force,
            cache_dir=args.cache_dir, progress=not args.no_progress, workers=args.workers,
            tokenizer_file=args.tokenizer_file, input_format=args.format,
            text_field=args.text_field, skip_bad_records=args.skip_bad_records,
        )
    print(json.dumps(meta, indent=2))
    return 0


def _intact_dataset(out: Path) -> str:
    """What a failed write leaves of `--out` (prepare builds aside and renames at the end)."""
    from gptlab.data.dataset import META_FILE

    if (out / META_FILE).is_file():
        return f"the dataset already in {out} is unchanged"
    return f"nothing was written to {out} (the partial build folder was removed)"
