"""`gptlab inspect`: the seeds' printed views of a trained run's model, tokens and data.

The numbers come from `gptlab.inspect` (this module only picks, clips and prints them,
with `gptlab.inspect.figures` for `--out`); the tables are drawn in `inspect_views.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptlab.cli.options import add_option, add_which_option, new_command
from gptlab.errors import GptlabError

if TYPE_CHECKING:
    from gptlab.checkpoint import Run

# Each view, in the order they print, with the one sentence `--help` gives it.
VIEWS: dict[str, str] = {
    "attention": "seed 001's `wei`: how much each token takes from each earlier one, after "
                 "the `tril` mask and softmax (one --layer/--head as a matrix, and where the "
                 "last token looks in every head)",
    "next": "seed 001's softmax over `logits`, per token: the probability the model gave "
            "the token that really came next, its surprisal in bits (-log2 p; the mean is "
            "the loss / ln 2) and the --k likeliest alternatives",
    "tokens": "seed 001's `encode`: the token ids the text becomes, each piece with the "
              "characters it covers (unknown words and dropped whitespace shown)",
    "batches": "seed 001's \"when input is tensor([18]) the target: 47\": one block of the "
               "run's data holds block_size examples; and seed 002's sliding windows of "
               "the prompt (input ----> target, shifted by one token)",
    "embeddings": "seed 002's token embedding table: the tokens whose embedding rows point "
                  "most nearly the same way as the prompt's first tokens, and the position "
                  "vectors added to them",
}
DEFAULT_VIEWS = "attention,next,tokens"
FIGURES = {"attention": "attention.png", "next": "surprisal.png", "embeddings": "positions.png"}

DESCRIPTION = """\
Show what a trained run does with a text: its tokens, the probability of each next
token, the attention weights of every layer and head, how training batches are cut, and
the nearest tokens in embedding space. Tables go to stdout (colour only on a terminal,
never with NO_COLOR set); --json prints one JSON object instead; --out also writes PNG
figures (needs matplotlib: pip install 'gptlab[plot]').

examples:
  gptlab inspect runs/quick --prompt "ROMEO: But soft"
  gptlab inspect runs/quick --prompt-file scene.txt --what attention --layer 1 --head 2
  gptlab inspect runs/quick --prompt "To be" --what next,embeddings --out figures/
  gptlab inspect runs/quick --prompt "To be" --json > inspect.json
"""


def _epilog() -> str:
    import textwrap

    width = max(len(name) for name in VIEWS)
    lines = ["views (--what, comma-separated):"]
    for name, sentence in VIEWS.items():
        lines += textwrap.wrap(sentence, width=88, initial_indent=f"  {name:<{width}}  ",
                               subsequent_indent=" " * (width + 4))
    figures = ", ".join(f"{png} ({name})" for name, png in FIGURES.items())
    lines += textwrap.wrap(f"figures (--out DIR): {figures}", width=88)
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    p = new_command(subparsers, "inspect", help="see inside a run: tokens, attention, "
                    "next-token odds",
                    description=DESCRIPTION)
    p.epilog = _epilog()
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                   help="run folder written by gptlab train")
    source = p.add_mutually_exclusive_group()
    add_option(source, "prompt", default=None, metavar="TEXT", help="the text to inspect")
    add_option(source, "prompt_file", type=Path, default=None, metavar="PATH",
               help="read the text to inspect from this UTF-8 file")
    add_option(p, "what", default=DEFAULT_VIEWS, metavar="VIEWS",
               help=f"comma-separated views: {', '.join(VIEWS)}")
    add_option(p, "layer", type=int, default=0, help="layer of the attention matrix")
    add_option(p, "head", type=int, default=0, help="head of the attention matrix")
    add_option(p, "k", type=int, default=5, help="alternatives per token / neighbours shown")
    add_option(p, "rows", type=int, default=24,
               help="table rows shown; longer tables hide their middle rows")
    add_option(p, "out", type=Path, default=None, metavar="DIR",
               help="also write PNG figures of the views into DIR")
    add_option(p, "json", action="store_true", help="print one JSON object instead of tables")
    add_which_option(p, help="best.safetensors or the latest weights")
    add_option(p, "device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def parse_views(what: str) -> list[str]:
    """`--what` as a list of view names, in the order given, each once."""
    names = [name.strip() for name in what.split(",") if name.strip()]
    unknown = [name for name in names if name not in VIEWS]
    if unknown or not names:
        bad = ", ".join(repr(name) for name in unknown) or repr(what)
        raise GptlabError(f"--what {bad} is not a view: pick from {', '.join(VIEWS)}")
    return list(dict.fromkeys(names))


def prompt_text(args: argparse.Namespace) -> str:
    """The text from --prompt or --prompt-file; GptlabError when none or empty."""
    if args.prompt_file is not None:
        from gptlab.tokenizers.base import read_text_file

        text = read_text_file(args.prompt_file)
        if not text:
            raise GptlabError(f"{args.prompt_file} is empty: give a file with text in it")
        return text
    if args.prompt is None:
        raise GptlabError("no text to inspect: give --prompt TEXT or --prompt-file PATH")
    if not args.prompt:
        raise GptlabError("--prompt is empty: give the text to inspect, e.g. --prompt 'ROMEO:'")
    return args.prompt


def check_options(args: argparse.Namespace) -> None:
    """Refuse bad numbers before the run is loaded."""
    if args.k < 1:
        raise GptlabError(f"--k {args.k} must be >= 1")
    if args.rows < 2:
        raise GptlabError(f"--rows {args.rows} must be >= 2")
    if args.layer < 0 or args.head < 0:
        raise GptlabError(f"--layer {args.layer} / --head {args.head} must be >= 0")


def check_layer_head(args: argparse.Namespace, n_layer: int, n_head: int) -> None:
    """--layer and --head inside the model, or a GptlabError giving the range."""
    if not args.layer < n_layer:
        raise GptlabError(f"--layer {args.layer} is out of range: this model has {n_layer} "
                          f"layers, pick 0..{n_layer - 1}")
    if not args.head < n_head:
        raise GptlabError(f"--head {args.head} is out of range: this model has {n_head} "
                          f"heads, pick 0..{n_head - 1}")


def load_inspected_run(args: argparse.Namespace) -> Run:
    """The run, after checking it has the tokenizer every view needs."""
    from gptlab.checkpoint import load_run
    from gptlab.data.dataset import TOKENIZER_FILE
    from gptlab.runtime import resolve_device

    tok_path = args.run_dir / TOKENIZER_FILE
    if args.run_dir.is_dir() and not tok_path.is_file():
        raise GptlabError(f"{tok_path} not found: inspect needs the run's tokenizer; copy the "
                          "dataset's tokenizer.json into the run folder")
    return load_run(args.run_dir, which=args.which, device=resolve_device(args.device))


def use_colour(args: argparse.Namespace) -> bool:
    """Colour only for a person at a terminal: not with --json, NO_COLOR or a pipe."""
    return not args.json and not os.environ.get("NO_COLOR") and sys.stdout.isatty()


def run(args: argparse.Namespace) -> int:
    from gptlab.cli import inspect_views
    from gptlab.inspect.plain import encode_text

    views = parse_views(args.what)
    text = prompt_text(args)
    check_options(args)
    if args.out is not None and any(name in FIGURES for name in views):
        from gptlab.inspect.figures import pyplot

        pyplot()  # no matplotlib: fail now, not after the work
    run_ = load_inspected_run(args)
    config = run_.model.config
    check_layer_head(args, config.n_layer, config.n_head)
    ids = encode_text(run_.tokenizer, text)
    if len(ids) > config.block_size:
        print(f"note: the text is {len(ids)} tokens and the model reads at most block_size "
              f"{config.block_size}: inspecting the last {config.block_size} (the first "
              f"{len(ids) - config.block_size} are cut)", file=sys.stderr)
    results = {name: inspect_views.COMPUTE[name](run_, text, ids, args) for name in views}
    if args.json:
        doc = {"run": str(args.run_dir), "prompt": text, "truncated": len(ids) > config.block_size,
               "views": {name: to_plain(result) for name, result in results.items()}}
        print(json.dumps(doc, ensure_ascii=False))
    else:
        colour = use_colour(args)
        for name, result in results.items():
            lines = inspect_views.RENDER[name](result, run_, args, colour)
            print("\n".join([inspect_views.heading(name, VIEWS[name], colour), *lines, ""]))
    if args.out is not None:
        write_figures(results, run_, args)
    return 0


def to_plain(result: Any) -> Any:
    """A view's result as JSON-ready data (a library result, or a dict of them)."""
    if isinstance(result, dict):
        return {key: to_plain(value) for key, value in result.items()}
    if isinstance(result, list):
        return [to_plain(value) for value in result]
    return result.to_dict() if hasattr(result, "to_dict") else result


def write_figures(results: dict[str, Any], run_: Run, args: argparse.Namespace) -> None:
    """Write the PNG of each view that has one into --out; print their paths (stderr with
    --json, which keeps stdout for the JSON)."""
    from gptlab.inspect import figures
    from gptlab.inspect.plain import piece

    stream = sys.stderr if args.json else sys.stdout
    written = []
    for name, result in results.items():
        path = args.out / FIGURES[name] if name in FIGURES else None
        if name == "attention":
            labels = [piece(run_.tokenizer, i) for i in result.ids]
            written.append(figures.attention_figure(result, labels, path))
        elif name == "next":
            written.append(figures.surprisal_figure(result, path))
        elif name == "embeddings":
            written.append(figures.positions_figure(result["positions"], path))
    if not written:
        print(f"note: no figure for {args.what}: --out draws {', '.join(FIGURES)}",
              file=sys.stderr)
    for path in written:
        print(path, file=stream)
