"""Print the longest functions and modules under src/, and fail when one is too long.

    python tools/sizes.py [--src src] [--top 5] [--max-function 60] [--max-module 500]

A function's length is its lines from `def` (decorators included) to its last line,
docstring and comments included: what a reader has to scroll through. A nested function
counts inside its parent and on its own. A module's length is its number of lines. Exits 1
when any function or module is over its limit, listing each offender.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def function_sizes(path: Path, root: Path) -> list[tuple[int, str]]:
    """(lines, "file:line name") of every function and method in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    sizes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - first + 1
            sizes.append((length, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return sizes


def module_sizes(paths: list[Path], root: Path) -> list[tuple[int, str]]:
    """(lines, file) of every module."""
    return [(len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(root)))
            for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--top", type=int, default=5, help="how many of each to print")
    parser.add_argument("--max-function", type=int, default=60, help="longest function allowed")
    parser.add_argument("--max-module", type=int, default=500, help="longest module allowed")
    args = parser.parse_args(argv)

    paths = sorted(args.src.rglob("*.py"))
    functions = sorted((s for p in paths for s in function_sizes(p, args.src)), reverse=True)
    modules = sorted(module_sizes(paths, args.src), reverse=True)
    print(f"longest functions (limit {args.max_function} lines):")
    for length, where in functions[: args.top]:
        print(f"  {length:5d}  {where}")
    print(f"longest modules (limit {args.max_module} lines):")
    for length, where in modules[: args.top]:
        print(f"  {length:5d}  {where}")

    too_long = [f"function {where}: {n} lines > {args.max_function}"
                for n, where in functions if n > args.max_function]
    too_long += [f"module {where}: {n} lines > {args.max_module}"
                 for n, where in modules if n > args.max_module]
    for line in too_long:
        print(f"too long: {line}", file=sys.stderr)
    return 1 if too_long else 0


if __name__ == "__main__":
    sys.exit(main())
