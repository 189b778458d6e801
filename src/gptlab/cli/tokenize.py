"""`gptlab tokenize`: one text split by several tokenizers, side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gptlab.cli.options import add_option, new_command
from gptlab.errors import GptlabError

DESCRIPTION = """\
Split one text with several tokenizers and print, for each, the token count, the
characters per token, the ids and the pieces: seed 001's character-level `encode` next to
seed 002's word split (unknown words become <|unk|>) and GPT-2's byte-level BPE. The char,
word and bpe kinds learn their vocabulary from --corpus (default: the text itself).
TEXT_OR_FILE is read as a file when such a file exists.

examples:
  gptlab tokenize "hii there" --tokenizer char,gpt2 --corpus input.txt
  gptlab tokenize scene.txt --tokenizer char,word,gpt2,runs/quick/tokenizer.json
"""


def add_parser(subparsers) -> None:
    p = new_command(subparsers, "tokenize", help="split a text with several tokenizers",
                    description=DESCRIPTION)
    p.add_argument("text", metavar="TEXT_OR_FILE", help="the text, or a UTF-8 file holding it")
    add_option(p, "tokenizer", default="char,word,gpt2", metavar="LIST",
               help="comma-separated kinds (char, word, gpt2, bpe), tokenizer.json files or "
                    "run folders")
    add_option(p, "corpus", type=Path, default=None, metavar="FILE",
               help="where char, word and bpe learn their vocabulary (None: the text)")
    add_option(p, "max_pieces", type=int, default=64,
               help="ids and pieces shown per tokenizer; the rest are counted")
    add_option(p, "json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=run)


def read_argument(argument: str) -> tuple[str, Path | None]:
    """(text, the file it came from or None): an existing file is read, else the argument
    is the text itself."""
    from gptlab.tokenizers.base import read_text_file

    path = Path(argument)
    if argument and path.is_file():
        return read_text_file(path), path
    return argument, None


def _clipped(items: list[str], limit: int) -> str:
    shown = items[:limit]
    more = f" … ({len(items) - limit} more)" if len(items) > limit else ""
    return " | ".join(shown) + more


def split_lines(splits: list, max_pieces: int) -> list[str]:
    """An aligned summary row per tokenizer, then its ids and pieces."""
    width = max(len(s.name) for s in splits)
    lines = []
    for s in splits:
        lines.append(f"{s.name:<{width}}  {s.n_tokens:>7,} tokens  "
                     f"{s.chars_per_token:5.2f} chars/token")
    for s in splits:
        ids = [str(i) for i in s.table.ids]
        pieces = [repr(r.piece) for r in s.table.rows]
        shown_ids = ", ".join(ids[:max_pieces]) + (", …" if len(ids) > max_pieces else "")
        lines += ["", f"{s.name}:", f"  ids    [{shown_ids}]",
                  f"  pieces {_clipped(pieces, max_pieces)}"]
    return lines


def run(args: argparse.Namespace) -> int:
    from gptlab.inspect import compare_tokenizers
    from gptlab.tokenizers.base import read_text_file

    if args.max_pieces < 1:
        raise GptlabError(f"--max-pieces {args.max_pieces} must be >= 1")
    text, path = read_argument(args.text)
    if not text:
        where = f"{path} is empty" if path else "the text is empty"
        raise GptlabError(f"{where}: give a text (or a file) to tokenize")
    if path is not None:
        print(f"reading the text from the file {path} ({len(text):,} characters)",
              file=sys.stderr)
    corpus = read_text_file(args.corpus) if args.corpus is not None else None
    splits = compare_tokenizers(text, args.tokenizer, corpus=corpus)
    if args.json:
        doc = {"text": text, "file": None if path is None else str(path),
               "tokenizers": [s.to_dict() for s in splits]}
        print(json.dumps(doc, ensure_ascii=False))
        return 0
    print("\n".join(split_lines(splits, args.max_pieces)))
    return 0
