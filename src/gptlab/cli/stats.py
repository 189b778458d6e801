"""`gptlab stats`: corpus statistics, optionally with a tokenizer's token count."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from gptlab.cli.options import add_option, add_record_options, new_command
from gptlab.errors import GptlabError
from gptlab.tokenizers import Tokenizer, TokenizerKind

DESCRIPTION = """\
Print characters, bytes, lines and distinct characters of text files (joined in order;
record files such as .jsonl, .parquet or .csv give their records' --text-field),
and with --tokenizer the number of tokens and tokens per character. --tokenizer takes a
kind (char, word and bpe learn their vocabulary from these files) or a saved tokenizer
JSON file (e.g. a prepared dataset's tokenizer.json).

example: gptlab stats input.txt --tokenizer gpt2
"""


def add_parser(subparsers) -> None:
    p = new_command(subparsers, "stats", help="corpus statistics", description=DESCRIPTION)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="UTF-8 text files")
    add_option(p, "tokenizer", default=None, metavar="KIND_OR_JSON",
               help=f"{', '.join(get_args(TokenizerKind))}, or a saved tokenizer .json file")
    add_option(p, "vocab_size", type=int, default=None, help="bpe vocabulary size (bpe only)")
    add_option(p, "clean", default=None, metavar="STEPS",
               help="comma-separated cleaning steps applied first (nfc,nfkc,newlines,lower,"
                    "seed,strip); None keeps text as is")
    add_record_options(p)
    add_option(p, "json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=run)


def read_utf8(path: Path) -> str:
    """The file's text; an empty, binary or non-UTF-8 file is a GptlabError naming it."""
    from gptlab.tokenizers.base import read_text_file

    text = read_text_file(path)
    if not text:
        raise GptlabError(f"{path} is empty: give a file with text in it")
    return text


def _tokenizer(spec: str, text: str, vocab_size: int | None) -> Tokenizer:
    from gptlab.tokenizers import build_tokenizer, load_tokenizer

    kinds = get_args(TokenizerKind)
    if spec in kinds:
        return build_tokenizer(spec, text=text, vocab_size=vocab_size)
    if spec.endswith(".json") or Path(spec).is_file():
        return load_tokenizer(spec)
    raise GptlabError(
        f"--tokenizer {spec!r} is neither a kind ({', '.join(kinds)}) nor a tokenizer .json file"
    )


def _corpus_text(args: argparse.Namespace) -> str:
    """The files' text joined in order; record files (JSON Lines, Parquet, CSV, ...) give
    their records' text, as `gptlab prepare` reads them."""
    from gptlab.data.documents import RecordOptions, classify_inputs, iter_documents

    records = RecordOptions(args.format, args.text_field, args.skip_bad_records)
    inputs = classify_inputs(args.files, records)
    if all(i.format == "txt" for i in inputs) and records.format == "auto":
        return "".join(read_utf8(path) for path in args.files)
    text = "".join("".join(blocks) for blocks in iter_documents(inputs, records=records))
    if not text:
        raise GptlabError(f"{args.files[0]} holds no text in field {records.field!r}")
    return text


def run(args: argparse.Namespace) -> int:
    from gptlab.text import clean, corpus_stats, parse_steps

    steps = parse_steps(args.clean)
    text = _corpus_text(args)
    text = clean(text, steps)
    tok = _tokenizer(args.tokenizer, text, args.vocab_size) if args.tokenizer else None
    stats = corpus_stats(text, tok)
    if args.json:
        print(json.dumps(stats))
        return 0
    for key, value in stats.items():
        shown = f"{value:,}" if isinstance(value, int) else (
            f"{value:.4f}" if isinstance(value, float) else value
        )
        print(f"{key:<20} {shown}")
    return 0
