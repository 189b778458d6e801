"""The import graph of gptlab: no cycles, and dependencies flow one way down the layers.

Every module under src/gptlab is parsed with `ast`, so imports inside functions (gptlab
imports lazily to keep `gptlab --help` fast) count as much as top-level ones. A module
belongs to a *part*: its first name under `gptlab` (`gptlab.train.trainer` → `train`,
`gptlab.checkpoint` → `checkpoint`, the package `gptlab` itself → `gptlab`). A module may
import its own part, or a part on a lower layer; never one above, nor another part of its
own layer.

Run `python tests/test_imports.py` to print every edge that breaks a rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "gptlab"

# Top to bottom. A part may import parts on lower layers only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),  # `python -m gptlab` runs the CLI
    ("cli",),  # the parser and one module per subcommand
    ("train", "serve", "interop", "verify"),  # verify: whole folders, for `gptlab verify`
    ("inspect",),  # the seeds' views over model, data and tokenizers; serve shows them
    ("data", "generate", "checkpoint"),
    ("decoding",),  # batched decoding: the KV-cache path of generate and of serve
    # device, dtype and RNG: used by train, serve and the cli; row_invariant: decoding's
    # batch-independent Linears
    ("runtime", "sampling", "row_invariant"),
    ("model", "tokenizers", "text", "row_kernel"),  # row_kernel: a C matmul, rows independent
    ("integrity",),  # checksums: on files, below every reader and writer of trusted files
    ("files", "checks", PACKAGE),  # PACKAGE: gptlab/__init__.py (__version__)
    ("errors",),
)

# Imports between two parts of one layer that are meant, with the reason.
SIDEWAYS: dict[tuple[str, str], str] = {
    ("text", "tokenizers"): "corpus_stats counts a corpus's tokens with a given tokenizer",
}

# Edges that break a rule today and are being removed: (importer, imported module). The
# cycle check skips them too. This list should end empty: delete an entry once it is fixed.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()


def module_name(path: Path) -> str:
    """`src/gptlab/train/trainer.py` → `gptlab.train.trainer`; `.../__init__.py` → the package."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of everything `tree` imports, at any depth, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                # `from gptlab import checkpoint` names a module, `from gptlab import
                # __version__` a name in one: `resolve` finds the module either way.
                yield f"{prefix}.{alias.name}", node.lineno


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest gptlab module that `name` starts with (None for other packages)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """module → {imported gptlab module: first line importing it}."""
    modules = all_modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for name, line in imported_names(tree, module, path.name == "__init__.py"):
            target = resolve(name, modules)
            if target is not None and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def layer_of(module: str) -> int:
    name = part(module)
    for depth, parts in enumerate(LAYERS):
        if name in parts:
            return depth
    raise AssertionError(
        f"{module}: part {name!r} is on no layer; add it to LAYERS in tests/test_imports.py"
    )


def layering_violations(graph: dict[str, dict[str, int]]) -> list[tuple[str, str, str]]:
    """(importer, imported, why) for each edge that goes up or sideways."""
    found = []
    for module, edges in sorted(graph.items()):
        for target in sorted(edges):
            if part(module) == part(target) or (part(module), part(target)) in SIDEWAYS:
                continue
            here, there = layer_of(module), layer_of(target)
            if there < here:
                why = f"{part(module)} may not import {part(target)}"
            elif there == here:
                why = f"{part(module)} may not import {part(target)} (same layer)"
            else:
                continue
            found.append((module, target, f"{module}:{edges[target]} imports {target}: {why}"))
    return found


def find_cycle(
    graph: dict[str, dict[str, int]], skip: frozenset[tuple[str, str]] = frozenset()
) -> list[str] | None:
    """One import cycle as a chain `[a, b, ..., a]`, or None (depth-first search).

    Edges in `skip` are left out."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, {})):
            if (module, target) in skip:
                continue
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_graph_sees_lazy_and_top_level_imports():
    graph = import_graph()
    assert "gptlab.errors" in graph["gptlab.files"]  # top level
    assert "gptlab.model" in graph["gptlab.checkpoint"]  # inside a function
    assert "gptlab.checkpoint" in graph["gptlab.interop.runs"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph(), skip=KNOWN_VIOLATIONS)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_part_is_on_a_layer():
    for module in import_graph():
        layer_of(module)


def test_dependencies_flow_down_the_layers():
    found = layering_violations(import_graph())
    new = [why for importer, target, why in found if (importer, target) not in KNOWN_VIOLATIONS]
    assert not new, "layering violations:\n" + "\n".join(new)


def test_known_violations_still_exist():
    graph = import_graph()
    stale = {(a, b) for a, b in KNOWN_VIOLATIONS if b not in graph.get(a, {})}
    assert not stale, f"remove these fixed edges from KNOWN_VIOLATIONS: {sorted(stale)}"


def test_the_checks_catch_a_cycle_and_an_upward_import():
    graph = {"gptlab.model.gpt": {"gptlab.data.batching": 3}, "gptlab.data.batching": {}}
    assert layering_violations(graph)[0][2] == (
        "gptlab.model.gpt:3 imports gptlab.data.batching: model may not import data"
    )
    cyclic = {"gptlab.a": {"gptlab.b": 1}, "gptlab.b": {"gptlab.a": 1}}
    assert find_cycle(cyclic) == ["gptlab.a", "gptlab.b", "gptlab.a"]


if __name__ == "__main__":
    graph = import_graph()
    print("cycle:", " -> ".join(find_cycle(graph) or ["none"]))
    print("cycle without the known edges:",
          " -> ".join(find_cycle(graph, skip=KNOWN_VIOLATIONS) or ["none"]))
    for importer, target, why in layering_violations(graph):
        known = " (known)" if (importer, target) in KNOWN_VIOLATIONS else ""
        print(why + known)
    sys.exit(0)
