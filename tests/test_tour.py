"""docs/tour.md points a reader at `file:name` for each idea of the lecture: every pointer
must name a class, function or method that exists there, and the ideas issue #12 lists must
all be on the tour."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "docs" / "tour.md"
POINTER = re.compile(r"`(gptlab/[\w/]+\.py):([\w.]+)`")


def defined_names(path: Path) -> set[str]:
    """Top-level classes and functions of a module, and `Class.method` for their methods."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}.{item.name}")
    return names


def pointers() -> list[tuple[str, str]]:
    return POINTER.findall(TOUR.read_text(encoding="utf-8"))


def test_every_pointer_names_something_that_exists():
    found = pointers()
    assert len(found) >= 30
    missing = [
        f"{file}:{name}"
        for file, name in found
        if not (ROOT / "src" / file).is_file() or name not in defined_names(ROOT / "src" / file)
    ]
    assert missing == []


def test_the_tour_covers_the_lecture():
    names = {name for _, name in pointers()}
    lecture = {
        "CharTokenizer", "WordTokenizer", "GPT2Tokenizer", "split_train_val",
        "RandomBatches.get_batch", "SlidingWindowDataset", "GPT.hidden_states", "Head",
        "MultiHeadAttention", "MLP", "Block.forward", "Block", "BigramLanguageModel",
        "estimate_loss", "Trainer.run", "generate",
    }
    assert lecture <= names


def test_the_readme_links_the_tour():
    assert "docs/tour.md" in (ROOT / "README.md").read_text(encoding="utf-8")
