"""Evaluation (the seed's estimate_loss, and a full pass over a split) and the metrics log.

Loss is the mean cross-entropy in nats per token. From it: perplexity = exp(loss); bits per
token = loss / ln 2; bits per character and bits per byte divide that by the characters or
UTF-8 bytes one token stands for on average in the split, which makes char-level and BPE
runs comparable (bits per byte is the usual cross-tokenizer figure).

metrics.jsonl holds one JSON object per line:
    {"kind": "train", "step": 10, "loss": 2.31, "lr": 0.001, "tokens": 7680, "time": 1.2}
    {"kind": "eval", "step": 100, "tokens": ..., "time": ..., "train_loss": ..., "val_loss":
     ..., "val_ppl": ..., "val_bpc": ..., "val_bpb": ...}
A resume that skipped a corrupt checkpoint adds an event line (`checkpoint.set_aside_corrupt`):
    {"kind": "event", "event": "skipped_corrupt_checkpoint", "step": 100, "skipped_step": 200,
     "file": ..., "moved_to": ..., "reason": ...}
"step" counts optimizer updates done; "time" is training wall time in seconds (evaluation
excluded for train lines, included for eval lines). With --tensorboard the same numbers go to
RUN_DIR/tensorboard as scalars "train/loss", "train/lr", "eval/val_loss", ... (`MetricsLog`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptlab.errors import GptlabError
from gptlab.files import append_bytes, atomic_write_text, open_append
from gptlab.runtime import resolve_device
from gptlab.tokenizers import Tokenizer, same_tokenizer

LN2 = math.log(2.0)


def loss_metrics(
    loss: float, chars_per_token: float | None = None, bytes_per_token: float | None = None
) -> dict[str, float]:
    """{"loss", "ppl", "bpc", "bpb"} for a mean loss in nats per token."""
    out = {"loss": loss, "ppl": math.exp(min(loss, 700.0))}
    if chars_per_token:
        out["bpc"] = loss / LN2 / chars_per_token
    if bytes_per_token:
        out["bpb"] = loss / LN2 / bytes_per_token
    return out


def text_per_token(
    tokenizer: Tokenizer, tokens: np.ndarray, limit: int = 1_000_000
) -> tuple[float, float]:
    """(characters, UTF-8 bytes) per token on average over (up to `limit` of) `tokens`."""
    ids = np.asarray(tokens[:limit]).astype(np.int64).tolist()
    if not ids:
        return 1.0, 1.0
    text = tokenizer.decode(ids)
    return len(text) / len(ids), len(text.encode("utf-8")) / len(ids)


# Eval batches are stacked up to this many tokens per forward call. On CPU, calls of a few
# thousand tokens keep the activations in cache (measured in docs/benchmarks.md,
# "Training"); accelerators want big calls.
EVAL_TOKENS_PER_FORWARD = 16_384
EVAL_TOKENS_PER_FORWARD_CPU = 4_096


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    make_batches: Callable[[str], Any],
    eval_iters: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    splits: tuple[str, ...] = ("train", "val"),
    tokens_per_forward: int | None = None,
) -> dict[str, float]:
    """Mean loss over `eval_iters` batches of each split (seed 001's estimate_loss).

    Args:
        model: returns (logits, loss) from (idx, targets).
        make_batches: split -> an object with get_batch() -> (x, y), each (B, T).
        tokens_per_forward: see `mean_batch_loss` (1: one batch per call, as the seed).

    Returns:
        split -> mean loss. The model is left in the mode (train or eval) it was in.
    """
    out = {}
    was_training = model.training
    model.eval()
    try:
        for split in splits:
            batches = make_batches(split)
            out[split] = mean_batch_loss(model, batches, eval_iters, autocast,
                                         tokens_per_forward)
    finally:
        model.train(was_training)
    return out


def mean_batch_loss(
    model: torch.nn.Module,
    batches: Any,
    n_batches: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    tokens_per_forward: int | None = None,
) -> float:
    """The mean loss of the next `n_batches` batches from `batches.get_batch()`.

    The seed runs one forward pass per batch; here as many batches as fit in
    `tokens_per_forward` tokens (default EVAL_TOKENS_PER_FORWARD_CPU on CPU, else
    EVAL_TOKENS_PER_FORWARD) are stacked into one: the same batches are drawn, the mean over
    equal-sized batches is the mean of their means, and a few large calls run much faster
    than many small ones.
    """
    total, done = 0.0, 0
    while done < n_batches:
        x, y = batches.get_batch()  # (B, T) each
        if tokens_per_forward is None:
            tokens_per_forward = (EVAL_TOKENS_PER_FORWARD_CPU if x.device.type == "cpu"
                                  else EVAL_TOKENS_PER_FORWARD)
        group = min(max(1, tokens_per_forward // x.numel()), n_batches - done)
        xs, ys = [x], [y]
        for _ in range(group - 1):
            x, y = batches.get_batch()
            xs.append(x)
            ys.append(y)
        with autocast():
            _, loss = model(torch.cat(xs), torch.cat(ys))  # (group * B, T)
        total += loss.float().item() * group
        done += group
    return total / n_batches


def sequential_windows(
    tokens: np.ndarray, block_size: int, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping (x, y) windows covering `tokens` in order, batched.

    Yields:
        x, y int64 arrays of shape (b, block_size), b <= batch_size, y = x shifted by one.
    """
    n_windows = (len(tokens) - 1) // block_size
    for start in range(0, n_windows, batch_size):
        rows = range(start, min(start + batch_size, n_windows))
        x = np.stack([tokens[r * block_size:(r + 1) * block_size] for r in rows])
        y = np.stack([tokens[r * block_size + 1:(r + 1) * block_size + 1] for r in rows])
        yield x.astype(np.int64), y.astype(np.int64)  # (b, T), (b, T)


@torch.no_grad()
def evaluate_tokens(
    model: torch.nn.Module,
    tokens: np.ndarray,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
) -> tuple[float, int]:
    """Mean loss over a whole token array in non-overlapping windows of the model's block.

    Returns:
        (mean loss in nats per predicted token, number of predicted tokens).
    """
    if len(tokens) < 2:
        return float("nan"), 0
    block_size = min(model.config.block_size, len(tokens) - 1)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i, (x, y) in enumerate(sequential_windows(tokens, block_size, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            xt = torch.from_numpy(x).to(device)
            yt = torch.from_numpy(y).to(device)
            _, loss = model(xt, yt)
            total += loss.float().item() * y.size
            count += y.size
    finally:
        model.train(was_training)
    return total / max(count, 1), count


class MetricsLog:
    """A run's one sink for metrics: JSON lines appended to `path` (flushed per line) and,
    given a `writer` with add_scalar(tag, value, step) and close() (`tensorboard_writer`),
    the same numbers as scalars."""

    def __init__(self, path: Path, writer: Any = None):
        self.path = Path(path)
        self.writer = writer
        self._fd: int | None = None

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (left by a run killed after its last checkpoint)."""
        if not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Log one record, {"kind": "train" or "eval", "step": N, ...}.

        Each line is written whole or not at all (a full disk is a WriteError that leaves
        the file as it was).
        """
        if self._fd is None:
            self._fd = open_append(self.path)
        append_bytes(self._fd, (json.dumps(record) + "\n").encode("utf-8"), self.path)
        if self.writer is not None:
            for name, value in record.items():
                if name not in _NOT_SCALARS:
                    self.writer.add_scalar(f"{record['kind']}/{name}", value, record["step"])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


_NOT_SCALARS = frozenset({"kind", "step", "tokens", "time"})


def tensorboard_writer(log_dir: Path) -> Any:
    """A TensorBoard SummaryWriter writing into `log_dir` (GptlabError without tensorboard)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GptlabError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter(str(log_dir))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GptlabError(
            f"{path} is not a metrics log (not UTF-8 text at byte {exc.start}): it is damaged"
        ) from None
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def evaluate_run(
    run_dir: Path,
    data_dir: Path | None = None,
    split: str = "val",
    which: str = "best",
    batch_size: int = 32,
    max_batches: int | None = None,
    device: str = "auto",
) -> dict[str, float]:
    """Evaluate a run folder on a prepared dataset split (`gptlab eval`).

    Returns:
        {"loss", "ppl", "bpc", "bpb", "tokens"} with loss in nats per token.
    """
    from gptlab.checkpoint import TOKENIZER_FILE, load_run
    from gptlab.data import load_meta, load_split
    from gptlab.data.dataset import verify_dataset

    run_tok = Path(run_dir) / TOKENIZER_FILE
    if max_batches is not None and max_batches < 1:
        raise GptlabError(f"--max-batches {max_batches} must be >= 1 (or left out: all)")
    if batch_size < 1:
        raise GptlabError(f"--batch-size {batch_size} must be >= 1")
    device = resolve_device(device)
    run = load_run(run_dir, which=which, device=device)
    if data_dir is None:
        recorded = run.config.get("data", {}).get("dir")
        if not recorded:
            raise GptlabError(f"{run_dir} records no dataset: pass --data DIR")
        data_dir = Path(recorded)
        if not (data_dir / "meta.json").is_file():
            raise GptlabError(f"{run_dir} was trained on {data_dir}, which is gone: pass --data "
                              f"DIR (a dataset prepared with `gptlab prepare --tokenizer-file "
                              f"{run_tok} ...`)")
    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    data_tok = data_dir / meta.get("tokenizer_file", TOKENIZER_FILE)
    if not data_tok.is_file() or not same_tokenizer(data_tok, run_tok):
        raise GptlabError(
            f"{data_dir} was tokenized with another tokenizer than {run_dir} "
            f"({meta.get('tokenizer')}, vocab {meta.get('vocab_size')}): prepare it with the "
            f"run's tokenizer, `gptlab prepare --tokenizer-file {run_tok}`"
        )
    verify_dataset(data_dir, splits=(split,))  # after the check above, more precise on a mix-up
    tokens = load_split(data_dir, split)
    loss, count = evaluate_tokens(run.model, tokens, batch_size, device, max_batches)
    chars, nbytes = text_per_token(run.tokenizer, tokens[: count + 1])
    return {**loss_metrics(loss, chars, nbytes), "tokens": count}
