"""See inside a model and its data: the seeds' printed views as plain data.

Each function returns tensors or frozen dataclasses with `to_dict()` (JSON-ready), so the
CLI, the server and notebooks share one result; `format_*` turns a result into the text
lines the seeds print. No plotting here.

- `attention_maps(model, idx)`: seed 001's `wei`, (n_layer, n_head, T, T).
- `next_token_table(model, tokenizer, text, k)`: per position, p(next token), surprisal in
  bits and the k likeliest alternatives (seed 001's softmax and loss, per token).
- `token_table(tokenizer, text)`, `compare_tokenizers(text, kinds_or_files)`: seed 001's
  `encode`, seed 002's word and BPE splits, with character spans.
- `batch_table(...)`: seed 001's "when input is tensor([18]) the target: 47".
- `window_table(...)`: seed 002's sliding windows "i=0 ... ----> ...".
- `embedding_neighbours(model, tokenizer, token, k)`, `position_matrix(model)`: seed
  002's token and position embeddings (and seed 000's sinusoidal table).
"""

from gptlab.inspect.attention import AttentionMaps, attention_maps, format_attention_map
from gptlab.inspect.batches import (
    BatchRow,
    BatchTable,
    WindowRow,
    WindowTable,
    batch_table,
    format_batch_table,
    format_window_table,
    window_table,
)
from gptlab.inspect.embeddings import (
    EmbeddingNeighbours,
    Neighbour,
    PositionMatrix,
    embedding_neighbours,
    format_embedding_neighbours,
    position_matrix,
)
from gptlab.inspect.predictions import (
    Alternative,
    NextTokenRow,
    NextTokenTable,
    format_next_token_table,
    next_token_table,
)
from gptlab.inspect.tokens import (
    TokenizerSplit,
    TokenRow,
    TokenTable,
    compare_tokenizers,
    format_compare_tokenizers,
    format_token_table,
    token_table,
)

__all__ = [
    "Alternative",
    "AttentionMaps",
    "BatchRow",
    "BatchTable",
    "EmbeddingNeighbours",
    "Neighbour",
    "NextTokenRow",
    "NextTokenTable",
    "PositionMatrix",
    "TokenRow",
    "TokenTable",
    "TokenizerSplit",
    "WindowRow",
    "WindowTable",
    "attention_maps",
    "batch_table",
    "compare_tokenizers",
    "embedding_neighbours",
    "format_attention_map",
    "format_batch_table",
    "format_compare_tokenizers",
    "format_embedding_neighbours",
    "format_next_token_table",
    "format_token_table",
    "format_window_table",
    "next_token_table",
    "position_matrix",
    "token_table",
    "window_table",
]
