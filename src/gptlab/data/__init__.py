"""The data side of gptlab: corpus sources and cache, `prepare`, and batching.

Public names:
- `prepare(inputs, out, tokenizer=...)` → dataset folder (train.bin, val.bin, meta.json,
  tokenizer.json); `load_meta(data_dir)`, `load_split(data_dir, "train" | "val")`.
- `RandomBatches` (the seed's `get_batch`), `SlidingWindowDataset`, `sliding_windows`,
  `create_dataloader`.
- Named corpora: `fetch_corpus`, `add_corpus`, `list_corpora`, `cache_dir`, `NAMED_CORPORA`.
"""

from typing import TYPE_CHECKING

from gptlab.data.corpus import (
    NAMED_CORPORA,
    add_corpus,
    cache_dir,
    fetch_corpus,
    list_corpora,
    resolve_sources,
)
from gptlab.data.dataset import load_meta, load_split, token_dtype
from gptlab.data.prepare import prepare

if TYPE_CHECKING:
    from gptlab.data.batching import (
        RandomBatches,
        SlidingWindowDataset,
        create_dataloader,
        sliding_windows,
    )

_BATCHING = ("RandomBatches", "SlidingWindowDataset", "create_dataloader", "sliding_windows")


def __getattr__(name: str):
    # Batching needs torch, a heavy import that prepare does not need: load it lazily.
    if name in _BATCHING:
        from gptlab.data import batching

        return getattr(batching, name)
    raise AttributeError(f"module 'gptlab.data' has no attribute {name!r}")


__all__ = [
    "NAMED_CORPORA",
    "RandomBatches",
    "SlidingWindowDataset",
    "add_corpus",
    "cache_dir",
    "create_dataloader",
    "fetch_corpus",
    "list_corpora",
    "load_meta",
    "load_split",
    "prepare",
    "resolve_sources",
    "sliding_windows",
    "token_dtype",
]
