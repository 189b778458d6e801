"""`gptlab corpus`: list the named corpora and put local copies into the cache."""

from __future__ import annotations

import argparse

from gptlab.cli.options import add_option, new_command

DESCRIPTION = """\
Named corpora (e.g. `shakespeare`) can be passed to `gptlab prepare --input NAME`; they
are downloaded once into the cache folder and checked against a recorded SHA-256.
Offline, put a local copy in the cache with `gptlab corpus add NAME FILE`.
"""


def add_parser(subparsers) -> None:
    p = new_command(subparsers, "corpus", help="list or add named corpora", description=DESCRIPTION)
    add_option(p, "cache_dir", default=None, metavar="DIR",
               help="corpus cache folder (None: $GPTLAB_CACHE_DIR or ~/.cache/gptlab)")
    sub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    ls = new_command(sub, "list", help="show the named corpora and whether they are cached")
    ls.set_defaults(func=run_list)
    add = new_command(sub, "add", help="verify a local copy of a named corpus and cache it")
    add.add_argument("name", help="corpus name, e.g. shakespeare")
    add.add_argument("file", help="local copy of the corpus")
    add.set_defaults(func=run_add)
    fetch = new_command(sub, "fetch", help="download a named corpus into the cache")
    fetch.add_argument("name", help="corpus name, e.g. shakespeare")
    fetch.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    from gptlab.data import list_corpora

    for row in list_corpora(args.cache_dir):
        status = "cached" if row["cached"] else "not cached"
        print(f"{row['name']}\t{status}\t{row['path']}\t{row['description']}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from gptlab.data import add_corpus

    print(add_corpus(args.name, args.file, args.cache_dir))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from gptlab.data import fetch_corpus

    print(fetch_corpus(args.name, args.cache_dir))
    return 0
