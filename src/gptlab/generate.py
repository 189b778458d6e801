"""Generation: one sampling config, the sampling rule, and the seed's loop with a KV cache.

`generate` returns the prompt and its continuation; `stream` yields the new tokens as
they are produced. Both take a `SamplingConfig` (`sampling=`) or its fields by keyword,
and drive any model with `forward(idx) -> (logits, loss)`: a GPT gets the KV cache, other
models (the bigram) the recompute loop over their context. The loop is `_sample_loop`,
seed 001's `generate`: logits of the last position → `sample_next_token` → append.

- Empty prompt: every row starts from `start_token` (the seed starts from token 0), and
  that token is part of the returned ids.
- `seed` draws from a private torch.Generator: the same seed gives the same tokens with or
  without the KV cache, and the global RNG is neither used nor advanced.
- Batches: idx is (B, T), every row the same length; `num_samples` repeats each row.
- Stop tokens: a row that samples one is finished; the stop token is kept and repeated as
  padding. Generation ends once every row has finished, so the result can be shorter
  than T + max_new_tokens.

The KV cache is `gptlab.decoding.DecodingEngine` with one request: the server's engine.
With `batch_invariant=True` it runs row-invariant Linears as the server does, so a
request's tokens are bitwise those the server gives it; by default it runs the model as
it is (no transposed copy of the weights to make; without a C compiler for
`gptlab.row_kernel`, one row alone is also ~1.2x as fast on CPU).

The KV cache and the sliding window (`exact`). While prompt + generated tokens fit in
block_size, the cache gives exactly the cache-free result. Past block_size the seed's loop
crops to the last block_size tokens and re-runs them: every token's position and every
layer's view of the window changes. `exact=True` (the default) then does the same
recompute, a full-window forward per token, so outputs stay identical to the seed's loop
for every pos_encoding. `exact=False` (`gptlab sample --no-exact`, the server's
`"exact": false`) keeps one cached token per step, as an approximation:
- rope: a rolling cache (the newest token overwrites the oldest slot). RoPE makes cached
  keys position-independent, so this is exact *sliding-window attention*. It equals the
  cropped recompute only for a one-layer model; with more layers, a cached key was
  computed while its token still saw tokens that have since left the window.
- learned / sinusoidal: "restart": when the cache is full, re-run the last block_size // 2
  tokens from position 0, so each prediction sees between half and a full window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from gptlab.checks import is_int
from gptlab.decoding import DecodingEngine
from gptlab.errors import GptlabError
from gptlab.model.gpt import GPT
from gptlab.sampling import SEED_LIMIT, SamplingConfig, SamplingError, sample_next_token

__all__ = ["SEED_LIMIT", "SamplingConfig", "SamplingError", "generate", "sample_next_token",
           "stream"]

def generate(
    model: nn.Module,
    idx: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    sampling: SamplingConfig | None = None,
    **options: Any,
) -> Tensor:
    """Continue each prompt row by up to `max_new_tokens` tokens.

    Args:
        model: a GPT (KV cache) or any model with forward(idx) -> (logits, loss) (e.g.
            BigramLanguageModel); its train/eval mode is restored after every step.
        idx: prompt ids: a (B, T) tensor, a (T,) tensor or list (one row), or nested
            lists of equal length. T may exceed block_size (the model sees the last
            block_size tokens); T == 0 starts every row from `start_token`.
        sampling: how to sample (default: `SamplingConfig()`).
        **options: `SamplingConfig` fields by keyword; they override those of `sampling`.

    Returns:
        (B·num_samples, T + n) int64 ids on the model's device: the prompt (or the start
        token), then n new tokens (n < max_new_tokens only when every row has stopped).
    """
    prompt, config = _start(model, idx, max_new_tokens, sampling, options)
    new = [idx_next[:, None] for idx_next in _sample_loop(model, prompt, max_new_tokens, config)]
    return torch.cat([prompt, *new], dim=1)  # (B, T + n)


def stream(
    model: nn.Module,
    idx: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    sampling: SamplingConfig | None = None,
    **options: Any,
) -> Iterator[Tensor]:
    """Yield the new tokens one step at a time, as they are produced.

    Takes `generate`'s arguments and checks them before the first step. Each step yields
    a (B,) int64 tensor, one new id per row, also when B == 1 (use `.item()`); rows that
    already stopped repeat their stop token. The prompt is not yielded.
    """
    prompt, config = _start(model, idx, max_new_tokens, sampling, options)
    return _sample_loop(model, prompt, max_new_tokens, config)


def _start(
    model: nn.Module,
    idx: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: SamplingConfig | None,
    options: dict[str, Any],
) -> tuple[Tensor, SamplingConfig]:
    """Check the arguments of `generate` / `stream`: the (B·num_samples, T) prompt on the
    model's device and the one SamplingConfig."""
    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise GptlabError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    config = SamplingConfig(**options) if sampling is None else replace(sampling, **options)
    vocab_size = _vocab_size(model)
    for token in config.stop_tokens:
        _check_in_vocab("stop token", token, vocab_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return _prepare_prompt(idx, config, vocab_size, device), config


def _sample_loop(
    model: nn.Module, prompt: Tensor, max_new_tokens: int, config: SamplingConfig
) -> Iterator[Tensor]:
    """Seed 001's generate loop: the last position's logits → sample → append; yields
    each step's (B,) new ids. A GPT with the cache runs it in `DecodingEngine`."""
    if config.use_cache and isinstance(model, GPT):
        yield from _engine_loop(model, prompt, max_new_tokens, config)
        return
    decoder = _Decoder(model)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=prompt.device).manual_seed(config.seed)
    B, T0 = prompt.shape
    stop_ids = torch.tensor(config.stop_tokens, dtype=torch.long, device=prompt.device)
    finished = torch.zeros(B, dtype=torch.bool, device=prompt.device)  # (B,)
    seq = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=prompt.device)
    seq[:, :T0] = prompt
    for t in range(T0, T0 + max_new_tokens):
        logits = decoder.next_logits(seq[:, :t])  # (B, V) at the last position
        idx_next = sample_next_token(logits, config.temperature, config.top_k, config.top_p,
                                     config.greedy, generator)  # (B,)
        if config.stop_tokens:  # a finished row repeats its last token, its stop token
            idx_next = torch.where(finished, seq[:, t - 1], idx_next)
            finished |= torch.isin(idx_next, stop_ids)
        seq[:, t] = idx_next  # append (into a buffer allocated once)
        yield idx_next
        if config.stop_tokens and finished.all():
            return


def _engine_loop(
    model: GPT, prompt: Tensor, max_new_tokens: int, config: SamplingConfig
) -> Iterator[Tensor]:
    """The same loop with the KV cache: one request in a `DecodingEngine` of B slots."""
    engine = DecodingEngine(model, prompt.shape[0], batch_invariant=config.batch_invariant)
    request = engine.add(prompt, max_new_tokens, config)
    while not request.done:
        if request in engine.step():
            yield request.last_tokens
    if request.finish_reason == "error":
        raise GptlabError(f"generation failed: {request.error}")


class _Decoder:
    """Next-token logits for a growing sequence by recompute (no KV cache)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.window: int | None = getattr(model, "context_size", None)

    def next_logits(self, seq: Tensor) -> Tensor:
        """seq (B, t): the whole sequence → (B, V) logits for its next token.

        Runs in eval mode (no dropout). A model in training mode is switched for the step
        and back; one in eval mode is left alone, as switching walks every module.
        """
        training = self.model.training
        if training:
            self.model.eval()
        try:
            with torch.no_grad():
                context = seq if self.window is None else seq[:, -self.window :]  # (B, ≤ window)
                if isinstance(self.model, GPT):
                    logits, _ = self.model(context, last_only=True)
                else:
                    logits, _ = self.model(context)
                return logits[:, -1, :]
        finally:
            if training:
                self.model.train()


def _vocab_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if size is None:
        size = getattr(model, "vocab_size", None)  # e.g. BigramLanguageModel
    return None if size is None else int(size)


def _check_in_vocab(name: str, token: int, vocab_size: int | None) -> None:
    if vocab_size is not None and token >= vocab_size:
        raise GptlabError(f"{name}={token} is outside the vocabulary 0..{vocab_size - 1}")


def _prepare_prompt(
    idx: Tensor | Sequence[int] | Sequence[Sequence[int]],
    config: SamplingConfig,
    vocab_size: int | None,
    device: torch.device,
) -> Tensor:
    """Any accepted prompt form → a (B·num_samples, T ≥ 1) int64 tensor on `device`."""
    if not isinstance(idx, Tensor):
        try:
            idx = torch.tensor(idx, dtype=torch.long)
        except (TypeError, ValueError) as exc:
            message = f"prompt must be a list of token ids or of equal-length rows ({exc})"
            raise GptlabError(message) from exc
    if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.dtype.is_complex:
        raise GptlabError(f"prompt ids must be integers, got a {idx.dtype} tensor")
    if idx.dim() == 1:
        idx = idx[None, :]  # (1, T)
    if idx.dim() != 2 or idx.shape[0] == 0:
        raise GptlabError(f"prompt must be (B, T) token ids with B ≥ 1 (or one list of ids), "
                          f"got shape {tuple(idx.shape)}")
    idx = idx.to(device=device, dtype=torch.long)
    if idx.shape[1] == 0:
        _check_in_vocab("start_token", config.start_token, vocab_size)
        idx = torch.full((idx.shape[0], 1), config.start_token, dtype=torch.long, device=device)
    elif vocab_size is not None and (idx.min() < 0 or idx.max() >= vocab_size):
        bad = idx[(idx < 0) | (idx >= vocab_size)][0].item()
        raise GptlabError(f"prompt token id {bad} is outside the vocabulary 0..{vocab_size - 1}")
    if config.num_samples != 1:
        idx = idx.repeat_interleave(config.num_samples, dim=0)  # (B·num_samples, T)
    return idx
