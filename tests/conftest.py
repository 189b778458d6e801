"""Shared fixtures: the corpora in ../shared/data and a tiny corpus for fast tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def _shared_file(name: str) -> Path:
    path = SHARED_DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the corpora live in ../shared/data beside the checkout")
    return path


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Every test runs torch on one thread: the tests' tiny models run fastest that way, and
    far faster than with several threads on a crowded CI machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def back_to_one_thread():
    """`gptlab serve` sets torch's thread count (all cores but one): undo it after a test."""
    import torch

    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    """Tiny Shakespeare (1,115,394 characters)."""
    return _shared_file("tinyshakespeare.txt")


@pytest.fixture(scope="session")
def verdict_path() -> Path:
    """Edith Wharton's "The Verdict", seed 002's corpus."""
    return _shared_file("the-verdict.txt")


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """A few lines of text for tests that need no real corpus."""
    return (
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n"
    ) * 20


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running `python -m gptlab` in a subprocess from the checkout."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def gptlab_cmd() -> list[str]:
    """The argv prefix that runs the CLI in a subprocess."""
    return [sys.executable, "-m", "gptlab"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_text):
    """A run folder: 2 layers, 2 heads, 16 channels, block 16; random weights (seeded)."""
    import torch

    from gptlab.checkpoint import write_run
    from gptlab.model import GPT, ModelConfig
    from gptlab.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.from_text(tiny_text)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2,
                         n_embd=16)
    return write_run(tmp_path_factory.mktemp("runs") / "tiny-char", GPT(config), tokenizer)
